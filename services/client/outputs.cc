#include "services/client/outputs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"

namespace deeplab::client {
namespace {

// Writes all of `contents` to `fd`, retrying short writes.
bool WriteAll(int fd, absl::string_view contents) {
  while (!contents.empty()) {
    const ssize_t n = write(fd, contents.data(), contents.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    contents.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "cannot open");
  std::string contents;
  struct stat info;
  if (fstat(fd, &info) == 0 && info.st_size > 0) contents.reserve(info.st_size);
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      close(fd);
      return absl::ErrnoToStatus(error, "cannot read");
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return contents;
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code error;
  if (!parent.empty()) std::filesystem::create_directories(parent, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(), absl::StrCat("cannot create ", parent.string()));
  }
  // Unique among this process's threads and among processes writing the same folder.
  static std::atomic<int> counter{0};
  const std::string temporary = absl::StrCat(path, ".tmp-", getpid(), "-", counter++);
  const int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create ", temporary));
  const bool written = WriteAll(fd, contents);
  const int write_error = errno;
  if (close(fd) != 0 || !written) {
    const int close_error = written ? errno : write_error;
    unlink(temporary.c_str());
    return absl::ErrnoToStatus(close_error, absl::StrCat("cannot write ", temporary));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int rename_error = errno;
    unlink(temporary.c_str());
    return absl::ErrnoToStatus(rename_error, absl::StrCat("cannot rename to ", path));
  }
  return absl::OkStatus();
}

std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (const unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string ImageReportJson(const ImageReport& report, const v1::SegmentResponse& response) {
  const v1::SegmentationResult& result = response.result();
  std::string classes;
  for (const v1::ClassStat& c : result.class_stats()) {
    absl::StrAppend(&classes, classes.empty() ? "\n" : ",\n", "    {\"id\": ", c.class_id(),
                    ", \"name\": ", JsonQuote(c.name()), ", \"pixels\": ", c.pixels(),
                    ", \"fraction\": ", absl::StrFormat("%.6g", c.fraction()), "}");
  }
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string timing;
  if (!google::protobuf::util::MessageToJsonString(response.timing(), &timing, options).ok()) {
    timing = "{}";  // only invalid UTF-8 in the worker's name could get here
  }
  return absl::StrCat(
      "{\n  \"image\": ", JsonQuote(report.image_path), ",\n  \"width\": ", result.width(),
      ",\n  \"height\": ", result.height(), ",\n  \"model\": ", JsonQuote(report.model),
      ",\n  \"request_id\": ", JsonQuote(response.request_id()),
      ",\n  \"label_png\": ", JsonQuote(report.label_file),
      ",\n  \"overlay_png\": ",
      report.overlay_file.empty() ? "null" : JsonQuote(report.overlay_file), ",\n  \"class_areas\": [", classes,
      classes.empty() ? "]" : "\n  ]",
      ",\n  \"latency_seconds\": ", absl::StrFormat("%.6f", absl::ToDoubleSeconds(report.latency)),
      ",\n  \"timing\": ", timing, "\n}\n");
}

}  // namespace deeplab::client

#include "services/client/inputs.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace deeplab::client {
namespace {

namespace fs = std::filesystem;

absl::Status FromErrorCode(const std::error_code& error, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(error.value()),
                      absl::StrCat(what, ": ", error.message()));
}

// Every image file below `folder` but not below `skip`, as paths relative to `folder`, sorted.
absl::Status ListImages(const fs::path& folder, const fs::path& skip,
                        std::vector<fs::path>* found) {
  std::error_code error;
  fs::recursive_directory_iterator it(folder, fs::directory_options::skip_permission_denied, error);
  for (; !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
    std::error_code type_error;
    if (it->is_directory(type_error) && fs::equivalent(it->path(), skip, type_error)) {
      it.disable_recursion_pending();
    } else if (it->is_regular_file(type_error) && HasImageExtension(it->path().string())) {
      // is_regular_file follows symbolic links: a linked image is an image.
      found->push_back(it->path().lexically_relative(folder));
    }
  }
  if (error) return FromErrorCode(error, "cannot list the folder");
  std::sort(found->begin(), found->end(), [](const fs::path& a, const fs::path& b) {
    return a.generic_string() < b.generic_string();
  });
  return absl::OkStatus();
}

}  // namespace

bool HasImageExtension(absl::string_view path) {
  static const std::set<std::string>* const kExtensions =
      new std::set<std::string>{".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"};
  return kExtensions->count(
             absl::AsciiStrToLower(fs::path(std::string(path)).extension().string())) > 0;
}

ExpandedInputs ExpandInputs(const std::vector<std::string>& arguments,
                            const std::string& output_folder) {
  ExpandedInputs out;
  std::set<std::string> used_stems;
  auto add = [&](std::string path, const fs::path& stem) {
    const std::string wanted = stem.generic_string();
    std::string unique = wanted;
    for (int n = 2; used_stems.count(unique) > 0; ++n) unique = absl::StrCat(wanted, "-", n);
    used_stems.insert(unique);
    out.images.push_back({std::move(path), std::move(unique)});
  };
  for (const std::string& argument : arguments) {
    std::error_code error;
    const fs::file_status status = fs::status(argument, error);
    if (!fs::exists(status)) {
      out.failures.push_back({argument, error && error != std::errc::no_such_file_or_directory
                                            ? FromErrorCode(error, "cannot open")
                                            : absl::NotFoundError("no such file or directory")});
    } else if (fs::is_directory(status)) {
      std::vector<fs::path> found;
      if (absl::Status listed = ListImages(argument, output_folder, &found); !listed.ok()) {
        out.failures.push_back({argument, listed});
      }
      for (const fs::path& relative : found) {
        add((fs::path(argument) / relative).string(), relative.parent_path() / relative.stem());
      }
    } else {
      add(argument, fs::path(argument).stem());
    }
  }
  return out;
}

}  // namespace deeplab::client

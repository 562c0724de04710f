#include "common/log.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace deeplab {

std::string FormatLogLine(absl::Time time, absl::string_view program, absl::string_view message) {
  return absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone()), " ",
                      program, ": ", message, "\n");
}

void LogLine(absl::string_view program, absl::string_view message) {
  const std::string line = FormatLogLine(absl::Now(), program, message);
  // One write per line: stderr is unbuffered, and a single write keeps lines whole.
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n <= 0) return;
    written += static_cast<size_t>(n);
  }
}

}  // namespace deeplab

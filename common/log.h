// The servers' log lines on stderr: "2026-12-04T23:59:01.123Z deeplab-worker: message", with
// the time in UTC to the millisecond, written whole so that threads' lines never interleave.
// (Lines on stdout, which launchers and tests read to learn the ports, stay as they are.)
#ifndef DEEPLAB_COMMON_LOG_H_
#define DEEPLAB_COMMON_LOG_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace deeplab {

std::string FormatLogLine(absl::Time time, absl::string_view program, absl::string_view message);
void LogLine(absl::string_view program, absl::string_view message);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_LOG_H_

// Progress of `deeplab segment`: counts finished images, prints each failure as one line as
// it happens, redraws a progress bar (done/total, failures, images/s, ETA) on a terminal,
// and formats the summary at the end.
//
// Thread-safe: the threads sending requests report into one Progress.
#ifndef DEEPLAB_SERVICES_CLIENT_PROGRESS_H_
#define DEEPLAB_SERVICES_CLIENT_PROGRESS_H_

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace deeplab::client {

// What a finished run did; what the summary and the exit code are made from.
struct RunStats {
  int total = 0;
  int succeeded = 0;
  int failed = 0;
  // Failures that reached the server (not local file errors), and how many of them were
  // UNAVAILABLE: when all were, the server is the problem, not the images.
  int sent_failed = 0;
  int unavailable = 0;
  struct Reason {
    int count = 0;
    std::string example;  // "path: message" of the first failure with this code
  };
  std::map<absl::StatusCode, Reason> failures;
  std::vector<absl::Duration> latencies;  // of successful requests
  absl::Duration elapsed;
};

// The nearest-rank percentile (0 < p <= 1) of `values`; zero when empty.
absl::Duration Percentile(std::vector<absl::Duration> values, double p);

// "3 images: 2 segmented, 1 failed in 1.2 s (2.5 images/s)", the failures grouped by code
// with an example each, latency p50/p99, and the output folder.
std::string FormatSummary(const RunStats& stats, const std::string& out_dir);

class Progress {
 public:
  // `err` receives failure lines and the bar; the bar is drawn only when `draw_bar`.
  Progress(int total, std::ostream* err, bool draw_bar);

  void Succeeded(absl::Duration latency);
  // `sent`: the request reached the server (its status is the server's answer).
  void Failed(const std::string& path, const absl::Status& status, bool sent);
  // Clears the bar; the stats are final.
  RunStats Finish();

 private:
  void DrawLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::ostream* const err_;
  const bool draw_bar_;
  const absl::Time start_;
  absl::Mutex mu_;
  RunStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace deeplab::client

#endif  // DEEPLAB_SERVICES_CLIENT_PROGRESS_H_

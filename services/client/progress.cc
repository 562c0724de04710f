#include "services/client/progress.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/percentile.h"

namespace deeplab::client {
namespace {

constexpr int kBarWidth = 30;

double PerSecond(int count, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  return seconds > 0 ? count / seconds : 0;
}

// "42s", "3m07s", "2h05m": an ETA needs no more precision than that.
std::string ShortDuration(absl::Duration d) {
  const int64_t s = absl::ToInt64Seconds(d);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
}

std::string Milliseconds(absl::Duration d) {
  return absl::StrFormat("%.1f ms", absl::ToDoubleMilliseconds(d));
}

}  // namespace

absl::Duration Percentile(std::vector<absl::Duration> values, double p) {
  if (values.empty()) return absl::ZeroDuration();
  const size_t index = NearestRankIndex(values.size(), p * 100);
  std::nth_element(values.begin(), values.begin() + index, values.end());
  return values[index];
}

std::string FormatSummary(const RunStats& stats, const std::string& out_dir) {
  const int done = stats.succeeded + stats.failed;
  std::string out =
      absl::StrFormat("%d %s: %d segmented, %d failed in %.1f s (%.1f images/s)\n", stats.total,
                      stats.total == 1 ? "image" : "images", stats.succeeded, stats.failed,
                      absl::ToDoubleSeconds(stats.elapsed), PerSecond(done, stats.elapsed));
  if (!stats.failures.empty()) {
    absl::StrAppend(&out, "failures:\n");
    for (const auto& [code, reason] : stats.failures) {
      absl::StrAppend(&out, "  ", reason.count, " ", absl::StatusCodeToString(code), " (e.g. ",
                      reason.example, ")\n");
    }
  }
  if (!stats.latencies.empty()) {
    absl::StrAppend(&out, "latency p50 ", Milliseconds(Percentile(stats.latencies, 0.5)), ", p99 ",
                    Milliseconds(Percentile(stats.latencies, 0.99)), "\n");
  }
  if (stats.succeeded > 0) absl::StrAppend(&out, "outputs in ", out_dir, "\n");
  return out;
}

Progress::Progress(int total, std::ostream* err, bool draw_bar)
    : err_(err), draw_bar_(draw_bar), start_(absl::Now()) {
  absl::MutexLock lock(&mu_);
  stats_.total = total;
  DrawLocked();
}

void Progress::Succeeded(absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  ++stats_.succeeded;
  stats_.latencies.push_back(latency);
  DrawLocked();
}

void Progress::Failed(const std::string& path, const absl::Status& status, bool sent) {
  absl::MutexLock lock(&mu_);
  ++stats_.failed;
  if (sent) {
    ++stats_.sent_failed;
    if (absl::IsUnavailable(status)) ++stats_.unavailable;
  }
  RunStats::Reason& reason = stats_.failures[status.code()];
  if (reason.count++ == 0) reason.example = absl::StrCat(path, ": ", status.message());
  ClearLocked();
  *err_ << path << ": " << absl::StatusCodeToString(status.code()) << ": " << status.message()
        << "\n";
  DrawLocked();
}

RunStats Progress::Finish() {
  absl::MutexLock lock(&mu_);
  ClearLocked();
  stats_.elapsed = absl::Now() - start_;
  return stats_;
}

void Progress::DrawLocked() {
  if (!draw_bar_) return;
  const int done = stats_.succeeded + stats_.failed;
  const absl::Duration elapsed = absl::Now() - start_;
  const int filled = stats_.total > 0 ? kBarWidth * done / stats_.total : kBarWidth;
  std::string bar =
      absl::StrCat("\r[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'), "] ",
                   done, "/", stats_.total);
  if (stats_.failed > 0) absl::StrAppend(&bar, ", ", stats_.failed, " failed");
  // A rate over the first instants (a missing file fails at once) would be meaningless.
  if (done > 0 && elapsed >= absl::Milliseconds(500)) {
    absl::StrAppendFormat(&bar, ", %.1f images/s, ETA %s", PerSecond(done, elapsed),
                          ShortDuration(elapsed / done * (stats_.total - done)));
  }
  // Erase what a longer previous bar left on the line.
  *err_ << bar << "\033[K" << std::flush;
}

void Progress::ClearLocked() {
  if (draw_bar_) *err_ << "\r\033[K" << std::flush;
}

}  // namespace deeplab::client

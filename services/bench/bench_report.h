// deeplab-bench's output: a table for people (printed row by row as steps finish) and one
// JSON document for scripts. Pure formatting.
#ifndef DEEPLAB_SERVICES_BENCH_BENCH_REPORT_H_
#define DEEPLAB_SERVICES_BENCH_BENCH_REPORT_H_

#include <string>
#include <vector>

#include "services/bench/bench_stats.h"

namespace deeplab::bench {

// What a run was: echoed in the JSON so a result file explains itself.
struct RunInfo {
  std::string target;  // "gateway", "worker" (--target) or "in-process"
  std::string server;  // --server address; empty in-process
  std::string models;  // --models folder; in-process only
  std::string model;
  std::string mode;      // "unary", "stream" or "in-process"
  std::string arrivals;  // rate mode only
  int images = 0;
  std::vector<std::string> outputs;
  double warmup_seconds = 0;
  double duration_seconds = 0;  // 0 when `requests` bounds each step
  int64_t requests = 0;
  std::string device;  // in-process only
};

// Load steps against a server.
std::string LoadTableHeader(const std::string& load);
std::string LoadTableRow(const StepResult& step);
std::string LoadJson(const RunInfo& info, const std::vector<StepResult>& steps);

// In-process batch sizes; the footer names the best one (the ceiling) and the stage split.
std::string BatchTableHeader();
std::string BatchTableRow(const BatchStepResult& step);
std::string BatchTableFooter(const std::vector<BatchStepResult>& steps);
std::string BatchJson(const RunInfo& info, const std::vector<BatchStepResult>& steps);

// "UNAVAILABLE:3 DEADLINE_EXCEEDED:1", or "-" when there are none.
std::string FormatErrors(const std::map<std::string, int64_t>& errors, int64_t dropped);

}  // namespace deeplab::bench

#endif  // DEEPLAB_SERVICES_BENCH_BENCH_REPORT_H_

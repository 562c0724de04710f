// Helpers for the workers tests: model specs, and fixture files made by tests/tools.
#ifndef DEEPLAB_TESTS_WORKERS_TEST_UTIL_H_
#define DEEPLAB_TESTS_WORKERS_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "workers/model/deeplab.h"

namespace deeplab::testing {

inline ModelSpec Spec(const std::string& backbone, int classes, int output_stride = 0,
                      double alpha = 1.0) {
  ModelSpec spec;
  spec.backbone = backbone;
  spec.num_classes = classes;
  spec.output_stride = output_stride;
  spec.alpha = alpha;
  return spec;
}

inline DeepLabV3Plus Build(const ModelSpec& spec) {
  absl::StatusOr<DeepLabV3Plus> model = BuildDeepLabV3Plus(spec);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

// A fresh directory under the test's temporary directory, removed at exit of the process.
inline std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(base != nullptr ? base : "/tmp") /
                              ("deeplab_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Runs a tool from tests/tools with Debian's python3 (the one with torch and h5py);
// returns its stdout, or fails the test.
inline std::string RunPythonTool(const std::string& script, const std::string& args) {
  const std::string cmd = std::string(DEEPLAB_PYTHON) + " " + DEEPLAB_SOURCE_DIR +
                          "/tests/tools/" + script + " " + args;
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  const int rc = pclose(pipe);
  if (rc != 0) ADD_FAILURE() << "command failed (" << rc << "): " << cmd << "\n" << out;
  return out;
}

}  // namespace deeplab::testing

#endif  // DEEPLAB_TESTS_WORKERS_TEST_UTIL_H_

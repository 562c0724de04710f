// Helpers for the workers tests: model specs, and fixture files made by tests/tools.
#ifndef DEEPLAB_TESTS_WORKERS_TEST_UTIL_H_
#define DEEPLAB_TESTS_WORKERS_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

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

// Random-looking values that are the same on every machine. torch::randn is not: its
// vectorised path depends on the CPU's instruction set, so a test built on it passes on one
// machine and fails on another. std::mt19937_64's output is fixed by the standard, and the
// transform to [-1, 1) below is ours.
inline std::vector<float> PortableUniform(int64_t count, uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) {
    v = static_cast<float>(static_cast<double>(engine() >> 11) * 0x1.0p-52 - 1.0);
  }
  return values;
}

// A tensor of unit-variance values (uniform on [-sqrt 3, sqrt 3)), the same everywhere.
inline torch::Tensor PortableTensor(std::vector<int64_t> sizes, uint64_t seed) {
  int64_t count = 1;
  for (int64_t d : sizes) count *= d;
  std::vector<float> values = PortableUniform(count, seed);
  return torch::from_blob(values.data(), sizes, torch::kFloat).clone() * std::sqrt(3.0f);
}

// Gives every convolution weight a variance-preserving (He, fan-in) initialisation from
// PortableUniform, conv biases zero, and leaves BatchNorm as built (identity in eval mode).
// LibTorch's default initialisation shrinks the signal at every layer: through DeepLabv3+
// in eval mode the logits come out near 1e-8, where a comparison with an absolute tolerance
// can no longer fail and rounding noise decides an argmax. With this, they are of order 1.
inline void HealthyInit(torch::nn::Module& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  for (const auto& module : model.modules()) {
    auto* conv = module->as<torch::nn::Conv2d>();
    if (conv == nullptr) continue;
    torch::Tensor& w = conv->weight;
    const double fan_in = static_cast<double>(w.size(1) * w.size(2) * w.size(3));
    w.copy_(PortableTensor(w.sizes().vec(), seed++) * std::sqrt(2.0 / fan_in));
    if (conv->bias.defined()) conv->bias.zero_();
  }
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

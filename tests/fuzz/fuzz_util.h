// Helpers for the libFuzzer targets: property checks that abort (so libFuzzer keeps the
// input) and a per-process scratch folder for the readers that take a path.
#ifndef DEEPLAB_TESTS_FUZZ_FUZZ_UTIL_H_
#define DEEPLAB_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"

namespace deeplab::fuzz {

// A broken property is a finding like a crash: print it and abort.
#define DEEPLAB_FUZZ_CHECK(condition, what)                                                    \
  do {                                                                                         \
    if (!(condition)) {                                                                        \
      std::fprintf(stderr, "%s:%d: property failed: %s: %s\n", __FILE__, __LINE__, #condition, \
                   std::string(what).c_str());                                                 \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)

// A caller's bad input must come back as INVALID_ARGUMENT (or DATA_LOSS for damaged files,
// RESOURCE_EXHAUSTED for memory), never as INTERNAL ("our bug") or UNKNOWN.
inline void CheckInputError(const absl::Status& status) {
  DEEPLAB_FUZZ_CHECK(status.code() != absl::StatusCode::kInternal &&
                         status.code() != absl::StatusCode::kUnknown &&
                         status.code() != absl::StatusCode::kOk,
                     status.ToString());
}

// A folder of this process's own under $TMPDIR (else /tmp), removed at exit.
inline const std::filesystem::path& ScratchDir() {
  static const std::filesystem::path* dir = [] {
    const char* base = std::getenv("TMPDIR");
    auto* path = new std::filesystem::path(std::filesystem::path(base != nullptr ? base : "/tmp") /
                                           ("deeplab_fuzz_" + std::to_string(::getpid())));
    std::filesystem::create_directories(*path);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(*dir, ignored);
    });
    return path;
  }();
  return *dir;
}

// Writes the input to `name` in the scratch folder (for readers that open a path).
inline std::string WriteScratchFile(const std::string& name, const uint8_t* data, size_t size) {
  const std::filesystem::path path = ScratchDir() / name;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  DEEPLAB_FUZZ_CHECK(out.good(), "cannot write " + path.string());
  return path.string();
}

}  // namespace deeplab::fuzz

#endif  // DEEPLAB_TESTS_FUZZ_FUZZ_UTIL_H_

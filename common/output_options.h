// Checks of a request's OutputOptions, shared by the gateway (before a request is queued)
// and the worker (for callers of Infer that bypass the gateway).
#ifndef DEEPLAB_COMMON_OUTPUT_OPTIONS_H_
#define DEEPLAB_COMMON_OUTPUT_OPTIONS_H_

#include "absl/status/status.h"
#include "deeplab/v1/common.pb.h"

namespace deeplab {

// INVALID_ARGUMENT, saying what is allowed, for an overlay_alpha that is not a number in
// [0, 1] (NaN, infinite or negative used to be clamped silently); 0 means the default.
absl::Status ValidateOutputOptions(const v1::OutputOptions& options);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_OUTPUT_OPTIONS_H_

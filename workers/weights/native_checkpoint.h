// deeplab-serve's native checkpoint (.dlck): the network's architecture plus its float
// tensors, laid out so that a load is one file read (mmap) and one memcpy per tensor.
// Format: protos/deeplab/v1/checkpoint.proto. Writes go to a temporary file renamed into
// place, so a reader never sees a half-written checkpoint. Stateless functions.
#ifndef DEEPLAB_WORKERS_WEIGHTS_NATIVE_CHECKPOINT_H_
#define DEEPLAB_WORKERS_WEIGHTS_NATIVE_CHECKPOINT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "deeplab/v1/checkpoint.pb.h"
#include "workers/model/deeplab.h"

namespace deeplab {

// Saves every float parameter and buffer of the model (BatchNorm's num_batches_tracked is
// training bookkeeping and is left out). `source` says where the weights came from.
absl::Status SaveNativeCheckpoint(const std::string& path, DeepLabV3Plus& model,
                                  const std::string& source);

// Reads only the header: the architecture and tensor table.
absl::StatusOr<v1::CheckpointHeader> ReadNativeCheckpointHeader(const std::string& path);

// Loads a checkpoint into a model of the same architecture: every tensor must be present
// with its shape and checksum, and the checkpoint may hold nothing the model lacks.
absl::Status LoadNativeCheckpoint(const std::string& path, DeepLabV3Plus& model);

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_WEIGHTS_NATIVE_CHECKPOINT_H_

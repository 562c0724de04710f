// The model repository: a folder with one sub-folder per weight set, each holding
// config.pbtxt (protobuf text format of deeplab.v1.ModelConfig) and, where present, the
// weights file it names.
//
// Loading a config parses, validates and fills defaults; every error is INVALID_ARGUMENT
// naming the file and the field ("models/voc/config.pbtxt: input.height must be in [1, 4096],
// got 0"; all of a config's problems at once, joined by "; "; parse errors as
// "file:line:column: message"), except a missing config.pbtxt, which is NOT_FOUND.
// Stateless functions; safe to call from any thread.
#ifndef DEEPLAB_WORKERS_REPOSITORY_MODEL_REPOSITORY_H_
#define DEEPLAB_WORKERS_REPOSITORY_MODEL_REPOSITORY_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "deeplab/v1/model_config.pb.h"

namespace deeplab {

// Defaults filled in by LoadModelConfig, with the reason for each value.
inline constexpr int kDefaultMaxBatchSize = 8;    // fits a CPU worker's memory at 512x512
inline constexpr int kDefaultMaxQueueSize = 256;  // bounded memory under overload
inline constexpr int64_t kDefaultTimeoutMicros = 60'000'000;  // a minute: CPU xception at 8 images

// Reads, parses and validates <dir>/config.pbtxt; fills defaults (batching, resize mode
// letterbox, normalization x/127.5-1, palette). The config's name must equal the folder's.
absl::StatusOr<v1::ModelConfig> LoadModelConfig(const std::string& weight_set_dir);

// Validation alone, for a config built in code; `source` names it in messages.
absl::Status ValidateModelConfig(const v1::ModelConfig& config, const std::string& source);

// One weight set found in a repository.
struct RepositoryEntry {
  std::string name;  // folder name
  std::string dir;   // absolute or as given: <repository>/<name>
  // The loaded config, or the error that stopped it loading (then `config` is empty and
  // only `name` is known).
  absl::StatusOr<v1::ModelConfig> config;
  // Absolute path of the weights file ("" for RANDOM weights).
  std::string weights_path;
};

// Lists the sub-folders of `repository` that hold a config.pbtxt, sorted by name (hidden
// folders skipped). A broken config is reported in its entry, not as a failure of the whole
// scan. NOT_FOUND if the repository folder does not exist.
absl::StatusOr<std::vector<RepositoryEntry>> ScanModelRepository(const std::string& repository);

// Checks that the weights file exists and, when the config gives one (or, failing that, the
// <file>.sha256 that scripts/fetch_weights.sh records beside it), that its sha256 matches.
// Missing file: FAILED_PRECONDITION; wrong bytes: DATA_LOSS. The error says how to fix it
// (e.g. "run scripts/fetch_weights.sh pascal_voc").
absl::Status CheckWeightsFile(const RepositoryEntry& entry);

// Lower-case hex sha256 of a file.
absl::StatusOr<std::string> Sha256File(const std::string& path);

using Rgb = std::array<uint8_t, 3>;
// The overlay colours: the config's palette, else its preset, else Pascal VOC's colour map;
// always at least num_classes entries.
std::vector<Rgb> ResolvePalette(const v1::ModelConfig& config);
// Standard colour maps: Pascal VOC's bit-interleaving map (256 entries), Cityscapes' 19
// train-id colours.
std::vector<Rgb> PascalVocPalette();
std::vector<Rgb> CityscapesPalette();

}  // namespace deeplab

#endif  // DEEPLAB_WORKERS_REPOSITORY_MODEL_REPOSITORY_H_

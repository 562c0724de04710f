#include "workers/repository/model_repository.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace deeplab {
namespace {

namespace fs = std::filesystem;

constexpr char kConfigFileName[] = "config.pbtxt";
// A config is a page of text; anything this large is a mistake (a weights file renamed to
// config.pbtxt, say), and refusing it keeps a scan of a bad repository cheap.
constexpr std::uintmax_t kMaxConfigBytes = 1 << 20;
// Big enough that hashing is bound by the disk, not by per-call overhead; one heap buffer.
constexpr size_t kHashChunkBytes = 1 << 20;
// Colour maps index uint8 label maps, so no class id can exceed 255.
constexpr int kMaxClasses = 255;
// The network input, not the image: one 4096x4096 input already takes gigabytes of
// activations; larger images are resized or tiled down to the input size.
constexpr int kMaxInputSide = 4096;

constexpr absl::string_view kBackbones[] = {"xception65", "mobilenetv2", "resnet50", "resnet101"};
constexpr absl::string_view kPalettePresets[] = {"pascal_voc", "cityscapes"};

// Collects every message the text-format parser reports, as "file:line:column: message"
// (1-based, as editors count), so the error points at the offending token.
class ConfigErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit ConfigErrorCollector(std::string file) : file_(std::move(file)) {}

#if GOOGLE_PROTOBUF_VERSION >= 4022000
  void RecordError(int line, google::protobuf::io::ColumnNumber column,
                   absl::string_view message) override {
    Record(line, column, message);
  }
#else
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    Record(line, column, message);
  }
#endif

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  void Record(int line, int column, absl::string_view message) {
    // The parser reports -1 for errors that have no position (e.g. at end of input).
    if (line < 0) {
      errors_.push_back(absl::StrCat(file_, ": ", message));
    } else {
      errors_.push_back(absl::StrCat(file_, ":", line + 1, ":", column + 1, ": ", message));
    }
  }

  std::string file_;
  std::vector<std::string> errors_;
};

// Reads a whole small file. NOT_FOUND when it does not exist; other failures keep errno's code.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, std::uintmax_t max_bytes) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::ErrnoToStatus(ec.value(), absl::StrCat("cannot stat ", path));
  }
  if (!fs::exists(st)) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  if (!fs::is_regular_file(st)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  const std::uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is ", size, " bytes, more than the ",
                                                   max_bytes, " such a file can be"));
  }
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  std::string contents;
  char buffer[16384];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    contents.append(buffer, n);
    if (contents.size() > max_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is more than the ", max_bytes, " bytes such a file can be"));
    }
  }
  if (std::ferror(file.get())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  }
  return contents;
}

bool IsLowerHexSha256(absl::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Names become folder names, URL path segments and Prometheus label values: keep them to a
// set that is safe in all three.
bool IsValidName(absl::string_view name) {
  if (name.empty() || name.front() == '.' || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

template <size_t N>
bool OneOf(absl::string_view value, const absl::string_view (&allowed)[N]) {
  return std::find(std::begin(allowed), std::end(allowed), value) != std::end(allowed);
}

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

// The folder's own name, whatever the spelling of `dir` ("models/voc/", "models/voc/.").
std::string FolderName(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(fs::path(dir), ec).lexically_normal();
  if (ec) p = fs::path(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

std::string ConfigPath(const std::string& dir) {
  return (fs::path(dir) / kConfigFileName).string();
}

// Appends one problem per broken field of `config`; each starts with the field's path.
void CollectProblems(const v1::ModelConfig& config, std::vector<std::string>& problems) {
  auto add = [&problems](auto&&... parts) { problems.push_back(absl::StrCat(parts...)); };

  if (!IsValidName(config.name())) {
    add("name ", Quoted(config.name()),
        " must be non-empty and use only letters, digits, '_', '-' and '.' (not first)");
  }

  const v1::WeightsConfig& weights = config.weights();
  const bool torchscript = weights.format() == v1::WEIGHTS_FORMAT_TORCHSCRIPT;

  // Architecture.
  const v1::Architecture& arch = config.architecture();
  if (!torchscript && !OneOf(arch.backbone(), kBackbones)) {
    add("architecture.backbone ", Quoted(arch.backbone()), " is not one of ",
        absl::StrJoin(kBackbones, ", "),
        " (any name is accepted only with weights.format TORCHSCRIPT)");
  }
  const bool classes_ok = arch.num_classes() >= 1 && arch.num_classes() <= kMaxClasses;
  if (!classes_ok) {
    add("architecture.num_classes must be in [1, ", kMaxClasses, "] (label maps are uint8), got ",
        arch.num_classes());
  }
  if (arch.output_stride() != 0 && arch.output_stride() != 8 && arch.output_stride() != 16) {
    add("architecture.output_stride must be 8, 16 or 0 (the backbone's default), got ",
        arch.output_stride());
  }
  // Written so that NaN fails too.
  if (!(arch.alpha() >= 0.0f && arch.alpha() <= 4.0f)) {
    add("architecture.alpha must be in [0, 4] (0 means 1.0), got ", arch.alpha());
  }
  if (!v1::Activation_IsValid(arch.activation())) {
    add("architecture.activation has unknown value ", arch.activation());
  }
  if (absl::StrContains(arch.logits_layer_name(), "/")) {
    add("architecture.logits_layer_name ", Quoted(arch.logits_layer_name()),
        " must be a Keras layer name, without '/'");
  }

  // Input.
  const v1::InputConfig& input = config.input();
  const bool height_ok = input.height() >= 1 && input.height() <= kMaxInputSide;
  const bool width_ok = input.width() >= 1 && input.width() <= kMaxInputSide;
  if (!height_ok) {
    add("input.height must be in [1, ", kMaxInputSide, "], got ", input.height());
  }
  if (!width_ok) {
    add("input.width must be in [1, ", kMaxInputSide, "], got ", input.width());
  }
  if (!v1::ResizeMode_IsValid(input.resize())) {
    add("input.resize has unknown value ", input.resize());
  }
  if (!v1::Normalization_IsValid(input.normalization())) {
    add("input.normalization has unknown value ", input.normalization());
  }

  // Tiling: patches are square (DigiPathAI's are, and one stride serves both axes), so the
  // input must be square and the stride at most its side; a larger stride would leave gaps.
  // The input is consulted only when it is itself valid, so one mistake is reported once.
  if (config.has_tiling()) {
    const int stride = config.tiling().stride();
    if (height_ok && width_ok && input.height() != input.width()) {
      add("tiling needs a square input (patches are square), got input ", input.height(), "x",
          input.width());
    } else if (height_ok && width_ok && (stride < 1 || stride > input.height())) {
      add("tiling.stride must be in [1, ", input.height(),
          "] (at most the patch side, or patches leave gaps), got ", stride);
    } else if (stride < 1) {
      add("tiling.stride must be positive, got ", stride);
    }
  }

  // Classes and colours.
  if (classes_ok && config.class_names_size() != arch.num_classes()) {
    add("class_names has ", config.class_names_size(), " entries but architecture.num_classes is ",
        arch.num_classes(), "; give one name per class, in class-id order");
  }
  for (int i = 0; i < config.class_names_size(); ++i) {
    const std::string& name = config.class_names(i);
    if (name.empty()) add("class_names[", i, "] is empty");
    for (int j = 0; j < i; ++j) {
      if (config.class_names(j) == name && !name.empty()) {
        add("class_names[", i, "] ", Quoted(name), " repeats class_names[", j, "]");
        break;
      }
    }
  }
  if (classes_ok && config.palette_size() > 0 && config.palette_size() < arch.num_classes()) {
    add("palette has ", config.palette_size(), " colours but there are ", arch.num_classes(),
        " classes; give at least one per class, or use palette_preset");
  }
  for (int i = 0; i < config.palette_size(); ++i) {
    const v1::Color& c = config.palette(i);
    if (c.r() > 255 || c.g() > 255 || c.b() > 255) {
      add("palette[", i, "] (", c.r(), ", ", c.g(), ", ", c.b(), ") has a component above 255");
    }
  }
  if (!config.palette_preset().empty() && !OneOf(config.palette_preset(), kPalettePresets)) {
    add("palette_preset ", Quoted(config.palette_preset()), " is not one of \"\", ",
        absl::StrJoin(kPalettePresets, ", ",
                      [](std::string* out, absl::string_view s) { out->append(Quoted(s)); }));
  }

  // Weights.
  if (weights.format() == v1::WEIGHTS_FORMAT_UNSPECIFIED) {
    add("weights.format must be set: WEIGHTS_FORMAT_KERAS_H5, WEIGHTS_FORMAT_NATIVE, "
        "WEIGHTS_FORMAT_TORCHSCRIPT or WEIGHTS_FORMAT_RANDOM");
  } else if (!v1::WeightsFormat_IsValid(weights.format())) {
    add("weights.format has unknown value ", weights.format());
  }
  if (weights.format() != v1::WEIGHTS_FORMAT_RANDOM) {
    const fs::path file(weights.file());
    if (weights.file().empty()) {
      add("weights.file must be set unless weights.format is RANDOM");
    } else if (file.is_absolute() ||
               std::any_of(file.begin(), file.end(), [](const fs::path& p) { return p == ".."; })) {
      // Relative and inside the folder: a weight set is a self-contained, movable folder.
      add("weights.file ", Quoted(weights.file()),
          " must be a path inside the weight set's folder (relative, no '..')");
    }
  }
  if (!weights.sha256().empty() && !IsLowerHexSha256(weights.sha256())) {
    add("weights.sha256 must be empty or 64 lower-case hex digits, got ", Quoted(weights.sha256()));
  }
  if (!weights.url().empty() && !absl::StartsWith(weights.url(), "https://") &&
      !absl::StartsWith(weights.url(), "http://") && !absl::StartsWith(weights.url(), "file://")) {
    add("weights.url ", Quoted(weights.url()), " must start with https://, http:// or file://");
  }

  // Batching: zero means "default", negative values have no meaning.
  const v1::BatchingConfig& batching = config.batching();
  if (batching.max_batch_size() < 0) {
    add("batching.max_batch_size must not be negative, got ", batching.max_batch_size());
  }
  if (batching.max_queue_delay_micros() < 0) {
    add("batching.max_queue_delay_micros must not be negative, got ",
        batching.max_queue_delay_micros());
  }
  if (batching.max_queue_size() < 0) {
    add("batching.max_queue_size must not be negative, got ", batching.max_queue_size());
  }
  if (batching.default_timeout_micros() < 0) {
    add("batching.default_timeout_micros must not be negative, got ",
        batching.default_timeout_micros());
  }

  if (!v1::Precision_IsValid(config.precision())) {
    add("precision has unknown value ", config.precision());
  }
}

void FillDefaults(v1::ModelConfig& config) {
  v1::BatchingConfig& batching = *config.mutable_batching();
  if (batching.max_batch_size() == 0) batching.set_max_batch_size(kDefaultMaxBatchSize);
  if (batching.max_queue_size() == 0) batching.set_max_queue_size(kDefaultMaxQueueSize);
  if (batching.default_timeout_micros() == 0) {
    batching.set_default_timeout_micros(kDefaultTimeoutMicros);
  }
  v1::InputConfig& input = *config.mutable_input();
  if (input.resize() == v1::RESIZE_MODE_UNSPECIFIED) input.set_resize(v1::RESIZE_MODE_LETTERBOX);
  if (input.normalization() == v1::NORMALIZATION_UNSPECIFIED) {
    input.set_normalization(v1::NORMALIZATION_MINUS_ONE_TO_ONE);
  }
  // Materialise the colours so every consumer (overlay, clients listing models) sees the
  // same ones without knowing the preset rules.
  if (config.palette_size() == 0) {
    const std::vector<Rgb> colours = ResolvePalette(config);
    for (int i = 0; i < config.architecture().num_classes(); ++i) {
      v1::Color* c = config.add_palette();
      c->set_r(colours[i][0]);
      c->set_g(colours[i][1]);
      c->set_b(colours[i][2]);
    }
  }
}

// The expected hash of a weights file: the config's, else the FILE.sha256 that
// scripts/fetch_weights.sh records when the config has none. `source` says where it came from.
struct ExpectedHash {
  std::string sha256;  // empty: nothing to check
  std::string source;
};

absl::StatusOr<ExpectedHash> FindExpectedHash(const RepositoryEntry& entry,
                                              const v1::WeightsConfig& weights,
                                              const std::string& weights_path) {
  if (!weights.sha256().empty()) {
    return ExpectedHash{weights.sha256(), ConfigPath(entry.dir) + " (weights.sha256)"};
  }
  const std::string sidecar = weights_path + ".sha256";
  absl::StatusOr<std::string> text = ReadSmallFile(sidecar, 4096);
  if (absl::IsNotFound(text.status())) return ExpectedHash{};
  if (!text.ok()) return text.status();
  // sha256sum's format, "<hex>  <file>", so that `sha256sum -c` works on it too.
  const absl::string_view hash = absl::StripAsciiWhitespace(*text).substr(0, 64);
  if (!IsLowerHexSha256(hash)) {
    return absl::FailedPreconditionError(
        absl::StrCat(sidecar,
                     " does not start with a lower-case hex sha256; delete it and run "
                     "scripts/fetch_weights.sh ",
                     entry.name));
  }
  return ExpectedHash{std::string(hash), sidecar};
}

}  // namespace

absl::Status ValidateModelConfig(const v1::ModelConfig& config, const std::string& source) {
  std::vector<std::string> problems;
  CollectProblems(config, problems);
  if (problems.empty()) return absl::OkStatus();
  // The file once, then every problem: fixing a config should take one round trip.
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", absl::StrJoin(problems, "; ")));
}

absl::StatusOr<v1::ModelConfig> LoadModelConfig(const std::string& weight_set_dir) {
  const std::string path = ConfigPath(weight_set_dir);
  absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxConfigBytes);
  if (!text.ok()) return text.status();

  ConfigErrorCollector errors(path);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  v1::ModelConfig config;
  if (!parser.ParseFromString(*text, &config)) {
    if (errors.errors().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid ModelConfig"));
    }
    return absl::InvalidArgumentError(absl::StrJoin(errors.errors(), "; "));
  }

  std::vector<std::string> problems;
  const std::string folder = FolderName(weight_set_dir);
  if (config.name() != folder) {
    // Requests name the folder; a differing name would make the weight set unreachable.
    problems.push_back(absl::StrCat("name ", Quoted(config.name()), " must equal the folder name ",
                                    Quoted(folder)));
  }
  CollectProblems(config, problems);
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", absl::StrJoin(problems, "; ")));
  }
  FillDefaults(config);
  return config;
}

absl::StatusOr<std::vector<RepositoryEntry>> ScanModelRepository(const std::string& repository) {
  std::error_code ec;
  const fs::file_status st = fs::status(repository, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::ErrnoToStatus(ec.value(),
                               absl::StrCat("cannot stat model repository ", repository));
  }
  if (!fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat("model repository ", repository, " does not exist"));
  }
  if (!fs::is_directory(st)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model repository ", repository, " is not a directory"));
  }
  std::vector<std::string> names;
  // increment(ec), not a range-for: the iterator's operator++ reports errors by throwing.
  for (fs::directory_iterator it(repository, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // Hidden folders (.git, editors' state) are never weight sets.
    if (name.empty() || name.front() == '.') continue;
    std::error_code child_ec;
    if (!it->is_directory(child_ec)) continue;
    if (!fs::is_regular_file(it->path() / kConfigFileName, child_ec)) continue;
    names.push_back(name);
  }
  if (ec) {
    return absl::ErrnoToStatus(ec.value(),
                               absl::StrCat("cannot list model repository ", repository));
  }
  std::sort(names.begin(), names.end());

  std::vector<RepositoryEntry> entries;
  entries.reserve(names.size());
  for (const std::string& name : names) {
    RepositoryEntry entry;
    entry.name = name;
    entry.dir = (fs::path(repository) / name).string();
    entry.config = LoadModelConfig(entry.dir);
    if (entry.config.ok() && entry.config->weights().format() != v1::WEIGHTS_FORMAT_RANDOM) {
      fs::path weights = fs::path(entry.dir) / entry.config->weights().file();
      std::error_code abs_ec;
      fs::path absolute = fs::absolute(weights, abs_ec);
      entry.weights_path = (abs_ec ? weights : absolute).lexically_normal().string();
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

absl::Status CheckWeightsFile(const RepositoryEntry& entry) {
  if (!entry.config.ok()) return entry.config.status();
  const v1::WeightsConfig& weights = entry.config->weights();
  if (weights.format() == v1::WEIGHTS_FORMAT_RANDOM) return absl::OkStatus();

  std::string path = entry.weights_path;
  if (path.empty()) path = (fs::path(entry.dir) / weights.file()).lexically_normal().string();

  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) {
    // Weights are never in git (hundreds of MB); say how to get them.
    if (weights.url().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("weights file ", path, " is missing: put the file there (",
                       ConfigPath(entry.dir), " gives no weights.url to fetch it from)"));
    }
    return absl::FailedPreconditionError(absl::StrCat("weights file ", path,
                                                      " is missing: run scripts/fetch_weights.sh ",
                                                      entry.name, " (or put the file there)"));
  }
  if (!fs::is_regular_file(st)) {
    return absl::FailedPreconditionError(
        absl::StrCat("weights file ", path, " is not a regular file"));
  }

  absl::StatusOr<ExpectedHash> expected = FindExpectedHash(entry, weights, path);
  if (!expected.ok()) return expected.status();
  if (expected->sha256.empty()) return absl::OkStatus();

  absl::StatusOr<std::string> actual = Sha256File(path);
  if (!actual.ok()) return actual.status();
  if (*actual != expected->sha256) {
    // DATA_LOSS, not FAILED_PRECONDITION: the bytes are wrong (truncated download, replaced
    // file), and loading them anyway would serve a different model under this name.
    return absl::DataLossError(absl::StrCat(
        "weights file ", path, " has sha256 ", *actual, " but ", expected->source, " expects ",
        expected->sha256, ": delete the file and run scripts/fetch_weights.sh ", entry.name));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a file"));
  }
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (file == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));

  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("OpenSSL could not start a sha256 digest");
  }
  // Streamed: weight files are hundreds of MB and must not be read into memory at once.
  std::vector<unsigned char> buffer(kHashChunkBytes);
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0) {
    if (EVP_DigestUpdate(ctx.get(), buffer.data(), n) != 1) {
      return absl::InternalError("OpenSSL failed while hashing " + path);
    }
  }
  if (std::ferror(file.get())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  }

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1) {
    return absl::InternalError("OpenSSL could not finish the sha256 digest of " + path);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * digest_len);
  for (unsigned int i = 0; i < digest_len; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

std::vector<Rgb> PascalVocPalette() {
  // Class id i's bits, taken three at a time from the lowest, fill r, g and b from their
  // most significant bit down: 1 -> (128,0,0), 2 -> (0,128,0), 3 -> (128,128,0), ...
  std::vector<Rgb> palette(256);
  for (int i = 0; i < 256; ++i) {
    int id = i;
    int r = 0, g = 0, b = 0;
    for (int shift = 7; shift >= 0 && id > 0; --shift, id >>= 3) {
      r |= (id & 1) << shift;
      g |= ((id >> 1) & 1) << shift;
      b |= ((id >> 2) & 1) << shift;
    }
    palette[i] = {static_cast<uint8_t>(r), static_cast<uint8_t>(g), static_cast<uint8_t>(b)};
  }
  return palette;
}

std::vector<Rgb> CityscapesPalette() {
  // Train ids 0-18, colours of cityscapesScripts' label table.
  return {
      {128, 64, 128},   // road
      {244, 35, 232},   // sidewalk
      {70, 70, 70},     // building
      {102, 102, 156},  // wall
      {190, 153, 153},  // fence
      {153, 153, 153},  // pole
      {250, 170, 30},   // traffic light
      {220, 220, 0},    // traffic sign
      {107, 142, 35},   // vegetation
      {152, 251, 152},  // terrain
      {70, 130, 180},   // sky
      {220, 20, 60},    // person
      {255, 0, 0},      // rider
      {0, 0, 142},      // car
      {0, 0, 70},       // truck
      {0, 60, 100},     // bus
      {0, 80, 100},     // train
      {0, 0, 230},      // motorcycle
      {119, 11, 32},    // bicycle
  };
}

std::vector<Rgb> ResolvePalette(const v1::ModelConfig& config) {
  std::vector<Rgb> palette;
  if (config.palette_size() > 0) {
    for (const v1::Color& c : config.palette()) {
      // Validation rejects components above 255; clamp rather than wrap for unvalidated input.
      palette.push_back({static_cast<uint8_t>(std::min<uint32_t>(c.r(), 255)),
                         static_cast<uint8_t>(std::min<uint32_t>(c.g(), 255)),
                         static_cast<uint8_t>(std::min<uint32_t>(c.b(), 255))});
    }
  } else if (config.palette_preset() == "cityscapes") {
    palette = CityscapesPalette();
  } else {
    palette = PascalVocPalette();
  }
  // Too few colours (a preset smaller than the class count, an unvalidated config): the
  // missing classes take Pascal VOC's colours, which are distinct for all 256 ids.
  const int num_classes = std::max(config.architecture().num_classes(), 0);
  if (static_cast<int>(palette.size()) < num_classes) {
    const std::vector<Rgb> voc = PascalVocPalette();
    for (int i = static_cast<int>(palette.size()); i < num_classes; ++i) {
      palette.push_back(voc[i % voc.size()]);
    }
  }
  return palette;
}

}  // namespace deeplab

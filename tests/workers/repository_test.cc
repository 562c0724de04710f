// The model repository: the shipped configs, config errors as a user meets them, weights
// file checks, sha256 and the colour maps.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "workers/repository/model_repository.h"

namespace deeplab {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAbcSha256[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// A small valid config; tests break one thing at a time with absl::StrReplaceAll.
constexpr char kGoodConfig[] = R"config(# a test weight set
name: "NAME"
architecture {
  backbone: "xception65"
  num_classes: 2
  output_stride: 16
}
input {
  height: 256
  width: 256
}
tiling {
  stride: 128
}
class_names: "background"
class_names: "tumor"
weights {
  format: WEIGHTS_FORMAT_KERAS_H5
  file: "w.h5"
  url: "https://example.com/w.h5"
}
)config";

// As std::string: gMock prints this Abseil's string_view character by character.
std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::string ShippedModels() { return std::string(DEEPLAB_SOURCE_DIR) + "/models"; }

void WriteFile(const fs::path& path, const std::string& contents) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << contents;
  ASSERT_TRUE(out.good()) << path;
}

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TEST_TMPDIR");
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    // Parameterized test names hold '/': keep the folder a single level.
    const std::string test_name = absl::StrReplaceAll(info->name(), {{"/", "_"}});
    root_ = fs::path(base != nullptr ? base : "/tmp") /
            absl::StrCat("deeplab_repository_", test_name, "_", ::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Writes <root>/<name>/config.pbtxt with NAME in `text` replaced by `name`; returns the folder.
  std::string WeightSet(const std::string& name, const std::string& text) {
    const fs::path dir = root_ / name;
    WriteFile(dir / "config.pbtxt", absl::StrReplaceAll(text, {{"NAME", name}}));
    return dir.string();
  }
  // kGoodConfig with `from` replaced by `to`, loaded from a fresh folder.
  absl::StatusOr<v1::ModelConfig> LoadWith(const std::string& from, const std::string& to) {
    const std::string text = absl::StrReplaceAll(kGoodConfig, {{from, to}});
    EXPECT_NE(text, kGoodConfig) << "'" << from << "' is not in the base config";
    return LoadModelConfig(WeightSet("set", text));
  }

  RepositoryEntry EntryFor(const std::string& dir) {
    RepositoryEntry entry;
    entry.name = fs::path(dir).filename().string();
    entry.dir = dir;
    entry.config = LoadModelConfig(dir);
    EXPECT_TRUE(entry.config.ok()) << entry.config.status();
    if (entry.config.ok()) {
      entry.weights_path = (fs::path(dir) / entry.config->weights().file()).string();
    }
    return entry;
  }

  fs::path root_;
};

// --- The shipped repository ---------------------------------------------------------------

TEST(ShippedModelsTest, EveryConfigLoadsAndValidates) {
  int count = 0;
  for (const fs::directory_entry& child : fs::directory_iterator(ShippedModels())) {
    if (!fs::exists(child.path() / "config.pbtxt")) continue;
    ++count;
    SCOPED_TRACE(child.path().string());
    absl::StatusOr<v1::ModelConfig> config = LoadModelConfig(child.path().string());
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_TRUE(ValidateModelConfig(*config, child.path().string()).ok());
    EXPECT_EQ(config->name(), child.path().filename().string());
    EXPECT_GE(config->palette_size(), config->architecture().num_classes());
    EXPECT_GT(config->batching().max_batch_size(), 0);
    // Weights that are not in the repository (the published ones) must say where they come
    // from; the demo's are committed beside its config.
    if (!fs::exists(child.path() / config->weights().file())) {
      EXPECT_FALSE(config->weights().url().empty()) << "fetch_weights.sh needs a url";
    }
  }
  EXPECT_GE(count, 7);
}

TEST(ShippedModelsTest, ScanFindsThePublishedWeightSets) {
  absl::StatusOr<std::vector<RepositoryEntry>> entries = ScanModelRepository(ShippedModels());
  ASSERT_TRUE(entries.ok()) << entries.status();
  std::set<std::string> names;
  for (const RepositoryEntry& entry : *entries) {
    EXPECT_TRUE(entry.config.ok()) << entry.name << ": " << entry.config.status();
    names.insert(entry.name);
    // Weights are not in git: either fetched and intact, or missing with a way to fetch them.
    const absl::Status weights = CheckWeightsFile(entry);
    if (!weights.ok()) {
      EXPECT_EQ(weights.code(), absl::StatusCode::kFailedPrecondition) << weights;
      EXPECT_THAT(Message(weights), HasSubstr("run scripts/fetch_weights.sh " + entry.name));
    }
  }
  for (const char* name :
       {"pascal_voc", "pascal_voc_mobilenetv2", "cityscapes", "cityscapes_mobilenetv2",
        "pathology_digestpath", "pathology_paip", "pathology_camelyon"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
}

TEST(ShippedModelsTest, PublishedFacts) {
  absl::StatusOr<v1::ModelConfig> voc = LoadModelConfig(ShippedModels() + "/pascal_voc");
  ASSERT_TRUE(voc.ok()) << voc.status();
  EXPECT_EQ(voc->architecture().num_classes(), 21);
  EXPECT_TRUE(voc->architecture().align_corners());
  EXPECT_EQ(voc->input().normalization(), v1::NORMALIZATION_MINUS_ONE_TO_ONE);
  EXPECT_EQ(voc->input().resize(), v1::RESIZE_MODE_LETTERBOX);
  EXPECT_EQ(voc->class_names(15), "person");

  absl::StatusOr<v1::ModelConfig> city = LoadModelConfig(ShippedModels() + "/cityscapes");
  ASSERT_TRUE(city.ok()) << city.status();
  EXPECT_EQ(city->architecture().num_classes(), 19);
  EXPECT_EQ(city->class_names(18), "bicycle");
  const Rgb road{128, 64, 128};
  EXPECT_EQ(ResolvePalette(*city)[0], road);

  for (const char* name : {"pathology_digestpath", "pathology_paip", "pathology_camelyon"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<v1::ModelConfig> path = LoadModelConfig(ShippedModels() + "/" + name);
    ASSERT_TRUE(path.ok()) << path.status();
    EXPECT_EQ(path->architecture().num_classes(), 2);
    EXPECT_EQ(path->architecture().logits_layer_name(), "custom_logits_semantic");
    EXPECT_EQ(path->architecture().activation(), v1::ACTIVATION_SOFTMAX);
    EXPECT_TRUE(path->architecture().align_corners());
    EXPECT_EQ(path->input().normalization(), v1::NORMALIZATION_DIGIPATHAI);
    EXPECT_EQ(path->input().height(), 256);
    EXPECT_EQ(path->tiling().stride(), 128);
    EXPECT_THAT(path->weights().url(),
                HasSubstr("github.com/haranrk/DigiPathAI/releases/download/models/"));
  }
}

// --- Loading and validation -----------------------------------------------------------

TEST_F(RepositoryTest, GoodConfigGetsDefaults) {
  absl::StatusOr<v1::ModelConfig> config = LoadModelConfig(WeightSet("good", kGoodConfig));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "good");
  EXPECT_EQ(config->batching().max_batch_size(), kDefaultMaxBatchSize);
  EXPECT_EQ(config->batching().max_queue_size(), kDefaultMaxQueueSize);
  EXPECT_EQ(config->batching().default_timeout_micros(), kDefaultTimeoutMicros);
  EXPECT_EQ(config->batching().max_queue_delay_micros(), 0);  // 0 is meaningful: send at once
  EXPECT_EQ(config->input().resize(), v1::RESIZE_MODE_LETTERBOX);
  EXPECT_EQ(config->input().normalization(), v1::NORMALIZATION_MINUS_ONE_TO_ONE);
  // No palette, no preset: Pascal VOC's colours, one per class.
  ASSERT_EQ(config->palette_size(), 2);
  EXPECT_EQ(config->palette(1).r(), 128u);
  EXPECT_EQ(config->palette(1).g(), 0u);
  // A loaded config is itself valid: defaults never break validation.
  EXPECT_TRUE(ValidateModelConfig(*config, "loaded").ok());
}

TEST_F(RepositoryTest, FolderPathSpellingsAllWork) {
  const std::string dir = WeightSet("spelled", kGoodConfig);
  EXPECT_TRUE(LoadModelConfig(dir + "/").ok());
  EXPECT_TRUE(LoadModelConfig(dir + "/.").ok());
}

TEST_F(RepositoryTest, MissingConfigIsNotFound) {
  fs::create_directories(root_ / "empty");
  absl::StatusOr<v1::ModelConfig> config = LoadModelConfig((root_ / "empty").string());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(config.status()), HasSubstr("empty/config.pbtxt"));
}

TEST_F(RepositoryTest, SyntaxErrorNamesFileLineAndColumn) {
  // Line 3 is "architecture {"; the missing ':' makes the value on line 4 an error.
  absl::StatusOr<v1::ModelConfig> config =
      LoadWith("backbone: \"xception65\"", "backbone \"xception65\"");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string file = (root_ / "set" / "config.pbtxt").string();
  EXPECT_THAT(Message(config.status()), HasSubstr(file + ":4:12: "));
}

TEST_F(RepositoryTest, UnknownFieldIsNamed) {
  absl::StatusOr<v1::ModelConfig> config =
      LoadWith("  output_stride: 16\n", "  outptu_stride: 16\n");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()), AllOf(HasSubstr("set/config.pbtxt:6:"),
                                              HasSubstr("no field named \"outptu_stride\"")));
}

// Protobuf places this error at the token after the bad value, so only the file is pinned.
TEST_F(RepositoryTest, UnknownEnumValueIsNamed) {
  absl::StatusOr<v1::ModelConfig> config =
      LoadWith("WEIGHTS_FORMAT_KERAS_H5", "WEIGHTS_FORMAT_KERAS");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()),
              AllOf(HasSubstr("set/config.pbtxt:"),
                    HasSubstr("Unknown enumeration value of \"WEIGHTS_FORMAT_KERAS\"")));
}

TEST_F(RepositoryTest, NameMustMatchFolder) {
  absl::StatusOr<v1::ModelConfig> config = LoadWith("name: \"NAME\"", "name: \"other\"");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()),
              AllOf(HasSubstr("set/config.pbtxt: "),
                    HasSubstr("name \"other\" must equal the folder name \"set\"")));
}

// Each broken field: the message names the file and the field's path.
struct BrokenCase {
  std::string label;
  std::string from;
  std::string to;
  std::string expected;  // a substring of the message
};

void PrintTo(const BrokenCase& c, std::ostream* os) { *os << c.label; }

class BrokenConfigTest : public RepositoryTest, public ::testing::WithParamInterface<BrokenCase> {};

TEST_P(BrokenConfigTest, IsRejectedNamingFileAndField) {
  const BrokenCase& c = GetParam();
  absl::StatusOr<v1::ModelConfig> config = LoadWith(c.from, c.to);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      Message(config.status()),
      AllOf(HasSubstr((root_ / "set" / "config.pbtxt").string() + ": "), HasSubstr(c.expected)));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, BrokenConfigTest,
    ::testing::Values(
        BrokenCase{"num_classes_0", "num_classes: 2", "num_classes: 0",
                   "architecture.num_classes must be in [1, 255]"},
        BrokenCase{"num_classes_256", "num_classes: 2", "num_classes: 256",
                   "architecture.num_classes must be in [1, 255] (label maps are uint8), got 256"},
        BrokenCase{"class_names_count", "class_names: \"tumor\"\n", "",
                   "class_names has 1 entries but architecture.num_classes is 2"},
        BrokenCase{"class_names_repeat", "\"tumor\"", "\"background\"",
                   "class_names[1] \"background\" repeats class_names[0]"},
        BrokenCase{"backbone", "\"xception65\"", "\"xception71\"",
                   "architecture.backbone \"xception71\" is not one of xception65, mobilenetv2"},
        BrokenCase{"output_stride", "output_stride: 16", "output_stride: 32",
                   "architecture.output_stride must be 8, 16 or 0"},
        BrokenCase{"alpha", "output_stride: 16", "alpha: 4.5",
                   "architecture.alpha must be in [0, 4]"},
        BrokenCase{"height_0", "height: 256", "height: 0",
                   "input.height must be in [1, 4096], got 0"},
        BrokenCase{"width_big", "width: 256", "width: 5000",
                   "input.width must be in [1, 4096], got 5000"},
        BrokenCase{"tiling_stride_0", "stride: 128", "stride: 0",
                   "tiling.stride must be in [1, 256]"},
        BrokenCase{"tiling_stride_gaps", "stride: 128", "stride: 300",
                   "tiling.stride must be in [1, 256] (at most the patch side, or patches leave "
                   "gaps), got 300"},
        BrokenCase{"tiling_not_square", "width: 256", "width: 512",
                   "tiling needs a square input (patches are square), got input 256x512"},
        BrokenCase{"sha_upper", "url: ", "sha256: \"" + std::string(64, 'A') + "\"\n  url: ",
                   "weights.sha256 must be empty or 64 lower-case hex digits"},
        BrokenCase{"sha_short", "url: ", "sha256: \"abc\"\n  url: ",
                   "weights.sha256 must be empty or 64 lower-case hex digits, got \"abc\""},
        BrokenCase{"format_unset", "  format: WEIGHTS_FORMAT_KERAS_H5\n", "",
                   "weights.format must be set"},
        BrokenCase{"file_unset", "  file: \"w.h5\"\n", "", "weights.file must be set unless"},
        BrokenCase{"file_escapes", "\"w.h5\"", "\"../other/w.h5\"",
                   "weights.file \"../other/w.h5\" must be a path inside the weight set's folder"},
        BrokenCase{"url_scheme", "https://example.com/w.h5", "ftp://example.com/w.h5",
                   "weights.url \"ftp://example.com/w.h5\" must start with"},
        BrokenCase{"palette_short", "class_names: \"tumor\"\n",
                   "class_names: \"tumor\"\npalette { r: 1 }\n",
                   "palette has 1 colours but there are 2 classes"},
        BrokenCase{"palette_component", "class_names: \"tumor\"\n",
                   "class_names: \"tumor\"\npalette { r: 1 }\npalette { g: 256 }\n",
                   "palette[1] (0, 256, 0) has a component above 255"},
        BrokenCase{"palette_preset", "class_names: \"tumor\"\n",
                   "class_names: \"tumor\"\npalette_preset: \"ade20k\"\n",
                   "palette_preset \"ade20k\" is not one of \"\", \"pascal_voc\", \"cityscapes\""},
        BrokenCase{"batch_negative", "class_names: \"tumor\"\n",
                   "class_names: \"tumor\"\nbatching { max_batch_size: -1 }\n",
                   "batching.max_batch_size must not be negative, got -1"},
        BrokenCase{"delay_negative", "class_names: \"tumor\"\n",
                   "class_names: \"tumor\"\nbatching { max_queue_delay_micros: -5 }\n",
                   "batching.max_queue_delay_micros must not be negative"},
        BrokenCase{"bad_name", "name: \"NAME\"", "name: \"set/..\"",
                   "name \"set/..\" must be non-empty and use only letters"}),
    [](const ::testing::TestParamInfo<BrokenCase>& info) { return info.param.label; });

TEST_F(RepositoryTest, EveryProblemIsReportedAtOnce) {
  std::string text = absl::StrReplaceAll(kGoodConfig, {{"height: 256", "height: 0"},
                                                       {"output_stride: 16", "output_stride: 4"},
                                                       {"stride: 128", "stride: -1"}});
  absl::StatusOr<v1::ModelConfig> config = LoadModelConfig(WeightSet("many", text));
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(Message(config.status()),
              AllOf(HasSubstr("many/config.pbtxt: architecture.output_stride"),
                    HasSubstr("; input.height must be in [1, 4096], got 0"),
                    HasSubstr("; tiling.stride must be positive, got -1"),
                    // The bad height is reported once, not again as a non-square input.
                    Not(HasSubstr("square"))));
}

TEST_F(RepositoryTest, RandomWeightsNeedNoFile) {
  absl::StatusOr<v1::ModelConfig> config = LoadWith(
      "  format: WEIGHTS_FORMAT_KERAS_H5\n  file: \"w.h5\"\n", "  format: WEIGHTS_FORMAT_RANDOM\n");
  EXPECT_TRUE(config.ok()) << config.status();
}

TEST_F(RepositoryTest, TorchScriptAcceptsAnyBackboneName) {
  // The archive is the network: the backbone name is informational only.
  absl::StatusOr<v1::ModelConfig> config = LoadModelConfig(WeightSet(
      "ts",
      absl::StrReplaceAll(kGoodConfig, {{"\"xception65\"", "\"my_unet\""},
                                        {"WEIGHTS_FORMAT_KERAS_H5", "WEIGHTS_FORMAT_TORCHSCRIPT"},
                                        {"\"w.h5\"", "\"m.pt\""}})));
  EXPECT_TRUE(config.ok()) << config.status();
}

TEST_F(RepositoryTest, ValidateNamesTheSourceForConfigsBuiltInCode) {
  v1::ModelConfig config;
  config.set_name("in_code");
  config.mutable_architecture()->set_backbone("mobilenetv2");
  config.mutable_architecture()->set_num_classes(1);
  config.mutable_input()->set_height(64);
  config.mutable_input()->set_width(32);
  config.add_class_names("thing");
  config.mutable_weights()->set_format(v1::WEIGHTS_FORMAT_RANDOM);
  EXPECT_TRUE(ValidateModelConfig(config, "built in code").ok());

  config.mutable_architecture()->set_activation(static_cast<v1::Activation>(9));
  config.mutable_architecture()->set_alpha(-1.0f);
  const absl::Status status = ValidateModelConfig(config, "built in code");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), AllOf(HasSubstr("built in code: "),
                                     HasSubstr("architecture.activation has unknown value 9"),
                                     HasSubstr("architecture.alpha must be in [0, 4]")));
}

TEST_F(RepositoryTest, OversizedConfigIsRefused) {
  const std::string dir = WeightSet("huge", kGoodConfig);
  WriteFile(fs::path(dir) / "config.pbtxt", std::string(2 << 20, '#'));
  EXPECT_EQ(LoadModelConfig(dir).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- Scanning a repository ------------------------------------------------------------

TEST_F(RepositoryTest, ScanReportsGoodAndBrokenEntriesSorted) {
  WeightSet("zeta", kGoodConfig);
  WeightSet("alpha", kGoodConfig);
  WeightSet("broken", absl::StrReplaceAll(kGoodConfig, {{"num_classes: 2", "num_classes: 0"}}));
  WeightSet("random", absl::StrReplaceAll(kGoodConfig,
                                          {{"WEIGHTS_FORMAT_KERAS_H5", "WEIGHTS_FORMAT_RANDOM"}}));
  fs::create_directories(root_ / "no_config");             // not a weight set
  WeightSet(".hidden", kGoodConfig);                       // never a weight set
  WriteFile(root_ / "README.md", "a file, not a folder");  // ignored

  absl::StatusOr<std::vector<RepositoryEntry>> entries = ScanModelRepository(root_.string());
  ASSERT_TRUE(entries.ok()) << entries.status();
  std::vector<std::string> names;
  for (const RepositoryEntry& e : *entries) names.push_back(e.name);
  EXPECT_THAT(names, ElementsAre("alpha", "broken", "random", "zeta"));

  const RepositoryEntry& alpha = (*entries)[0];
  ASSERT_TRUE(alpha.config.ok()) << alpha.config.status();
  EXPECT_EQ(alpha.dir, (root_ / "alpha").string());
  EXPECT_TRUE(fs::path(alpha.weights_path).is_absolute());
  EXPECT_EQ(fs::path(alpha.weights_path), fs::absolute(root_ / "alpha" / "w.h5"));

  const RepositoryEntry& broken = (*entries)[1];
  EXPECT_EQ(broken.config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(broken.config.status()), HasSubstr("architecture.num_classes"));
  EXPECT_EQ(CheckWeightsFile(broken).code(), absl::StatusCode::kInvalidArgument);

  const RepositoryEntry& random = (*entries)[2];
  ASSERT_TRUE(random.config.ok());
  EXPECT_EQ(random.weights_path, "");
  EXPECT_TRUE(CheckWeightsFile(random).ok());
}

TEST_F(RepositoryTest, ScanOfMissingRepositoryIsNotFound) {
  EXPECT_EQ(ScanModelRepository((root_ / "nowhere").string()).status().code(),
            absl::StatusCode::kNotFound);
  WriteFile(root_ / "file", "x");
  EXPECT_EQ(ScanModelRepository((root_ / "file").string()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- Weights files --------------------------------------------------------------------

TEST_F(RepositoryTest, MissingWeightsSayHowToFetchThem) {
  const RepositoryEntry entry = EntryFor(WeightSet("fetchme", kGoodConfig));
  const absl::Status status = CheckWeightsFile(entry);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(status),
              AllOf(HasSubstr("weights file "), HasSubstr("fetchme/w.h5 is missing"),
                    HasSubstr("run scripts/fetch_weights.sh fetchme (or put the file there)")));
}

TEST_F(RepositoryTest, MissingWeightsWithoutUrlSayPutThemThere) {
  const RepositoryEntry entry = EntryFor(WeightSet(
      "local", absl::StrReplaceAll(kGoodConfig, {{"  url: \"https://example.com/w.h5\"\n", ""}})));
  const absl::Status status = CheckWeightsFile(entry);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(status),
              AllOf(HasSubstr("put the file there"), Not(HasSubstr("fetch_weights.sh"))));
}

TEST_F(RepositoryTest, WeightsWithoutAnyHashAreAccepted) {
  const std::string dir = WeightSet("nohash", kGoodConfig);
  WriteFile(fs::path(dir) / "w.h5", "abc");
  EXPECT_TRUE(CheckWeightsFile(EntryFor(dir)).ok());
}

TEST_F(RepositoryTest, PinnedSha256IsChecked) {
  const std::string pinned = absl::StrReplaceAll(
      kGoodConfig, {{"  url: ", absl::StrCat("  sha256: \"", kAbcSha256, "\"\n  url: ")}});
  const std::string dir = WeightSet("pinned", pinned);
  WriteFile(fs::path(dir) / "w.h5", "abc");
  EXPECT_TRUE(CheckWeightsFile(EntryFor(dir)).ok());

  WriteFile(fs::path(dir) / "w.h5", "abd");
  const absl::Status status = CheckWeightsFile(EntryFor(dir));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(status), AllOf(HasSubstr(kAbcSha256), HasSubstr("has sha256 a52d159f"),
                                     HasSubstr("config.pbtxt (weights.sha256)"),
                                     HasSubstr("run scripts/fetch_weights.sh pinned")));
}

TEST_F(RepositoryTest, RecordedSha256BesideTheFileIsChecked) {
  // What scripts/fetch_weights.sh writes when the config pins no hash.
  const std::string dir = WeightSet("recorded", kGoodConfig);
  WriteFile(fs::path(dir) / "w.h5", "abc");
  WriteFile(fs::path(dir) / "w.h5.sha256", absl::StrCat(kAbcSha256, "  w.h5\n"));
  EXPECT_TRUE(CheckWeightsFile(EntryFor(dir)).ok());

  WriteFile(fs::path(dir) / "w.h5", "tampered");
  absl::Status status = CheckWeightsFile(EntryFor(dir));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(status), AllOf(HasSubstr(kAbcSha256), HasSubstr("w.h5.sha256")));

  WriteFile(fs::path(dir) / "w.h5.sha256", "not a hash\n");
  status = CheckWeightsFile(EntryFor(dir));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(status), HasSubstr("delete it and run scripts/fetch_weights.sh recorded"));
}

TEST_F(RepositoryTest, WeightsPathIsDerivedWhenTheEntryHasNone) {
  const std::string dir = WeightSet("derived", kGoodConfig);
  WriteFile(fs::path(dir) / "w.h5", "abc");
  RepositoryEntry entry = EntryFor(dir);
  entry.weights_path.clear();
  EXPECT_TRUE(CheckWeightsFile(entry).ok());
}

// --- sha256 -----------------------------------------------------------------------------

TEST_F(RepositoryTest, Sha256OfKnownStrings) {
  WriteFile(root_ / "abc", "abc");
  absl::StatusOr<std::string> abc = Sha256File((root_ / "abc").string());
  ASSERT_TRUE(abc.ok()) << abc.status();
  EXPECT_EQ(*abc, kAbcSha256);

  WriteFile(root_ / "empty", "");
  EXPECT_EQ(Sha256File((root_ / "empty").string()).value_or(""), kEmptySha256);

  // FIPS 180-2's long message: a million 'a's.
  WriteFile(root_ / "million", std::string(1000000, 'a'));
  EXPECT_EQ(Sha256File((root_ / "million").string()).value_or(""),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_F(RepositoryTest, Sha256StreamsAcrossChunks) {
  // Several read chunks and a ragged end; compared with coreutils.
  std::string data(3 * (1 << 20) + 12345, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 131) % 251);
  const fs::path file = root_ / "big";
  WriteFile(file, data);
  const std::string cmd = "sha256sum '" + file.string() + "'";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char hex[65] = {};
  ASSERT_EQ(fread(hex, 1, 64, pipe), 64u);
  pclose(pipe);
  EXPECT_EQ(Sha256File(file.string()).value_or(""), std::string(hex));
}

TEST_F(RepositoryTest, Sha256OfMissingFileIsNotFound) {
  EXPECT_EQ(Sha256File((root_ / "nope").string()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(Sha256File(root_.string()).ok());
}

// --- Colour maps --------------------------------------------------------------------

TEST(PaletteTest, PascalVoc) {
  const std::vector<Rgb> voc = PascalVocPalette();
  ASSERT_EQ(voc.size(), 256u);
  EXPECT_EQ(voc[0], (Rgb{0, 0, 0}));
  EXPECT_EQ(voc[1], (Rgb{128, 0, 0}));
  EXPECT_EQ(voc[2], (Rgb{0, 128, 0}));
  EXPECT_EQ(voc[3], (Rgb{128, 128, 0}));
  EXPECT_EQ(voc[4], (Rgb{0, 0, 128}));
  EXPECT_EQ(voc[8], (Rgb{64, 0, 0}));
  EXPECT_EQ(voc[15], (Rgb{192, 128, 128}));   // person
  EXPECT_EQ(voc[255], (Rgb{224, 224, 192}));  // the "void" border colour of VOC label PNGs
  EXPECT_EQ(std::set<Rgb>(voc.begin(), voc.end()).size(), 256u) << "colours must be distinct";
}

TEST(PaletteTest, Cityscapes) {
  const std::vector<Rgb> city = CityscapesPalette();
  ASSERT_EQ(city.size(), 19u);
  EXPECT_EQ(city[0], (Rgb{128, 64, 128}));  // road
  EXPECT_EQ(city[1], (Rgb{244, 35, 232}));  // sidewalk
  EXPECT_EQ(city[11], (Rgb{220, 20, 60}));  // person
  EXPECT_EQ(city[18], (Rgb{119, 11, 32}));  // bicycle
}

TEST(PaletteTest, ResolveFollowsPaletteThenPresetThenVoc) {
  v1::ModelConfig config;
  config.mutable_architecture()->set_num_classes(21);
  EXPECT_EQ(ResolvePalette(config), PascalVocPalette());

  config.set_palette_preset("cityscapes");
  std::vector<Rgb> resolved = ResolvePalette(config);
  ASSERT_EQ(resolved.size(), 21u);  // 19 Cityscapes colours, then VOC's for the rest
  EXPECT_EQ(resolved[0], (Rgb{128, 64, 128}));
  EXPECT_EQ(resolved[20], PascalVocPalette()[20]);

  config.mutable_architecture()->set_num_classes(2);
  v1::Color* c = config.add_palette();
  c->set_r(1);
  c->set_g(2);
  c->set_b(3);
  resolved = ResolvePalette(config);
  ASSERT_EQ(resolved.size(), 2u);
  EXPECT_EQ(resolved[0], (Rgb{1, 2, 3}));
  EXPECT_EQ(resolved[1], PascalVocPalette()[1]);
}

}  // namespace
}  // namespace deeplab

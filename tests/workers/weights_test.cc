// Weight import: Keras HDF5 files in exactly the published layout (written by
// tests/tools/make_keras_h5.py), the native checkpoint, and TorchScript archives.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <torch/script.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "tests/workers/test_util.h"
#include "workers/weights/keras_h5.h"
#include "workers/weights/native_checkpoint.h"
#include "workers/weights/segmentation_model.h"

namespace deeplab {
namespace {

using ::deeplab::testing::Build;
using ::deeplab::testing::RunPythonTool;
using ::deeplab::testing::Spec;
using ::deeplab::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

// Reads dataset /<layer>/<variable> of the fixture's expected file (PyTorch layout).
torch::Tensor ReadExpected(hid_t file, const std::string& layer, const std::string& variable) {
  const std::string path = "/" + layer + "/" + variable;
  hid_t ds = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
  if (ds < 0) return torch::Tensor();
  hid_t space = H5Dget_space(ds);
  std::vector<hsize_t> dims(H5Sget_simple_extent_ndims(space));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  std::vector<int64_t> shape(dims.begin(), dims.end());
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr<float>());
  H5Sclose(space);
  H5Dclose(ds);
  return t;
}

struct KerasCase {
  std::string name;
  std::string backbone;
  int classes;
  double alpha;
  std::string extra_args;
};

void PrintTo(const KerasCase& c, std::ostream* os) { *os << c.name; }

class KerasImportTest : public ::testing::TestWithParam<KerasCase> {};

// Every tensor must land in its PyTorch place with the right transposition: the expected
// file holds each Keras tensor transposed independently (numpy) by the fixture tool.
TEST_P(KerasImportTest, ValuesLandInTheRightPlaces) {
  const KerasCase& c = GetParam();
  const std::string dir = TempDir("keras_" + c.name);
  const std::string h5 = dir + "/weights.h5";
  const std::string expected = dir + "/expected.h5";
  std::string args = "--arch " + c.backbone + " --classes " + std::to_string(c.classes) +
                     " --out " + h5 + " --expected " + expected + " " + c.extra_args;
  if (c.backbone == "mobilenetv2") args += " --alpha " + std::to_string(c.alpha);
  RunPythonTool("make_keras_h5.py", args);

  DeepLabV3Plus model = Build(Spec(c.backbone, c.classes, 0, c.alpha));
  ASSERT_TRUE(LoadKerasH5(h5, model).ok()) << LoadKerasH5(h5, model);

  std::map<std::string, torch::Tensor> state;
  for (const auto& p : model->named_parameters()) state[p.key()] = p.value();
  for (const auto& b : model->named_buffers()) state[b.key()] = b.value();
  hid_t file = H5Fopen(expected.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  int checked = 0;
  for (const auto& [name, ref] : KerasWeightMap(model)) {
    torch::Tensor want = ReadExpected(file, ref.layer, ref.variable);
    ASSERT_TRUE(want.defined()) << "expected file lacks " << ref.layer << "/" << ref.variable;
    ASSERT_TRUE(torch::equal(state.at(name), want)) << name;
    ++checked;
  }
  H5Fclose(file);
  EXPECT_GT(checked, 100);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    PublishedVariants, KerasImportTest,
    ::testing::Values(
        KerasCase{"voc_xception", "xception65", 21, 1.0, ""},
        KerasCase{"cityscapes_xception_model_save", "xception65", 19, 1.0,
                  "--layout model_save"},
        KerasCase{"pathology_split_names", "xception65", 2, 1.0, "--split-names 3"},
        KerasCase{"voc_mobilenetv2", "mobilenetv2", 21, 1.0, ""},
        KerasCase{"cityscapes_mobilenetv2_model_save", "mobilenetv2", 19, 1.0,
                  "--layout model_save"},
        KerasCase{"mobilenetv2_alpha_0_5", "mobilenetv2", 5, 0.5, ""}),
    [](const auto& info) { return info.param.name; });

class KerasDefectTest : public ::testing::TestWithParam<std::string> {};

// A file with a missing, extra or mis-shaped tensor is refused, naming it and the file.
TEST_P(KerasDefectTest, RefusedWithTheTensorNamed) {
  const std::string defect = GetParam();
  const std::string dir = TempDir("defect_" + defect);
  const std::string h5 = dir + "/bad.h5";
  const std::string report = RunPythonTool(
      "make_keras_h5.py", "--arch mobilenetv2 --classes 21 --defect " + defect + " --out " + h5);
  // The tool reports the affected layer as "layer": "<name>".
  const size_t at = report.find("\"layer\": \"");
  ASSERT_NE(at, std::string::npos) << report;
  const std::string layer = report.substr(at + 10, report.find('"', at + 10) - at - 10);

  DeepLabV3Plus model = Build(Spec("mobilenetv2", 21));
  absl::Status status = LoadKerasH5(h5, model);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  const std::string word = defect == "misshaped" ? "mis-shaped" : defect;
  EXPECT_THAT(std::string(status.message()), HasSubstr(word + " tensor '" + layer + "/"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(h5));
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Defects, KerasDefectTest,
                         ::testing::Values("missing", "extra", "misshaped"));

TEST(KerasImportTest, WrongClassCountOrLogitsNameIsExplained) {
  const std::string dir = TempDir("keras_classes");
  const std::string h5 = dir + "/voc.h5";
  RunPythonTool("make_keras_h5.py", "--arch mobilenetv2 --classes 21 --out " + h5);
  DeepLabV3Plus two = Build(Spec("mobilenetv2", 2));
  absl::Status status = LoadKerasH5(h5, two);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("logits_semantic"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("--logits-layer"));
  std::filesystem::remove_all(dir);
}

TEST(KerasImportTest, NotAnHdf5File) {
  const std::string dir = TempDir("keras_garbage");
  const std::string path = dir + "/garbage.h5";
  std::ofstream(path) << "this is not hdf5";
  DeepLabV3Plus model = Build(Spec("mobilenetv2", 21));
  absl::Status status = LoadKerasH5(path, model);
  EXPECT_THAT(std::string(status.message()), HasSubstr("not an HDF5 file"));
  EXPECT_THAT(std::string(LoadKerasH5(dir + "/absent.h5", model).message()),
              HasSubstr("absent.h5"));
  std::filesystem::remove_all(dir);
}

// Writes a string-array attribute: fixed-length ASCII, as Keras stores names, or
// variable-length UTF-8, as h5py stores a list of str.
void WriteStrings(hid_t object, const char* name, const std::vector<std::string>& values,
                  bool variable_utf8) {
  const hsize_t count = values.size();
  const hid_t space = H5Screate_simple(1, &count, nullptr);
  const hid_t type = H5Tcopy(H5T_C_S1);
  std::vector<const char*> pointers;
  std::string fixed;
  const void* data;
  if (variable_utf8) {
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    for (const std::string& v : values) pointers.push_back(v.c_str());
    data = pointers.data();
  } else {
    size_t size = 1;
    for (const std::string& v : values) size = std::max(size, v.size());
    H5Tset_size(type, size);
    H5Tset_strpad(type, H5T_STR_NULLPAD);
    for (const std::string& v : values) fixed += v + std::string(size - v.size(), '\0');
    data = fixed.data();
  }
  const hid_t attr = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(H5Awrite(attr, type, data), 0);
  H5Aclose(attr);
  H5Tclose(type);
  H5Sclose(space);
}

// A Keras file whose one layer, Conv_BN, holds one dataset, gamma, of size `dims`: written
// from `values`, or chunked and left unwritten when `values` is empty (a valid HDF5 file of
// about 1 KB whatever the size).
void WriteConvBnGamma(const std::string& path, const std::vector<hsize_t>& dims,
                      const std::vector<float>& values, bool variable_utf8) {
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  WriteStrings(file, "layer_names", {"Conv_BN"}, variable_utf8);
  const hid_t group = H5Gcreate2(file, "Conv_BN", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  WriteStrings(group, "weight_names", {"Conv_BN/gamma:0"}, variable_utf8);
  const hid_t links = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(links, 1);
  const hid_t layout = H5Pcreate(H5P_DATASET_CREATE);
  if (values.empty()) {
    const std::vector<hsize_t> chunk(dims.size(), 1);
    H5Pset_chunk(layout, static_cast<int>(chunk.size()), chunk.data());
  }
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t dataset =
      H5Dcreate2(group, "Conv_BN/gamma:0", H5T_IEEE_F32LE, space, links, layout, H5P_DEFAULT);
  ASSERT_GE(dataset, 0);
  if (!values.empty()) {
    ASSERT_GE(H5Dwrite(dataset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  }
  H5Dclose(dataset);
  H5Sclose(space);
  H5Pclose(layout);
  H5Pclose(links);
  H5Gclose(group);
  H5Fclose(file);
}

// Found with tests/fuzz/keras_h5_fuzzer: HDF5 converts no string between character sets, so
// names h5py stored as variable-length UTF-8 could not be read ("cannot read attribute").
TEST(KerasImportTest, VariableLengthUtf8NamesAreRead) {
  const std::string dir = TempDir("keras_utf8");
  const std::string path = dir + "/utf8.h5";
  const std::vector<float> gamma = testing::PortableUniform(32, 3);
  WriteConvBnGamma(path, {32}, gamma, /*variable_utf8=*/true);
  DeepLabV3Plus model = Build(Spec("mobilenetv2", 21));
  const torch::Tensor before = model->named_parameters()["backbone.Conv_BN.weight"].clone();
  absl::Status status = LoadKerasH5(path, model);
  // The names are read and the one tensor is found; the file lacks all the others (the
  // first one missing is another), and the model is left as it was.
  EXPECT_THAT(std::string(status.message()), HasSubstr("missing tensor"));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("Conv_BN/gamma")));
  EXPECT_TRUE(torch::equal(model->named_parameters()["backbone.Conv_BN.weight"], before));
  std::filesystem::remove_all(dir);
}

// Found with tests/fuzz/keras_h5_fuzzer: the values were allocated for the size the file
// states before that size was compared with the model's, so a 1 KB file asked for 4 TiB
// (std::bad_alloc escaped the loader), and 2^32 x 2^32 wrapped the element count to 0 (a
// zero-size buffer handed to H5Dread).
TEST(KerasImportTest, HugeDimensionsAreRefusedBeforeAnyAllocation) {
  const std::string dir = TempDir("keras_huge");
  DeepLabV3Plus model = Build(Spec("mobilenetv2", 21));
  const hsize_t two_32 = hsize_t{1} << 32;
  for (const std::vector<hsize_t>& dims :
       {std::vector<hsize_t>{hsize_t{1} << 40}, std::vector<hsize_t>{two_32, two_32}}) {
    const std::string path = dir + "/huge.h5";
    WriteConvBnGamma(path, dims, {}, /*variable_utf8=*/false);
    absl::Status status = LoadKerasH5(path, model);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("mis-shaped tensor 'Conv_BN/gamma'"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("needs (32)"));
  }
  std::filesystem::remove_all(dir);
}

// Found with tests/fuzz/keras_h5_fuzzer: a corrupt global heap behind the variable-length
// layer_names makes libhdf5 1.10 memcpy a wild length (SIGSEGV without ASan; the fuzzer also
// found a heap overflow read in H5Aread). Nothing before H5Aread can see it, so the file is
// read in a child process: the load fails, the caller lives on and loads the next file.
TEST(KerasImportTest, ACrashInsideLibhdf5EndsTheReaderNotTheCaller) {
  const std::string path =
      std::string(DEEPLAB_SOURCE_DIR) + "/tests/workers/data/libhdf5_crash_global_heap.h5";
  DeepLabV3Plus model = Build(Spec("mobilenetv2", 21));
  const torch::Tensor before = model->named_parameters()["backbone.Conv_BN.weight"].clone();
  absl::Status status = LoadKerasH5(path, model);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  // "crashed (SIGSEGV)" in a plain build; under ASan the child reports and exits 1.
  EXPECT_THAT(std::string(status.message()), ::testing::AnyOf(HasSubstr("HDF5 library crashed"),
                                                             HasSubstr("HDF5 library failed")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("libhdf5_crash_global_heap.h5"));
  EXPECT_TRUE(torch::equal(model->named_parameters()["backbone.Conv_BN.weight"], before));

  const std::string dir = TempDir("keras_after_crash");
  const std::vector<float> gamma = testing::PortableUniform(32, 3);
  WriteConvBnGamma(dir + "/next.h5", {32}, gamma, /*variable_utf8=*/false);
  EXPECT_THAT(std::string(LoadKerasH5(dir + "/next.h5", model).message()),
              HasSubstr("missing tensor"));
  std::filesystem::remove_all(dir);
}

// A reader that never returns (libhdf5 loops forever on some damaged global heaps; a FIFO
// with no writer blocks in open() the same way) is ended at the timeout.
TEST(KerasImportTest, AReaderThatHangsIsEndedAtTheTimeout) {
  const std::string dir = TempDir("keras_hang");
  const std::string path = dir + "/fifo.h5";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  DeepLabV3Plus model = Build(Spec("mobilenetv2", 21));
  KerasH5Options options;
  options.timeout = absl::Milliseconds(300);
  absl::Status status = LoadKerasH5(path, model, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("fifo.h5 took over 300ms"));
  std::filesystem::remove_all(dir);
}

TEST(NativeCheckpointTest, RoundTripsBitExactly) {
  const std::string dir = TempDir("native");
  const std::string path = dir + "/model.dlck";
  ModelSpec spec = Spec("mobilenetv2", 7, 0, 0.5);
  spec.decoder = 1;
  DeepLabV3Plus source = Build(spec);
  {
    torch::NoGradGuard no_grad;  // make running statistics non-default too
    for (auto& b : source->named_buffers()) {
      if (b.value().is_floating_point()) b.value().uniform_(0.5, 2.0);
    }
  }
  ASSERT_TRUE(SaveNativeCheckpoint(path, source, "test").ok());
  DeepLabV3Plus copy = Build(spec);
  ASSERT_TRUE(LoadNativeCheckpoint(path, copy).ok()) << LoadNativeCheckpoint(path, copy);
  auto a = source->named_parameters();
  auto b = copy->named_parameters();
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  auto ab = source->named_buffers();
  auto bb = copy->named_buffers();
  for (const auto& p : ab) {
    if (p.value().is_floating_point()) {
      EXPECT_TRUE(torch::equal(p.value(), bb[p.key()])) << p.key();
    }
  }
  auto header = ReadNativeCheckpointHeader(path);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->architecture().backbone(), "mobilenetv2");
  EXPECT_EQ(header->source(), "test");

  // Another architecture is refused by name.
  DeepLabV3Plus other = Build(Spec("mobilenetv2", 7));
  EXPECT_THAT(std::string(LoadNativeCheckpoint(path, other).message()), HasSubstr("not the"));

  // A flipped byte in the data fails its checksum; a truncated file is named as such.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<int64_t>(f.tellg());
    // Invert the byte rather than write a constant: weights are random, and a constant
    // would equal the byte already there about once in 256 runs.
    f.seekg(size - 100);
    const char original = static_cast<char>(f.get());
    f.seekp(size - 100);
    f.put(static_cast<char>(~original));
  }
  absl::Status corrupt = LoadNativeCheckpoint(path, copy);
  EXPECT_EQ(corrupt.code(), absl::StatusCode::kDataLoss) << corrupt;
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  EXPECT_THAT(std::string(LoadNativeCheckpoint(path, copy).message()), HasSubstr("truncated"));
  std::ofstream(dir + "/junk.dlck") << "junk junk junk junk";
  EXPECT_THAT(std::string(LoadNativeCheckpoint(dir + "/junk.dlck", copy).message()),
              HasSubstr("not a deeplab-serve native checkpoint"));
  std::filesystem::remove_all(dir);
}

// Found with tests/fuzz/native_checkpoint_fuzzer: a tensor offset near 2^64 made the bounds
// check's sum wrap around, so the check passed and the load formed a pointer that wrapped
// too (undefined behaviour; in practice it read the file's own first bytes as weights).
TEST(NativeCheckpointTest, OffsetThatWrapsAroundIsRefused) {
  const std::string dir = TempDir("native_wrap");
  const std::string path = dir + "/wrap.dlck";
  DeepLabV3Plus model = Build(Spec("mobilenetv2", 7, 0, 0.5));
  // The smallest tensor: the wrap needs nbytes below the offset of the data.
  std::string name;
  torch::Tensor smallest;
  for (const auto& p : model->named_parameters()) {
    if (!smallest.defined() || p.value().nbytes() < smallest.nbytes()) {
      name = p.key();
      smallest = p.value();
    }
  }
  v1::CheckpointHeader header;
  *header.mutable_architecture() = ModelSpecToProto(model->spec());
  v1::CheckpointTensor* tensor = header.add_tensors();
  tensor->set_name(name);
  tensor->set_dtype("float32");
  for (int64_t d : smallest.sizes()) tensor->add_shape(d);
  tensor->set_nbytes(smallest.nbytes());
  tensor->set_offset(~uint64_t{0});  // a 10-byte varint, as the offset set below
  const uint64_t header_size = header.ByteSizeLong();
  const uint64_t data_start = (16 + header_size + 63) / 64 * 64;
  tensor->set_offset(uint64_t{0} - data_start);  // data_start + offset == 0 (mod 2^64)
  ASSERT_EQ(header.ByteSizeLong(), header_size);
  {
    std::ofstream out(path, std::ios::binary);
    out.write("DLCKPT01", 8);
    out.write(reinterpret_cast<const char*>(&header_size), sizeof(header_size));
    out << header.SerializeAsString();
    out << std::string(data_start - 16 - header_size + smallest.nbytes(), '\0');
  }
  for (const absl::Status& status :
       {ReadNativeCheckpointHeader(path).status(), LoadNativeCheckpoint(path, model)}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(name + " runs past the end"));
  }
  std::filesystem::remove_all(dir);
}

class TorchScriptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("torchscript"));
    RunPythonTool("make_torchscript.py", "--out-dir " + *dir_);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static torch::Tensor Reference(const std::string& name) {
    return torch::jit::load(*dir_ + "/reference.pt").attr(name).toTensor();
  }
  static std::string* dir_;
};
std::string* TorchScriptTest::dir_ = nullptr;

TEST_F(TorchScriptTest, ScriptedTracedAndDictModelsMatchPython) {
  const torch::Tensor input = Reference("input");
  for (const auto& [file, buffer] : std::vector<std::pair<std::string, std::string>>{
           {"scripted.pt", "scripted_out"}, {"traced.pt", "traced_out"},
           {"dict_out.pt", "dict_out"}}) {
    auto model = LoadSegmentationModel(Spec("", 3), WeightsFormat::kTorchScript,
                                       *dir_ + "/" + file);
    ASSERT_TRUE(model.ok()) << model.status();
    auto out = (*model)->Forward(input);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(torch::allclose(*out, Reference(buffer), 1e-5, 1e-6)) << file;
    // Other sizes work too (the traced model was traced at 16x16).
    auto other = (*model)->Forward(torch::randn({2, 3, 31, 12}));
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_EQ(other->sizes().vec(), (std::vector<int64_t>{2, 3, 31, 12}));
  }
}

TEST_F(TorchScriptTest, WrongClassCountAndBadFilesAreErrors) {
  auto model = LoadSegmentationModel(Spec("", 5), WeightsFormat::kTorchScript,
                                     *dir_ + "/scripted.pt");
  ASSERT_TRUE(model.ok());
  auto out = (*model)->Forward(torch::randn({1, 3, 8, 8}));
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("5 classes"));
  EXPECT_EQ((*model)->Forward(torch::randn({1, 4, 8, 8})).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto missing = LoadSegmentationModel(Spec("", 3), WeightsFormat::kTorchScript,
                                       *dir_ + "/absent.pt");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("absent.pt"));
}

// scripts/bench/eager_deeplab.py is the PyTorch eager model that scripts/benchmark_eager.sh
// times beside the worker. It must be the same network, or the comparison means nothing:
// on the same weights (a .dlck it reads) it computes the same logits as the C++ model, for
// the shipped demo weights, the published Xception-65 (output stride 16) and MobileNetV2
// (8) shapes, and a narrow MobileNetV2 with decoder, align_corners and softmax. BatchNorm
// statistics are random and its variances small, so a wrong epsilon, a missing layer or a
// mis-ordered padding moves the logits far beyond float noise.
TEST(EagerMirrorTest, SameLogitsAsTheCppModelOnTheSameWeights) {
  struct Case {
    std::string name;
    ModelSpec spec;
  };
  ModelSpec narrow = Spec("mobilenetv2", 2, 16, 0.5);
  narrow.decoder = 1;
  narrow.head_channels = 32;
  narrow.align_corners = true;
  narrow.activation = FinalActivation::kSoftmax;
  const std::vector<Case> cases = {
      {"xception65_os16", Spec("xception65", 21, 16)},
      {"mobilenetv2_os8", Spec("mobilenetv2", 21, 8)},
      {"mobilenetv2_os16_narrow", narrow},
  };
  const std::string dir = TempDir("eager");
  std::vector<std::pair<std::string, std::string>> checkpoints = {
      {"demo", std::string(DEEPLAB_SOURCE_DIR) + "/models/demo/demo.dlck"}};
  uint64_t seed = 11;
  for (const Case& c : cases) {
    DeepLabV3Plus model = Build(c.spec);
    testing::HealthyInit(*model, seed);
    {
      torch::NoGradGuard no_grad;
      for (auto& m : model->modules()) {
        auto* bn = m->as<BatchNorm>();
        if (bn == nullptr) continue;
        const int64_t n = bn->channels();
        auto uniform = [&](double lo, double hi) {  // portable values in [lo, hi)
          return (torch::tensor(testing::PortableUniform(n, ++seed)) + 1) * ((hi - lo) / 2) + lo;
        };
        // Variances near the epsilons (1e-3 backbone, 1e-5 head), scale kept near 1.
        bn->running_var.copy_(uniform(0.002, 0.02));
        bn->weight.copy_(torch::sqrt(bn->running_var) * uniform(0.8, 1.2));
        bn->running_mean.copy_(uniform(-0.1, 0.1));
        bn->bias.copy_(uniform(-0.1, 0.1));
      }
    }
    const std::string path = dir + "/" + c.name + ".dlck";
    ASSERT_TRUE(SaveNativeCheckpoint(path, model, "test").ok());
    checkpoints.emplace_back(c.name, path);
  }
  std::string args = "reference --size 67x45 --batch 2";
  for (const auto& [name, path] : checkpoints) {
    args += " --weights " + path + " --out " + dir + "/" + name + ".pt";
  }
  RunPythonTool("../../scripts/bench/eager_deeplab.py", args);
  for (const auto& [name, path] : checkpoints) {
    SCOPED_TRACE(name);
    torch::jit::Module reference = torch::jit::load(dir + "/" + name + ".pt");
    const torch::Tensor input = reference.attr("input").toTensor();
    const torch::Tensor expected = reference.attr("output").toTensor();

    absl::StatusOr<v1::CheckpointHeader> header = ReadNativeCheckpointHeader(path);
    ASSERT_TRUE(header.ok()) << header.status();
    DeepLabV3Plus model = Build(ModelSpecFromProto(header->architecture()));
    ASSERT_TRUE(LoadNativeCheckpoint(path, model).ok());
    model->eval();
    torch::InferenceMode guard;
    const torch::Tensor actual = model->forward(input);
    ASSERT_EQ(actual.sizes(), expected.sizes());
    const double scale = expected.abs().max().item<double>();
    const double diff = (actual - expected).abs().max().item<double>();
    ASSERT_GT(scale, 1e-3);
    EXPECT_LT(diff, 1e-4 * scale) << "max diff " << diff << " of " << scale;
  }
  std::filesystem::remove_all(dir);  // about 200 MB of checkpoints
}

TEST(SegmentationModelTest, EveryFormatBehindOneInterface) {
  const std::string dir = TempDir("interface");
  const std::string h5 = dir + "/w.h5";
  RunPythonTool("make_keras_h5.py", "--arch mobilenetv2 --classes 4 --out " + h5);
  auto keras = LoadSegmentationModel(Spec("mobilenetv2", 4), WeightsFormat::kKerasH5, h5);
  ASSERT_TRUE(keras.ok()) << keras.status();
  EXPECT_EQ((*keras)->num_classes(), 4);
  torch::Tensor x = torch::randn({1, 3, 37, 29});
  auto from_keras = (*keras)->Forward(x);
  ASSERT_TRUE(from_keras.ok());
  EXPECT_EQ(from_keras->sizes().vec(), (std::vector<int64_t>{1, 4, 37, 29}));

  // Keras -> native -> SegmentationModel gives the same output bit for bit.
  DeepLabV3Plus net = Build(Spec("mobilenetv2", 4));
  ASSERT_TRUE(LoadKerasH5(h5, net).ok());
  ASSERT_TRUE(SaveNativeCheckpoint(dir + "/w.dlck", net, "test").ok());
  auto native = LoadSegmentationModel(Spec("mobilenetv2", 4), WeightsFormat::kNative,
                                      dir + "/w.dlck");
  ASSERT_TRUE(native.ok()) << native.status();
  EXPECT_TRUE(torch::equal(*(*native)->Forward(x), *from_keras));

  EXPECT_FALSE(ParseWeightsFormat("pickle").ok());
  EXPECT_EQ(*ParseWeightsFormat("keras_h5"), WeightsFormat::kKerasH5);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplab

namespace deeplab {
namespace {

// A 3-class MobileNetV2 with decoder and seeded random weights, saved as a native
// checkpoint in `dir`; its spec, and the path in *path.
ModelSpec SaveSmallCheckpoint(const std::string& dir, uint64_t seed, std::string* path) {
  ModelSpec spec = testing::Spec("mobilenetv2", 3);
  spec.decoder = 1;
  torch::manual_seed(seed);
  DeepLabV3Plus net = testing::Build(spec);
  *path = dir + "/m.dlck";
  EXPECT_TRUE(SaveNativeCheckpoint(*path, net, "test").ok());
  return spec;
}

// bf16 (channels-last, BatchNorm folded) must give the fp32 labels on at least 99% of
// pixels. Forced here so that it runs on CPUs without native bf16 too (slowly).
// Random weights put many pixels at near-ties between classes, which no trained network
// has: with 21 classes agreement is ~97.7% on random weights, so this uses a 3-class head,
// where ties are rarer. The check on trained weights (the demo set) is in train_test.
TEST(PrecisionTest, Bf16LabelsAgreeWithFp32) {
  const std::string dir = testing::TempDir("bf16");
  std::string path;
  const ModelSpec spec = SaveSmallCheckpoint(dir, 7, &path);
  RuntimeOptions fp32;
  RuntimeOptions bf16;
  bf16.precision = Precision::kBf16;
  bf16.force_precision = true;
  bf16.channels_last = true;  // the layout bf16 runs in on CUDA and AMX CPUs
  auto a = LoadSegmentationModel(spec, WeightsFormat::kNative, path, fp32);
  auto b = LoadSegmentationModel(spec, WeightsFormat::kNative, path, bf16);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT((*b)->runtime(), HasSubstr("bf16"));
  // An image-like input: smooth regions, values in [-1, 1].
  torch::Tensor x = torch::nn::functional::interpolate(
                        torch::rand({2, 3, 12, 12}),
                        torch::nn::functional::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{160, 128})
                            .mode(torch::kBilinear)
                            .align_corners(false)) *
                        2 -
                    1;
  torch::Tensor la = (*a)->Forward(x)->argmax(1);
  torch::Tensor lb = (*b)->Forward(x)->argmax(1);
  const double agreement = la.eq(lb).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(agreement, 0.99);
  std::cout << "bf16/fp32 label agreement: " << agreement << "\n";
  std::filesystem::remove_all(dir);
}

TEST(PrecisionTest, UnsupportedPrecisionFallsBackToFp32AndSaysSo) {
  RuntimeOptions fp16;
  fp16.precision = Precision::kFp16;  // CUDA only
  auto model = LoadSegmentationModel(testing::Spec("mobilenetv2", 3), WeightsFormat::kRandom, "",
                                     fp16);
  ASSERT_TRUE(model.ok());
  EXPECT_THAT((*model)->runtime(), HasSubstr("cpu fp32 (fp16 requested: only CUDA runs fp16)"));
  RuntimeOptions cuda;
  cuda.device = "cuda:0";
  if (!torch::cuda::is_available()) {
    auto refused =
        LoadSegmentationModel(testing::Spec("mobilenetv2", 3), WeightsFormat::kRandom, "", cuda);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  }
  RuntimeOptions bogus;
  bogus.device = "tpu";
  EXPECT_EQ(LoadSegmentationModel(testing::Spec("mobilenetv2", 3), WeightsFormat::kRandom, "",
                                  bogus)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Precision auto keeps the candidate only where its labels agree with fp32's on the check
// input; when they do not, the weights are fp32 again, bit for bit (restored, not
// converted back from the candidate's rounding).
TEST(PrecisionTest, AutoKeepsTheCandidateOrRestoresFp32Exactly) {
  const std::string dir = testing::TempDir("auto");
  std::string path;
  const ModelSpec spec = SaveSmallCheckpoint(dir, 11, &path);
  auto fp32 = LoadSegmentationModel(spec, WeightsFormat::kNative, path, RuntimeOptions());
  ASSERT_TRUE(fp32.ok());
  const torch::Tensor x = MakePrecisionCheckInput(96, 80);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{1, 3, 96, 80}));
  EXPECT_LE(x.abs().max().item<float>(), 1.0f);
  const torch::Tensor want = *(*fp32)->Forward(x);

  RuntimeOptions automatic;
  automatic.precision = Precision::kAuto;
  automatic.force_precision = true;  // bf16 on any CPU, as on one with native bf16
  automatic.precision_check_input = x;
  automatic.min_label_agreement = 0.5;
  auto kept = LoadSegmentationModel(spec, WeightsFormat::kNative, path, automatic);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ((*kept)->dtype(), torch::kBFloat16);
  EXPECT_THAT((*kept)->runtime(), HasSubstr("cpu bf16 (auto: labels agree with fp32 on "));

  automatic.min_label_agreement = 1.01;  // nothing passes
  auto fell_back = LoadSegmentationModel(spec, WeightsFormat::kNative, path, automatic);
  ASSERT_TRUE(fell_back.ok()) << fell_back.status();
  EXPECT_EQ((*fell_back)->dtype(), torch::kFloat32);
  EXPECT_THAT((*fell_back)->runtime(),
              HasSubstr("cpu fp32 (auto: bf16 labels agreed with fp32 on "));
  EXPECT_THAT((*fell_back)->runtime(), HasSubstr("below 101.00%)"));
  EXPECT_TRUE(torch::equal(*(*fell_back)->Forward(x), want));

  // Without forcing: bf16 only where this CPU has it natively.
  automatic.force_precision = false;
  automatic.min_label_agreement = 0.5;
  auto native = LoadSegmentationModel(spec, WeightsFormat::kNative, path, automatic);
  ASSERT_TRUE(native.ok());
  if (CpuHasNativeBf16()) {
    EXPECT_EQ((*native)->dtype(), torch::kBFloat16);
  } else {
    EXPECT_THAT((*native)->runtime(), HasSubstr("cpu fp32 (auto: this CPU has no native bf16)"));
  }
  std::filesystem::remove_all(dir);
}

// Run works on the device with the model's dtype, in either layout, and refuses the rest.
TEST(SegmentationModelTest, RunTakesTheModelsDtypeInEitherLayout) {
  auto model = LoadSegmentationModel(testing::Spec("mobilenetv2", 3, 8, 0.35),
                                     WeightsFormat::kRandom, "");
  ASSERT_TRUE(model.ok());
  const torch::Tensor x = MakePrecisionCheckInput(40, 56);
  const torch::Tensor a = *(*model)->Run(x);
  const torch::Tensor b = *(*model)->Run(x.contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{1, 3, 40, 56}));
  EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-5));
  (*model)->SetChannelsLast(true);
  EXPECT_TRUE((*model)->channels_last());
  EXPECT_THAT((*model)->runtime(), HasSubstr("channels_last"));
  EXPECT_TRUE(torch::allclose(*(*model)->Run(x), a, 1e-4, 1e-5));
  EXPECT_EQ((*model)->Run(x.to(torch::kBFloat16)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)->Run(torch::zeros({1, 4, 8, 8})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace deeplab

#include "workers/weights/keras_h5.h"

#include <hdf5.h>

#include <cstring>
#include <optional>
#include <set>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace deeplab {
namespace {

// Owns one HDF5 identifier and closes it with the matching H5*close.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// Reads a string-array attribute (fixed- or variable-length, as h5py writes either).
// A missing attribute is nullopt; an empty one (Keras writes [] for weightless layers) is {}.
absl::StatusOr<std::optional<std::vector<std::string>>> ReadStringsAttribute(
    hid_t object, const std::string& name) {
  if (H5Aexists(object, name.c_str()) <= 0) return std::nullopt;
  Handle attr(H5Aopen(object, name.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!attr.ok() || !type.ok() || !space.ok()) {
    return absl::DataLossError(absl::StrCat("cannot open attribute '", name, "'"));
  }
  const hssize_t count = H5Sget_simple_extent_npoints(space.get());
  std::vector<std::string> values;
  if (count <= 0) return values;
  if (H5Tget_class(type.get()) != H5T_STRING) {
    return absl::InvalidArgumentError(absl::StrCat("attribute '", name, "' is not a string array"));
  }
  // HDF5 converts no string between character sets, and h5py writes a str as UTF-8: the
  // memory type takes the file's (ASCII or UTF-8; the bytes are kept as they are either way).
  const H5T_cset_t cset = H5Tget_cset(type.get());
  if (H5Tis_variable_str(type.get()) > 0) {
    std::vector<char*> buffer(count, nullptr);
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), cset);
    if (H5Aread(attr.get(), mem.get(), buffer.data()) < 0) {
      return absl::DataLossError(absl::StrCat("cannot read attribute '", name, "'"));
    }
    for (char* s : buffer) values.emplace_back(s == nullptr ? "" : s);
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, buffer.data());
  } else {
    const size_t size = H5Tget_size(type.get());
    std::vector<char> buffer(count * size);
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), size);
    H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
    H5Tset_cset(mem.get(), cset);
    if (H5Aread(attr.get(), mem.get(), buffer.data()) < 0) {
      return absl::DataLossError(absl::StrCat("cannot read attribute '", name, "'"));
    }
    for (hssize_t i = 0; i < count; ++i) {
      const char* s = buffer.data() + i * size;
      values.emplace_back(s, strnlen(s, size));
    }
  }
  return values;
}

// Keras splits a long layer_names attribute into layer_names0, layer_names1, ...
absl::StatusOr<std::vector<std::string>> ReadLayerNames(hid_t group) {
  auto whole = ReadStringsAttribute(group, "layer_names");
  if (!whole.ok()) return whole.status();
  if (whole->has_value()) return **whole;
  std::vector<std::string> names;
  for (int chunk = 0;; ++chunk) {
    auto part = ReadStringsAttribute(group, absl::StrCat("layer_names", chunk));
    if (!part.ok()) return part.status();
    if (!part->has_value()) break;
    names.insert(names.end(), (*part)->begin(), (*part)->end());
  }
  if (names.empty()) {
    return absl::InvalidArgumentError(
        "no 'layer_names' attribute: not a Keras weight file (expected the layout written by "
        "model.save_weights or model.save)");
  }
  return names;
}

struct FileTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Reads the values only when the dataset has the shape `want`; otherwise returns the shape
// alone, for the caller's error. A file's dimensions are not to be trusted before that check:
// a chunked dataset with no chunks written can claim 2^40 elements in a file of 1 KB.
absl::StatusOr<FileTensor> ReadDataset(hid_t group, const std::string& path,
                                       const std::vector<int64_t>& want) {
  Handle dataset(H5Dopen2(group, path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.ok()) return absl::NotFoundError("dataset listed in weight_names is absent");
  Handle space(H5Dget_space(dataset.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || rank > 8) return absl::DataLossError("unreadable dataspace");
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  FileTensor tensor;
  size_t count = 1;
  for (hsize_t d : dims) {
    tensor.shape.push_back(static_cast<int64_t>(d));
    count *= d;
  }
  if (tensor.shape != want) return tensor;
  tensor.values.resize(count);
  // HDF5 converts float16/float64 datasets to float32 on read.
  if (H5Dread(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
              tensor.values.data()) < 0) {
    return absl::DataLossError("cannot read values (truncated file or non-numeric dataset?)");
  }
  return tensor;
}

torch::Tensor ToTorchLayout(FileTensor& tensor, KerasWeightRef::Layout layout) {
  torch::Tensor t = torch::from_blob(tensor.values.data(), tensor.shape, torch::kFloat32);
  switch (layout) {
    case KerasWeightRef::Layout::kConvKernel:
      return t.permute({3, 2, 0, 1});
    case KerasWeightRef::Layout::kDepthwiseKernel:
      return t.permute({2, 3, 0, 1});
    case KerasWeightRef::Layout::kVector:
      break;
  }
  return t;
}

}  // namespace

std::string KerasLayerName(const std::string& module_path) {
  std::vector<std::string> parts = absl::StrSplit(module_path, '.');
  if (parts.size() > 1) parts.erase(parts.begin());
  return absl::StrJoin(parts, "_");
}

std::map<std::string, KerasWeightRef> KerasWeightMap(DeepLabV3Plus& model) {
  std::map<std::string, KerasWeightRef> map;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    const std::string layer = KerasLayerName(path);
    auto add = [&](const char* torch_name, const char* variable, KerasWeightRef::Layout layout,
                   std::vector<int64_t> keras_shape) {
      map[absl::StrCat(path, ".", torch_name)] =
          KerasWeightRef{layer, variable, layout, std::move(keras_shape)};
    };
    if (auto* conv = item.value()->as<torch::nn::Conv2d>()) {
      const auto s = conv->weight.sizes();  // (out, in/groups, kh, kw)
      const bool depthwise = conv->options.groups() > 1;
      if (depthwise) {
        add("weight", "depthwise_kernel", KerasWeightRef::Layout::kDepthwiseKernel,
            {s[2], s[3], s[0], 1});
      } else {
        add("weight", "kernel", KerasWeightRef::Layout::kConvKernel, {s[2], s[3], s[1], s[0]});
      }
      if (conv->bias.defined()) add("bias", "bias", KerasWeightRef::Layout::kVector, {s[0]});
    } else if (auto* bn = item.value()->as<BatchNorm>()) {
      const int64_t c = bn->channels();
      add("weight", "gamma", KerasWeightRef::Layout::kVector, {c});
      add("bias", "beta", KerasWeightRef::Layout::kVector, {c});
      add("running_mean", "moving_mean", KerasWeightRef::Layout::kVector, {c});
      add("running_var", "moving_variance", KerasWeightRef::Layout::kVector, {c});
    }
  }
  return map;
}

absl::Status LoadKerasH5(const std::string& path, DeepLabV3Plus& model) {
  const std::string where = absl::StrCat(" in Keras weight file ", path);
  // The HDF5 library prints its own error stack to stderr by default; we report instead.
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an HDF5 file (missing, unreadable or another format): ", path));
  }
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) return absl::InvalidArgumentError(absl::StrCat("cannot open ", path));
  const bool full_model = H5Lexists(file.get(), "model_weights", H5P_DEFAULT) > 0;
  Handle root(H5Gopen2(file.get(), full_model ? "model_weights" : "/", H5P_DEFAULT), H5Gclose);
  auto layer_names = ReadLayerNames(root.get());
  if (!layer_names.ok()) return absl::InvalidArgumentError(absl::StrCat(layer_names.status().message(), where));

  // (layer, variable) -> state-dict entry of the model.
  std::map<std::string, KerasWeightRef> weight_map = KerasWeightMap(model);
  std::map<std::pair<std::string, std::string>, std::string> by_keras_name;
  for (const auto& [name, ref] : weight_map) by_keras_name[{ref.layer, ref.variable}] = name;
  std::map<std::string, torch::Tensor> state;
  for (const auto& p : model->named_parameters()) state[p.key()] = p.value();
  for (const auto& b : model->named_buffers()) state[b.key()] = b.value();

  torch::NoGradGuard no_grad;
  std::set<std::string> loaded;
  for (const std::string& layer : *layer_names) {
    Handle group(H5Gopen2(root.get(), layer.c_str(), H5P_DEFAULT), H5Gclose);
    if (!group.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", layer, "' is listed in layer_names but has no group", where));
    }
    auto weight_names = ReadStringsAttribute(group.get(), "weight_names");
    if (!weight_names.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", layer, "': ", weight_names.status().message(), where));
    }
    if (!weight_names->has_value()) continue;
    for (const std::string& weight_name : **weight_names) {
      // "entry_flow_conv1_1/kernel:0" -> variable "kernel".
      std::string variable = weight_name.substr(weight_name.rfind('/') + 1);
      variable = variable.substr(0, variable.find(':'));
      const std::string label = absl::StrCat("'", layer, "/", variable, "'");
      auto target = by_keras_name.find({layer, variable});
      if (target == by_keras_name.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "extra tensor ", label, where, ": the ", DescribeModelSpec(model->spec()),
            " network has no such weight (wrong --arch, --classes, --alpha or --logits-layer?)"));
      }
      const KerasWeightRef& ref = weight_map.at(target->second);
      auto tensor = ReadDataset(group.get(), weight_name, ref.keras_shape);
      if (!tensor.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", label, ": ", tensor.status().message(), where));
      }
      if (tensor->shape != ref.keras_shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            "mis-shaped tensor ", label, where, ": file has ", ShapeString(tensor->shape),
            ", the ", DescribeModelSpec(model->spec()), " network needs ",
            ShapeString(ref.keras_shape)));
      }
      state.at(target->second).copy_(ToTorchLayout(*tensor, ref.layout));
      loaded.insert(target->second);
    }
  }
  for (const auto& [name, ref] : weight_map) {
    if (loaded.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor '", ref.layer, "/",
                                                     ref.variable, "' (", name, ")", where));
    }
  }
  return absl::OkStatus();
}

}  // namespace deeplab

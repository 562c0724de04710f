#include "workers/weights/keras_h5.h"

#include <hdf5.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

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

// One tensor of the model as the file must hold it, and where its values go in the
// reader's output (a float offset; ref->keras_shape gives the count).
struct Slot {
  std::string name;  // state-dict name
  const KerasWeightRef* ref = nullptr;
  size_t offset = 0;
};

// Reads the dataset into `out` only when it has the shape `want`, and returns the file's
// shape either way, for the caller's error. A file's dimensions are not to be trusted before
// that check: a chunked dataset with no chunks written can claim 2^40 elements in 1 KB.
absl::StatusOr<std::vector<int64_t>> ReadDataset(hid_t group, const std::string& path,
                                                 const std::vector<int64_t>& want, float* out) {
  Handle dataset(H5Dopen2(group, path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.ok()) return absl::NotFoundError("dataset listed in weight_names is absent");
  Handle space(H5Dget_space(dataset.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || rank > 8) return absl::DataLossError("unreadable dataspace");
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  std::vector<int64_t> shape(dims.begin(), dims.end());
  if (shape != want) return shape;
  // HDF5 converts float16/float64 datasets to float32 on read.
  if (H5Dread(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    return absl::DataLossError("cannot read values (truncated file or non-numeric dataset?)");
  }
  return shape;
}

// The part that touches the file: libhdf5 only, no LibTorch, so that it can run in a forked
// child. Fills the values of every slot the file holds, at slot.offset, and checks that
// every slot was filled. `network` names the model in errors.
absl::Status ReadKerasTensors(const std::string& path, const std::string& network,
                              const std::vector<Slot>& slots, float* values) {
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
  if (!layer_names.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(layer_names.status().message(), where));
  }

  std::map<std::pair<std::string, std::string>, size_t> by_keras_name;
  for (size_t i = 0; i < slots.size(); ++i) {
    by_keras_name[{slots[i].ref->layer, slots[i].ref->variable}] = i;
  }
  std::vector<bool> loaded(slots.size(), false);
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
            "extra tensor ", label, where, ": the ", network,
            " network has no such weight (wrong --arch, --classes, --alpha or --logits-layer?)"));
      }
      const Slot& slot = slots[target->second];
      auto shape = ReadDataset(group.get(), weight_name, slot.ref->keras_shape,
                               values + slot.offset);
      if (!shape.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", label, ": ", shape.status().message(), where));
      }
      if (*shape != slot.ref->keras_shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            "mis-shaped tensor ", label, where, ": file has ", ShapeString(*shape), ", the ",
            network, " network needs ", ShapeString(slot.ref->keras_shape)));
      }
      loaded[target->second] = true;
    }
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    if (!loaded[i]) {
      return absl::InvalidArgumentError(absl::StrCat("missing tensor '", slots[i].ref->layer,
                                                     "/", slots[i].ref->variable, "' (",
                                                     slots[i].name, ")", where));
    }
  }
  return absl::OkStatus();
}

// Memory shared with the reader's child: its status, then the values.
struct SharedHeader {
  int32_t done = 0;
  int32_t code = 0;
  char message[4096] = {};
};

class SharedRegion {
 public:
  explicit SharedRegion(size_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : p;
  }
  ~SharedRegion() {
    if (data_ != nullptr) munmap(data_, bytes_);
  }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  void* data() const { return data_; }

 private:
  size_t bytes_;
  void* data_;
};

std::string DescribeSignal(int sig) {
  const char* name = sigabbrev_np(sig);
  return name != nullptr ? absl::StrCat("SIG", name) : absl::StrCat("signal ", sig);
}

// Runs ReadKerasTensors in a forked child that writes into memory shared with this process.
// The child runs only libhdf5 and the C++ library (no LibTorch, no locks of this process's
// threads: glibc's malloc is safe after fork) and ends with _exit, so nothing of the parent
// is flushed or destroyed twice.
// `region` starts with a SharedHeader; the values follow at `values`.
absl::Status ReadKerasTensorsIsolated(const std::string& path, const std::string& network,
                                      const std::vector<Slot>& slots, SharedRegion& region,
                                      float* shared_values, absl::Duration timeout) {
  auto* status = new (region.data()) SharedHeader;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot start the reader process for ", path, ": ", strerror(errno)));
  }
  if (pid == 0) {
    // A crash here must end quietly: no core file, no handler of the parent's.
    const rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) signal(sig, SIG_DFL);
    // Ended with the parent: a reader blocked for good (a FIFO, a loop in libhdf5) must not
    // outlive a worker that was killed. The parent may have died before prctl.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    const absl::Status read = ReadKerasTensors(path, network, slots, shared_values);
    status->code = static_cast<int32_t>(read.code());
    const size_t n = std::min(read.message().size(), sizeof(status->message) - 1);
    // An OK status's message is empty with a null data(), which memcpy may not be given.
    if (n > 0) std::memcpy(status->message, read.message().data(), n);
    status->done = 1;
    _exit(0);
  }
  // Poll the child: a pipe would also be inherited by children that other threads fork.
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Microseconds(200);
  int wstatus = 0;
  bool timed_out = false;
  for (;;) {
    const pid_t r = waitpid(pid, &wstatus, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("waitpid: ", strerror(errno)));
    }
    if (absl::Now() >= deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
      }
      timed_out = true;
      break;
    }
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(20));
  }
  const char* damaged =
      ": the file is damaged or was made to attack the reader (the process that read it was "
      "ended; nothing else was affected)";
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("reading Keras weight file ", path,
                                                    " took over ", absl::FormatDuration(timeout),
                                                    damaged));
  }
  if (WIFSIGNALED(wstatus)) {
    return absl::DataLossError(absl::StrCat("the HDF5 library crashed (",
                                            DescribeSignal(WTERMSIG(wstatus)),
                                            ") reading Keras weight file ", path, damaged));
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || status->done != 1) {
    return absl::DataLossError(absl::StrCat("the HDF5 library failed (exit status ",
                                            WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1,
                                            ") reading Keras weight file ", path, damaged));
  }
  const int code = status->code;
  if (code != 0) {
    const std::string message(status->message, strnlen(status->message, sizeof(status->message)));
    if (code < 1 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
      return absl::DataLossError(message);
    }
    return absl::Status(static_cast<absl::StatusCode>(code), message);
  }
  return absl::OkStatus();
}

torch::Tensor ToTorchLayout(float* values, const std::vector<int64_t>& shape,
                            KerasWeightRef::Layout layout) {
  torch::Tensor t = torch::from_blob(values, shape, torch::kFloat32);
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

absl::Status LoadKerasH5(const std::string& path, DeepLabV3Plus& model,
                         const KerasH5Options& options) {
  const std::map<std::string, KerasWeightRef> weight_map = KerasWeightMap(model);
  std::vector<Slot> slots;
  size_t total = 0;
  for (const auto& [name, ref] : weight_map) {
    size_t count = 1;
    for (int64_t d : ref.keras_shape) count *= static_cast<size_t>(d);
    slots.push_back(Slot{name, &ref, total});
    total += count;
  }
  const std::string network = DescribeModelSpec(model->spec());
  // The child writes the values into shared memory, from which they are copied once into
  // the model; in-process they go through a vector.
  const size_t header = (sizeof(SharedHeader) + 63) / 64 * 64;
  std::optional<SharedRegion> region;
  std::vector<float> local;
  float* values = nullptr;
  absl::Status read;
  if (options.isolate) {
    region.emplace(header + total * sizeof(float));
    if (region->data() == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot map ", total * sizeof(float), " bytes to read ", path));
    }
    values = reinterpret_cast<float*>(static_cast<char*>(region->data()) + header);
    read = ReadKerasTensorsIsolated(path, network, slots, *region, values, options.timeout);
  } else {
    local.resize(total);
    values = local.data();
    read = ReadKerasTensors(path, network, slots, values);
  }
  if (!read.ok()) return read;

  std::map<std::string, torch::Tensor> state;
  for (const auto& p : model->named_parameters()) state[p.key()] = p.value();
  for (const auto& b : model->named_buffers()) state[b.key()] = b.value();
  torch::NoGradGuard no_grad;
  for (const Slot& slot : slots) {
    state.at(slot.name).copy_(
        ToTorchLayout(values + slot.offset, slot.ref->keras_shape, slot.ref->layout));
  }
  return absl::OkStatus();
}

}  // namespace deeplab

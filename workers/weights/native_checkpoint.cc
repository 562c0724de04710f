#include "workers/weights/native_checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deeplab {
namespace {

constexpr char kMagic[8] = {'D', 'L', 'C', 'K', 'P', 'T', '0', '1'};
constexpr uint64_t kAlignment = 64;

uint64_t AlignUp(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

uint32_t Crc32(const void* data, uint64_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* bytes = static_cast<const Bytef*>(data);
  while (size > 0) {  // zlib's length is 32-bit
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(size, 1u << 30));
    crc = crc32(crc, bytes, chunk);
    bytes += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

// The tensors a checkpoint holds, by state-dict name.
std::map<std::string, torch::Tensor> FloatState(DeepLabV3Plus& model) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& p : model->named_parameters()) state[p.key()] = p.value();
  for (const auto& b : model->named_buffers()) {
    if (b.value().scalar_type() == torch::kFloat32) state[b.key()] = b.value();
  }
  return state;
}

// A read-only mapping of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return absl::NotFoundError(absl::StrCat("cannot open checkpoint ", path, ": ",
                                              std::strerror(errno)));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, " is empty"));
    }
    void* data = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (data == MAP_FAILED) {
      return absl::InternalError(absl::StrCat("cannot map ", path, ": ", std::strerror(errno)));
    }
    return std::unique_ptr<MappedFile>(new MappedFile(data, st.st_size));
  }
  ~MappedFile() { munmap(data_, size_); }
  const char* data() const { return static_cast<const char*>(data_); }
  uint64_t size() const { return size_; }

 private:
  MappedFile(void* data, uint64_t size) : data_(data), size_(size) {}
  void* data_;
  uint64_t size_;
};

// Parses magic and header; *data_start receives the offset of the data section.
absl::StatusOr<v1::CheckpointHeader> ParseHeader(const MappedFile& file, const std::string& path,
                                                 uint64_t* data_start) {
  const std::string where = absl::StrCat("checkpoint ", path);
  if (file.size() < 16 || std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " is not a deeplab-serve native checkpoint (bad magic; make one with "
               "deeplab-convert)"));
  }
  uint64_t header_size = 0;
  std::memcpy(&header_size, file.data() + 8, sizeof(header_size));
  if (header_size > file.size() - 16) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is truncated (header)"));
  }
  v1::CheckpointHeader header;
  if (!header.ParseFromArray(file.data() + 16, static_cast<int>(header_size))) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has a corrupt header"));
  }
  *data_start = AlignUp(16 + header_size);
  // Compared by subtraction: offset and nbytes are the file's, and a sum could wrap around.
  const uint64_t data_size = file.size() > *data_start ? file.size() - *data_start : 0;
  for (const auto& t : header.tensors()) {
    if (t.dtype() != "float32") {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensor ", t.name(), " has unsupported dtype ", t.dtype()));
    }
    if (t.offset() > data_size || t.nbytes() > data_size - t.offset()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " is truncated: tensor ", t.name(), " runs past the end"));
    }
  }
  return header;
}

}  // namespace

absl::Status SaveNativeCheckpoint(const std::string& path, DeepLabV3Plus& model,
                                  const std::string& source) {
  v1::CheckpointHeader header;
  *header.mutable_architecture() = ModelSpecToProto(model->spec());
  header.set_source(source);
  std::vector<torch::Tensor> payloads;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : FloatState(model)) {
    torch::Tensor cpu = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    v1::CheckpointTensor* entry = header.add_tensors();
    entry->set_name(name);
    entry->set_dtype("float32");
    for (int64_t d : cpu.sizes()) entry->add_shape(d);
    entry->set_offset(offset);
    entry->set_nbytes(cpu.nbytes());
    entry->set_crc32(Crc32(cpu.data_ptr(), cpu.nbytes()));
    offset = AlignUp(offset + cpu.nbytes());
    payloads.push_back(cpu);
  }
  const std::string serialized = header.SerializeAsString();
  const uint64_t header_size = serialized.size();
  const uint64_t data_start = AlignUp(16 + header_size);

  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    const std::string zeros(kAlignment, '\0');
    out.write(kMagic, sizeof(kMagic));
    out.write(reinterpret_cast<const char*>(&header_size), sizeof(header_size));
    out << serialized;
    out.write(zeros.data(), data_start - 16 - header_size);
    uint64_t written = 0;
    for (const auto& t : payloads) {
      out.write(static_cast<const char*>(t.data_ptr()), t.nbytes());
      written += t.nbytes();
      out.write(zeros.data(), AlignUp(written) - written);
      written = AlignUp(written);
    }
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat("write failed: ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ",
                                            std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CheckpointHeader> ReadNativeCheckpointHeader(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  uint64_t data_start = 0;
  return ParseHeader(**file, path, &data_start);
}

absl::Status LoadNativeCheckpoint(const std::string& path, DeepLabV3Plus& model) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  uint64_t data_start = 0;
  auto header = ParseHeader(**file, path, &data_start);
  if (!header.ok()) return header.status();

  const ModelSpec& want = model->spec();
  const ModelSpec have = ModelSpecFromProto(header->architecture());
  if (have.backbone != want.backbone || have.num_classes != want.num_classes ||
      have.output_stride != want.output_stride || std::abs(have.alpha - want.alpha) > 1e-6 ||
      have.decoder != want.decoder) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", path, " holds a ", DescribeModelSpec(have), " network, not the ",
        DescribeModelSpec(want), " that was asked for"));
  }

  std::map<std::string, torch::Tensor> state = FloatState(model);
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& t : header->tensors()) {
    auto it = state.find(t.name());
    if (it == state.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint ", path, " has extra tensor ", t.name()));
    }
    const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    if (it->second.sizes().vec() != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint ", path, ": tensor ", t.name(), " has shape (", absl::StrJoin(shape, ", "),
          "), the model needs (", absl::StrJoin(it->second.sizes(), ", "), ")"));
    }
    const char* bytes = file.value()->data() + data_start + t.offset();
    if (static_cast<uint64_t>(it->second.nbytes()) != t.nbytes() ||
        Crc32(bytes, t.nbytes()) != t.crc32()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", path, " is corrupt: tensor ", t.name(),
                       " fails its checksum"));
    }
    it->second.copy_(torch::from_blob(const_cast<char*>(bytes), shape, torch::kFloat32));
    loaded.insert(t.name());
  }
  for (const auto& [name, tensor] : state) {
    if (loaded.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint ", path, " lacks tensor ", name));
    }
  }
  return absl::OkStatus();
}

}  // namespace deeplab

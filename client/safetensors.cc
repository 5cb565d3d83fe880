#include "client/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "client/json.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoStatus(absl::string_view what, const std::string& path,
                         int err) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> AsUnsigned(const Json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i >= 0) return static_cast<uint64_t>(i);
  }
  return std::nullopt;
}

// Parses one tensor entry of a header.
absl::Status ParseEntry(const std::string& file, const std::string& name,
                        const Json& entry, SafetensorsTensor& tensor,
                        uint64_t& begin, uint64_t& end) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor \"", name, "\": ", what));
  };
  if (!entry.is_object()) return bad("entry is not a JSON object");
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return bad(absl::StrCat("unexpected key \"", key, "\""));
    }
  }
  auto dtype = entry.find("dtype");
  auto shape = entry.find("shape");
  auto offsets = entry.find("data_offsets");
  if (dtype == entry.end() || !dtype->is_string()) {
    return bad("missing or non-string \"dtype\"");
  }
  if (shape == entry.end() || !shape->is_array()) {
    return bad("missing or non-array \"shape\"");
  }
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2) {
    return bad("\"data_offsets\" must be an array [begin, end]");
  }
  tensor.name = name;
  tensor.dtype = dtype->get<std::string>();
  std::optional<int> element_size = SafetensorsDTypeSize(tensor.dtype);
  if (!element_size) {
    return bad(absl::StrCat("unknown dtype \"", tensor.dtype, "\""));
  }
  // Element count with overflow checks (bounded by int64).
  uint64_t elements = 1;
  constexpr uint64_t kMax =
      static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const Json& dim : *shape) {
    std::optional<uint64_t> d = AsUnsigned(dim);
    if (!d || *d > kMax) {
      return bad("shape dimensions must be non-negative integers");
    }
    tensor.shape.push_back(static_cast<int64_t>(*d));
    if (*d != 0 && elements > kMax / *d) return bad("element count overflows");
    elements *= *d;
  }
  if (elements > kMax / static_cast<uint64_t>(*element_size)) {
    return bad("byte size overflows");
  }
  tensor.num_elements = static_cast<int64_t>(elements);
  std::optional<uint64_t> b = AsUnsigned((*offsets)[0]);
  std::optional<uint64_t> e = AsUnsigned((*offsets)[1]);
  if (!b || !e) return bad("data_offsets must be non-negative integers");
  if (*b > *e) {
    return bad(absl::StrCat("data_offsets [", *b, ", ", *e,
                            "] end before they begin"));
  }
  begin = *b;
  end = *e;
  uint64_t expected = elements * static_cast<uint64_t>(*element_size);
  if (end - begin != expected) {
    return bad(absl::StrCat("byte length ", end - begin, " does not match ",
                            "shape x dtype size (", expected, " bytes for ",
                            tensor.dtype, " [",
                            absl::StrJoin(tensor.shape, ", "), "])"));
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<int> SafetensorsDTypeSize(absl::string_view dtype) {
  static constexpr std::pair<absl::string_view, int> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
  };
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// MappedFile

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(
    const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus("cannot stat", path, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a regular file"));
  }
  size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return ErrnoStatus("cannot mmap", path, err);
    }
    data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  return std::unique_ptr<MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) {
    ::munmap(const_cast<uint8_t*>(data_), size_);
  }
}

// ---------------------------------------------------------------------------
// SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped,
                          MappedFile::Open(path));
  absl::Span<const uint8_t> bytes = mapped->bytes();
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (bytes.size() < 8) {
    return bad(absl::StrCat("truncated: ", bytes.size(),
                            " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_bytes = ReadLe64(bytes.data());
  if (header_bytes > kMaxSafetensorsHeaderBytes) {
    return bad(absl::StrCat("header length ", header_bytes,
                            " exceeds the limit of ",
                            kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_bytes > bytes.size() - 8) {
    return bad(absl::StrCat("truncated header: header length is ", header_bytes,
                            " but only ", bytes.size() - 8, " bytes follow"));
  }
  absl::string_view header_text(reinterpret_cast<const char*>(bytes.data()) + 8,
                                header_bytes);
  if (header_text.empty() || header_text.front() != '{') {
    return bad("header does not start with '{'");
  }
  absl::StatusOr<Json> header = ParseJson(header_text);
  if (!header.ok()) return bad(header.status().message());
  if (!header->is_object()) return bad("header is not a JSON object");

  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  const uint64_t data_size = bytes.size() - 8 - header_bytes;
  const uint8_t* data = bytes.data() + 8 + header_bytes;
  struct Range {
    uint64_t begin, end;
    size_t tensor;
  };
  std::vector<Range> ranges;
  for (const auto& [key, value] : header->items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return bad("__metadata__ is not an object");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return bad(absl::StrCat("__metadata__ value of \"", mkey,
                                  "\" is not a string"));
        }
        file->metadata_[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    if (key.empty()) return bad("empty tensor name");
    SafetensorsTensor tensor;
    uint64_t begin = 0, end = 0;
    QUANTD_RETURN_IF_ERROR(ParseEntry(path, key, value, tensor, begin, end));
    if (end > data_size) {
      return bad(absl::StrCat("tensor \"", key, "\": data_offsets [", begin,
                              ", ", end, "] out of bounds of the ", data_size,
                              "-byte data buffer"));
    }
    tensor.data = absl::Span<const uint8_t>(data + begin, end - begin);
    tensor.file = path;
    ranges.push_back({begin, end, file->tensors_.size()});
    file->tensors_.push_back(std::move(tensor));
  }
  // The tensors must tile the data buffer: no overlap, no gap.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const std::string* previous = nullptr;
  for (const Range& r : ranges) {
    const std::string& name = file->tensors_[r.tensor].name;
    if (r.begin < cursor) {
      return bad(absl::StrCat("tensor \"", name, "\": data_offsets [", r.begin,
                              ", ", r.end, "] overlap tensor \"", *previous,
                              "\" (which ends at ", cursor, ")"));
    }
    if (r.begin > cursor) {
      return bad(absl::StrCat("gap in the data buffer: bytes [", cursor, ", ",
                              r.begin, ") before tensor \"", name,
                              "\" belong to no tensor"));
    }
    cursor = r.end;
    previous = &name;
  }
  if (cursor != data_size) {
    return bad(absl::StrCat("data buffer has ", data_size - cursor,
                            " trailing bytes after the last tensor (",
                            data_size, " bytes, tensors cover ", cursor, ")"));
  }
  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return a.name < b.name;
            });
  for (size_t i = 0; i < file->tensors_.size(); ++i) {
    file->index_[file->tensors_[i].name] = i;
  }
  file->file_ = std::move(mapped);
  return file;
}

const SafetensorsTensor* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------
// SafetensorsModel

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::Open(
    const std::string& path) {
  std::error_code ec;
  fs::path p(path);
  if (!fs::exists(p, ec)) {
    return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  }
  // Resolve a directory to its index or single file.
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "model.safetensors.index.json", ec)) {
      p = p / "model.safetensors.index.json";
    } else if (fs::exists(p / "model.safetensors", ec)) {
      p = p / "model.safetensors";
    } else {
      std::vector<fs::path> candidates;
      for (const auto& entry : fs::directory_iterator(p, ec)) {
        if (entry.path().extension() == ".safetensors") {
          candidates.push_back(entry.path());
        }
      }
      if (candidates.size() != 1) {
        return absl::NotFoundError(absl::StrCat(
            path,
            ": no model.safetensors.index.json or model.safetensors, "
            "and ",
            candidates.size(), " *.safetensors files (need exactly one)"));
      }
      p = candidates.front();
    }
  }

  auto model = std::unique_ptr<SafetensorsModel>(new SafetensorsModel());
  if (absl::EndsWith(p.string(), ".json")) {
    // Sharded: read the index.
    QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> index_file,
                            MappedFile::Open(p.string()));
    absl::Span<const uint8_t> bytes = index_file->bytes();
    absl::StatusOr<Json> index = ParseJson(absl::string_view(
        reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(p.string(), ": ", what));
    };
    if (!index.ok()) return bad(index.status().message());
    if (!index->is_object()) return bad("index is not a JSON object");
    auto weight_map = index->find("weight_map");
    if (weight_map == index->end() || !weight_map->is_object()) {
      return bad("missing \"weight_map\" object");
    }
    std::map<std::string, std::vector<std::string>> tensors_per_shard;
    for (const auto& [tensor, shard] : weight_map->items()) {
      if (!shard.is_string()) {
        return bad(absl::StrCat("weight_map entry of \"", tensor,
                                "\" is not a string"));
      }
      std::string shard_name = shard.get<std::string>();
      fs::path shard_path(shard_name);
      bool escapes = shard_name.empty() || shard_path.is_absolute();
      for (const auto& part : shard_path) escapes |= part == "..";
      if (escapes) {
        return bad(absl::StrCat("shard name \"", shard_name, "\" of tensor \"",
                                tensor, "\" is not a plain relative path"));
      }
      tensors_per_shard[shard_name].push_back(tensor);
    }
    if (tensors_per_shard.empty()) return bad("weight_map is empty");
    for (const auto& [shard_name, names] : tensors_per_shard) {
      QUANTD_ASSIGN_OR_RETURN(
          std::unique_ptr<SafetensorsFile> shard,
          SafetensorsFile::Open((p.parent_path() / shard_name).string()));
      for (const std::string& name : names) {
        if (shard->Find(name) == nullptr) {
          return bad(absl::StrCat("tensor \"", name, "\" is mapped to shard ",
                                  shard_name, ", which does not contain it"));
        }
      }
      if (shard->tensors().size() != names.size()) {
        for (const SafetensorsTensor& t : shard->tensors()) {
          auto it = weight_map->find(t.name);
          if (it == weight_map->end() || *it != shard_name) {
            return bad(absl::StrCat("tensor \"", t.name, "\" of shard ",
                                    shard_name,
                                    " is not mapped to it in the weight_map"));
          }
        }
      }
      model->shards_.push_back(std::move(shard));
    }
  } else {
    QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                            SafetensorsFile::Open(p.string()));
    model->shards_.push_back(std::move(file));
  }

  for (const auto& shard : model->shards_) {
    for (const auto& [key, value] : shard->metadata()) {
      model->metadata_.emplace(key, value);  // first shard wins
    }
    for (const SafetensorsTensor& t : shard->tensors()) {
      if (!model->index_.emplace(t.name, &t).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", t.name, "\" appears in more than one shard: ",
            model->index_[t.name]->file, " and ", t.file));
      }
      model->tensors_.push_back(&t);
    }
  }
  std::sort(model->tensors_.begin(), model->tensors_.end(),
            [](const SafetensorsTensor* a, const SafetensorsTensor* b) {
              return a->name < b->name;
            });
  return model;
}

const SafetensorsTensor* SafetensorsModel::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsModel::files() const {
  std::vector<std::string> out;
  for (const auto& shard : shards_) out.push_back(shard->path());
  return out;
}

// ---------------------------------------------------------------------------
// SafetensorsWriter

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<Entry> entries,
    const std::map<std::string, std::string>& metadata,
    const Options& options) {
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  auto writer = std::unique_ptr<SafetensorsWriter>(new SafetensorsWriter());
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  std::vector<std::pair<std::string, uint64_t>> begins;
  for (const Entry& entry : entries) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", entry.name, "\": ", what));
    };
    if (entry.name.empty()) return bad("empty name");
    if (entry.name == "__metadata__") return bad("reserved name");
    if (writer->slots_.contains(entry.name)) return bad("duplicate name");
    std::optional<int> element_size = SafetensorsDTypeSize(entry.dtype);
    if (!element_size) {
      return bad(absl::StrCat("unknown dtype \"", entry.dtype, "\""));
    }
    uint64_t size = static_cast<uint64_t>(*element_size);
    for (int64_t d : entry.shape) {
      if (d < 0) return bad("negative dimension");
      size *= static_cast<uint64_t>(d);
    }
    header[entry.name] = {{"dtype", entry.dtype},
                          {"shape", entry.shape},
                          {"data_offsets", {offset, offset + size}}};
    writer->slots_[entry.name] = Slot{offset, size};
    begins.emplace_back(entry.name, offset);
    offset += size;
  }
  std::string header_text = WriteJson(header);
  // Pad with spaces so that 8 + header length is a multiple of 8.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  writer->header_bytes_ = header_text.size();
  writer->data_bytes_ = offset;
  for (auto& [name, slot] : writer->slots_)
    slot.begin += 8 + header_text.size();

  writer->path_ = path;
  writer->partial_path_ = path + ".partial";
  writer->keep_partial_ = options.keep_partial;
  std::string prefix(8, '\0');
  uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) {
    prefix[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  }
  prefix += header_text;
  const uint64_t total = prefix.size() + offset;
  if (options.resume) {
    writer->fd_ = ::open(writer->partial_path_.c_str(), O_RDWR | O_CLOEXEC);
    if (writer->fd_ >= 0) {
      struct stat st;
      std::string existing(prefix.size(), '\0');
      const bool same = ::fstat(writer->fd_, &st) == 0 &&
                        static_cast<uint64_t>(st.st_size) == total &&
                        ::pread(writer->fd_, existing.data(), existing.size(),
                                0) == static_cast<ssize_t>(existing.size()) &&
                        existing == prefix;
      if (same) {
        writer->resumed_ = true;
        absl::MutexLock lock(&writer->mu_);
        for (const auto& [name, begin] : begins) writer->written_[name] = 0;
        return writer;
      }
      ::close(writer->fd_);
      writer->fd_ = -1;
    }
  }
  writer->fd_ = ::open(writer->partial_path_.c_str(),
                       O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (writer->fd_ < 0) {
    return ErrnoStatus("cannot create", writer->partial_path_, errno);
  }
  if (::ftruncate(writer->fd_, static_cast<off_t>(total)) != 0) {
    return ErrnoStatus("cannot size", writer->partial_path_, errno);
  }
  size_t done = 0;
  while (done < prefix.size()) {
    ssize_t w = ::pwrite(writer->fd_, prefix.data() + done,
                         prefix.size() - done, static_cast<off_t>(done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", writer->partial_path_, errno);
    }
    done += static_cast<size_t>(w);
  }
  {
    absl::MutexLock lock(&writer->mu_);
    for (const auto& [name, begin] : begins) writer->written_[name] = 0;
  }
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() {
  bool finished;
  {
    absl::MutexLock lock(&mu_);
    finished = finished_;
  }
  if (fd_ >= 0) ::close(fd_);
  if (!finished && !keep_partial_ && !partial_path_.empty()) {
    ::unlink(partial_path_.c_str());
  }
}

absl::StatusOr<uint32_t> SafetensorsWriter::SlotCrc32c(absl::string_view name) {
  auto it = slots_.find(name);
  if (it == slots_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor \"", name, "\" was not declared"));
  }
  const Slot& slot = it->second;
  std::vector<uint8_t> buffer(std::min<uint64_t>(slot.size, uint64_t{4} << 20));
  uint32_t crc = 0;
  uint64_t done = 0;
  while (done < slot.size) {
    const size_t want = static_cast<size_t>(
        std::min<uint64_t>(buffer.size(), slot.size - done));
    ssize_t r = ::pread(fd_, buffer.data(), want,
                        static_cast<off_t>(slot.begin + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot read", partial_path_, errno);
    }
    if (r == 0) {
      return absl::InternalError(
          absl::StrCat(partial_path_, ": unexpected end of file"));
    }
    crc = Crc32cExtend(crc, buffer.data(), static_cast<size_t>(r));
    done += static_cast<uint64_t>(r);
  }
  return crc;
}

absl::Status SafetensorsWriter::MarkComplete(absl::string_view name) {
  auto it = slots_.find(name);
  if (it == slots_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor \"", name, "\" was not declared"));
  }
  absl::MutexLock lock(&mu_);
  written_[std::string(name)] = it->second.size;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Write(absl::string_view name, uint64_t offset,
                                      absl::Span<const uint8_t> data) {
  auto it = slots_.find(name);
  if (it == slots_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor \"", name, "\" was not declared"));
  }
  const Slot& slot = it->second;
  if (offset > slot.size || data.size() > slot.size - offset) {
    return absl::OutOfRangeError(absl::StrCat(
        "tensor \"", name, "\": write of ", data.size(), " bytes at offset ",
        offset, " exceeds its ", slot.size, " bytes"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return absl::FailedPreconditionError("writer finished");
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::pwrite(fd_, data.data() + done, data.size() - done,
                         static_cast<off_t>(slot.begin + offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", partial_path_, errno);
    }
    done += static_cast<size_t>(w);
  }
  absl::MutexLock lock(&mu_);
  written_[std::string(name)] += data.size();
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  absl::MutexLock lock(&mu_);
  if (finished_) return absl::FailedPreconditionError("writer finished");
  std::vector<std::string> names;
  for (const auto& [name, slot] : slots_) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    uint64_t written = written_[name];
    uint64_t size = slots_[name].size;
    if (written != size) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor \"", name, "\" has ", written, " of its ", size,
                       " bytes written"));
    }
  }
  if (::fsync(fd_) != 0)
    return ErrnoStatus("cannot sync", partial_path_, errno);
  if (::close(fd_) != 0) {
    fd_ = -1;
    return ErrnoStatus("cannot close", partial_path_, errno);
  }
  fd_ = -1;
  if (::rename(partial_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoStatus("cannot rename to " + path_, partial_path_, errno);
  }
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace quantd

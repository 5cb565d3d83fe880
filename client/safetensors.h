// Reading and writing safetensors files (https://huggingface.co/docs/
// safetensors), single-file and sharded.
//
// File format, as read and written here:
//   bytes [0, 8)        N, the header length, uint64 little-endian
//   bytes [8, 8+N)      the header: a UTF-8 JSON object. Each key is a tensor
//                       name mapping to {"dtype": "F32", "shape": [2, 3],
//                       "data_offsets": [begin, end]}; the optional key
//                       "__metadata__" maps to an object of string values.
//                       Trailing spaces may pad the header.
//   bytes [8+N, EOF)    the data buffer. Offsets are relative to its start;
//                       the tensors tile it exactly: sorted by offset, each
//                       begins where the previous ends, the last ends at EOF.
//   A tensor's bytes are its elements, row-major, little-endian, and number
//   product(shape) * sizeof(dtype).
//
//   QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsModel> model,
//                           SafetensorsModel::Open("/models/llama"));
//   for (const SafetensorsTensor* t : model->tensors()) {
//     Use(t->name, t->dtype, t->shape, t->data);  // data points into an mmap
//   }
//
// Reading maps the file read-only (mmap): tensor data is never copied into
// memory by the reader, so opening a model costs its header only.
#ifndef QUANTD_CLIENT_SAFETENSORS_H_
#define QUANTD_CLIENT_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace quantd {

// Largest header accepted (as the reference Rust implementation: 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype name ("F32" -> 4, "BOOL" -> 1),
// for every dtype of the format: BOOL U8 I8 F8_E4M3 F8_E5M2 I16 U16 F16 BF16
// I32 U32 F32 F64 I64 U64. nullopt for anything else.
std::optional<int> SafetensorsDTypeSize(absl::string_view dtype);

// A read-only memory mapping of a whole file.
// Thread-safety: immutable after Open; safe to share.
class MappedFile {
 public:
  // NotFound if the file does not exist, InvalidArgument if it is not a
  // regular file, Internal for other OS errors (message has errno text).
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(
      const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;  // nullptr for an empty file
  size_t size_;
};

struct SafetensorsTensor {
  std::string name;
  std::string dtype;  // as in the file: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;
  int64_t num_elements = 0;
  // Points into the owning file's mapping; valid while it lives.
  absl::Span<const uint8_t> data;
  // The file this tensor was read from (a shard of a sharded model).
  std::string file;
};

// One safetensors file, validated completely on Open.
// Thread-safety: immutable after Open; safe to share.
class SafetensorsFile {
 public:
  // Maps and validates `path`. InvalidArgument, naming the file and the
  // problem (and the tensor where there is one), when: the file is shorter
  // than 8 bytes or than its header; the header length exceeds
  // kMaxSafetensorsHeaderBytes; the header is not a JSON object or a tensor
  // entry is malformed (missing/extra keys, negative or non-integer shape or
  // offsets); a dtype is unknown; shape x dtype size != end - begin; offsets
  // are out of bounds, overlap, or leave gaps; __metadata__ is not an object
  // of strings. NotFound if the file does not exist.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);

  const std::string& path() const { return file_->path(); }
  // In name order.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // nullptr if absent.
  const SafetensorsTensor* Find(absl::string_view name) const;
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }

 private:
  SafetensorsFile() = default;
  std::unique_ptr<MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A model: one safetensors file or the shards of a sharded checkpoint.
// Thread-safety: immutable after Open; safe to share.
class SafetensorsModel {
 public:
  // `path` is one of:
  //  - a .safetensors file;
  //  - a sharded index (model.safetensors.index.json: {"metadata": {...},
  //    "weight_map": {tensor: shard file name relative to the index}});
  //  - a directory holding model.safetensors.index.json, else
  //    model.safetensors, else exactly one *.safetensors file.
  // Every shard named by the weight map is opened and validated; each
  // weight-map tensor must be in its shard, and every tensor of a shard must
  // be in the weight map (InvalidArgument otherwise, naming both). Shard
  // names must be plain relative paths (no "..", not absolute). NotFound if
  // the path or a shard does not exist, or a directory has no model.
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> Open(
      const std::string& path);

  // Every tensor of every shard, in name order.
  const std::vector<const SafetensorsTensor*>& tensors() const {
    return tensors_;
  }
  const SafetensorsTensor* Find(absl::string_view name) const;
  // __metadata__ of all shards merged (the first shard in file-name order
  // wins on conflicts).
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // Files opened, in name order.
  std::vector<std::string> files() const;

 private:
  SafetensorsModel() = default;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<const SafetensorsTensor*> tensors_;
  absl::flat_hash_map<std::string, const SafetensorsTensor*> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file whose tensors are all declared up front, so the
// header (and every data offset) is final before any data is written. Data
// may then arrive in any order, from any thread: each piece is written at
// its place with pwrite, so nothing but the piece in hand is in memory.
//
// The file is written as PATH.partial and renamed to PATH by Finish(); a
// writer destroyed without a successful Finish() removes the partial file.
// Tensors are laid out in name order; the header is padded with spaces so
// the data buffer starts at a multiple of 8 bytes.
//
//   QUANTD_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(
//       "out.safetensors", {{"w", "F32", {2, 2}}}, {{"format", "pt"}}));
//   QUANTD_RETURN_IF_ERROR(writer->Write("w", 0, bytes));
//   QUANTD_RETURN_IF_ERROR(writer->Finish());
//
// Thread-safety: Write may be called concurrently (for different tensors or
// different ranges); Finish must not race with Write.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    std::string dtype;  // a SafetensorsDTypeSize name
    std::vector<int64_t> shape;
  };

  struct Options {
    // Reopen PATH.partial left by an earlier writer instead of starting
    // over, if its header (entries, offsets, metadata) and size are exactly
    // this writer's; resumed() tells whether it was. Tensors already in it
    // are checked with SlotCrc32c and kept with MarkComplete.
    bool resume = false;
    // Leave PATH.partial on disk when destroyed unfinished (so a later
    // writer can resume it) instead of removing it.
    bool keep_partial = false;
  };

  // InvalidArgument for an empty or duplicate name, the reserved name
  // "__metadata__", an unknown dtype or a negative dimension; Internal (with
  // errno text) if the file cannot be created or sized.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<Entry> entries,
      const std::map<std::string, std::string>& metadata,
      const Options& options);
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<Entry> entries,
      const std::map<std::string, std::string>& metadata) {
    return Create(path, std::move(entries), metadata, Options());
  }
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Writes `data` at byte `offset` of tensor `name`. NotFound for an unknown
  // name; OutOfRange if the range exceeds the tensor; FailedPrecondition
  // after Finish(); Internal on I/O errors.
  absl::Status Write(absl::string_view name, uint64_t offset,
                     absl::Span<const uint8_t> data);

  // Checks that every tensor received exactly its byte count (writes must
  // not overlap: FailedPrecondition naming the first incomplete tensor
  // otherwise), flushes, closes and renames into place.
  absl::Status Finish();

  // Whether Create reopened an earlier partial file (Options::resume).
  bool resumed() const { return resumed_; }
  const std::string& partial_path() const { return partial_path_; }

  // CRC-32C of tensor `name`'s bytes as they are in the file now. NotFound
  // for an unknown name; Internal on I/O errors.
  absl::StatusOr<uint32_t> SlotCrc32c(absl::string_view name);

  // Counts tensor `name` as completely written (its bytes are already in a
  // resumed file). NotFound for an unknown name.
  absl::Status MarkComplete(absl::string_view name);

  // Byte size of the data buffer (sum of all tensor sizes) and header.
  uint64_t data_bytes() const { return data_bytes_; }
  uint64_t header_bytes() const { return header_bytes_; }

 private:
  struct Slot {
    uint64_t begin = 0;  // offset in the file
    uint64_t size = 0;
  };
  SafetensorsWriter() = default;

  std::string path_;
  std::string partial_path_;
  int fd_ = -1;
  bool resumed_ = false;
  bool keep_partial_ = false;
  uint64_t header_bytes_ = 0;
  uint64_t data_bytes_ = 0;
  absl::flat_hash_map<std::string, Slot> slots_;  // keys fixed at Create
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Bytes written per tensor (indexing slots_ by name).
  absl::flat_hash_map<std::string, uint64_t> written_ ABSL_GUARDED_BY(mu_);
};

}  // namespace quantd

#endif  // QUANTD_CLIENT_SAFETENSORS_H_

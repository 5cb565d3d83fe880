// Reading and writing GGUF files, the model container of llama.cpp/ggml
// (versions 2 and 3, little-endian).
//
// File format, as read and written here (all integers little-endian):
//   magic "GGUF" | u32 version (2 or 3) | u64 n_tensors | u64 n_kv
//   n_kv key/value pairs:   string key | u32 value type | value
//   n_tensors tensor infos: string name | u32 n_dims (1..4) |
//                           u64 ne[n_dims] | u32 ggml type | u64 offset
//   zero padding to a multiple of the alignment
//   the data section: each tensor's bytes at data_start + offset; offsets
//   are multiples of the alignment.
// A string is a u64 byte length and the bytes (no terminator). A value is
// one of the scalar types (u8 i8 u16 i16 u32 i32 f32 bool u64 i64 f64), a
// string, or an array: u32 element type | u64 count | the elements (scalars
// or strings; arrays of arrays are rejected, as ggml does). The alignment is
// the u32 value of "general.alignment" (a power of two), else 32. ne[0] is
// the innermost (row) dimension: a row-major [rows, cols] matrix has
// ne = {cols, rows}. A tensor's bytes are rows of ne[0] / block_size blocks
// of its ggml type.
//
//   QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> in,
//                           GgufFile::Open("model-f16.gguf"));
//   for (const GgufTensor& t : in->tensors()) Use(t.name, t.type, t.data);
//   std::optional<uint64_t> n_layer =
//       in->metadata().FindUint("llama.block_count");
//
//   GgufMetadata meta = in->metadata();
//   meta.Set("general.file_type", GgufValue::U32(15));
//   QUANTD_ASSIGN_OR_RETURN(auto out, GgufWriter::Create(
//       "out.gguf", meta, {{"w", {4096, 4096}, kGgmlTypeQ4_K}}));
//   QUANTD_RETURN_IF_ERROR(out->Write("w", 0, bytes));
//   QUANTD_RETURN_IF_ERROR(out->Finish());
//
// Reading maps the file read-only; tensor data is never copied.
#ifndef QUANTD_CLIENT_GGUF_H_
#define QUANTD_CLIENT_GGUF_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "client/safetensors.h"  // MappedFile

namespace quantd {

// ---------------------------------------------------------------------------
// ggml tensor types

// ggml's enum ggml_type values, as stored in GGUF tensor infos.
inline constexpr uint32_t kGgmlTypeF32 = 0;
inline constexpr uint32_t kGgmlTypeF16 = 1;
inline constexpr uint32_t kGgmlTypeQ4_0 = 2;
inline constexpr uint32_t kGgmlTypeQ4_1 = 3;
inline constexpr uint32_t kGgmlTypeQ5_0 = 6;
inline constexpr uint32_t kGgmlTypeQ5_1 = 7;
inline constexpr uint32_t kGgmlTypeQ8_0 = 8;
inline constexpr uint32_t kGgmlTypeQ2_K = 10;
inline constexpr uint32_t kGgmlTypeQ3_K = 11;
inline constexpr uint32_t kGgmlTypeQ4_K = 12;
inline constexpr uint32_t kGgmlTypeQ5_K = 13;
inline constexpr uint32_t kGgmlTypeQ6_K = 14;
inline constexpr uint32_t kGgmlTypeIQ2_XXS = 16;
inline constexpr uint32_t kGgmlTypeIQ2_XS = 17;
inline constexpr uint32_t kGgmlTypeIQ3_XXS = 18;
inline constexpr uint32_t kGgmlTypeIQ1_S = 19;
inline constexpr uint32_t kGgmlTypeIQ4_NL = 20;
inline constexpr uint32_t kGgmlTypeIQ3_S = 21;
inline constexpr uint32_t kGgmlTypeIQ2_S = 22;
inline constexpr uint32_t kGgmlTypeIQ4_XS = 23;
inline constexpr uint32_t kGgmlTypeI32 = 26;
inline constexpr uint32_t kGgmlTypeIQ1_M = 29;
inline constexpr uint32_t kGgmlTypeBF16 = 30;
inline constexpr uint32_t kGgmlTypeTQ1_0 = 34;
inline constexpr uint32_t kGgmlTypeTQ2_0 = 35;
inline constexpr uint32_t kGgmlTypeMXFP4 = 39;

// Storage of one ggml type: `type_bytes` bytes hold `block_size` elements.
struct GgmlTypeInfo {
  uint32_t type;
  const char* name;  // ggml_type_name, upper case: "F16", "Q4_K", "IQ4_NL"
  int block_size;
  int type_bytes;
  bool quantized;  // a block format (not F32/F16/BF16/F64/I8..I64)
};

// Every ggml type a GGUF file may hold, in type order.
absl::Span<const GgmlTypeInfo> GgmlTypeTable();
// nullptr if unknown.
const GgmlTypeInfo* FindGgmlType(uint32_t type);
// Case-insensitive ("q4_k", "F16"); nullptr if unknown.
const GgmlTypeInfo* FindGgmlType(absl::string_view name);
// Name of `type`, or "type<N>" for an unknown one.
std::string GgmlTypeName(uint32_t type);
// Bytes of a tensor of `type` with dimensions `ne` (ggml order).
// InvalidArgument for an unknown type, a negative dimension, ne[0] not a
// multiple of the block size, or a byte count above 2^62.
absl::StatusOr<uint64_t> GgmlTensorBytes(uint32_t type,
                                         absl::Span<const int64_t> ne);

// ---------------------------------------------------------------------------
// Metadata values

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
// "UINT8", "STRING", ... (as the gguf Python package names them).
const char* GgufValueTypeName(GgufValueType type);
// Bytes of one scalar element; 0 for kString and kArray.
int GgufScalarBytes(GgufValueType type);

// One metadata value: a scalar, a string, or an array of scalars or
// strings. A value is immutable once built by one of the factories.
class GgufValue {
 public:
  static GgufValue U8(uint8_t v);
  static GgufValue I8(int8_t v);
  static GgufValue U16(uint16_t v);
  static GgufValue I16(int16_t v);
  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue U64(uint64_t v);
  static GgufValue I64(int64_t v);
  static GgufValue F32(float v);
  static GgufValue F64(double v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  // An array of `count` scalars of `element_type` whose little-endian bytes
  // are `bytes` (count * GgufScalarBytes(element_type) of them).
  // REQUIRES: element_type is a scalar type and the sizes agree.
  static GgufValue ScalarArray(GgufValueType element_type, uint64_t count,
                               std::vector<uint8_t> bytes);
  static GgufValue StringArray(std::vector<std::string> v);

  GgufValueType type() const { return type_; }
  bool is_array() const { return type_ == GgufValueType::kArray; }
  // The element type of an array; the type itself otherwise.
  GgufValueType element_type() const { return element_type_; }
  // Elements: 1 for a scalar or string.
  uint64_t count() const { return count_; }

  // Scalar accessors (not arrays). An unsigned or non-negative signed
  // integer as uint64; any integer as int64 (u64 above INT64_MAX: nullopt);
  // any number (integer or float) as double; bool; string.
  std::optional<uint64_t> AsUint() const;
  std::optional<int64_t> AsInt() const;
  std::optional<double> AsDouble() const;
  std::optional<bool> AsBool() const;
  std::optional<std::string> AsString() const;
  // Element i of an array (or i == 0 of a scalar) as int64 / double;
  // nullopt when out of range or not a number.
  std::optional<int64_t> IntAt(uint64_t i) const;
  std::optional<double> DoubleAt(uint64_t i) const;
  // String array elements (or the one string).
  const std::vector<std::string>& strings() const { return strings_; }
  // Little-endian bytes of scalar or scalar-array elements.
  const std::vector<uint8_t>& bytes() const { return bytes_; }

  // Short human-readable form: "42", "\"llama\"", "[UINT32 x 32]".
  std::string DebugString() const;

  friend bool operator==(const GgufValue&, const GgufValue&) = default;

 private:
  GgufValue(GgufValueType type, GgufValueType element_type, uint64_t count)
      : type_(type), element_type_(element_type), count_(count) {}

  GgufValueType type_;
  GgufValueType element_type_;
  uint64_t count_;
  std::vector<uint8_t> bytes_;
  std::vector<std::string> strings_;
};

// Key/value metadata in file order. Keys are unique.
class GgufMetadata {
 public:
  const std::vector<std::pair<std::string, GgufValue>>& entries() const {
    return entries_;
  }
  size_t size() const { return entries_.size(); }
  // nullptr if absent.
  const GgufValue* Find(absl::string_view key) const;
  // Shortcuts over Find: nullopt if absent or of another kind.
  std::optional<uint64_t> FindUint(absl::string_view key) const;
  std::optional<std::string> FindString(absl::string_view key) const;
  // Replaces the value in place (keeping the key's position) or appends.
  void Set(absl::string_view key, GgufValue value);
  // Returns whether the key was present.
  bool Remove(absl::string_view key);

  friend bool operator==(const GgufMetadata&, const GgufMetadata&) = default;

 private:
  std::vector<std::pair<std::string, GgufValue>> entries_;
};

// ---------------------------------------------------------------------------
// Reading

// Default alignment of the data section and of every tensor.
inline constexpr uint32_t kGgufDefaultAlignment = 32;
// ggml's GGML_MAX_DIMS.
inline constexpr int kGgufMaxDims = 4;
// Longest tensor name ggml accepts (GGML_MAX_NAME - 1).
inline constexpr size_t kGgufMaxTensorName = 63;

struct GgufTensor {
  std::string name;
  // Dimensions in ggml order: ne[0] is the row length.
  std::vector<int64_t> ne;
  uint32_t type = kGgmlTypeF32;  // a ggml type (see FindGgmlType)
  uint64_t offset = 0;           // within the data section
  int64_t num_elements = 0;
  // Points into the file's mapping; valid while the GgufFile lives.
  absl::Span<const uint8_t> data;

  int64_t row_length() const { return ne.empty() ? 1 : ne[0]; }
  // Elements / row_length.
  int64_t rows() const;
  // Row-major shape (ne reversed), as numpy and safetensors show it.
  std::vector<int64_t> Shape() const;
};

// One GGUF file, validated completely on Open.
// Thread-safety: immutable after Open; safe to share.
class GgufFile {
 public:
  // Maps and validates `path`. InvalidArgument naming the file and the
  // problem (with the key or tensor where there is one) when: the magic is
  // not "GGUF"; the version is not 2 or 3; the file ends inside the header;
  // a count (keys, tensors, array elements, string bytes) cannot fit in
  // the bytes that remain; a value type is unknown or an array holds
  // arrays; a key or tensor name repeats; a key or name is empty or a name
  // longer than 63 bytes; general.alignment is not a power-of-two u32; a
  // tensor has 0 or more than 4 dimensions, a negative dimension, an
  // unknown ggml type, a row length that is not a multiple of its block
  // size, an offset that is not a multiple of the alignment, data beyond
  // the end of the file, or data overlapping another tensor's. NotFound if
  // the file does not exist.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(
      const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  // Offset of the data section in the file.
  uint64_t data_offset() const { return data_offset_; }
  const GgufMetadata& metadata() const { return metadata_; }
  // In file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  // nullptr if absent.
  const GgufTensor* Find(absl::string_view name) const;

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 3;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  GgufMetadata metadata_;
  std::vector<GgufTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// ---------------------------------------------------------------------------
// Writing

// Writes a GGUF v3 file whose metadata and tensors are all declared up
// front, so the header and every offset are final before any data is
// written. Data may then arrive in any order, from any thread (pwrite at its
// place). Tensors keep the declared order; each starts at a multiple of the
// alignment (general.alignment if the metadata sets it, else 32) and the
// gaps, and the end of the file, are zero padding -- as ggml writes it.
//
// The file is written as PATH.partial and renamed to PATH by Finish(); a
// writer destroyed without a successful Finish() removes the partial file
// (unless Options::keep_partial: then a later writer of the same file may
// resume it).
//
// Thread-safety: Write may be called concurrently (for different tensors or
// ranges); Finish must not race with Write.
class GgufWriter {
 public:
  struct Entry {
    std::string name;
    std::vector<int64_t> ne;  // ggml order
    uint32_t type = kGgmlTypeF32;
  };

  struct Options {
    // Reopen PATH.partial left by an earlier writer instead of starting
    // over, if its header (metadata, tensor infos, offsets) and size are
    // exactly this writer's; resumed() tells whether it was. Ranges already
    // in it are checked with Crc32c and kept with MarkWritten.
    bool resume = false;
    // Leave PATH.partial on disk when destroyed unfinished (so a later
    // writer can resume it) instead of removing it.
    bool keep_partial = false;
  };

  // InvalidArgument for an empty, over-long or duplicate name, a bad shape
  // (see GgmlTensorBytes), an unknown type, or a general.alignment that is
  // not a power-of-two u32; Internal (with errno text) if the file cannot
  // be created.
  static absl::StatusOr<std::unique_ptr<GgufWriter>> Create(
      const std::string& path, const GgufMetadata& metadata,
      std::vector<Entry> entries, const Options& options);
  static absl::StatusOr<std::unique_ptr<GgufWriter>> Create(
      const std::string& path, const GgufMetadata& metadata,
      std::vector<Entry> entries) {
    return Create(path, metadata, std::move(entries), Options());
  }
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Writes `data` at byte `offset` of tensor `name`. NotFound for an
  // unknown name; OutOfRange if the range exceeds the tensor;
  // FailedPrecondition after Finish(); Internal on I/O errors.
  absl::Status Write(absl::string_view name, uint64_t offset,
                     absl::Span<const uint8_t> data);

  // Checks every tensor received exactly its byte count (FailedPrecondition
  // naming the first incomplete one), flushes, closes and renames.
  absl::Status Finish();

  // Whether Create reopened an earlier partial file (Options::resume).
  bool resumed() const { return resumed_; }
  const std::string& partial_path() const { return partial_path_; }

  // CRC-32C of bytes [offset, offset + size) of tensor `name` as they are in
  // the file now. NotFound for an unknown name; OutOfRange if the range
  // exceeds the tensor; Internal on I/O errors.
  absl::StatusOr<uint32_t> Crc32c(absl::string_view name, uint64_t offset,
                                  uint64_t size);

  // Counts `size` bytes of tensor `name` as written (they are already in a
  // resumed file). NotFound for an unknown name; OutOfRange if more than
  // the tensor's bytes would be counted.
  absl::Status MarkWritten(absl::string_view name, uint64_t size);

  // Bytes of the header (with its padding) and of the whole file.
  uint64_t header_bytes() const { return header_bytes_; }
  uint64_t file_bytes() const { return file_bytes_; }
  // Byte size of tensor `name` (0 if unknown).
  uint64_t TensorBytes(absl::string_view name) const;

 private:
  struct Slot {
    uint64_t begin = 0;  // offset in the file
    uint64_t size = 0;
  };
  GgufWriter() = default;

  std::string path_;
  std::string partial_path_;
  int fd_ = -1;
  bool resumed_ = false;
  bool keep_partial_ = false;
  uint64_t header_bytes_ = 0;
  uint64_t file_bytes_ = 0;
  absl::flat_hash_map<std::string, Slot> slots_;  // fixed at Create
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, uint64_t> written_ ABSL_GUARDED_BY(mu_);
};

}  // namespace quantd

#endif  // QUANTD_CLIENT_GGUF_H_

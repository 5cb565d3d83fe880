#include "client/gguf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/crc32c.h"
#include "base/status_macros.h"

namespace quantd {
namespace {

absl::Status ErrnoStatus(absl::string_view what, const std::string& path,
                         int err) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 62;

// Every type ggml defines a GGUF storage for (ggml.c's type_traits).
constexpr GgmlTypeInfo kTypes[] = {
    {0, "F32", 1, 4, false},       {1, "F16", 1, 2, false},
    {2, "Q4_0", 32, 18, true},     {3, "Q4_1", 32, 20, true},
    {6, "Q5_0", 32, 22, true},     {7, "Q5_1", 32, 24, true},
    {8, "Q8_0", 32, 34, true},     {9, "Q8_1", 32, 36, true},
    {10, "Q2_K", 256, 84, true},   {11, "Q3_K", 256, 110, true},
    {12, "Q4_K", 256, 144, true},  {13, "Q5_K", 256, 176, true},
    {14, "Q6_K", 256, 210, true},  {15, "Q8_K", 256, 292, true},
    {16, "IQ2_XXS", 256, 66, true}, {17, "IQ2_XS", 256, 74, true},
    {18, "IQ3_XXS", 256, 98, true}, {19, "IQ1_S", 256, 50, true},
    {20, "IQ4_NL", 32, 18, true},  {21, "IQ3_S", 256, 110, true},
    {22, "IQ2_S", 256, 82, true},  {23, "IQ4_XS", 256, 136, true},
    {24, "I8", 1, 1, false},       {25, "I16", 1, 2, false},
    {26, "I32", 1, 4, false},      {27, "I64", 1, 8, false},
    {28, "F64", 1, 8, false},      {29, "IQ1_M", 256, 56, true},
    {30, "BF16", 1, 2, false},     {34, "TQ1_0", 256, 54, true},
    {35, "TQ2_0", 256, 66, true},  {39, "MXFP4", 32, 17, true},
};

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

uint64_t Pad(uint64_t v, uint64_t align) {
  return (v + align - 1) / align * align;
}

template <typename T>
std::vector<uint8_t> LeBytes(T v) {
  std::vector<uint8_t> out(sizeof(T));
  std::memcpy(out.data(), &v, sizeof(T));  // x86-64 and aarch64: LE
  return out;
}

// A bounds-checked little-endian cursor over the mapped header.
class Reader {
 public:
  Reader(absl::Span<const uint8_t> bytes, std::string file)
      : bytes_(bytes), file_(std::move(file)) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", what));
  }
  absl::Status Truncated(absl::string_view reading) const {
    return Error(absl::StrCat("truncated: the file ends at byte ",
                              bytes_.size(), " while reading ", reading));
  }

  absl::Status Raw(void* dst, size_t n, absl::string_view reading) {
    if (remaining() < n) return Truncated(reading);
    if (n > 0) std::memcpy(dst, bytes_.data() + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Read(T& v, absl::string_view reading) {
    return Raw(&v, sizeof(T), reading);
  }
  absl::Status String(std::string& s, absl::string_view reading) {
    uint64_t n = 0;
    QUANTD_RETURN_IF_ERROR(Read(n, reading));
    if (n > remaining()) {
      return Error(absl::StrCat("string of ", n, " bytes while reading ",
                                reading, " exceeds the ", remaining(),
                                " bytes left in the file"));
    }
    s.assign(reinterpret_cast<const char*>(bytes_.data() + pos_),
             static_cast<size_t>(n));
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  absl::Span<const uint8_t> bytes_;
  std::string file_;
  uint64_t pos_ = 0;
};

absl::StatusOr<GgufValue> ReadScalar(Reader& in, GgufValueType type,
                                     const std::string& key) {
  std::string what = absl::StrCat("the value of \"", key, "\"");
  switch (type) {
    case GgufValueType::kUint8: {
      uint8_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::U8(v);
    }
    case GgufValueType::kInt8: {
      int8_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::I8(v);
    }
    case GgufValueType::kUint16: {
      uint16_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::U16(v);
    }
    case GgufValueType::kInt16: {
      int16_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::I16(v);
    }
    case GgufValueType::kUint32: {
      uint32_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::U32(v);
    }
    case GgufValueType::kInt32: {
      int32_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::I32(v);
    }
    case GgufValueType::kFloat32: {
      float v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::F32(v);
    }
    case GgufValueType::kBool: {
      uint8_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      if (v > 1) {
        return in.Error(absl::StrCat("key \"", key, "\": bool value ", v,
                                     " is neither 0 nor 1"));
      }
      return GgufValue::Bool(v != 0);
    }
    case GgufValueType::kUint64: {
      uint64_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::U64(v);
    }
    case GgufValueType::kInt64: {
      int64_t v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::I64(v);
    }
    case GgufValueType::kFloat64: {
      double v;
      QUANTD_RETURN_IF_ERROR(in.Read(v, what));
      return GgufValue::F64(v);
    }
    case GgufValueType::kString: {
      std::string v;
      QUANTD_RETURN_IF_ERROR(in.String(v, what));
      return GgufValue::String(std::move(v));
    }
    case GgufValueType::kArray:
      break;
  }
  return absl::InternalError("ReadScalar: not a scalar type");
}

absl::StatusOr<GgufValue> ReadValue(Reader& in, uint32_t raw_type,
                                    const std::string& key) {
  if (raw_type > 12) {
    return in.Error(
        absl::StrCat("key \"", key, "\": unknown value type ", raw_type));
  }
  auto type = static_cast<GgufValueType>(raw_type);
  if (type != GgufValueType::kArray) return ReadScalar(in, type, key);

  uint32_t raw_element = 0;
  uint64_t count = 0;
  std::string what = absl::StrCat("the array header of \"", key, "\"");
  QUANTD_RETURN_IF_ERROR(in.Read(raw_element, what));
  QUANTD_RETURN_IF_ERROR(in.Read(count, what));
  if (raw_element == static_cast<uint32_t>(GgufValueType::kArray)) {
    return in.Error(absl::StrCat("key \"", key,
                                 "\": arrays of arrays are not supported"));
  }
  if (raw_element > 12) {
    return in.Error(absl::StrCat("key \"", key,
                                 "\": unknown array element type ",
                                 raw_element));
  }
  auto element = static_cast<GgufValueType>(raw_element);
  if (element == GgufValueType::kString) {
    // Each string takes at least its 8-byte length.
    if (count > in.remaining() / 8) {
      return in.Error(absl::StrCat("key \"", key, "\": array of ", count,
                                   " strings cannot fit in the ",
                                   in.remaining(), " bytes left"));
    }
    std::vector<std::string> strings(static_cast<size_t>(count));
    for (std::string& s : strings) {
      QUANTD_RETURN_IF_ERROR(
          in.String(s, absl::StrCat("an element of \"", key, "\"")));
    }
    return GgufValue::StringArray(std::move(strings));
  }
  const uint64_t element_bytes =
      static_cast<uint64_t>(GgufScalarBytes(element));
  if (count > in.remaining() / element_bytes) {
    return in.Error(absl::StrCat("key \"", key, "\": array of ", count, " ",
                                 GgufValueTypeName(element),
                                 " cannot fit in the ", in.remaining(),
                                 " bytes left"));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(count * element_bytes));
  QUANTD_RETURN_IF_ERROR(in.Raw(bytes.data(), bytes.size(), what));
  if (element == GgufValueType::kBool) {
    for (uint8_t b : bytes) {
      if (b > 1) {
        return in.Error(absl::StrCat("key \"", key, "\": bool element ", b,
                                     " is neither 0 nor 1"));
      }
    }
  }
  return GgufValue::ScalarArray(element, count, std::move(bytes));
}

// Appends the on-disk form of a value (type field excluded).
void AppendValue(std::string& out, const GgufValue& v);

template <typename T>
void Append(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

void AppendString(std::string& out, absl::string_view s) {
  Append<uint64_t>(out, s.size());
  out.append(s.data(), s.size());
}

void AppendValue(std::string& out, const GgufValue& v) {
  if (v.type() == GgufValueType::kArray) {
    Append<uint32_t>(out, static_cast<uint32_t>(v.element_type()));
    Append<uint64_t>(out, v.count());
    if (v.element_type() == GgufValueType::kString) {
      for (const std::string& s : v.strings()) AppendString(out, s);
    } else {
      out.append(reinterpret_cast<const char*>(v.bytes().data()),
                 v.bytes().size());
    }
    return;
  }
  if (v.type() == GgufValueType::kString) {
    AppendString(out, v.strings()[0]);
    return;
  }
  out.append(reinterpret_cast<const char*>(v.bytes().data()), v.bytes().size());
}

// The alignment a metadata set asks for.
absl::StatusOr<uint32_t> AlignmentOf(const GgufMetadata& metadata) {
  const GgufValue* v = metadata.Find("general.alignment");
  if (v == nullptr) return kGgufDefaultAlignment;
  std::optional<uint64_t> a = v->AsUint();
  if (v->type() != GgufValueType::kUint32 || !a || !IsPowerOfTwo(*a)) {
    return absl::InvalidArgumentError(
        absl::StrCat("general.alignment must be a UINT32 power of two, not ",
                     GgufValueTypeName(v->type()), " ", v->DebugString()));
  }
  return static_cast<uint32_t>(*a);
}

}  // namespace

// ---------------------------------------------------------------------------
// ggml types

absl::Span<const GgmlTypeInfo> GgmlTypeTable() { return kTypes; }

const GgmlTypeInfo* FindGgmlType(uint32_t type) {
  for (const GgmlTypeInfo& t : kTypes) {
    if (t.type == type) return &t;
  }
  return nullptr;
}

const GgmlTypeInfo* FindGgmlType(absl::string_view name) {
  for (const GgmlTypeInfo& t : kTypes) {
    if (absl::EqualsIgnoreCase(t.name, name)) return &t;
  }
  return nullptr;
}

std::string GgmlTypeName(uint32_t type) {
  const GgmlTypeInfo* t = FindGgmlType(type);
  return t != nullptr ? std::string(t->name) : absl::StrCat("type", type);
}

absl::StatusOr<uint64_t> GgmlTensorBytes(uint32_t type,
                                         absl::Span<const int64_t> ne) {
  const GgmlTypeInfo* info = FindGgmlType(type);
  if (info == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown ggml type ", type));
  }
  uint64_t elements = 1;
  for (int64_t d : ne) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension in [", absl::StrJoin(ne, ", "),
                       "]"));
    }
    if (d != 0 && elements > kMaxTensorBytes / static_cast<uint64_t>(d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dimensions [", absl::StrJoin(ne, ", "), "] are too large"));
    }
    elements *= static_cast<uint64_t>(d);
  }
  const int64_t row = ne.empty() ? 1 : ne[0];
  if (row % info->block_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("row length ", row, " is not a multiple of the block size ",
                     info->block_size, " of ", info->name));
  }
  const uint64_t blocks = elements / static_cast<uint64_t>(info->block_size);
  if (blocks > kMaxTensorBytes / static_cast<uint64_t>(info->type_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dimensions [", absl::StrJoin(ne, ", "), "] are too large"));
  }
  return blocks * static_cast<uint64_t>(info->type_bytes);
}

// ---------------------------------------------------------------------------
// Values

const char* GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "UINT8";
    case GgufValueType::kInt8: return "INT8";
    case GgufValueType::kUint16: return "UINT16";
    case GgufValueType::kInt16: return "INT16";
    case GgufValueType::kUint32: return "UINT32";
    case GgufValueType::kInt32: return "INT32";
    case GgufValueType::kFloat32: return "FLOAT32";
    case GgufValueType::kBool: return "BOOL";
    case GgufValueType::kString: return "STRING";
    case GgufValueType::kArray: return "ARRAY";
    case GgufValueType::kUint64: return "UINT64";
    case GgufValueType::kInt64: return "INT64";
    case GgufValueType::kFloat64: return "FLOAT64";
  }
  return "?";
}

int GgufScalarBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

#define QUANTD_GGUF_SCALAR_FACTORY(Name, CType, Kind)            \
  GgufValue GgufValue::Name(CType v) {                           \
    GgufValue out(GgufValueType::Kind, GgufValueType::Kind, 1);  \
    out.bytes_ = LeBytes<CType>(v);                              \
    return out;                                                  \
  }
QUANTD_GGUF_SCALAR_FACTORY(U8, uint8_t, kUint8)
QUANTD_GGUF_SCALAR_FACTORY(I8, int8_t, kInt8)
QUANTD_GGUF_SCALAR_FACTORY(U16, uint16_t, kUint16)
QUANTD_GGUF_SCALAR_FACTORY(I16, int16_t, kInt16)
QUANTD_GGUF_SCALAR_FACTORY(U32, uint32_t, kUint32)
QUANTD_GGUF_SCALAR_FACTORY(I32, int32_t, kInt32)
QUANTD_GGUF_SCALAR_FACTORY(U64, uint64_t, kUint64)
QUANTD_GGUF_SCALAR_FACTORY(I64, int64_t, kInt64)
QUANTD_GGUF_SCALAR_FACTORY(F32, float, kFloat32)
QUANTD_GGUF_SCALAR_FACTORY(F64, double, kFloat64)
#undef QUANTD_GGUF_SCALAR_FACTORY

GgufValue GgufValue::Bool(bool v) {
  GgufValue out(GgufValueType::kBool, GgufValueType::kBool, 1);
  out.bytes_ = {static_cast<uint8_t>(v ? 1 : 0)};
  return out;
}

GgufValue GgufValue::String(std::string v) {
  GgufValue out(GgufValueType::kString, GgufValueType::kString, 1);
  out.strings_.push_back(std::move(v));
  return out;
}

GgufValue GgufValue::ScalarArray(GgufValueType element_type, uint64_t count,
                                 std::vector<uint8_t> bytes) {
  GgufValue out(GgufValueType::kArray, element_type, count);
  out.bytes_ = std::move(bytes);
  return out;
}

GgufValue GgufValue::StringArray(std::vector<std::string> v) {
  GgufValue out(GgufValueType::kArray, GgufValueType::kString, v.size());
  out.strings_ = std::move(v);
  return out;
}

std::optional<int64_t> GgufValue::IntAt(uint64_t i) const {
  if (i >= count_ || element_type_ == GgufValueType::kString ||
      element_type_ == GgufValueType::kFloat32 ||
      element_type_ == GgufValueType::kFloat64) {
    return std::nullopt;
  }
  const size_t n = static_cast<size_t>(GgufScalarBytes(element_type_));
  const uint8_t* p = bytes_.data() + i * n;
  switch (element_type_) {
    case GgufValueType::kUint8:
    case GgufValueType::kBool:
      return p[0];
    case GgufValueType::kInt8: {
      int8_t v;
      std::memcpy(&v, p, 1);
      return v;
    }
    case GgufValueType::kUint16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    case GgufValueType::kInt16: {
      int16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    case GgufValueType::kUint32: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case GgufValueType::kInt32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case GgufValueType::kUint64: {
      uint64_t v;
      std::memcpy(&v, p, 8);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return std::nullopt;
      }
      return static_cast<int64_t>(v);
    }
    case GgufValueType::kInt64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return v;
    }
    default:
      return std::nullopt;
  }
}

std::optional<double> GgufValue::DoubleAt(uint64_t i) const {
  if (i >= count_) return std::nullopt;
  if (element_type_ == GgufValueType::kFloat32) {
    float v;
    std::memcpy(&v, bytes_.data() + i * 4, 4);
    return v;
  }
  if (element_type_ == GgufValueType::kFloat64) {
    double v;
    std::memcpy(&v, bytes_.data() + i * 8, 8);
    return v;
  }
  if (element_type_ == GgufValueType::kUint64) {
    uint64_t v;
    std::memcpy(&v, bytes_.data() + i * 8, 8);
    return static_cast<double>(v);
  }
  std::optional<int64_t> v = IntAt(i);
  if (!v) return std::nullopt;
  return static_cast<double>(*v);
}

std::optional<uint64_t> GgufValue::AsUint() const {
  if (is_array() || type_ == GgufValueType::kString ||
      type_ == GgufValueType::kBool) {
    return std::nullopt;
  }
  if (type_ == GgufValueType::kUint64) {
    uint64_t v;
    std::memcpy(&v, bytes_.data(), 8);
    return v;
  }
  std::optional<int64_t> v = IntAt(0);
  if (!v || *v < 0) return std::nullopt;
  return static_cast<uint64_t>(*v);
}

std::optional<int64_t> GgufValue::AsInt() const {
  if (is_array() || type_ == GgufValueType::kBool) return std::nullopt;
  return IntAt(0);
}

std::optional<double> GgufValue::AsDouble() const {
  if (is_array() || type_ == GgufValueType::kString ||
      type_ == GgufValueType::kBool) {
    return std::nullopt;
  }
  return DoubleAt(0);
}

std::optional<bool> GgufValue::AsBool() const {
  if (type_ != GgufValueType::kBool) return std::nullopt;
  return bytes_[0] != 0;
}

std::optional<std::string> GgufValue::AsString() const {
  if (type_ != GgufValueType::kString) return std::nullopt;
  return strings_[0];
}

std::string GgufValue::DebugString() const {
  if (is_array()) {
    return absl::StrCat("[", GgufValueTypeName(element_type_), " x ", count_,
                        "]");
  }
  switch (type_) {
    case GgufValueType::kString:
      return absl::StrCat("\"", strings_[0], "\"");
    case GgufValueType::kBool:
      return bytes_[0] != 0 ? "true" : "false";
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      return absl::StrCat(*DoubleAt(0));
    case GgufValueType::kUint64:
      return absl::StrCat(*AsUint());
    default:
      return absl::StrCat(*IntAt(0));
  }
}

const GgufValue* GgufMetadata::Find(absl::string_view key) const {
  for (const auto& [k, v] : entries_) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::optional<uint64_t> GgufMetadata::FindUint(absl::string_view key) const {
  const GgufValue* v = Find(key);
  return v != nullptr ? v->AsUint() : std::nullopt;
}

std::optional<std::string> GgufMetadata::FindString(
    absl::string_view key) const {
  const GgufValue* v = Find(key);
  return v != nullptr ? v->AsString() : std::nullopt;
}

void GgufMetadata::Set(absl::string_view key, GgufValue value) {
  for (auto& [k, v] : entries_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::string(key), std::move(value));
}

bool GgufMetadata::Remove(absl::string_view key) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->first == key) {
      entries_.erase(it);
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// Reading

int64_t GgufTensor::rows() const {
  const int64_t row = row_length();
  return row == 0 ? 0 : num_elements / row;
}

std::vector<int64_t> GgufTensor::Shape() const {
  return std::vector<int64_t>(ne.rbegin(), ne.rend());
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(
    const std::string& path) {
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped,
                          MappedFile::Open(path));
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  absl::Span<const uint8_t> bytes = mapped->bytes();
  Reader in(bytes, path);

  char magic[4];
  QUANTD_RETURN_IF_ERROR(in.Raw(magic, 4, "the magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return in.Error("not a GGUF file (the magic is not \"GGUF\")");
  }
  QUANTD_RETURN_IF_ERROR(in.Read(file->version_, "the version"));
  if (file->version_ != 2 && file->version_ != 3) {
    return in.Error(absl::StrCat("GGUF version ", file->version_,
                                 " is not supported (2 and 3 are)"));
  }
  uint64_t n_tensors = 0;
  uint64_t n_kv = 0;
  QUANTD_RETURN_IF_ERROR(in.Read(n_tensors, "the tensor count"));
  QUANTD_RETURN_IF_ERROR(in.Read(n_kv, "the key/value count"));
  // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a
  // tensor info at least 8 + 4 + 8 + 4 + 8.
  if (n_kv > in.remaining() / 13) {
    return in.Error(absl::StrCat("key/value count ", n_kv,
                                 " cannot fit in the ", in.remaining(),
                                 " bytes left"));
  }
  if (n_tensors > in.remaining() / 32) {
    return in.Error(absl::StrCat("tensor count ", n_tensors,
                                 " cannot fit in the ", in.remaining(),
                                 " bytes left"));
  }

  absl::flat_hash_map<std::string, bool> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    QUANTD_RETURN_IF_ERROR(in.String(key, absl::StrCat("key ", i)));
    if (key.empty()) return in.Error(absl::StrCat("key ", i, " is empty"));
    if (!keys.emplace(key, true).second) {
      return in.Error(absl::StrCat("duplicate key \"", key, "\""));
    }
    uint32_t type = 0;
    QUANTD_RETURN_IF_ERROR(
        in.Read(type, absl::StrCat("the type of \"", key, "\"")));
    QUANTD_ASSIGN_OR_RETURN(GgufValue value, ReadValue(in, type, key));
    file->metadata_.Set(key, std::move(value));
  }
  {
    absl::StatusOr<uint32_t> alignment = AlignmentOf(file->metadata_);
    if (!alignment.ok()) return in.Error(alignment.status().message());
    file->alignment_ = *alignment;
  }

  file->tensors_.resize(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor& t = file->tensors_[static_cast<size_t>(i)];
    QUANTD_RETURN_IF_ERROR(
        in.String(t.name, absl::StrCat("the name of tensor ", i)));
    auto bad = [&](absl::string_view what) {
      return in.Error(absl::StrCat("tensor \"", t.name, "\": ", what));
    };
    if (t.name.empty()) return in.Error(absl::StrCat("tensor ", i, ": empty name"));
    if (t.name.size() > kGgufMaxTensorName) {
      return bad(absl::StrCat("name longer than ", kGgufMaxTensorName,
                              " bytes"));
    }
    if (!file->index_.emplace(t.name, static_cast<size_t>(i)).second) {
      return bad("duplicate tensor name");
    }
    std::string what = absl::StrCat("the info of tensor \"", t.name, "\"");
    uint32_t n_dims = 0;
    QUANTD_RETURN_IF_ERROR(in.Read(n_dims, what));
    if (n_dims < 1 || n_dims > kGgufMaxDims) {
      return bad(absl::StrCat(n_dims, " dimensions (1 to ", kGgufMaxDims,
                              " are allowed)"));
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      int64_t ne = 0;
      QUANTD_RETURN_IF_ERROR(in.Read(ne, what));
      t.ne.push_back(ne);
    }
    QUANTD_RETURN_IF_ERROR(in.Read(t.type, what));
    QUANTD_RETURN_IF_ERROR(in.Read(t.offset, what));
    if (FindGgmlType(t.type) == nullptr) {
      return bad(absl::StrCat("unknown ggml type ", t.type));
    }
    absl::StatusOr<uint64_t> size = GgmlTensorBytes(t.type, t.ne);
    if (!size.ok()) return bad(size.status().message());
    int64_t elements = 1;
    for (int64_t d : t.ne) elements *= d;  // bounded by GgmlTensorBytes
    t.num_elements = elements;
    if (t.offset % file->alignment_ != 0) {
      return bad(absl::StrCat("offset ", t.offset,
                              " is not a multiple of the alignment ",
                              file->alignment_));
    }
    // Remember the size in `data` until the data section is known.
    t.data = absl::Span<const uint8_t>(nullptr, static_cast<size_t>(*size));
  }

  file->data_offset_ = Pad(in.pos(), file->alignment_);
  const uint64_t data_bytes =
      file->data_offset_ <= bytes.size() ? bytes.size() - file->data_offset_
                                         : 0;
  if (n_tensors > 0 && file->data_offset_ > bytes.size()) {
    return in.Error(absl::StrCat("truncated: the data section would start at ",
                                 file->data_offset_, " but the file has ",
                                 bytes.size(), " bytes"));
  }
  std::vector<size_t> by_offset(file->tensors_.size());
  for (size_t i = 0; i < by_offset.size(); ++i) by_offset[i] = i;
  for (GgufTensor& t : file->tensors_) {
    const uint64_t size = t.data.size();
    if (t.offset > data_bytes || size > data_bytes - t.offset) {
      return in.Error(absl::StrCat(
          "tensor \"", t.name, "\": data [", t.offset, ", ", t.offset + size,
          ") lies beyond the end of the data section (", data_bytes,
          " bytes): truncated file?"));
    }
    t.data = bytes.subspan(
        static_cast<size_t>(file->data_offset_ + t.offset),
        static_cast<size_t>(size));
  }
  std::sort(by_offset.begin(), by_offset.end(), [&](size_t a, size_t b) {
    return file->tensors_[a].offset < file->tensors_[b].offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensor& prev = file->tensors_[by_offset[i - 1]];
    const GgufTensor& cur = file->tensors_[by_offset[i]];
    if (prev.data.size() > 0 && cur.data.size() > 0 &&
        prev.offset + prev.data.size() > cur.offset) {
      return in.Error(absl::StrCat("tensors \"", prev.name, "\" and \"",
                                   cur.name, "\" overlap"));
    }
  }
  file->file_ = std::move(mapped);
  return file;
}

const GgufTensor* GgufFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---------------------------------------------------------------------------
// Writing

absl::StatusOr<std::unique_ptr<GgufWriter>> GgufWriter::Create(
    const std::string& path, const GgufMetadata& metadata,
    std::vector<Entry> entries, const Options& options) {
  auto writer = std::unique_ptr<GgufWriter>(new GgufWriter());
  QUANTD_ASSIGN_OR_RETURN(const uint32_t alignment, AlignmentOf(metadata));

  std::string header = "GGUF";
  Append<uint32_t>(header, 3);
  Append<uint64_t>(header, entries.size());
  Append<uint64_t>(header, metadata.size());
  for (const auto& [key, value] : metadata.entries()) {
    if (key.empty()) return absl::InvalidArgumentError("empty metadata key");
    AppendString(header, key);
    Append<uint32_t>(header, static_cast<uint32_t>(value.type()));
    AppendValue(header, value);
  }
  uint64_t offset = 0;
  std::vector<std::pair<std::string, Slot>> slots;
  for (const Entry& entry : entries) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", entry.name, "\": ", what));
    };
    if (entry.name.empty()) return bad("empty name");
    if (entry.name.size() > kGgufMaxTensorName) {
      return bad(absl::StrCat("name longer than ", kGgufMaxTensorName,
                              " bytes"));
    }
    if (writer->slots_.contains(entry.name)) return bad("duplicate name");
    if (entry.ne.empty() || entry.ne.size() > kGgufMaxDims) {
      return bad(absl::StrCat(entry.ne.size(), " dimensions (1 to ",
                              kGgufMaxDims, " are allowed)"));
    }
    absl::StatusOr<uint64_t> size = GgmlTensorBytes(entry.type, entry.ne);
    if (!size.ok()) return bad(size.status().message());
    AppendString(header, entry.name);
    Append<uint32_t>(header, static_cast<uint32_t>(entry.ne.size()));
    for (int64_t d : entry.ne) Append<int64_t>(header, d);
    Append<uint32_t>(header, entry.type);
    Append<uint64_t>(header, offset);
    writer->slots_[entry.name] = Slot{offset, *size};
    offset = Pad(offset + *size, alignment);
  }
  header.append(Pad(header.size(), alignment) - header.size(), '\0');
  writer->header_bytes_ = header.size();
  writer->file_bytes_ = header.size() + offset;
  for (auto& [name, slot] : writer->slots_) slot.begin += header.size();

  writer->path_ = path;
  writer->partial_path_ = path + ".partial";
  writer->keep_partial_ = options.keep_partial;
  if (options.resume) {
    writer->fd_ = ::open(writer->partial_path_.c_str(), O_RDWR | O_CLOEXEC);
    if (writer->fd_ >= 0) {
      struct stat st;
      std::string existing(header.size(), '\0');
      const bool same = ::fstat(writer->fd_, &st) == 0 &&
                        static_cast<uint64_t>(st.st_size) ==
                            writer->file_bytes_ &&
                        ::pread(writer->fd_, existing.data(), existing.size(),
                                0) == static_cast<ssize_t>(existing.size()) &&
                        existing == header;
      if (same) {
        writer->resumed_ = true;
        absl::MutexLock lock(&writer->mu_);
        for (const Entry& entry : entries) writer->written_[entry.name] = 0;
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
  // Sizing first makes every gap read back as zeros.
  if (::ftruncate(writer->fd_, static_cast<off_t>(writer->file_bytes_)) != 0) {
    return ErrnoStatus("cannot size", writer->partial_path_, errno);
  }
  size_t done = 0;
  while (done < header.size()) {
    ssize_t w = ::pwrite(writer->fd_, header.data() + done,
                         header.size() - done, static_cast<off_t>(done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", writer->partial_path_, errno);
    }
    done += static_cast<size_t>(w);
  }
  for (const Entry& entry : entries) writer->written_[entry.name] = 0;
  return writer;
}

GgufWriter::~GgufWriter() {
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

absl::StatusOr<uint32_t> GgufWriter::Crc32c(absl::string_view name,
                                            uint64_t offset, uint64_t size) {
  auto it = slots_.find(name);
  if (it == slots_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor \"", name, "\" was not declared"));
  }
  const Slot& slot = it->second;
  if (offset > slot.size || size > slot.size - offset) {
    return absl::OutOfRangeError(absl::StrCat(
        "tensor \"", name, "\": range of ", size, " bytes at offset ", offset,
        " exceeds its ", slot.size, " bytes"));
  }
  std::vector<uint8_t> buffer(std::min<uint64_t>(size, uint64_t{4} << 20));
  uint32_t crc = 0;
  uint64_t done = 0;
  while (done < size) {
    const size_t want =
        static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - done));
    ssize_t r = ::pread(fd_, buffer.data(), want,
                        static_cast<off_t>(slot.begin + offset + done));
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

absl::Status GgufWriter::MarkWritten(absl::string_view name, uint64_t size) {
  auto it = slots_.find(name);
  if (it == slots_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor \"", name, "\" was not declared"));
  }
  absl::MutexLock lock(&mu_);
  uint64_t& written = written_[std::string(name)];
  if (size > it->second.size - written) {
    return absl::OutOfRangeError(absl::StrCat(
        "tensor \"", name, "\": ", written + size, " bytes counted of its ",
        it->second.size));
  }
  written += size;
  return absl::OkStatus();
}

uint64_t GgufWriter::TensorBytes(absl::string_view name) const {
  auto it = slots_.find(name);
  return it == slots_.end() ? 0 : it->second.size;
}

absl::Status GgufWriter::Write(absl::string_view name, uint64_t offset,
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

absl::Status GgufWriter::Finish() {
  absl::MutexLock lock(&mu_);
  if (finished_) return absl::FailedPreconditionError("writer finished");
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, slot] : slots_) order.emplace_back(slot.begin, name);
  std::sort(order.begin(), order.end());
  for (const auto& [begin, name] : order) {
    const uint64_t written = written_[name];
    const uint64_t size = slots_[name].size;
    if (written != size) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor \"", name, "\" has ", written, " of its ", size,
                       " bytes written"));
    }
  }
  if (::fsync(fd_) != 0) return ErrnoStatus("cannot sync", partial_path_, errno);
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

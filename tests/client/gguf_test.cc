#include "client/gguf.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/crc32c.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

// Encodes GGUF bytes field by field, independently of GgufWriter, so the
// reader is checked against the format rather than against our writer.
class Bytes {
 public:
  template <typename T>
  Bytes& Put(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    s_.append(buf, sizeof(T));
    return *this;
  }
  Bytes& U32(uint32_t v) { return Put(v); }
  Bytes& U64(uint64_t v) { return Put(v); }
  Bytes& Str(const std::string& v) {
    U64(v.size());
    s_ += v;
    return *this;
  }
  Bytes& Raw(const std::string& v) {
    s_ += v;
    return *this;
  }
  Bytes& PadTo(size_t align) {
    s_.append((align - s_.size() % align) % align, '\0');
    return *this;
  }
  const std::string& str() const { return s_; }
  size_t size() const { return s_.size(); }

 private:
  std::string s_;
};

// Header start: magic, version, counts.
Bytes Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  Bytes b;
  b.Raw("GGUF").U32(version).U64(n_tensors).U64(n_kv);
  return b;
}

// A tensor info.
void Info(Bytes& b, const std::string& name, std::vector<int64_t> ne,
          uint32_t type, uint64_t offset) {
  b.Str(name).U32(static_cast<uint32_t>(ne.size()));
  for (int64_t d : ne) b.Put<int64_t>(d);
  b.U32(type).U64(offset);
}

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("quantd_gguf_") + info->name() + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }
  std::string WriteBytes(const std::string& name, const std::string& bytes) {
    std::ofstream out(Path(name), std::ios::binary);
    out << bytes;
    return Path(name);
  }
  std::string ReadBytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // Expects Open to fail with InvalidArgument mentioning `needle`.
  void ExpectInvalid(const std::string& bytes, const std::string& needle) {
    SCOPED_TRACE(needle);
    absl::StatusOr<std::unique_ptr<GgufFile>> f =
        GgufFile::Open(WriteBytes("bad.gguf", bytes));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument)
        << f.status();
    EXPECT_NE(f.status().message().find(needle), std::string::npos)
        << f.status();
  }

  fs::path dir_;
};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

template <typename T>
std::vector<uint8_t> LeArray(std::vector<T> v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// Metadata holding every value kind.
GgufMetadata EveryKind() {
  GgufMetadata m;
  m.Set("general.architecture", GgufValue::String("llama"));
  m.Set("k.u8", GgufValue::U8(250));
  m.Set("k.i8", GgufValue::I8(-100));
  m.Set("k.u16", GgufValue::U16(65000));
  m.Set("k.i16", GgufValue::I16(-32000));
  m.Set("k.u32", GgufValue::U32(4000000000u));
  m.Set("k.i32", GgufValue::I32(-2000000000));
  m.Set("k.u64", GgufValue::U64(18000000000000000000ull));
  m.Set("k.i64", GgufValue::I64(-9000000000000000000ll));
  m.Set("k.f32", GgufValue::F32(1.5f));
  m.Set("k.f64", GgufValue::F64(-2.25));
  m.Set("k.bool", GgufValue::Bool(true));
  m.Set("k.empty_string", GgufValue::String(""));
  m.Set("k.arr_u8", GgufValue::ScalarArray(GgufValueType::kUint8, 3,
                                           {1, 2, 3}));
  m.Set("k.arr_i32", GgufValue::ScalarArray(GgufValueType::kInt32, 2,
                                            LeArray<int32_t>({-1, 7})));
  m.Set("k.arr_f32", GgufValue::ScalarArray(GgufValueType::kFloat32, 2,
                                            LeArray<float>({0.5f, -3.f})));
  m.Set("k.arr_f64", GgufValue::ScalarArray(GgufValueType::kFloat64, 1,
                                            LeArray<double>({1e300})));
  m.Set("k.arr_bool", GgufValue::ScalarArray(GgufValueType::kBool, 2,
                                             {0, 1}));
  m.Set("k.arr_u64", GgufValue::ScalarArray(GgufValueType::kUint64, 1,
                                            LeArray<uint64_t>({1ull << 63})));
  m.Set("k.arr_str", GgufValue::StringArray({"a", "", "ccc"}));
  m.Set("k.arr_empty", GgufValue::ScalarArray(GgufValueType::kInt64, 0, {}));
  return m;
}

TEST_F(GgufTest, ValueAccessors) {
  EXPECT_EQ(GgufValue::U8(250).AsUint(), 250u);
  EXPECT_EQ(GgufValue::I8(-100).AsInt(), -100);
  EXPECT_EQ(GgufValue::I8(-100).AsUint(), std::nullopt);
  EXPECT_EQ(GgufValue::U64(18000000000000000000ull).AsUint(),
            18000000000000000000ull);
  EXPECT_EQ(GgufValue::U64(18000000000000000000ull).AsInt(), std::nullopt);
  EXPECT_EQ(GgufValue::I32(5).AsDouble(), 5.0);
  EXPECT_EQ(GgufValue::F32(1.5f).AsDouble(), 1.5);
  EXPECT_EQ(GgufValue::F32(1.5f).AsInt(), std::nullopt);
  EXPECT_EQ(GgufValue::Bool(true).AsBool(), true);
  EXPECT_EQ(GgufValue::Bool(true).AsUint(), std::nullopt);
  EXPECT_EQ(GgufValue::String("x").AsString(), "x");
  EXPECT_EQ(GgufValue::String("x").AsUint(), std::nullopt);
  GgufValue arr = GgufValue::ScalarArray(GgufValueType::kInt16, 2,
                                         LeArray<int16_t>({-3, 9}));
  EXPECT_TRUE(arr.is_array());
  EXPECT_EQ(arr.count(), 2u);
  EXPECT_EQ(arr.IntAt(0), -3);
  EXPECT_EQ(arr.IntAt(1), 9);
  EXPECT_EQ(arr.IntAt(2), std::nullopt);
  EXPECT_EQ(arr.AsInt(), std::nullopt);
  EXPECT_EQ(arr.DebugString(), "[INT16 x 2]");
}

TEST_F(GgufTest, MetadataSetKeepsPositionAndRemoves) {
  GgufMetadata m;
  m.Set("a", GgufValue::U32(1));
  m.Set("b", GgufValue::U32(2));
  m.Set("a", GgufValue::String("x"));
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m.entries()[0].first, "a");
  EXPECT_EQ(m.FindString("a"), "x");
  EXPECT_EQ(m.FindUint("b"), 2u);
  EXPECT_TRUE(m.Remove("a"));
  EXPECT_FALSE(m.Remove("a"));
  EXPECT_EQ(m.Find("a"), nullptr);
}

TEST_F(GgufTest, TypeTable) {
  ASSERT_NE(FindGgmlType("q4_k"), nullptr);
  EXPECT_EQ(FindGgmlType("q4_k")->type, kGgmlTypeQ4_K);
  EXPECT_EQ(FindGgmlType(kGgmlTypeQ6_K)->type_bytes, 210);
  EXPECT_EQ(FindGgmlType(kGgmlTypeIQ4_XS)->block_size, 256);
  EXPECT_EQ(FindGgmlType("Q9_9"), nullptr);
  EXPECT_EQ(GgmlTypeName(kGgmlTypeBF16), "BF16");
  EXPECT_EQ(GgmlTypeName(77), "type77");
  EXPECT_EQ(*GgmlTensorBytes(kGgmlTypeQ8_0, {64, 3}), 3u * 2 * 34);
  EXPECT_EQ(*GgmlTensorBytes(kGgmlTypeF16, {5, 2, 3}), 60u);
  EXPECT_EQ(GgmlTensorBytes(kGgmlTypeQ4_K, {128, 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GgmlTensorBytes(kGgmlTypeF32, {-1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GgmlTensorBytes(kGgmlTypeF32, {int64_t{1} << 40, int64_t{1} << 40})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GgufTest, WriteThenReadRoundTripsEveryValueKind) {
  const uint32_t seed = 42;
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  for (uint32_t alignment : {0u, 32u, 64u, 1u}) {
    SCOPED_TRACE(testing::Message() << "alignment " << alignment);
    GgufMetadata meta = EveryKind();
    if (alignment != 0) {
      meta.Set("general.alignment", GgufValue::U32(alignment));
    }
    struct T {
      std::string name;
      std::vector<int64_t> ne;
      uint32_t type;
    };
    const std::vector<T> tensors = {
        {"token_embd.weight", {64, 3}, kGgmlTypeF16},
        {"blk.0.attn_norm.weight", {7}, kGgmlTypeF32},
        {"blk.0.attn_q.weight", {256, 2}, kGgmlTypeQ4_K},
        {"blk.0.ffn_up.weight", {32, 2, 2}, kGgmlTypeQ8_0},
        {"empty", {0, 4}, kGgmlTypeBF16},
    };
    std::vector<GgufWriter::Entry> entries;
    std::vector<std::vector<uint8_t>> data;
    for (size_t i = 0; i < tensors.size(); ++i) {
      entries.push_back({tensors[i].name, tensors[i].ne, tensors[i].type});
      data.push_back(RandomBytes(
          static_cast<size_t>(*GgmlTensorBytes(tensors[i].type, tensors[i].ne)),
          seed + static_cast<uint32_t>(i)));
    }
    const std::string path = Path("rt.gguf");
    {
      absl::StatusOr<std::unique_ptr<GgufWriter>> w =
          GgufWriter::Create(path, meta, entries);
      ASSERT_TRUE(w.ok()) << w.status();
      // Write in reverse order, the first tensor in two pieces.
      for (size_t i = tensors.size(); i-- > 0;) {
        if (i == 0) {
          ASSERT_TRUE((*w)->Write(tensors[i].name, 10,
                                  absl::MakeSpan(data[i]).subspan(10)).ok());
          ASSERT_TRUE((*w)->Write(tensors[i].name, 0,
                                  absl::MakeSpan(data[i]).subspan(0, 10)).ok());
        } else {
          ASSERT_TRUE((*w)->Write(tensors[i].name, 0, data[i]).ok());
        }
      }
      ASSERT_TRUE((*w)->Finish().ok());
      EXPECT_EQ(fs::file_size(path), (*w)->file_bytes());
    }
    EXPECT_FALSE(fs::exists(path + ".partial"));
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    const uint32_t expect_align = alignment == 0 ? 32 : alignment;
    EXPECT_EQ((*f)->version(), 3u);
    EXPECT_EQ((*f)->alignment(), expect_align);
    EXPECT_EQ((*f)->data_offset() % expect_align, 0u);
    EXPECT_TRUE((*f)->metadata() == meta);
    ASSERT_EQ((*f)->tensors().size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const GgufTensor& t = (*f)->tensors()[i];
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.name, tensors[i].name);  // declared order kept
      EXPECT_EQ(t.ne, tensors[i].ne);
      EXPECT_EQ(t.type, tensors[i].type);
      EXPECT_EQ(t.offset % expect_align, 0u);
      EXPECT_EQ(std::vector<uint8_t>(t.data.begin(), t.data.end()), data[i]);
      EXPECT_EQ((*f)->Find(t.name), &t);
    }
    EXPECT_EQ((*f)->tensors()[3].Shape(), (std::vector<int64_t>{2, 2, 32}));
    EXPECT_EQ((*f)->tensors()[3].rows(), 4);
    EXPECT_EQ((*f)->tensors()[3].num_elements, 128);
    // The file ends padded to the alignment, as ggml writes it.
    EXPECT_EQ(fs::file_size(path) % expect_align, 0u);
  }
}

TEST_F(GgufTest, ReadsHandEncodedVersion2) {
  Bytes b = Header(1, 2, /*version=*/2);
  b.Str("general.architecture").U32(8).Str("llama");
  b.Str("arr").U32(9).U32(8).U64(2).Str("x").Str("yz");
  Info(b, "w", {2, 2}, kGgmlTypeF32, 0);
  b.PadTo(32);
  b.Put<float>(1).Put<float>(2).Put<float>(3).Put<float>(4);
  absl::StatusOr<std::unique_ptr<GgufFile>> f =
      GgufFile::Open(WriteBytes("v2.gguf", b.str()));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ((*f)->metadata().FindString("general.architecture"), "llama");
  EXPECT_EQ((*f)->metadata().Find("arr")->strings(),
            (std::vector<std::string>{"x", "yz"}));
  const GgufTensor* w = (*f)->Find("w");
  ASSERT_NE(w, nullptr);
  float v[4];
  std::memcpy(v, w->data.data(), 16);
  EXPECT_EQ(v[3], 4.0f);
}

TEST_F(GgufTest, WriterLeavesNothingWithoutFinish) {
  const std::string path = Path("unfinished.gguf");
  {
    auto w = GgufWriter::Create(path, {}, {{"w", {4}, kGgmlTypeF32}});
    ASSERT_TRUE(w.ok());
    EXPECT_TRUE(fs::exists(path + ".partial"));
    std::vector<uint8_t> half(8);
    ASSERT_TRUE((*w)->Write("w", 0, half).ok());
    absl::Status s = (*w)->Finish();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ((*w)->Write("x", 0, half).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ((*w)->Write("w", 12, half).code(), absl::StatusCode::kOutOfRange);
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
}

// A writer with keep_partial leaves PATH.partial; one of the same header
// with resume reopens it, keeps what is there (checked by CRC-32C, counted
// with MarkWritten) and finishes the same file. Another header starts over.
TEST_F(GgufTest, WriterResumesAPartialFileOfTheSameHeader) {
  const std::string path = Path("resumed.gguf");
  GgufMetadata meta;
  meta.Set("general.architecture", GgufValue::String("llama"));
  const std::vector<GgufWriter::Entry> entries = {{"a", {4}, kGgmlTypeF32},
                                                  {"b", {8}, kGgmlTypeF32}};
  std::vector<uint8_t> a(16), b(32);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i + 1);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(100 + i);
  GgufWriter::Options options;
  options.resume = true;
  options.keep_partial = true;
  {
    auto w = GgufWriter::Create(path, meta, entries, options);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_FALSE((*w)->resumed());
    ASSERT_TRUE((*w)->Write("a", 0, a).ok());
    ASSERT_TRUE((*w)->Write("b", 0, absl::MakeSpan(b).subspan(0, 16)).ok());
  }
  ASSERT_TRUE(fs::exists(path + ".partial"));
  {
    auto w = GgufWriter::Create(path, meta, entries, options);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE((*w)->resumed());
    absl::StatusOr<uint32_t> crc = (*w)->Crc32c("a", 0, a.size());
    ASSERT_TRUE(crc.ok()) << crc.status();
    EXPECT_EQ(*crc, Crc32c(a.data(), a.size()));
    crc = (*w)->Crc32c("b", 0, 16);
    ASSERT_TRUE(crc.ok()) << crc.status();
    EXPECT_EQ(*crc, Crc32c(b.data(), 16));
    EXPECT_EQ((*w)->Crc32c("b", 16, 17).status().code(),
              absl::StatusCode::kOutOfRange);
    EXPECT_EQ((*w)->Crc32c("c", 0, 1).status().code(),
              absl::StatusCode::kNotFound);
    ASSERT_TRUE((*w)->MarkWritten("a", a.size()).ok());
    EXPECT_EQ((*w)->MarkWritten("a", 1).code(), absl::StatusCode::kOutOfRange);
    ASSERT_TRUE((*w)->MarkWritten("b", 16).ok());
    ASSERT_TRUE((*w)->Write("b", 16, absl::MakeSpan(b).subspan(16)).ok());
    ASSERT_TRUE((*w)->Finish().ok());
  }
  EXPECT_FALSE(fs::exists(path + ".partial"));
  auto clean = GgufWriter::Create(Path("clean.gguf"), meta, entries);
  ASSERT_TRUE(clean.ok());
  ASSERT_TRUE((*clean)->Write("a", 0, a).ok());
  ASSERT_TRUE((*clean)->Write("b", 0, b).ok());
  ASSERT_TRUE((*clean)->Finish().ok());
  std::ifstream x(path, std::ios::binary), y(Path("clean.gguf"), std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(x), {}),
            std::string(std::istreambuf_iterator<char>(y), {}));

  // Another header: the partial file is not resumed.
  {
    auto w = GgufWriter::Create(path, meta, entries, options);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write("a", 0, a).ok());
  }
  meta.Set("general.name", GgufValue::String("other"));
  auto w = GgufWriter::Create(path, meta, entries, options);
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE((*w)->resumed());
  absl::StatusOr<uint32_t> zeros = (*w)->Crc32c("a", 0, a.size());
  ASSERT_TRUE(zeros.ok());
  const std::vector<uint8_t> zero(a.size());
  EXPECT_EQ(*zeros, Crc32c(zero.data(), zero.size()));
}

TEST_F(GgufTest, WriterRejectsBadDeclarations) {
  struct Case {
    std::string what;
    GgufMetadata meta;
    std::vector<GgufWriter::Entry> entries;
  };
  GgufMetadata bad_align;
  bad_align.Set("general.alignment", GgufValue::U32(48));
  GgufMetadata wrong_type_align;
  wrong_type_align.Set("general.alignment", GgufValue::U64(32));
  const std::vector<Case> cases = {
      {"empty name", {}, {{"", {4}, kGgmlTypeF32}}},
      {"duplicate", {}, {{"a", {4}, kGgmlTypeF32}, {"a", {4}, kGgmlTypeF32}}},
      {"row length", {}, {{"a", {100, 2}, kGgmlTypeQ4_0}}},
      {"unknown ggml type", {}, {{"a", {4}, 99}}},
      {"dimensions", {}, {{"a", {1, 1, 1, 1, 1}, kGgmlTypeF32}}},
      {"longer than", {}, {{std::string(64, 'n'), {4}, kGgmlTypeF32}}},
      {"power of two", bad_align, {}},
      {"UINT32", wrong_type_align, {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto w = GgufWriter::Create(Path("w.gguf"), c.meta, c.entries);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(c.what), std::string::npos)
        << w.status();
  }
}

// A valid two-tensor file for the truncation test.
std::string ValidFile() {
  Bytes b = Header(2, 3);
  b.Str("general.architecture").U32(8).Str("llama");
  b.Str("n").U32(4).U32(7);
  b.Str("list").U32(9).U32(5).U64(3).U32(1).U32(2).U32(3);
  Info(b, "a", {4}, kGgmlTypeF32, 0);
  Info(b, "b", {32, 1}, kGgmlTypeQ8_0, 32);
  b.PadTo(32);
  b.Raw(std::string(16, '\1')).PadTo(32);
  b.Raw(std::string(34, '\2')).PadTo(32);
  return b.str();
}

TEST_F(GgufTest, EveryTruncationIsInvalidArgument) {
  const std::string full = ValidFile();
  ASSERT_TRUE(GgufFile::Open(WriteBytes("full.gguf", full)).ok());
  // The last tensor ends at byte full.size() - 30 (the rest is padding).
  const size_t data_end = full.size() - 30;
  for (size_t n = 0; n < data_end; ++n) {
    SCOPED_TRACE(testing::Message() << "truncated to " << n << " bytes");
    auto f = GgufFile::Open(WriteBytes("cut.gguf", full.substr(0, n)));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument)
        << f.status();
  }
}

TEST_F(GgufTest, MalformedHeadersAreInvalidArgument) {
  {
    Bytes b;
    b.Raw("GGUX").U32(3).U64(0).U64(0);
    ExpectInvalid(b.str(), "magic");
  }
  ExpectInvalid(Header(0, 0, 1).str(), "version 1");
  ExpectInvalid(Header(0, 0, 4).str(), "version 4");
  ExpectInvalid(Header(0, uint64_t{1} << 60).str(), "key/value count");
  ExpectInvalid(Header(uint64_t{1} << 60, 0).str(), "tensor count");
  {
    Bytes b = Header(0, 1);
    b.U64(uint64_t{1} << 40).Raw(std::string(16, 'k'));
    ExpectInvalid(b.str(), "string of 1099511627776 bytes");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("k").U32(13).U32(0);
    ExpectInvalid(b.str(), "unknown value type 13");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("k").U32(9).U32(9).U64(1).U32(4).U64(1).U32(0);
    ExpectInvalid(b.str(), "arrays of arrays");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("k").U32(9).U32(4).U64(uint64_t{1} << 61);
    ExpectInvalid(b.str(), "cannot fit");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("k").U32(9).U32(8).U64(uint64_t{1} << 61);
    ExpectInvalid(b.str(), "strings cannot fit");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("k").U32(9).U32(77).U64(1);
    ExpectInvalid(b.str(), "unknown array element type 77");
  }
  {
    Bytes b = Header(0, 2);
    b.Str("k").U32(4).U32(1).Str("k").U32(4).U32(2);
    ExpectInvalid(b.str(), "duplicate key \"k\"");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("").U32(4).U32(1);
    ExpectInvalid(b.str(), "empty");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("flag").U32(7).Put<uint8_t>(2);
    ExpectInvalid(b.str(), "neither 0 nor 1");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("general.alignment").U32(4).U32(24);
    ExpectInvalid(b.str(), "power of two");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("general.alignment").U32(4).U32(0);
    ExpectInvalid(b.str(), "power of two");
  }
  {
    Bytes b = Header(0, 1);
    b.Str("general.alignment").U32(8).Str("32");
    ExpectInvalid(b.str(), "UINT32");
  }
}

TEST_F(GgufTest, MalformedTensorInfosAreInvalidArgument) {
  struct Case {
    std::string needle;
    std::vector<std::tuple<std::string, std::vector<int64_t>, uint32_t,
                           uint64_t>> infos;
    size_t data_bytes;
  };
  const std::vector<Case> cases = {
      {"0 dimensions", {{"a", {}, kGgmlTypeF32, 0}}, 64},
      {"5 dimensions", {{"a", {1, 1, 1, 1, 1}, kGgmlTypeF32, 0}}, 64},
      {"negative dimension", {{"a", {4, -1}, kGgmlTypeF32, 0}}, 64},
      {"unknown ggml type 5", {{"a", {4}, 5, 0}}, 64},
      {"not a multiple of the block size 32",
       {{"a", {16, 2}, kGgmlTypeQ4_0, 0}},
       64},
      {"not a multiple of the alignment", {{"a", {4}, kGgmlTypeF32, 8}}, 64},
      {"beyond the end", {{"a", {32}, kGgmlTypeF32, 0}}, 64},
      {"beyond the end", {{"a", {4}, kGgmlTypeF32, uint64_t{1} << 63}}, 64},
      {"too large",
       {{"a", {int64_t{1} << 32, int64_t{1} << 32}, kGgmlTypeF32, 0}},
       64},
      {"overlap",
       {{"a", {16}, kGgmlTypeF32, 0}, {"b", {4}, kGgmlTypeF32, 32}},
       128},
      {"duplicate tensor name",
       {{"a", {4}, kGgmlTypeF32, 0}, {"a", {4}, kGgmlTypeF32, 32}},
       64},
      {"empty name", {{"", {4}, kGgmlTypeF32, 0}}, 64},
      {"longer than 63", {{std::string(64, 'x'), {4}, kGgmlTypeF32, 0}}, 64},
  };
  for (const Case& c : cases) {
    Bytes b = Header(c.infos.size(), 0);
    for (const auto& [name, ne, type, offset] : c.infos) {
      Info(b, name, ne, type, offset);
    }
    b.PadTo(32).Raw(std::string(c.data_bytes, '\0'));
    ExpectInvalid(b.str(), c.needle);
  }
}

TEST_F(GgufTest, RandomCorruptionNeverCrashes) {
  const std::string full = ValidFile();
  const uint32_t seed = 7;
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  int rejected = 0;
  for (int i = 0; i < 500; ++i) {
    std::string bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    auto f = GgufFile::Open(WriteBytes("fuzz.gguf", bytes));
    if (!f.ok()) {
      ++rejected;
      EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument)
          << f.status();
    } else {
      // Whatever was accepted lies inside the file.
      for (const GgufTensor& t : (*f)->tensors()) {
        EXPECT_LE(t.offset + t.data.size() + (*f)->data_offset(),
                  bytes.size());
      }
    }
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace quantd

#include "client/safetensors.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "client/json.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("quantd_st_") + info->name() + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }

  // Writes a file: 8-byte LE length of `header`, `header`, `data`.
  std::string WriteRaw(const std::string& name, const std::string& header,
                       const std::string& data) {
    std::string bytes(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) {
      bytes[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    }
    bytes += header;
    bytes += data;
    return WriteBytes(name, bytes);
  }

  std::string WriteBytes(const std::string& name, const std::string& bytes) {
    std::ofstream out(Path(name), std::ios::binary);
    out << bytes;
    return Path(name);
  }

  fs::path dir_;
};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST_F(SafetensorsTest, WriteThenReadRoundTrips) {
  const uint32_t seed = 1234;
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  struct T {
    std::string name, dtype;
    std::vector<int64_t> shape;
    size_t bytes;
  };
  const std::vector<T> tensors = {
      {"b.weight", "F32", {3, 5}, 60},  {"a.bias", "BF16", {7}, 14},
      {"c.ids", "I64", {2, 2}, 32},     {"d.scalar", "F16", {}, 2},
      {"e.empty", "F32", {0, 4}, 0},    {"f.mask", "BOOL", {3}, 3},
  };
  std::vector<SafetensorsWriter::Entry> entries;
  for (const T& t : tensors) entries.push_back({t.name, t.dtype, t.shape});
  auto writer = SafetensorsWriter::Create(Path("m.safetensors"), entries,
                                          {{"format", "pt"}, {"k", "v"}});
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ((8 + (*writer)->header_bytes()) % 8, 0u);
  EXPECT_EQ((*writer)->data_bytes(), 60u + 14 + 32 + 2 + 0 + 3);
  // Write in reverse order, the F32 one in two pieces.
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < tensors.size(); ++i) {
    data.push_back(RandomBytes(tensors[i].bytes, seed + static_cast<uint32_t>(i)));
  }
  for (size_t i = tensors.size(); i-- > 0;) {
    absl::Span<const uint8_t> d(data[i]);
    if (d.size() > 10) {
      ASSERT_TRUE((*writer)->Write(tensors[i].name, 10, d.subspan(10)).ok());
      ASSERT_TRUE((*writer)->Write(tensors[i].name, 0, d.subspan(0, 10)).ok());
    } else {
      ASSERT_TRUE((*writer)->Write(tensors[i].name, 0, d).ok());
    }
  }
  EXPECT_FALSE(fs::exists(Path("m.safetensors")));  // still .partial
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_FALSE(fs::exists(Path("m.safetensors.partial")));

  auto file = SafetensorsFile::Open(Path("m.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("k"), "v");
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  // In name order.
  EXPECT_EQ((*file)->tensors().front().name, "a.bias");
  for (size_t i = 0; i < tensors.size(); ++i) {
    SCOPED_TRACE(tensors[i].name);
    const SafetensorsTensor* t = (*file)->Find(tensors[i].name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, tensors[i].dtype);
    EXPECT_EQ(t->shape, tensors[i].shape);
    ASSERT_EQ(t->data.size(), data[i].size());
    // (memcmp on an empty tensor's null data pointer would be undefined.)
    EXPECT_TRUE(std::equal(t->data.begin(), t->data.end(), data[i].begin()));
  }
  EXPECT_EQ((*file)->Find("nope"), nullptr);
}

TEST_F(SafetensorsTest, WriterLaysOutTensorsInNameOrder) {
  auto writer = SafetensorsWriter::Create(
      Path("o.safetensors"), {{"z", "U8", {1}}, {"a", "U8", {1}}}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  const uint8_t z = 'Z', a = 'A';
  ASSERT_TRUE((*writer)->Write("z", 0, {&z, 1}).ok());
  ASSERT_TRUE((*writer)->Write("a", 0, {&a, 1}).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  std::ifstream in(Path("o.safetensors"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(bytes.substr(bytes.size() - 2), "AZ");
  EXPECT_EQ(bytes.find("__metadata__"), std::string::npos);
}

TEST_F(SafetensorsTest, WriterChecksItsInputs) {
  using E = SafetensorsWriter::Entry;
  EXPECT_EQ(SafetensorsWriter::Create(Path("x"), {{"a", "F32", {1}}, {"a", "F32", {1}}}, {})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SafetensorsWriter::Create(Path("x"), {E{"a", "Q4", {1}}}, {})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SafetensorsWriter::Create(Path("x"), {E{"__metadata__", "F32", {1}}}, {})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SafetensorsWriter::Create(Path("x"), {E{"a", "F32", {-1}}}, {})
                .status().code(),
            absl::StatusCode::kInvalidArgument);

  auto writer = SafetensorsWriter::Create(Path("w.safetensors"),
                                          {E{"a", "F32", {2}}}, {});
  ASSERT_TRUE(writer.ok());
  std::vector<uint8_t> four(4), nine(9);
  EXPECT_EQ((*writer)->Write("b", 0, four).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*writer)->Write("a", 0, nine).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*writer)->Write("a", 6, four).code(), absl::StatusCode::kOutOfRange);
  ASSERT_TRUE((*writer)->Write("a", 0, four).ok());
  absl::Status incomplete = (*writer)->Finish();
  EXPECT_EQ(incomplete.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(incomplete.message().find("\"a\" has 4 of its 8 bytes"),
            std::string::npos)
      << incomplete;
  writer->reset();  // abandoned: the partial file goes away
  EXPECT_FALSE(fs::exists(Path("w.safetensors.partial")));
  EXPECT_FALSE(fs::exists(Path("w.safetensors")));
}

TEST_F(SafetensorsTest, AcceptsHeaderPaddingAndEmptyFile) {
  std::string header = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  header += "      ";
  EXPECT_TRUE(SafetensorsFile::Open(WriteRaw("pad", header, "xy")).ok());
  auto empty = SafetensorsFile::Open(WriteRaw("empty", "{}", ""));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE((*empty)->tensors().empty());
}

TEST_F(SafetensorsTest, MalformedFilesAreInvalidArgumentNamingTheProblem) {
  struct Case {
    const char* label;
    std::string bytes;  // whole file when raw, else header
    std::string data;
    bool raw;
    const char* want;
  };
  auto le64 = [](uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) {
      s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    }
    return s;
  };
  const std::vector<Case> cases = {
      {"short file", "abc", "", true, "truncated"},
      {"truncated header", le64(100) + "{\"a\":", "", true, "truncated header"},
      {"huge header", le64(uint64_t{1} << 40) + "{}", "", true,
       "exceeds the limit"},
      {"not json", "{nope}", "", false, "invalid JSON"},
      {"not an object", "[1]", "", false, "does not start with '{'"},
      {"offsets out of range",
       R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "xy", false,
       "out of bounds"},
      {"overlapping",
       R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
       R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
       "abcdef", false, "overlap"},
      {"gap",
       R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
       "abcdef", false, "gap"},
      {"trailing bytes",
       R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "abcd",
       false, "trailing bytes"},
      {"wrong byte length",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd",
       false, "byte length 4 does not match"},
      {"unknown dtype",
       R"({"a":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,2]}})", "ab",
       false, "unknown dtype \"Q4_K\""},
      {"negative dim",
       R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", "ab",
       false, "non-negative"},
      {"reversed offsets",
       R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[2,0]}})", "ab", false,
       "end before they begin"},
      {"missing key", R"({"a":{"dtype":"U8","shape":[2]}})", "ab", false,
       "data_offsets"},
      {"extra key",
       R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":1}})", "ab",
       false, "unexpected key \"x\""},
      {"bad metadata", R"({"__metadata__":{"k":1}})", "", false,
       "__metadata__ value of \"k\""},
      {"duplicate tensor",
       R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
       R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       "ab", false, "duplicate key"},
      {"overflowing shape",
       R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,2]}})",
       "ab", false, "overflows"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(c.label);
    std::string name = "bad" + std::to_string(i);
    std::string path =
        c.raw ? WriteBytes(name, c.bytes) : WriteRaw(name, c.bytes, c.data);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument)
        << file.status();
    EXPECT_NE(file.status().message().find(c.want), std::string::npos)
        << file.status();
    EXPECT_NE(file.status().message().find(path), std::string::npos)
        << file.status();
  }
}

TEST_F(SafetensorsTest, TensorProblemsNameTheTensor) {
  auto file = SafetensorsFile::Open(WriteRaw(
      "t", R"({"layer.7.w":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}})",
      "abcd"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("layer.7.w"), std::string::npos);
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_EQ(SafetensorsFile::Open(Path("missing")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(SafetensorsModel::Open(Path("missing")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsDTypeTest, Sizes) {
  EXPECT_EQ(SafetensorsDTypeSize("F32"), 4);
  EXPECT_EQ(SafetensorsDTypeSize("BF16"), 2);
  EXPECT_EQ(SafetensorsDTypeSize("I64"), 8);
  EXPECT_EQ(SafetensorsDTypeSize("BOOL"), 1);
  EXPECT_EQ(SafetensorsDTypeSize("F8_E4M3"), 1);
  EXPECT_EQ(SafetensorsDTypeSize("f32"), std::nullopt);
}

class ShardedTest : public SafetensorsTest {
 protected:
  // Two shards: a, b in shard 1; c in shard 2.
  void WriteShards() {
    WriteRaw("model-00001-of-00002.safetensors",
             R"({"__metadata__":{"format":"pt"},)"
             R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
             R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
             "AAB");
    WriteRaw("model-00002-of-00002.safetensors",
             R"({"c":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})", "CCC");
  }
  std::string WriteIndex(const std::string& weight_map) {
    std::string text =
        R"({"metadata":{"total_size":6},"weight_map":)" + weight_map + "}";
    return WriteBytes("model.safetensors.index.json", text);
  }
};

TEST_F(ShardedTest, OpensEveryShardOfTheIndex) {
  WriteShards();
  std::string index = WriteIndex(
      R"({"a":"model-00001-of-00002.safetensors",)"
      R"("c":"model-00002-of-00002.safetensors",)"
      R"("b":"model-00001-of-00002.safetensors"})");
  for (const std::string& path : {index, dir_.string()}) {
    SCOPED_TRACE(path);
    auto model = SafetensorsModel::Open(path);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_EQ((*model)->tensors().size(), 3u);
    EXPECT_EQ((*model)->tensors()[0]->name, "a");
    EXPECT_EQ((*model)->tensors()[2]->name, "c");
    const SafetensorsTensor* c = (*model)->Find("c");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(c->data.data()),
                          c->data.size()),
              "CCC");
    EXPECT_NE(c->file.find("00002"), std::string::npos);
    EXPECT_EQ((*model)->metadata().at("format"), "pt");
    EXPECT_EQ((*model)->files().size(), 2u);
  }
}

TEST_F(ShardedTest, IndexMustMatchTheShards) {
  WriteShards();
  struct Case {
    const char* weight_map;
    const char* want;
  };
  const Case cases[] = {
      // b is in shard 1 but not mapped.
      {R"({"a":"model-00001-of-00002.safetensors",)"
       R"("c":"model-00002-of-00002.safetensors"})",
       "\"b\" of shard model-00001-of-00002.safetensors is not mapped"},
      // d is mapped to a shard that lacks it.
      {R"({"a":"model-00001-of-00002.safetensors",)"
       R"("b":"model-00001-of-00002.safetensors",)"
       R"("c":"model-00002-of-00002.safetensors",)"
       R"("d":"model-00002-of-00002.safetensors"})",
       "\"d\" is mapped to shard model-00002-of-00002.safetensors"},
      {R"({"a":"../x.safetensors"})", "not a plain relative path"},
      {R"({"a":"/etc/x.safetensors"})", "not a plain relative path"},
      {R"({"a":1})", "is not a string"},
      {R"([])", "weight_map"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.weight_map);
    auto model = SafetensorsModel::Open(WriteIndex(c.weight_map));
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument)
        << model.status();
    EXPECT_NE(model.status().message().find(c.want), std::string::npos)
        << model.status();
  }
}

TEST_F(ShardedTest, MissingShardIsNotFound) {
  WriteIndex(R"({"a":"model-00009-of-00009.safetensors"})");
  auto model = SafetensorsModel::Open(dir_.string());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound)
      << model.status();
}

TEST_F(SafetensorsTest, DirectoryResolution) {
  // No model at all.
  EXPECT_EQ(SafetensorsModel::Open(dir_.string()).status().code(),
            absl::StatusCode::kNotFound);
  // One *.safetensors file is the model.
  WriteRaw("weights.safetensors",
           R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "W");
  auto one = SafetensorsModel::Open(dir_.string());
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_NE((*one)->Find("w"), nullptr);
  // Two are ambiguous...
  WriteRaw("other.safetensors", "{}", "");
  EXPECT_EQ(SafetensorsModel::Open(dir_.string()).status().code(),
            absl::StatusCode::kNotFound);
  // ...unless one is model.safetensors.
  WriteRaw("model.safetensors",
           R"({"m":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "M");
  auto model = SafetensorsModel::Open(dir_.string());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_NE((*model)->Find("m"), nullptr);
}

}  // namespace
}  // namespace quantd

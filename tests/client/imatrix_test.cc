#include "client/imatrix.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "client/gguf.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

class ImatrixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("quantd_imatrix_") + info->name() + "_" +
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

  // A GGUF imatrix: for each entry, in_sum2 of ne0 x n_matrices and
  // counts of n_matrices.
  struct Entry {
    std::string name;
    int64_t ne0;
    std::vector<float> sums;
    std::vector<float> counts;
  };
  std::string WriteGguf(const std::string& file,
                        const std::vector<Entry>& entries,
                        bool with_metadata = true) {
    GgufMetadata meta;
    meta.Set("general.type", GgufValue::String("imatrix"));
    if (with_metadata) {
      meta.Set("imatrix.datasets", GgufValue::StringArray({"wiki.train"}));
      meta.Set("imatrix.chunk_count", GgufValue::U32(100));
      meta.Set("imatrix.chunk_size", GgufValue::U32(512));
    }
    std::vector<GgufWriter::Entry> declared;
    for (const Entry& e : entries) {
      const int64_t n = static_cast<int64_t>(e.counts.size());
      declared.push_back({e.name + ".in_sum2", {e.ne0, n}, kGgmlTypeF32});
      declared.push_back({e.name + ".counts", {1, n}, kGgmlTypeF32});
    }
    auto w = GgufWriter::Create(Path(file), meta, declared);
    EXPECT_TRUE(w.ok()) << w.status();
    for (const Entry& e : entries) {
      EXPECT_TRUE((*w)->Write(e.name + ".in_sum2", 0, Bytes(e.sums)).ok());
      EXPECT_TRUE((*w)->Write(e.name + ".counts", 0, Bytes(e.counts)).ok());
    }
    EXPECT_TRUE((*w)->Finish().ok());
    return Path(file);
  }

  static absl::Span<const uint8_t> Bytes(const std::vector<float>& v) {
    return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4};
  }

  fs::path dir_;
};

// The legacy .dat encoding.
class Dat {
 public:
  Dat& I32(int32_t v) {
    s_.append(reinterpret_cast<const char*>(&v), 4);
    return *this;
  }
  Dat& Str(const std::string& v) {
    I32(static_cast<int32_t>(v.size()));
    s_ += v;
    return *this;
  }
  Dat& Floats(const std::vector<float>& v) {
    s_.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

TEST_F(ImatrixTest, GgufWeightsAreSumsOverCounts) {
  const std::string path = WriteGguf(
      "m.gguf",
      {{"blk.0.attn_q.weight", 4, {2, 4, 6, 8}, {2}},
       // Two experts; the second saw nothing: its weights are 1.
       {"blk.0.ffn_down_exps.weight", 2, {3, 6, 5, 5}, {3, 0}},
       // Counts are rounded to integers before dividing.
       {"blk.0.ffn_up.weight", 2, {5, 10}, {2.4f}}});
  absl::StatusOr<Imatrix> m = LoadImatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->legacy);
  EXPECT_EQ(m->chunk_count, 100);
  EXPECT_EQ(m->datasets, std::vector<std::string>{"wiki.train"});
  ASSERT_EQ(m->weights.size(), 3u);
  EXPECT_EQ(*m->Find("blk.0.attn_q.weight"),
            (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(*m->Find("blk.0.ffn_down_exps.weight"),
            (std::vector<float>{1, 2, 1, 1}));
  EXPECT_EQ(*m->Find("blk.0.ffn_up.weight"), (std::vector<float>{2.5f, 5}));
  EXPECT_EQ(m->Find("output.weight"), nullptr);
}

TEST_F(ImatrixTest, GgufProblemsAreInvalidArgument) {
  {
    absl::StatusOr<Imatrix> m = LoadImatrix(
        WriteGguf("nometa.gguf", {{"a.weight", 2, {1, 1}, {1}}}, false));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("missing imatrix metadata"),
              std::string::npos) << m.status();
  }
  {
    absl::StatusOr<Imatrix> m = LoadImatrix(WriteGguf(
        "nan.gguf",
        {{"a.weight", 2, {1, std::numeric_limits<float>::infinity()}, {1}}}));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("not finite"), std::string::npos);
  }
  {
    // in_sum2 without counts.
    GgufMetadata meta;
    meta.Set("imatrix.datasets", GgufValue::StringArray({}));
    meta.Set("imatrix.chunk_count", GgufValue::U32(1));
    meta.Set("imatrix.chunk_size", GgufValue::U32(1));
    auto w = GgufWriter::Create(Path("half.gguf"), meta,
                                {{"a.weight.in_sum2", {2}, kGgmlTypeF32}});
    ASSERT_TRUE(w.ok());
    std::vector<float> v = {1, 2};
    ASSERT_TRUE((*w)->Write("a.weight.in_sum2", 0, Bytes(v)).ok());
    ASSERT_TRUE((*w)->Finish().ok());
    absl::StatusOr<Imatrix> m = LoadImatrix(Path("half.gguf"));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("mismatched"), std::string::npos);
  }
  EXPECT_EQ(LoadImatrix(Path("absent.gguf")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ImatrixTest, LegacyDatDividesByCalls) {
  Dat d;
  d.I32(2);
  d.Str("blk.0.attn_k.weight").I32(4).I32(3).Floats({4, 8, 12});
  d.Str("blk.0.attn_v.weight").I32(0).I32(2).Floats({5, 7});  // no calls
  d.I32(250).Str("calibration.txt");
  absl::StatusOr<Imatrix> m = LoadImatrix(WriteBytes("m.dat", d.str()));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->legacy);
  EXPECT_EQ(*m->Find("blk.0.attn_k.weight"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(*m->Find("blk.0.attn_v.weight"), (std::vector<float>{5, 7}));
  EXPECT_EQ(m->chunk_count, 250);
  EXPECT_EQ(m->datasets, std::vector<std::string>{"calibration.txt"});

  // Without the optional trailer.
  Dat bare;
  bare.I32(1).Str("w").I32(1).I32(1).Floats({3});
  m = LoadImatrix(WriteBytes("bare.dat", bare.str()));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->chunk_count, 0);
  EXPECT_TRUE(m->datasets.empty());
}

TEST_F(ImatrixTest, LegacyTruncationsAndBadCountsAreInvalidArgument) {
  Dat d;
  d.I32(1).Str("blk.0.attn_k.weight").I32(4).I32(3).Floats({4, 8, 12});
  const std::string full = d.str();
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    absl::StatusOr<Imatrix> m =
        LoadImatrix(WriteBytes("cut.dat", full.substr(0, n)));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << m.status();
  }
  Dat zero;
  zero.I32(0);
  EXPECT_EQ(LoadImatrix(WriteBytes("zero.dat", zero.str())).status().code(),
            absl::StatusCode::kInvalidArgument);
  Dat neg;
  neg.I32(1).Str("w").I32(1).I32(-5);
  EXPECT_EQ(LoadImatrix(WriteBytes("neg.dat", neg.str())).status().code(),
            absl::StatusCode::kInvalidArgument);
  Dat huge;
  huge.I32(1).I32(1 << 30).Str("w");
  EXPECT_EQ(LoadImatrix(WriteBytes("huge.dat", huge.str())).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantd

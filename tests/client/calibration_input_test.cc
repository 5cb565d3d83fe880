#include "client/calibration_input.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace quantd {
namespace {

// Writes a safetensors file of F32 tensors {name: (shape, values)}.
std::string WriteFile(
    const std::string& name,
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
    const char* dtype = "F32") {
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / name).string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  int64_t offset = 0;
  for (const auto& [tensor, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    header[tensor] = {{"dtype", dtype},
                      {"shape", shape},
                      {"data_offsets", {offset, offset + 4 * n}}};
    offset += 4 * n;
  }
  const std::string text = header.dump();
  std::ofstream out(path, std::ios::binary);
  const uint64_t size = text.size();
  out.write(reinterpret_cast<const char*>(&size), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  const std::vector<char> zeros(static_cast<size_t>(offset), 0);
  out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  return path;
}

TEST(CalibrationInputTest, EachTensorIsASetNamedAfterIt) {
  const std::string path = WriteFile(
      "acts.safetensors", {{"blk.0.attn_in", {10, 8}}, {"blk.0.ffn.up", {10, 8}},
                           {"blk.0.ffn.down", {10, 16}}});
  CalibrationInputOptions options;
  options.holdout_rows = 7;
  options.channel_histograms = true;
  absl::StatusOr<CalibrationInputs> inputs = LoadCalibrationInputs({path}, options);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(inputs->sets.size(), 3u);
  EXPECT_EQ(inputs->sets[0].name, "blk.0.attn_in");  // name order
  EXPECT_EQ(inputs->sets[1].name, "blk.0.ffn.down");
  EXPECT_EQ(inputs->sets[1].features, 16);
  EXPECT_EQ(inputs->sets[1].data.size(), 10u * 16 * 4);
  EXPECT_EQ(inputs->sets[1].kind, v1::CALIBRATION_KIND_ACTIVATIONS);
  EXPECT_EQ(inputs->sets[1].holdout_rows, 5);  // at most half the rows
  EXPECT_TRUE(inputs->sets[1].channel_histograms);

  absl::StatusOr<std::vector<CalibrationRule>> rules = ParseCalibrationRules(
      {R"(attn\.(q|k|v)_proj=blk.0.attn_in)", "lm_head=none"});
  ASSERT_TRUE(rules.ok()) << rules.status();
  auto set_for = [&](const std::string& weight) -> std::string {
    absl::StatusOr<const CalibrationSetRequest*> set =
        CalibrationSetFor(weight, *rules, *inputs);
    EXPECT_TRUE(set.ok()) << set.status();
    return set.ok() && *set != nullptr ? (*set)->name : "";
  };
  EXPECT_EQ(set_for("blk.0.attn.k_proj.weight"), "blk.0.attn_in");
  EXPECT_EQ(set_for("blk.0.ffn.up.weight"), "blk.0.ffn.up");  // module name
  EXPECT_EQ(set_for("blk.0.ffn.down"), "blk.0.ffn.down");     // its own name
  EXPECT_EQ(set_for("lm_head.weight"), "");
  EXPECT_EQ(set_for("blk.1.ffn.up.weight"), "");

  absl::StatusOr<std::vector<CalibrationRule>> unknown =
      ParseCalibrationRules({"ffn=nosuchset"});
  ASSERT_TRUE(unknown.ok());
  absl::StatusOr<const CalibrationSetRequest*> missing =
      CalibrationSetFor("blk.0.ffn.up.weight", *unknown, *inputs);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nosuchset"), std::string::npos);
}

TEST(CalibrationInputTest, BadFilesAndRulesAreRefusedNamingThem) {
  const std::string one_d = WriteFile("one_d.safetensors", {{"x", {8}}});
  absl::StatusOr<CalibrationInputs> a = LoadCalibrationInputs({one_d}, {});
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("one_d.safetensors"), std::string::npos);
  EXPECT_NE(a.status().message().find("\"x\""), std::string::npos);
  const std::string ints = WriteFile("ints.safetensors", {{"x", {2, 2}}}, "I32");
  EXPECT_FALSE(LoadCalibrationInputs({ints}, {}).ok());
  const std::string dup = WriteFile("dup.safetensors", {{"x", {2, 2}}});
  EXPECT_FALSE(LoadCalibrationInputs({dup, dup}, {}).ok());
  EXPECT_EQ(LoadCalibrationInputs({"/nonexistent.safetensors"}, {}).status().code(),
            absl::StatusCode::kNotFound);
  for (const char* bad : {"noequals", "=set", "x=", "([=set"}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<std::vector<CalibrationRule>> r = ParseCalibrationRules({bad});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(bad), std::string::npos);
  }
}

TEST(CalibrationInputTest, ActivationRangeText) {
  absl::StatusOr<v1::ActivationRangeOptions> r =
      ParseActivationRange("percentile:99.9,asym,per_channel");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->method(), v1::RANGE_METHOD_PERCENTILE);
  EXPECT_DOUBLE_EQ(r->percentile(), 99.9);
  EXPECT_TRUE(r->asymmetric());
  EXPECT_TRUE(r->per_channel());
  r = ParseActivationRange("kl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->method(), v1::RANGE_METHOD_KL);
  EXPECT_FALSE(r->per_channel());
  for (const char* bad : {"", "max", "mse:99", "percentile:10", "minmax,foo",
                          "percentile:x"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(ParseActivationRange(bad).ok());
  }
}

TEST(CalibrationInputTest, BatchesStayUnderTheLimit) {
  std::vector<CalibrationSetRequest> sets(5);
  const int64_t features[] = {64, 64, 128, 4096, 64};
  for (size_t i = 0; i < sets.size(); ++i) sets[i].features = features[i];
  const int64_t one = CalibrationSetServerBytes(sets[0]);
  EXPECT_EQ(one, 16 * 64 * 64 + 3072 * 64);
  const int64_t limit = CalibrationSetServerBytes(sets[2]) + 2 * one;
  const std::vector<std::vector<size_t>> batches = BatchCalibrationSets(sets, limit);
  // {0, 1, 2}, {3} (alone: above the limit), {4}.
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0], (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(batches[1], (std::vector<size_t>{3}));
  EXPECT_EQ(batches[2], (std::vector<size_t>{4}));
}

}  // namespace
}  // namespace quantd

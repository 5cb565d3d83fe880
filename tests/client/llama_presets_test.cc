#include "client/llama_presets.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace quantd {
namespace {

// A llama-shaped tensor set: embeddings, output, and per layer the norms,
// attention and feed-forward weights, all F16 (norms F32), in the order a
// converter writes them (not llama.cpp's visiting order).
std::vector<LlamaTensorDesc> LlamaTensors(int n_layer, bool tied,
                                          int64_t n_embd = 256,
                                          int64_t n_ff = 512,
                                          int64_t n_kv = 64) {
  std::vector<LlamaTensorDesc> t;
  t.push_back({"token_embd.weight", {n_embd, 1000}, kGgmlTypeF16});
  for (int i = 0; i < n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    t.push_back({p + "attn_norm.weight", {n_embd}, kGgmlTypeF32});
    t.push_back({p + "attn_q.weight", {n_embd, n_embd}, kGgmlTypeF16});
    t.push_back({p + "attn_k.weight", {n_embd, n_kv}, kGgmlTypeF16});
    t.push_back({p + "attn_v.weight", {n_embd, n_kv}, kGgmlTypeF16});
    t.push_back({p + "attn_output.weight", {n_embd, n_embd}, kGgmlTypeF16});
    t.push_back({p + "ffn_norm.weight", {n_embd}, kGgmlTypeF32});
    t.push_back({p + "ffn_gate.weight", {n_embd, n_ff}, kGgmlTypeF16});
    t.push_back({p + "ffn_up.weight", {n_embd, n_ff}, kGgmlTypeF16});
    t.push_back({p + "ffn_down.weight", {n_ff, n_embd}, kGgmlTypeF16});
  }
  t.push_back({"output_norm.weight", {n_embd}, kGgmlTypeF32});
  if (!tied) t.push_back({"output.weight", {n_embd, 1000}, kGgmlTypeF16});
  return t;
}

LlamaModelInfo Llama(int n_layer, int n_head = 8, int n_head_kv = 2,
                     int n_expert = 0) {
  LlamaModelInfo m;
  m.arch = "llama";
  m.n_layer = n_layer;
  m.n_head = n_head;
  m.n_head_kv = n_head_kv;
  m.n_expert = n_expert;
  return m;
}

LlamaQuantizeParams Params(const std::string& preset) {
  LlamaQuantizeParams p;
  absl::StatusOr<LlamaPreset> parsed = ParseLlamaPreset(preset);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  p.ftype = parsed->ftype;
  p.only_copy = parsed->only_copy;
  return p;
}

// name -> chosen type name.
std::map<std::string, std::string> Plan(
    const LlamaModelInfo& model, const LlamaQuantizeParams& params,
    const std::vector<LlamaTensorDesc>& tensors) {
  absl::StatusOr<std::vector<LlamaTensorPlan>> plan =
      PlanLlamaQuantization(model, params, tensors);
  EXPECT_TRUE(plan.ok()) << plan.status();
  std::map<std::string, std::string> out;
  if (!plan.ok()) return out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    out[tensors[i].name] = GgmlTypeName((*plan)[i].type);
  }
  return out;
}

// llama.cpp's "use more bits" layers.
bool MoreBits(int i, int n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

TEST(LlamaPresetsTest, ParsesPresetsAliasesAndNumbers) {
  EXPECT_EQ(ParseLlamaPreset("q4_k_m")->ftype, LlamaFtype::kQ4_K_M);
  EXPECT_EQ(ParseLlamaPreset("Q4_K")->ftype, LlamaFtype::kQ4_K_M);
  EXPECT_EQ(ParseLlamaPreset("Q3_K")->ftype, LlamaFtype::kQ3_K_M);
  EXPECT_EQ(ParseLlamaPreset("q5_k")->ftype, LlamaFtype::kQ5_K_M);
  // By number the first entry of the list wins, as in llama-quantize.
  EXPECT_EQ(ParseLlamaPreset("15")->name, "Q4_K");
  EXPECT_EQ(ParseLlamaPreset("15")->ftype, LlamaFtype::kQ4_K_M);
  EXPECT_EQ(ParseLlamaPreset("7")->name, "Q8_0");
  EXPECT_EQ(ParseLlamaPreset("0")->name, "F32");  // not COPY
  EXPECT_TRUE(ParseLlamaPreset("copy")->only_copy);
  EXPECT_EQ(ParseLlamaPreset("MXFP4_MOE")->ftype, LlamaFtype::kMXFP4_MOE);
  absl::StatusOr<LlamaPreset> bad = ParseLlamaPreset("Q4_K_X");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("Q4_K_M"), std::string::npos);
  EXPECT_EQ(LlamaFtypeDefaultType(LlamaFtype::kIQ2_S), kGgmlTypeIQ2_XS);
  EXPECT_EQ(LlamaFtypeDefaultType(LlamaFtype::kQ2_K_S), kGgmlTypeQ2_K);
}

TEST(LlamaPresetsTest, ModelInfoFromMetadata) {
  GgufMetadata m;
  m.Set("general.architecture", GgufValue::String("llama"));
  m.Set("llama.block_count", GgufValue::U32(80));
  m.Set("llama.attention.head_count", GgufValue::U32(64));
  m.Set("llama.attention.head_count_kv", GgufValue::U32(8));
  absl::StatusOr<LlamaModelInfo> info = LlamaModelInfoFromMetadata(m);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->n_layer, 80);
  EXPECT_EQ(info->n_gqa(), 8);
  EXPECT_TRUE(info->is_70b());
  EXPECT_EQ(info->n_expert, 0);

  m.Remove("llama.attention.head_count_kv");  // defaults to head_count
  EXPECT_EQ(LlamaModelInfoFromMetadata(m)->n_head_kv, 64);
  EXPECT_FALSE(LlamaModelInfoFromMetadata(m)->is_70b());

  m.Set("llama.attention.head_count",  // per-layer array: layer 0 counts
        GgufValue::ScalarArray(GgufValueType::kInt32, 2,
                               {32, 0, 0, 0, 16, 0, 0, 0}));
  EXPECT_EQ(LlamaModelInfoFromMetadata(m)->n_head, 32);

  m.Set("llama.block_count", GgufValue::String("80"));
  EXPECT_EQ(LlamaModelInfoFromMetadata(m).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LlamaModelInfoFromMetadata(GgufMetadata()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LlamaPresetsTest, TensorTypeRules) {
  absl::StatusOr<LlamaTensorTypeRule> r =
      ParseLlamaTensorTypeRule("Blk\\.0\\.ATTN_V=q8_0");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->pattern, "blk\\.0\\.attn_v");  // lower-cased like llama.cpp
  EXPECT_EQ(r->type, kGgmlTypeQ8_0);
  EXPECT_EQ(ParseLlamaTensorTypeRule("a=b=q4_0").status().code(),
            absl::StatusCode::kInvalidArgument);  // type "b=q4_0"
  for (const char* bad : {"attn_v", "=q8_0", "attn_v=", "attn_v=Q9",
                          "attn_v(=q8_0"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(ParseLlamaTensorTypeRule(bad).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(LlamaPresetsTest, VisitingOrderIsLayerThenName) {
  const std::vector<std::string> names = {
      "blk.10.a.weight", "blk.2.z.weight", "output.weight", "blk.2.a.weight",
      "token_embd.weight", "blk.1.x"};
  std::vector<size_t> order = LlamaTensorOrder(names);
  std::vector<std::string> sorted;
  for (size_t i : order) sorted.push_back(names[i]);
  EXPECT_EQ(sorted, (std::vector<std::string>{
                        "output.weight", "token_embd.weight", "blk.1.x",
                        "blk.2.a.weight", "blk.2.z.weight",
                        "blk.10.a.weight"}));
}

TEST(LlamaPresetsTest, Q4KMOn32LayerLlama) {
  const auto tensors = LlamaTensors(32, /*tied=*/false);
  const auto plan = Plan(Llama(32), Params("Q4_K_M"), tensors);
  EXPECT_EQ(plan.at("token_embd.weight"), "Q4_K");
  EXPECT_EQ(plan.at("output.weight"), "Q6_K");
  EXPECT_EQ(plan.at("output_norm.weight"), "F32");
  int q6_layers = 0;
  for (int i = 0; i < 32; ++i) {
    SCOPED_TRACE(i);
    const std::string p = "blk." + std::to_string(i) + ".";
    const std::string more = MoreBits(i, 32) ? "Q6_K" : "Q4_K";
    q6_layers += MoreBits(i, 32);
    EXPECT_EQ(plan.at(p + "attn_v.weight"), more);
    EXPECT_EQ(plan.at(p + "ffn_down.weight"), more);
    EXPECT_EQ(plan.at(p + "attn_q.weight"), "Q4_K");
    EXPECT_EQ(plan.at(p + "attn_k.weight"), "Q4_K");
    EXPECT_EQ(plan.at(p + "attn_output.weight"), "Q4_K");
    EXPECT_EQ(plan.at(p + "ffn_gate.weight"), "Q4_K");
    EXPECT_EQ(plan.at(p + "ffn_up.weight"), "Q4_K");
    EXPECT_EQ(plan.at(p + "attn_norm.weight"), "F32");
  }
  // Layers 0-3, 28-31 and every third from 6 to 27: 16 of 32.
  EXPECT_EQ(q6_layers, 16);
  EXPECT_EQ(plan.at("blk.6.attn_v.weight"), "Q6_K");
  EXPECT_EQ(plan.at("blk.7.attn_v.weight"), "Q4_K");
}

TEST(LlamaPresetsTest, TwoLayerLlamaAcrossPresets) {
  const auto tensors = LlamaTensors(2, /*tied=*/false);
  struct Case {
    std::string preset;
    std::map<std::string, std::string> expect;
  };
  const std::vector<Case> cases = {
      {"Q4_K_M",
       {{"blk.0.attn_v.weight", "Q4_K"}, {"blk.1.attn_v.weight", "Q6_K"},
        {"blk.0.ffn_down.weight", "Q4_K"}, {"blk.1.ffn_down.weight", "Q6_K"},
        {"output.weight", "Q6_K"}, {"token_embd.weight", "Q4_K"}}},
      {"Q4_K_S",
       {{"blk.0.attn_v.weight", "Q5_K"}, {"blk.1.attn_v.weight", "Q5_K"},
        {"blk.0.ffn_down.weight", "Q4_K"}, {"blk.0.attn_q.weight", "Q4_K"},
        {"output.weight", "Q6_K"}}},
      {"Q5_K_M",
       {{"blk.0.attn_v.weight", "Q5_K"}, {"blk.1.attn_v.weight", "Q6_K"},
        {"blk.1.ffn_down.weight", "Q6_K"}, {"blk.0.attn_q.weight", "Q5_K"}}},
      {"Q5_K_S",
       {{"blk.1.attn_v.weight", "Q5_K"}, {"output.weight", "Q6_K"}}},
      {"Q3_K_M",
       {{"blk.0.attn_v.weight", "Q5_K"}, {"blk.1.attn_v.weight", "Q5_K"},
        {"blk.0.attn_output.weight", "Q4_K"},
        {"blk.0.ffn_down.weight", "Q4_K"}, {"blk.0.attn_q.weight", "Q3_K"}}},
      {"Q3_K_L",
       {{"blk.0.attn_v.weight", "Q5_K"}, {"blk.0.attn_output.weight", "Q5_K"},
        {"blk.0.ffn_down.weight", "Q5_K"}, {"blk.0.ffn_up.weight", "Q3_K"}}},
      {"Q3_K_S",
       {{"blk.0.attn_v.weight", "Q3_K"}, {"blk.0.ffn_down.weight", "Q3_K"},
        {"output.weight", "Q6_K"}}},
      // n_gqa = 4: attn_v gets Q4_K.
      {"Q2_K",
       {{"blk.0.attn_v.weight", "Q4_K"}, {"blk.0.ffn_down.weight", "Q3_K"},
        {"blk.0.attn_output.weight", "Q3_K"}, {"blk.0.attn_q.weight", "Q2_K"},
        {"token_embd.weight", "Q2_K"}}},
      {"Q2_K_S",
       {{"blk.0.attn_v.weight", "Q4_K"}, {"blk.0.ffn_down.weight", "Q2_K"},
        {"blk.0.attn_output.weight", "Q2_K"}}},
      {"Q6_K",
       {{"blk.0.attn_v.weight", "Q6_K"}, {"output.weight", "Q6_K"},
        {"token_embd.weight", "Q6_K"}}},
      {"Q8_0",
       {{"blk.0.attn_v.weight", "Q8_0"}, {"output.weight", "Q8_0"},
        {"token_embd.weight", "Q8_0"}}},
      {"Q4_0",
       {{"blk.0.attn_v.weight", "Q4_0"}, {"blk.0.ffn_down.weight", "Q4_0"},
        {"output.weight", "Q6_K"}, {"token_embd.weight", "Q4_0"}}},
      {"Q4_1", {{"blk.1.ffn_down.weight", "Q4_1"}, {"output.weight", "Q6_K"}}},
      {"Q5_0", {{"blk.1.ffn_down.weight", "Q5_0"}}},
      {"Q5_1", {{"blk.1.ffn_down.weight", "Q5_1"}}},
      {"IQ4_NL",
       {{"blk.0.attn_v.weight", "Q5_K"}, {"blk.0.ffn_down.weight", "IQ4_NL"},
        {"blk.0.attn_q.weight", "IQ4_NL"}, {"output.weight", "Q6_K"}}},
      {"IQ4_XS",
       {{"blk.0.attn_v.weight", "Q5_K"}, {"blk.0.attn_q.weight", "IQ4_XS"}}},
      {"F16",
       {{"blk.0.attn_v.weight", "F16"}, {"output.weight", "F16"},
        {"blk.0.attn_norm.weight", "F32"}}},
      {"BF16", {{"blk.0.attn_v.weight", "BF16"}, {"output.weight", "BF16"}}},
      {"F32", {{"blk.0.attn_v.weight", "F32"}, {"output.weight", "F32"}}},
      {"COPY", {{"blk.0.attn_v.weight", "F16"}, {"output.weight", "F16"}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.preset);
    const auto plan = Plan(Llama(2), Params(c.preset), tensors);
    for (const auto& [name, type] : c.expect) {
      EXPECT_EQ(plan.at(name), type) << name;
    }
    EXPECT_EQ(plan.at("blk.0.attn_norm.weight"), "F32");
  }
}

TEST(LlamaPresetsTest, GqaChangesLowBitAttnV) {
  const auto tensors = LlamaTensors(2, /*tied=*/false);
  // No GQA (n_head == n_head_kv): Q2_K's attn_v is Q3_K; IQ4_NL's stays.
  EXPECT_EQ(Plan(Llama(2, 8, 8), Params("Q2_K"), tensors)
                .at("blk.0.attn_v.weight"),
            "Q3_K");
  EXPECT_EQ(Plan(Llama(2, 8, 8), Params("IQ4_NL"), tensors)
                .at("blk.0.attn_v.weight"),
            "IQ4_NL");
  EXPECT_EQ(Plan(Llama(2, 8, 8), Params("Q2_K_S"), tensors)
                .at("blk.0.attn_v.weight"),
            "Q2_K");
}

TEST(LlamaPresetsTest, Llama70BBumpsAttnV) {
  const auto tensors = LlamaTensors(80, /*tied=*/false);
  const auto plan = Plan(Llama(80, 64, 8), Params("Q3_K_S"), tensors);
  EXPECT_EQ(plan.at("blk.40.attn_v.weight"), "Q5_K");  // Q3_K bumped
  EXPECT_EQ(plan.at("blk.40.attn_q.weight"), "Q3_K");
}

TEST(LlamaPresetsTest, TiedEmbeddingsTakeTheOutputRules) {
  const auto tensors = LlamaTensors(2, /*tied=*/true);
  EXPECT_EQ(Plan(Llama(2), Params("Q4_K_M"), tensors).at("token_embd.weight"),
            "Q6_K");
  EXPECT_EQ(Plan(Llama(2), Params("Q4_0"), tensors).at("token_embd.weight"),
            "Q6_K");
  EXPECT_EQ(Plan(Llama(2), Params("Q8_0"), tensors).at("token_embd.weight"),
            "Q8_0");
  LlamaQuantizeParams p = Params("Q4_K_M");
  p.output_tensor_type = kGgmlTypeQ5_K;
  EXPECT_EQ(Plan(Llama(2), p, tensors).at("token_embd.weight"), "Q5_K");
  p.token_embedding_type = kGgmlTypeQ8_0;  // wins over the output type
  EXPECT_EQ(Plan(Llama(2), p, tensors).at("token_embd.weight"), "Q8_0");
}

TEST(LlamaPresetsTest, OutputOptionsAndPure) {
  const auto tensors = LlamaTensors(2, /*tied=*/false);
  LlamaQuantizeParams p = Params("Q4_K_M");
  p.leave_output_tensor = true;
  auto plan = Plan(Llama(2), p, tensors);
  EXPECT_EQ(plan.at("output.weight"), "F16");
  EXPECT_EQ(plan.at("token_embd.weight"), "Q4_K");

  p = Params("Q4_K_M");
  p.output_tensor_type = kGgmlTypeQ8_0;
  p.token_embedding_type = kGgmlTypeF16;
  plan = Plan(Llama(2), p, tensors);
  EXPECT_EQ(plan.at("output.weight"), "Q8_0");
  EXPECT_EQ(plan.at("token_embd.weight"), "F16");

  p = Params("Q4_K_M");
  p.pure = true;
  plan = Plan(Llama(2), p, tensors);
  for (const auto& [name, type] : plan) {
    SCOPED_TRACE(name);
    EXPECT_EQ(type, absl::StrContains(name, "norm") ? "F32" : "Q4_K");
  }
}

TEST(LlamaPresetsTest, TensorTypeRulesAndTheAttnVCounter) {
  const auto tensors = LlamaTensors(32, /*tied=*/false);
  LlamaQuantizeParams p = Params("Q4_K_M");
  p.tensor_types.push_back(*ParseLlamaTensorTypeRule("blk\\.4\\.attn_v=q8_0"));
  p.tensor_types.push_back(*ParseLlamaTensorTypeRule("ffn_up=Q5_0"));
  absl::StatusOr<std::vector<LlamaTensorPlan>> plan =
      PlanLlamaQuantization(Llama(32), p, tensors);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::map<std::string, LlamaTensorPlan> by_name;
  for (size_t i = 0; i < tensors.size(); ++i) {
    by_name[tensors[i].name] = (*plan)[i];
  }
  EXPECT_EQ(by_name["blk.4.attn_v.weight"].type, kGgmlTypeQ8_0);
  EXPECT_TRUE(by_name["blk.4.attn_v.weight"].manual);
  EXPECT_EQ(by_name["blk.9.ffn_up.weight"].type, kGgmlTypeQ5_0);
  // The manual tensor does not advance llama.cpp's attn_v counter, so the
  // "more bits" pattern shifts by one layer after it: layer 6 is visited
  // as the 5th attn_v (Q4_K), layer 7 as the 6th (Q6_K).
  EXPECT_EQ(by_name["blk.6.attn_v.weight"].type, kGgmlTypeQ4_K);
  EXPECT_EQ(by_name["blk.7.attn_v.weight"].type, kGgmlTypeQ6_K);
  EXPECT_FALSE(by_name["blk.7.attn_v.weight"].manual);
  // ffn_down counts layers independently.
  EXPECT_EQ(by_name["blk.6.ffn_down.weight"].type, kGgmlTypeQ6_K);
}

TEST(LlamaPresetsTest, OddRowLengthsFallBack) {
  // n_embd 96: a multiple of 32 but not of 256; ffn rows of 1000: neither.
  const auto tensors = LlamaTensors(2, /*tied=*/false, 96, 1000, 32);
  absl::StatusOr<std::vector<LlamaTensorPlan>> plan =
      PlanLlamaQuantization(Llama(2), Params("Q4_K_M"), tensors);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::map<std::string, LlamaTensorPlan> by_name;
  for (size_t i = 0; i < tensors.size(); ++i) {
    by_name[tensors[i].name] = (*plan)[i];
  }
  EXPECT_EQ(by_name["blk.0.attn_q.weight"].type, kGgmlTypeQ5_0);
  EXPECT_EQ(by_name["blk.0.attn_q.weight"].fallback_from, kGgmlTypeQ4_K);
  EXPECT_EQ(by_name["blk.1.attn_v.weight"].type, kGgmlTypeQ8_0);  // Q6_K
  EXPECT_EQ(by_name["blk.1.attn_v.weight"].fallback_from, kGgmlTypeQ6_K);
  // Rows of 1000 fit no 32-block type: F16.
  EXPECT_EQ(by_name["blk.0.ffn_down.weight"].type, kGgmlTypeF16);
  EXPECT_EQ(by_name["blk.0.ffn_down.weight"].fallback_from, kGgmlTypeQ4_K);
  // The output rule itself picks Q8_0 for a row that 256 does not divide.
  EXPECT_EQ(by_name["output.weight"].type, kGgmlTypeQ8_0);
  EXPECT_FALSE(by_name["output.weight"].fallback_from.has_value());
  EXPECT_EQ(by_name["blk.0.ffn_up.weight"].type, kGgmlTypeQ5_0);
  EXPECT_EQ(by_name["token_embd.weight"].type, kGgmlTypeQ5_0);
  EXPECT_FALSE(by_name["output_norm.weight"].fallback_from.has_value());

  // Q5_K -> Q5_1 with Q5_K_S.
  plan = PlanLlamaQuantization(Llama(2), Params("Q5_K_S"), tensors);
  ASSERT_TRUE(plan.ok());
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].name == "blk.0.attn_q.weight") {
      EXPECT_EQ((*plan)[i].type, kGgmlTypeQ5_1);
    }
  }
  // Q8_0 has no fallback: llama.cpp stops.
  const auto odd = LlamaTensors(2, /*tied=*/false, 100, 512, 32);
  absl::StatusOr<std::vector<LlamaTensorPlan>> bad =
      PlanLlamaQuantization(Llama(2), Params("Q8_0"), odd);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("no fallback"), std::string::npos)
      << bad.status();
}

TEST(LlamaPresetsTest, WhichTensorsAreQuantized) {
  const std::vector<LlamaTensorDesc> tensors = {
      {"blk.0.attn_q.weight", {256, 1}, kGgmlTypeF16},  // ggml: 1-D
      {"blk.0.attn_q.bias", {256, 256}, kGgmlTypeF16},  // not a weight
      {"blk.0.ffn_gate_inp.weight", {256, 8}, kGgmlTypeF32},
      {"position_embd.weight", {256, 256}, kGgmlTypeF16},
      {"token_types.weight", {256, 2}, kGgmlTypeF16},
      {"blk.0.ssm_conv1d.weight", {256, 4}, kGgmlTypeF32},
      {"blk.0.q_norm_weight", {256, 256}, kGgmlTypeF16},  // ends in weight
      {"blk.0.attn_norm.weight", {256, 256}, kGgmlTypeF32},
      {"blk.0.ffn_down.weight", {256, 256, 1, 1}, kGgmlTypeF16},
  };
  absl::StatusOr<std::vector<LlamaTensorPlan>> plan =
      PlanLlamaQuantization(Llama(1), Params("Q8_0"), tensors);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::vector<bool> allowed = {false, false, false, false, false,
                                     false, true,  false, true};
  for (size_t i = 0; i < tensors.size(); ++i) {
    SCOPED_TRACE(tensors[i].name);
    EXPECT_EQ((*plan)[i].allows_quantization, allowed[i]);
    EXPECT_EQ((*plan)[i].type, allowed[i] ? kGgmlTypeQ8_0 : tensors[i].type);
  }
}

TEST(LlamaPresetsTest, MixtureOfExperts) {
  // Mixtral-like: 8 experts, expert tensors with a third dimension.
  std::vector<LlamaTensorDesc> tensors = {
      {"token_embd.weight", {256, 1000}, kGgmlTypeF16},
      {"output.weight", {256, 1000}, kGgmlTypeF16},
  };
  for (int i = 0; i < 4; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    tensors.push_back({p + "attn_q.weight", {256, 256}, kGgmlTypeF16});
    tensors.push_back({p + "attn_k.weight", {256, 64}, kGgmlTypeF16});
    tensors.push_back({p + "attn_v.weight", {256, 64}, kGgmlTypeF16});
    tensors.push_back({p + "attn_output.weight", {256, 256}, kGgmlTypeF16});
    tensors.push_back({p + "ffn_gate_inp.weight", {256, 8}, kGgmlTypeF32});
    tensors.push_back({p + "ffn_down_exps.weight", {512, 256, 8},
                       kGgmlTypeF16});
    tensors.push_back({p + "ffn_up_exps.weight", {256, 512, 8},
                       kGgmlTypeF16});
  }
  const LlamaModelInfo moe = Llama(4, 8, 8, /*n_expert=*/8);
  auto plan = Plan(moe, Params("MXFP4_MOE"), tensors);
  EXPECT_EQ(plan.at("blk.0.ffn_down_exps.weight"), "MXFP4");
  EXPECT_EQ(plan.at("blk.0.ffn_up_exps.weight"), "MXFP4");
  EXPECT_EQ(plan.at("blk.0.attn_q.weight"), "Q8_0");
  EXPECT_EQ(plan.at("output.weight"), "Q8_0");
  EXPECT_EQ(plan.at("token_embd.weight"), "Q8_0");
  EXPECT_EQ(plan.at("blk.0.ffn_gate_inp.weight"), "F32");

  plan = Plan(moe, Params("Q4_K_M"), tensors);
  EXPECT_EQ(plan.at("blk.2.attn_v.weight"), "Q8_0");
  EXPECT_EQ(plan.at("blk.2.attn_k.weight"), "Q8_0");
  EXPECT_EQ(plan.at("blk.2.attn_output.weight"), "Q5_K");
  // Layers from the names: with 4 layers only layer 3 uses more bits.
  EXPECT_EQ(plan.at("blk.3.ffn_down_exps.weight"), "Q6_K");
  EXPECT_EQ(plan.at("blk.1.ffn_down_exps.weight"), "Q4_K");

  // An expert model's per-layer tensor must name its layer.
  tensors.push_back({"extra.ffn_down.weight", {256, 256}, kGgmlTypeF16});
  absl::StatusOr<std::vector<LlamaTensorPlan>> bad =
      PlanLlamaQuantization(moe, Params("Q4_K_M"), tensors);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LlamaPresetsTest, ImatrixRequirements) {
  const auto tensors = LlamaTensors(2, /*tied=*/false);
  auto requires_any = [&](const std::string& preset) {
    absl::StatusOr<std::vector<LlamaTensorPlan>> plan =
        PlanLlamaQuantization(Llama(2), Params(preset), tensors);
    EXPECT_TRUE(plan.ok()) << plan.status();
    std::vector<std::string> names;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if ((*plan)[i].allows_quantization && (*plan)[i].requires_imatrix) {
        names.push_back(tensors[i].name);
      }
    }
    return names;
  };
  EXPECT_TRUE(requires_any("Q4_K_M").empty());
  EXPECT_TRUE(requires_any("Q2_K").empty());
  // Q2_K_S: its Q2_K tensors need one (attn_q, ...; not token_embd).
  std::vector<std::string> q2ks = requires_any("Q2_K_S");
  EXPECT_FALSE(q2ks.empty());
  for (const std::string& name : q2ks) {
    EXPECT_NE(name, "token_embd.weight");
    EXPECT_NE(name, "output.weight");
  }
  EXPECT_FALSE(requires_any("IQ2_XXS").empty());
}

}  // namespace
}  // namespace quantd

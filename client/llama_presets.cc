#include "client/llama_presets.h"

#include <algorithm>
#include <cstdio>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace quantd {
namespace {

using F = LlamaFtype;

// llama-quantize's list, in its order (aliases included).
const std::vector<LlamaPreset>& Presets() {
  static const auto* presets = new std::vector<LlamaPreset>{
      {"Q4_0", F::kQ4_0},         {"Q4_1", F::kQ4_1},
      {"MXFP4_MOE", F::kMXFP4_MOE}, {"Q5_0", F::kQ5_0},
      {"Q5_1", F::kQ5_1},         {"IQ2_XXS", F::kIQ2_XXS},
      {"IQ2_XS", F::kIQ2_XS},     {"IQ2_S", F::kIQ2_S},
      {"IQ2_M", F::kIQ2_M},       {"IQ1_S", F::kIQ1_S},
      {"IQ1_M", F::kIQ1_M},       {"TQ1_0", F::kTQ1_0},
      {"TQ2_0", F::kTQ2_0},       {"Q2_K", F::kQ2_K},
      {"Q2_K_S", F::kQ2_K_S},     {"IQ3_XXS", F::kIQ3_XXS},
      {"IQ3_S", F::kIQ3_S},       {"IQ3_M", F::kIQ3_M},
      {"Q3_K", F::kQ3_K_M},       {"IQ3_XS", F::kIQ3_XS},
      {"Q3_K_S", F::kQ3_K_S},     {"Q3_K_M", F::kQ3_K_M},
      {"Q3_K_L", F::kQ3_K_L},     {"IQ4_NL", F::kIQ4_NL},
      {"IQ4_XS", F::kIQ4_XS},     {"Q4_K", F::kQ4_K_M},
      {"Q4_K_S", F::kQ4_K_S},     {"Q4_K_M", F::kQ4_K_M},
      {"Q5_K", F::kQ5_K_M},       {"Q5_K_S", F::kQ5_K_S},
      {"Q5_K_M", F::kQ5_K_M},     {"Q6_K", F::kQ6_K},
      {"Q8_0", F::kQ8_0},         {"F16", F::kF16},
      {"BF16", F::kBF16},         {"F32", F::kAllF32},
      {"COPY", F::kAllF32, /*only_copy=*/true},
  };
  return *presets;
}

enum class Category {
  kTokenEmbd,
  kAttnQ,
  kAttnV,
  kAttnK,
  kAttnQkv,
  kAttnKvB,
  kAttnOutput,
  kFfnUp,
  kFfnGate,
  kFfnDown,
  kOutput,
  kOther,
};

bool IsTokenEmbd(absl::string_view name) {
  return name == "token_embd.weight" || name == "per_layer_token_embd.weight";
}

Category CategoryOf(absl::string_view name) {
  if (name == "output.weight") return Category::kOutput;
  if (IsTokenEmbd(name)) return Category::kTokenEmbd;
  // Checked in this order: the first substring found decides.
  static constexpr std::pair<absl::string_view, Category> kBySubstring[] = {
      {"attn_qkv.weight", Category::kAttnQkv},
      {"attn_kv_b.weight", Category::kAttnKvB},
      {"attn_v.weight", Category::kAttnV},
      {"attn_k.weight", Category::kAttnK},
      {"attn_q.weight", Category::kAttnQ},
      {"attn_output.weight", Category::kAttnOutput},
      {"ffn_up", Category::kFfnUp},
      {"ffn_gate", Category::kFfnGate},
      {"ffn_down", Category::kFfnDown},
  };
  for (const auto& [needle, category] : kBySubstring) {
    if (absl::StrContains(name, needle)) return category;
  }
  return Category::kOther;
}

bool IsAttnVLike(Category c) {
  return c == Category::kAttnV || c == Category::kAttnQkv ||
         c == Category::kAttnKvB;
}

// ggml_n_dims: dimensions up to the last one above 1 (at least 1).
int GgmlNDims(const std::vector<int64_t>& ne) {
  for (int i = static_cast<int>(ne.size()) - 1; i >= 1; --i) {
    if (ne[static_cast<size_t>(i)] > 1) return i + 1;
  }
  return 1;
}

int64_t Ne(const std::vector<int64_t>& ne, size_t i) {
  return i < ne.size() ? ne[i] : 1;
}

// tensor_allows_quantization.
bool AllowsQuantization(const LlamaQuantizeParams& params,
                        const LlamaTensorDesc& t) {
  if (params.only_copy) return false;
  if (GgmlNDims(t.ne) < 2) return false;
  const std::string& name = t.name;
  // "Ends with weight", tested as llama.cpp does: the last "weight" starts
  // six bytes before the end. (For names shorter than six bytes the
  // unsigned difference wraps to npos, which then equals a failed search.)
  bool quantize = name.rfind("weight") == name.size() - 6;
  quantize &= !absl::StrContains(name, "_norm.weight");
  quantize &= !params.leave_output_tensor || name != "output.weight";
  static constexpr absl::string_view kKeep[] = {
      "ffn_gate_inp.weight",      "ffn_gate_tid2eid.weight",
      "altup",                    "laurel",
      "per_layer_model_proj",     "ssm_conv1d",
      "shortconv.conv.weight",    "indexer.k_proj.weight",
      "indexer.q_proj.weight",    "time_mix_first.weight",
      "time_mix_w0.weight",       "time_mix_w1.weight",
      "time_mix_w2.weight",       "time_mix_v0.weight",
      "time_mix_v1.weight",       "time_mix_v2.weight",
      "time_mix_a0.weight",       "time_mix_a1.weight",
      "time_mix_a2.weight",       "time_mix_g1.weight",
      "time_mix_g2.weight",       "time_mix_decay_w1.weight",
      "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
      "attn_rel_b.weight",        ".position_embd",
      "sam.pos_embd",             "sam.neck.",
      "sam.net_",                 ".rel_pos",
      ".patch_embd",              ".patch_merger",
      "a.rvq.codebook",           "mm.a.code_embd",
  };
  for (absl::string_view needle : kKeep) {
    quantize &= !absl::StrContains(name, needle);
  }
  quantize &= name != "position_embd.weight";
  quantize &= name != "token_types.weight";
  return quantize;
}

int BlockSize(uint32_t type) {
  const GgmlTypeInfo* info = FindGgmlType(type);
  return info == nullptr ? 1 : info->block_size;
}

bool IsQuantizedType(uint32_t type) {
  const GgmlTypeInfo* info = FindGgmlType(type);
  return info != nullptr && info->quantized;
}

// tensor_requires_imatrix.
bool RequiresImatrix(absl::string_view name, uint32_t type, LlamaFtype ftype) {
  if (IsTokenEmbd(name) || name == "output.weight") return false;
  switch (type) {
    case kGgmlTypeIQ3_XXS:
    case kGgmlTypeIQ2_XXS:
    case kGgmlTypeIQ2_XS:
    case kGgmlTypeIQ2_S:
    case kGgmlTypeIQ1_M:
    case kGgmlTypeIQ1_S:
      return true;
    case kGgmlTypeQ2_K:
      return ftype == LlamaFtype::kQ2_K_S;
    default:
      return false;
  }
}

// "blk.%d." as sscanf reads it; -1 when absent.
int BlockIndex(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

// The counters llama.cpp keeps while it visits tensors.
struct State {
  int n_attention_wv = 0;
  int i_attention_wv = 0;
  int n_ffn_down = 0;
  int i_ffn_down = 0;
  int n_ffn_gate = 0;
  int i_ffn_gate = 0;
  int n_ffn_up = 0;
  int i_ffn_up = 0;
  bool has_tied_embeddings = true;
};

bool UseMoreBits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 ||
         (i_layer - n_layers / 8) % 3 == 2;
}

bool OneOf(LlamaFtype f, std::initializer_list<LlamaFtype> set) {
  return std::find(set.begin(), set.end(), f) != set.end();
}

// The layer index of a per-layer tensor: the visit counter, or for models
// with experts (whose tensors are not visited in layer order) the N of its
// "blk.N." prefix.
absl::StatusOr<int> LayerOf(const LlamaModelInfo& model, int counter,
                            int n_layer, const std::string& name) {
  if (std::max<int64_t>(1, model.n_expert) <= 1) return counter;
  int layer = 0;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot determine the layer of tensor ", name));
  }
  if (layer < 0 || layer >= n_layer) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad layer ", layer, " for tensor ", name, ": must be in [0, ",
        n_layer, ")"));
  }
  return layer;
}

// The mixture rules of a preset (llama_tensor_get_type_impl).
absl::StatusOr<uint32_t> MixtureType(State& qs, const LlamaModelInfo& model,
                                     const LlamaQuantizeParams& params,
                                     const LlamaTensorDesc& t,
                                     Category category, uint32_t new_type) {
  const LlamaFtype ftype = params.ftype;
  const bool falcon = model.arch == "falcon";
  const int64_t n_gqa = model.n_gqa();
  const int64_t n_expert = model.n_expert;
  const bool has_imatrix = params.has_imatrix;
  const bool iq2_or_iq1 =
      OneOf(ftype, {F::kIQ2_XXS, F::kIQ2_XS, F::kIQ1_S, F::kIQ2_S, F::kIQ2_M,
                    F::kIQ1_M});
  const bool iq2_s_or_m = OneOf(ftype, {F::kIQ2_S, F::kIQ2_M});

  if (category == Category::kOutput ||
      (qs.has_tied_embeddings && category == Category::kTokenEmbd)) {
    if (params.output_tensor_type) return *params.output_tensor_type;
    const int64_t nx = Ne(t.ne, 0);
    if (ftype == F::kMXFP4_MOE) return kGgmlTypeQ8_0;
    if (falcon || nx % BlockSize(new_type) != 0) return kGgmlTypeQ8_0;
    if (OneOf(ftype, {F::kIQ2_XXS, F::kIQ2_XS, F::kIQ3_XXS, F::kIQ1_S,
                      F::kIQ2_S, F::kIQ2_M, F::kIQ1_M})) {
      return kGgmlTypeQ5_K;
    }
    if (new_type != kGgmlTypeQ8_0) return kGgmlTypeQ6_K;
    return new_type;
  }
  if (ftype == F::kMXFP4_MOE) {
    // Expert tensors (a third dimension) in MXFP4, the rest in Q8_0.
    const bool bailing_expert =
        model.arch == "bailingmoe3" &&
        (category == Category::kFfnUp || category == Category::kFfnGate ||
         category == Category::kFfnDown);
    if (Ne(t.ne, 2) > 1 && (model.arch != "bailingmoe3" || bailing_expert)) {
      return kGgmlTypeMXFP4;
    }
    return kGgmlTypeQ8_0;
  }
  if (category == Category::kTokenEmbd) {
    if (params.token_embedding_type) return *params.token_embedding_type;
    if (OneOf(ftype, {F::kIQ2_XXS, F::kIQ2_XS, F::kIQ1_S, F::kIQ1_M})) {
      return kGgmlTypeQ2_K;
    }
    if (OneOf(ftype, {F::kIQ2_S, F::kIQ2_M, F::kIQ3_XXS})) {
      return kGgmlTypeIQ3_S;
    }
    if (OneOf(ftype, {F::kTQ1_0, F::kTQ2_0})) return kGgmlTypeQ4_K;
    return new_type;
  }
  if (iq2_or_iq1) {
    if (IsAttnVLike(category)) {
      if (n_gqa >= 4 || n_expert >= 4) {
        new_type = kGgmlTypeQ4_K;
      } else {
        new_type = iq2_s_or_m ? kGgmlTypeIQ3_S : kGgmlTypeQ2_K;
      }
      ++qs.i_attention_wv;
    } else if (n_expert == 8 && category == Category::kAttnK) {
      new_type = kGgmlTypeQ4_K;
    } else if (category == Category::kFfnDown) {
      if (qs.i_ffn_down < qs.n_ffn_down / 8) {
        new_type = iq2_s_or_m ? kGgmlTypeIQ3_S : kGgmlTypeQ2_K;
      }
      ++qs.i_ffn_down;
    } else if (category == Category::kAttnOutput) {
      if (n_expert == 8) {
        new_type = kGgmlTypeQ5_K;
      } else if (OneOf(ftype, {F::kIQ1_S, F::kIQ1_M})) {
        new_type = kGgmlTypeIQ2_XXS;
      } else if (iq2_s_or_m) {
        new_type = kGgmlTypeIQ3_S;
      }
    }
    return new_type;
  }
  if (IsAttnVLike(category)) {
    if (ftype == F::kQ2_K) {
      new_type = n_gqa >= 4 ? kGgmlTypeQ4_K : kGgmlTypeQ3_K;
    } else if (ftype == F::kQ2_K_S && n_gqa >= 4) {
      new_type = kGgmlTypeQ4_K;
    } else if (ftype == F::kIQ3_XXS) {
      new_type = n_gqa >= 4      ? kGgmlTypeQ4_K
                 : !has_imatrix ? kGgmlTypeIQ3_S
                                : kGgmlTypeIQ3_XXS;
    } else if (OneOf(ftype, {F::kIQ3_XS, F::kIQ3_S}) && n_gqa >= 4) {
      new_type = kGgmlTypeQ4_K;
    } else if (ftype == F::kIQ3_M) {
      new_type = kGgmlTypeQ4_K;
    } else if (ftype == F::kQ3_K_M) {
      new_type = qs.i_attention_wv < 2 ? kGgmlTypeQ5_K : kGgmlTypeQ4_K;
    } else if (ftype == F::kQ3_K_L) {
      new_type = kGgmlTypeQ5_K;
    } else if (OneOf(ftype, {F::kIQ4_NL, F::kIQ4_XS}) && n_gqa >= 4) {
      new_type = kGgmlTypeQ5_K;
    } else if (OneOf(ftype, {F::kQ4_K_M, F::kQ5_K_M}) &&
               UseMoreBits(qs.i_attention_wv, qs.n_attention_wv)) {
      new_type = kGgmlTypeQ6_K;
    } else if (ftype == F::kQ4_K_S && qs.i_attention_wv < 4) {
      new_type = kGgmlTypeQ5_K;
    }
    if (model.is_70b() &&
        (new_type == kGgmlTypeQ3_K || new_type == kGgmlTypeQ4_K)) {
      new_type = kGgmlTypeQ5_K;
    }
    if (n_expert == 8) new_type = kGgmlTypeQ8_0;
    ++qs.i_attention_wv;
    return new_type;
  }
  if (category == Category::kAttnK) {
    if (n_expert == 8) return kGgmlTypeQ8_0;
    if (ftype == F::kIQ3_XS) return kGgmlTypeIQ3_XXS;
    if (ftype == F::kIQ3_XXS) return kGgmlTypeIQ2_S;
    return new_type;
  }
  if (category == Category::kAttnQ) {
    if (ftype == F::kIQ3_XS) return kGgmlTypeIQ3_XXS;
    if (ftype == F::kIQ3_XXS) return kGgmlTypeIQ2_S;
    return new_type;
  }
  if (category == Category::kFfnDown) {
    QUANTD_ASSIGN_OR_RETURN(
        const int i_layer, LayerOf(model, qs.i_ffn_down, qs.n_ffn_down, t.name));
    const int n_layer = qs.n_ffn_down;
    if (ftype == F::kQ2_K) {
      new_type = kGgmlTypeQ3_K;
    } else if (ftype == F::kQ2_K_S) {
      if (i_layer < n_layer / 8) new_type = kGgmlTypeQ4_K;
    } else if (ftype == F::kIQ3_XXS && !has_imatrix) {
      new_type = i_layer < n_layer / 8 ? kGgmlTypeQ4_K : kGgmlTypeQ3_K;
    } else if (ftype == F::kQ3_K_M) {
      new_type = i_layer < n_layer / 16 ? kGgmlTypeQ5_K
                 : !falcon || UseMoreBits(i_layer, n_layer) ? kGgmlTypeQ4_K
                                                             : kGgmlTypeQ3_K;
    } else if (ftype == F::kIQ3_M &&
               (i_layer < n_layer / 8 ||
                (n_expert == 8 && UseMoreBits(i_layer, n_layer)))) {
      new_type = kGgmlTypeQ4_K;
    } else if (ftype == F::kQ3_K_L) {
      new_type = falcon ? kGgmlTypeQ4_K : kGgmlTypeQ5_K;
    } else if (ftype == F::kQ4_K_M) {
      if (falcon) {
        new_type = i_layer < n_layer / 16          ? kGgmlTypeQ6_K
                   : UseMoreBits(i_layer, n_layer) ? kGgmlTypeQ5_K
                                                   : kGgmlTypeQ4_K;
      } else if (UseMoreBits(i_layer, n_layer)) {
        new_type = kGgmlTypeQ6_K;
      }
    } else if (i_layer < n_layer / 8 &&
               OneOf(ftype, {F::kIQ4_NL, F::kIQ4_XS}) && !has_imatrix) {
      new_type = kGgmlTypeQ5_K;
    } else if (ftype == F::kQ5_K_M && UseMoreBits(i_layer, n_layer)) {
      new_type = kGgmlTypeQ6_K;
    } else if (ftype == F::kQ4_K_S && !falcon && i_layer < n_layer / 8) {
      new_type = kGgmlTypeQ5_K;
    } else if (OneOf(ftype, {F::kQ4_0, F::kQ5_0}) && has_imatrix &&
               i_layer < n_layer / 8) {
      new_type = ftype == F::kQ4_0 ? kGgmlTypeQ4_1 : kGgmlTypeQ5_1;
    }
    ++qs.i_ffn_down;
    return new_type;
  }
  if (category == Category::kAttnOutput) {
    if (!falcon) {
      if (n_expert == 8) {
        if (OneOf(ftype, {F::kQ2_K, F::kIQ3_XS, F::kIQ3_XXS, F::kQ3_K_S,
                          F::kQ3_K_M, F::kIQ4_NL, F::kQ4_K_S, F::kQ4_K_M,
                          F::kIQ3_S, F::kIQ3_M, F::kIQ4_XS})) {
          new_type = kGgmlTypeQ5_K;
        }
      } else if (ftype == F::kQ2_K) {
        new_type = kGgmlTypeQ3_K;
      } else if (ftype == F::kIQ3_XXS) {
        new_type = kGgmlTypeIQ3_S;
      } else if (ftype == F::kQ3_K_M) {
        new_type = kGgmlTypeQ4_K;
      } else if (ftype == F::kQ3_K_L) {
        new_type = kGgmlTypeQ5_K;
      } else if (ftype == F::kIQ3_M) {
        new_type = kGgmlTypeQ4_K;
      }
    } else if (ftype == F::kQ3_K_L) {
      new_type = kGgmlTypeQ4_K;
    }
    return new_type;
  }
  if (category == Category::kFfnGate || category == Category::kFfnUp) {
    int& counter =
        category == Category::kFfnGate ? qs.i_ffn_gate : qs.i_ffn_up;
    const int n_layer =
        category == Category::kFfnGate ? qs.n_ffn_gate : qs.n_ffn_up;
    QUANTD_ASSIGN_OR_RETURN(const int i_layer,
                            LayerOf(model, counter, n_layer, t.name));
    if (ftype == F::kIQ3_XS && i_layer >= n_layer / 8 &&
        i_layer < 7 * n_layer / 8) {
      new_type = kGgmlTypeIQ3_XXS;
    }
    ++counter;
    return new_type;
  }
  return new_type;
}

// tensor_type_fallback: a type whose block does not divide the row.
absl::StatusOr<uint32_t> Fallback(const LlamaTensorDesc& t, uint32_t type) {
  const int64_t ncols = Ne(t.ne, 0);
  if (ncols % BlockSize(type) == 0) return type;
  uint32_t fallback;
  switch (type) {
    case kGgmlTypeIQ1_S:
    case kGgmlTypeIQ1_M:
    case kGgmlTypeIQ2_XXS:
    case kGgmlTypeIQ2_XS:
    case kGgmlTypeIQ2_S:
    case kGgmlTypeIQ3_XXS:
    case kGgmlTypeIQ3_S:
    case kGgmlTypeIQ4_XS:
      fallback = kGgmlTypeIQ4_NL;
      break;
    case kGgmlTypeQ2_K:
    case kGgmlTypeQ3_K:
    case kGgmlTypeTQ1_0:
    case kGgmlTypeTQ2_0:
      fallback = kGgmlTypeQ4_0;
      break;
    case kGgmlTypeQ4_K:
      fallback = kGgmlTypeQ5_0;
      break;
    case kGgmlTypeQ5_K:
      fallback = kGgmlTypeQ5_1;
      break;
    case kGgmlTypeQ6_K:
      fallback = kGgmlTypeQ8_0;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", t.name, ": row length ", ncols,
          " is not a multiple of the block size ", BlockSize(type), " of ",
          GgmlTypeName(type), ", and no fallback is defined for ",
          GgmlTypeName(type)));
  }
  if (ncols % BlockSize(fallback) != 0) fallback = kGgmlTypeF16;
  return fallback;
}

}  // namespace

absl::StatusOr<LlamaPreset> ParseLlamaPreset(absl::string_view text) {
  for (const LlamaPreset& p : Presets()) {
    if (absl::EqualsIgnoreCase(p.name, text)) return p;
  }
  int number = 0;
  if (absl::SimpleAtoi(text, &number)) {
    for (const LlamaPreset& p : Presets()) {
      if (static_cast<int>(p.ftype) == number) return p;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown llama.cpp preset \"", text, "\"; one of ",
                   absl::StrJoin(LlamaPresetNames(), ", ")));
}

std::vector<std::string> LlamaPresetNames() {
  std::vector<std::string> names;
  for (const LlamaPreset& p : Presets()) names.push_back(p.name);
  return names;
}

uint32_t LlamaFtypeDefaultType(LlamaFtype ftype) {
  switch (ftype) {
    case F::kAllF32: return kGgmlTypeF32;
    case F::kF16: return kGgmlTypeF16;
    case F::kBF16: return kGgmlTypeBF16;
    case F::kQ4_0: return kGgmlTypeQ4_0;
    case F::kQ4_1: return kGgmlTypeQ4_1;
    case F::kQ5_0: return kGgmlTypeQ5_0;
    case F::kQ5_1: return kGgmlTypeQ5_1;
    case F::kQ8_0: return kGgmlTypeQ8_0;
    case F::kMXFP4_MOE: return kGgmlTypeMXFP4;
    case F::kQ2_K_S:
    case F::kQ2_K: return kGgmlTypeQ2_K;
    case F::kIQ3_XS: return kGgmlTypeIQ3_S;
    case F::kQ3_K_S:
    case F::kQ3_K_M:
    case F::kQ3_K_L: return kGgmlTypeQ3_K;
    case F::kQ4_K_S:
    case F::kQ4_K_M: return kGgmlTypeQ4_K;
    case F::kQ5_K_S:
    case F::kQ5_K_M: return kGgmlTypeQ5_K;
    case F::kQ6_K: return kGgmlTypeQ6_K;
    case F::kTQ1_0: return kGgmlTypeTQ1_0;
    case F::kTQ2_0: return kGgmlTypeTQ2_0;
    case F::kIQ2_XXS: return kGgmlTypeIQ2_XXS;
    case F::kIQ2_XS: return kGgmlTypeIQ2_XS;
    case F::kIQ2_S: return kGgmlTypeIQ2_XS;
    case F::kIQ2_M: return kGgmlTypeIQ2_S;
    case F::kIQ3_XXS: return kGgmlTypeIQ3_XXS;
    case F::kIQ1_S: return kGgmlTypeIQ1_S;
    case F::kIQ1_M: return kGgmlTypeIQ1_M;
    case F::kIQ4_NL: return kGgmlTypeIQ4_NL;
    case F::kIQ4_XS: return kGgmlTypeIQ4_XS;
    case F::kIQ3_S:
    case F::kIQ3_M: return kGgmlTypeIQ3_S;
  }
  return kGgmlTypeF32;
}

absl::StatusOr<LlamaModelInfo> LlamaModelInfoFromMetadata(
    const GgufMetadata& metadata) {
  LlamaModelInfo info;
  std::optional<std::string> arch =
      metadata.FindString("general.architecture");
  if (!arch) {
    return absl::InvalidArgumentError(
        "general.architecture is missing or not a string");
  }
  info.arch = *arch;
  // An unsigned integer, or for head counts the first element of a
  // per-layer array; 0 when absent.
  auto count = [&](const std::string& key,
                   int64_t& out) -> absl::Status {
    const GgufValue* v = metadata.Find(key);
    if (v == nullptr) return absl::OkStatus();
    std::optional<int64_t> n = v->is_array() ? v->IntAt(0) : v->AsInt();
    if (!n || *n < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          key, " must be a non-negative integer, not ", v->DebugString()));
    }
    out = *n;
    return absl::OkStatus();
  };
  QUANTD_RETURN_IF_ERROR(count(info.arch + ".block_count", info.n_layer));
  QUANTD_RETURN_IF_ERROR(
      count(info.arch + ".attention.head_count", info.n_head));
  info.n_head_kv = info.n_head;
  QUANTD_RETURN_IF_ERROR(
      count(info.arch + ".attention.head_count_kv", info.n_head_kv));
  QUANTD_RETURN_IF_ERROR(count(info.arch + ".expert_count", info.n_expert));
  return info;
}

absl::StatusOr<LlamaTensorTypeRule> ParseLlamaTensorTypeRule(
    absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed tensor type \"", text, "\": expected REGEX=TYPE"));
  }
  if (eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor type \"", text, "\": missing tensor name"));
  }
  absl::string_view type_name = text.substr(eq + 1);
  if (type_name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor type \"", text, "\": missing quantization type"));
  }
  const GgmlTypeInfo* type = FindGgmlType(type_name);
  if (type == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor type \"", text, "\": unknown ggml type \"", type_name, "\""));
  }
  LlamaTensorTypeRule rule;
  rule.pattern = absl::AsciiStrToLower(text.substr(0, eq));
  rule.type = type->type;
  try {
    std::regex compiled(rule.pattern);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor type \"", text, "\": bad regex: ", e.what()));
  }
  return rule;
}

std::vector<size_t> LlamaTensorOrder(absl::Span<const std::string> names) {
  std::vector<size_t> order(names.size());
  std::vector<int> layer(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    order[i] = i;
    layer[i] = BlockIndex(names[i]);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (layer[a] != layer[b]) return layer[a] < layer[b];
    return names[a] < names[b];
  });
  return order;
}

absl::StatusOr<std::vector<LlamaTensorPlan>> PlanLlamaQuantization(
    const LlamaModelInfo& model, const LlamaQuantizeParams& params,
    absl::Span<const LlamaTensorDesc> tensors) {
  std::vector<std::pair<std::regex, uint32_t>> rules;
  for (const LlamaTensorTypeRule& rule : params.tensor_types) {
    try {
      rules.emplace_back(std::regex(rule.pattern), rule.type);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad --tensor-type regex \"", rule.pattern,
                       "\": ", e.what()));
    }
  }
  const uint32_t default_type = LlamaFtypeDefaultType(params.ftype);

  State qs;
  std::vector<Category> categories(tensors.size());
  std::vector<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    categories[i] = CategoryOf(tensors[i].name);
    if (IsAttnVLike(categories[i])) ++qs.n_attention_wv;
    if (categories[i] == Category::kOutput) qs.has_tied_embeddings = false;
    names.push_back(tensors[i].name);
  }
  const int n_layer = static_cast<int>(model.n_layer);
  qs.n_ffn_down = qs.n_ffn_gate = qs.n_ffn_up = n_layer;

  std::vector<LlamaTensorPlan> plans(tensors.size());
  for (size_t i : LlamaTensorOrder(names)) {
    const LlamaTensorDesc& t = tensors[i];
    LlamaTensorPlan& plan = plans[i];
    plan.allows_quantization = AllowsQuantization(params, t);
    plan.type = t.type;
    if (plan.allows_quantization) {
      const Category category = categories[i];
      if (params.token_embedding_type && category == Category::kTokenEmbd) {
        plan.type = *params.token_embedding_type;
      } else if (params.output_tensor_type && category == Category::kOutput) {
        plan.type = *params.output_tensor_type;
      } else {
        uint32_t type = default_type;
        if (IsQuantizedType(default_type)) {
          for (const auto& [pattern, rule_type] : rules) {
            if (std::regex_search(t.name, pattern)) {
              type = rule_type;
              plan.manual = true;
              break;
            }
          }
          if (!plan.manual && !params.pure) {
            QUANTD_ASSIGN_OR_RETURN(
                type, MixtureType(qs, model, params, t, category, type));
          }
          QUANTD_ASSIGN_OR_RETURN(const uint32_t fitted, Fallback(t, type));
          if (fitted != type) plan.fallback_from = type;
          type = fitted;
        }
        plan.type = type;
      }
    }
    plan.requires_imatrix = RequiresImatrix(t.name, plan.type, params.ftype);
  }
  return plans;
}

}  // namespace quantd

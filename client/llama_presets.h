// llama.cpp's quantization presets ("Q4_K_M", "Q8_0", ...): which ggml type
// each tensor of a GGUF model gets, decided exactly as llama-quantize
// decides it, so that `quantctl quantize IN.gguf --type Q4_K_M` produces the
// same tensor types (and, the kernels being bit-exact, the same bytes).
//
//   QUANTD_ASSIGN_OR_RETURN(LlamaModelInfo model,
//                           LlamaModelInfoFromMetadata(gguf->metadata()));
//   LlamaQuantizeParams params;
//   QUANTD_ASSIGN_OR_RETURN(params.ftype, ParseLlamaPreset("q4_k_m"));
//   std::vector<LlamaTensorDesc> tensors = ...;  // name, ne, type per tensor
//   QUANTD_ASSIGN_OR_RETURN(std::vector<LlamaTensorPlan> plan,
//                           PlanLlamaQuantization(model, params, tensors));
//   // plan[i].type is the ggml type of tensors[i] in the output.
//
// What is reproduced (llama.cpp src/llama-quant.cpp):
//   - which tensors are quantized at all: at least two dimensions counted
//     as ggml does (trailing dimensions of 1 do not count), names ending in
//     "weight", and not a norm, the MoE router, a position or token-type
//     embedding, or one of the small special tensors llama.cpp keeps;
//     output.weight not with --leave-output-tensor;
//   - the per-category mixture of each preset: token_embd / output.weight
//     (tied embeddings: token_embd takes the output rules when the model
//     has no output.weight), attn_v (and attn_qkv, attn_kv_b), attn_k,
//     attn_q, attn_output, ffn_down/gate/up with the "use more bits"
//     layer rule, GQA (n_head / n_head_kv), expert counts, the 70B and
//     Falcon rules;
//   - the order in which llama.cpp visits tensors (layer number, then
//     name), on which its per-category counters depend;
//   - --pure, --output-tensor-type, --token-embedding-type, --tensor-type
//     REGEX=TYPE (the regex lower-cased and searched anywhere in the name,
//     first match wins), and whether an importance matrix is required;
//   - the fallback when a row length is not a multiple of the chosen
//     type's block size (Q4_K -> Q5_0, Q6_K -> Q8_0, IQ* -> IQ4_NL, ...,
//     then F16 if that does not fit either).
// Presets that only copy or convert (F32, F16, BF16, COPY) are planned too.
//
// Thread-safety: pure functions.
#ifndef QUANTD_CLIENT_LLAMA_PRESETS_H_
#define QUANTD_CLIENT_LLAMA_PRESETS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/gguf.h"

namespace quantd {

// llama.cpp's enum llama_ftype, the value written as general.file_type.
enum class LlamaFtype : int {
  kAllF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 7,
  kQ5_0 = 8,
  kQ5_1 = 9,
  kQ2_K = 10,
  kQ3_K_S = 11,
  kQ3_K_M = 12,
  kQ3_K_L = 13,
  kQ4_K_S = 14,
  kQ4_K_M = 15,
  kQ5_K_S = 16,
  kQ5_K_M = 17,
  kQ6_K = 18,
  kIQ2_XXS = 19,
  kIQ2_XS = 20,
  kQ2_K_S = 21,
  kIQ3_XS = 22,
  kIQ3_XXS = 23,
  kIQ1_S = 24,
  kIQ4_NL = 25,
  kIQ3_S = 26,
  kIQ3_M = 27,
  kIQ2_S = 28,
  kIQ2_M = 29,
  kIQ4_XS = 30,
  kIQ1_M = 31,
  kBF16 = 32,
  kTQ1_0 = 36,
  kTQ2_0 = 37,
  kMXFP4_MOE = 38,
};

struct LlamaPreset {
  std::string name;  // as llama-quantize prints it: "Q4_K_M"
  LlamaFtype ftype;
  bool only_copy = false;  // "COPY"
};

// A preset by name, case-insensitive, with llama-quantize's aliases (Q3_K =
// Q3_K_M, Q4_K = Q4_K_M, Q5_K = Q5_K_M) and "COPY", or by its ftype
// number ("15"). InvalidArgument listing the presets otherwise.
absl::StatusOr<LlamaPreset> ParseLlamaPreset(absl::string_view text);
// Every preset name, in llama-quantize's order.
std::vector<std::string> LlamaPresetNames();
// The ftype's default tensor type (llama_ftype_get_default_type).
uint32_t LlamaFtypeDefaultType(LlamaFtype ftype);

// What the type choice needs to know about the model, from its GGUF
// metadata.
struct LlamaModelInfo {
  std::string arch;      // general.architecture
  int64_t n_layer = 0;   // <arch>.block_count
  int64_t n_head = 0;    // <arch>.attention.head_count (layer 0)
  int64_t n_head_kv = 0; // <arch>.attention.head_count_kv (default n_head)
  int64_t n_expert = 0;  // <arch>.expert_count (default 0)
  // n_head / n_head_kv, 0 when n_head_kv is 0 (llama's n_gqa()).
  int64_t n_gqa() const { return n_head_kv == 0 ? 0 : n_head / n_head_kv; }
  // llama.cpp's LLM_TYPE_70B: a llama with 80 layers and GQA.
  bool is_70b() const {
    return arch == "llama" && n_layer == 80 && n_head != n_head_kv;
  }
};

// Reads LlamaModelInfo. InvalidArgument if general.architecture is missing
// or not a string, or a present key has the wrong kind; a missing
// block_count is 0 (the layer rules then see no layers), as are missing
// head counts.
absl::StatusOr<LlamaModelInfo> LlamaModelInfoFromMetadata(
    const GgufMetadata& metadata);

// One --tensor-type rule.
struct LlamaTensorTypeRule {
  std::string pattern;  // ECMAScript regex, lower-cased, searched
  uint32_t type;        // a ggml type
};
// Parses "REGEX=TYPE" as llama-quantize does: split at the first '=', the
// regex lower-cased, TYPE any ggml type name (case-insensitive).
// InvalidArgument for a missing '=', empty regex or type, an unknown type,
// or a regex that does not compile.
absl::StatusOr<LlamaTensorTypeRule> ParseLlamaTensorTypeRule(
    absl::string_view text);

struct LlamaQuantizeParams {
  LlamaFtype ftype = LlamaFtype::kQ8_0;
  bool only_copy = false;            // the COPY preset
  bool pure = false;                 // --pure: no mixture, one type
  bool leave_output_tensor = false;  // --leave-output-tensor
  std::optional<uint32_t> output_tensor_type;    // --output-tensor-type
  std::optional<uint32_t> token_embedding_type;  // --token-embedding-type
  std::vector<LlamaTensorTypeRule> tensor_types;  // --tensor-type, in order
  bool has_imatrix = false;  // an importance matrix is given
};

struct LlamaTensorDesc {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the row length
  uint32_t type = kGgmlTypeF32;  // the input's ggml type
};

struct LlamaTensorPlan {
  // Whether llama.cpp would quantize this tensor at all; if not, `type` is
  // the input type and the tensor is copied.
  bool allows_quantization = false;
  uint32_t type = kGgmlTypeF32;  // the output type
  // The type chosen before the row-length fallback, when one happened.
  std::optional<uint32_t> fallback_from;
  bool manual = false;  // a --tensor-type rule chose the type
  // The tensor needs an importance matrix (very low-bit types; Q2_K in a
  // Q2_K_S file); llama-quantize refuses to run without one.
  bool requires_imatrix = false;
};

// The plan for each tensor, in the order of `tensors`. InvalidArgument
// when llama.cpp would stop: no fallback exists for a type whose block size
// does not divide a row (e.g. Q8_0 output with 100 columns), or, for a
// model with experts, a per-layer tensor whose name has no "blk.N." layer
// in [0, n_layer).
absl::StatusOr<std::vector<LlamaTensorPlan>> PlanLlamaQuantization(
    const LlamaModelInfo& model, const LlamaQuantizeParams& params,
    absl::Span<const LlamaTensorDesc> tensors);

// llama.cpp's tensor order (its loader's weight map): by the N of a
// "blk.N." prefix (names without one first), then by name. Returns indices
// into `names`.
std::vector<size_t> LlamaTensorOrder(absl::Span<const std::string> names);

}  // namespace quantd

#endif  // QUANTD_CLIENT_LLAMA_PRESETS_H_

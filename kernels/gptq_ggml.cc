#include "kernels/gptq_ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/convert.h"
#include "kernels/internal/linalg_gptq.h"
#include "kernels/internal/linalg_gram.h"

namespace quantd {
namespace {

size_t Sz(int64_t n) { return static_cast<size_t>(n); }

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

// One sub-block's grid: v(q) = scale * level(q) - offset, in f32, exactly
// the dequantizer's operations (x + m is x - (-m) in IEEE arithmetic).
struct SubGrid {
  float scale = 0.0f;
  float offset = 0.0f;
};

// Reads the grids of one block's sub-blocks (block_size / sub_block of
// them) from the block bytes.
using ExtractFn = void (*)(const uint8_t* block, SubGrid* grids);
// Writes the code indices q (block_size of them, each in [0, num_codes)) of
// one block into its bytes, leaving every scale bit as it is.
using WriteFn = void (*)(const uint8_t* q, uint8_t* block);

struct GridSpec {
  GgmlType type;
  int sub_block;   // elements per (scale, offset)
  int num_codes;   // allowed q: [0, num_codes)
  int level0;      // linear formats: level(q) = q + level0
  const int8_t* table;  // table formats: level(q) = table[q]; else nullptr
  ExtractFn extract;
  WriteFn write;
};

// Nibble packing of 32 codes (IQ4_NL, Q4_0, ...): qs[j] = q[j] | q[j+16]<<4.
void Nibbles32(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
  }
}
// Bit 4 of 32 codes as the little-endian uint32 qh of Q5_0 / Q5_1.
void HighBits32(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= ((q[j] >> 4) & 1u) << j;
  std::memcpy(qh, &h, 4);
}

// The sub-block scale and minimum of Q4_K / Q5_K (ggml's get_scale_min_k4).
void ScaleMinK4(int j, const uint8_t* s, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The 8 sub-block grids of a Q4_K / Q5_K block (d at 0, dmin at 2, the
// packed 6-bit scales and minimums at 4): scale d * sc, offset dmin * m.
void K4SubGrids(const uint8_t* b, SubGrid* g) {
  const float d = Half(b);
  const float dmin = Half(b + 2);
  for (int s = 0; s < 8; ++s) {
    int sc, m;
    ScaleMinK4(s, b + 4, sc, m);
    g[s] = {d * static_cast<float>(sc), dmin * static_cast<float>(m)};
  }
}

constexpr GridSpec kSpecs[] = {
    {GgmlType::kQ4_0, 32, 16, -8, nullptr,
     [](const uint8_t* b, SubGrid* g) { g[0] = {Half(b), 0.0f}; },
     [](const uint8_t* q, uint8_t* b) { Nibbles32(q, b + 2); }},
    {GgmlType::kQ4_1, 32, 16, 0, nullptr,
     [](const uint8_t* b, SubGrid* g) { g[0] = {Half(b), -Half(b + 2)}; },
     [](const uint8_t* q, uint8_t* b) { Nibbles32(q, b + 4); }},
    {GgmlType::kQ5_0, 32, 32, -16, nullptr,
     [](const uint8_t* b, SubGrid* g) { g[0] = {Half(b), 0.0f}; },
     [](const uint8_t* q, uint8_t* b) {
       HighBits32(q, b + 2);
       Nibbles32(q, b + 6);
     }},
    {GgmlType::kQ5_1, 32, 32, 0, nullptr,
     [](const uint8_t* b, SubGrid* g) { g[0] = {Half(b), -Half(b + 2)}; },
     [](const uint8_t* q, uint8_t* b) {
       HighBits32(q, b + 4);
       Nibbles32(q, b + 8);
     }},
    {GgmlType::kQ8_0, 32, 255, -127, nullptr,
     [](const uint8_t* b, SubGrid* g) { g[0] = {Half(b), 0.0f}; },
     [](const uint8_t* q, uint8_t* b) {
       for (int j = 0; j < 32; ++j) {
         const auto v = static_cast<int8_t>(static_cast<int>(q[j]) - 127);
         std::memcpy(b + 2 + j, &v, 1);
       }
     }},
    // Q2_K: scales[16] at 0, qs[64] at 16, d at 80, dmin at 82.
    {GgmlType::kQ2_K, 16, 4, 0, nullptr,
     [](const uint8_t* b, SubGrid* g) {
       const float d = Half(b + 80);
       const float dmin = Half(b + 82);
       for (int s = 0; s < 16; ++s) {
         g[s] = {d * static_cast<float>(b[s] & 0xF),
                 dmin * static_cast<float>(b[s] >> 4)};
       }
     },
     [](const uint8_t* q, uint8_t* b) {
       uint8_t* qs = b + 16;
       std::memset(qs, 0, 64);
       for (int e = 0; e < 256; ++e) {
         const int ee = e % 128;
         qs[e / 128 * 32 + ee % 32] |=
             static_cast<uint8_t>((q[e] & 3) << (2 * (ee / 32)));
       }
     }},
    // Q3_K: hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108.
    {GgmlType::kQ3_K, 16, 8, -4, nullptr,
     [](const uint8_t* b, SubGrid* g) {
       const float d = Half(b + 108);
       const uint8_t* sc = b + 96;
       for (int s = 0; s < 16; ++s) {
         const int lo = s < 8 ? sc[s] & 0xF : sc[s - 8] >> 4;
         const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
         g[s] = {d * static_cast<float>((lo | (hi << 4)) - 32), 0.0f};
       }
     },
     [](const uint8_t* q, uint8_t* b) {
       uint8_t* hmask = b;
       uint8_t* qs = b + 32;
       std::memset(hmask, 0, 32);
       std::memset(qs, 0, 64);
       for (int e = 0; e < 256; ++e) {
         const int ee = e % 128;
         qs[e / 128 * 32 + ee % 32] |=
             static_cast<uint8_t>((q[e] & 3) << (2 * (ee / 32)));
         hmask[e % 32] |= static_cast<uint8_t>(((q[e] >> 2) & 1) << (e / 32));
       }
     }},
    // Q4_K: d at 0, dmin at 2, scales[12] at 4, qs[128] at 16.
    {GgmlType::kQ4_K, 32, 16, 0, nullptr,
     K4SubGrids,
     [](const uint8_t* q, uint8_t* b) {
       uint8_t* qs = b + 16;
       for (int c = 0; c < 4; ++c) {
         for (int l = 0; l < 32; ++l) {
           qs[c * 32 + l] = static_cast<uint8_t>(
               (q[c * 64 + l] & 0xF) | ((q[c * 64 + 32 + l] & 0xF) << 4));
         }
       }
     }},
    // Q5_K: as Q4_K with qh[32] at 16 and qs[128] at 48.
    {GgmlType::kQ5_K, 32, 32, 0, nullptr,
     K4SubGrids,
     [](const uint8_t* q, uint8_t* b) {
       uint8_t* qh = b + 16;
       uint8_t* qs = b + 48;
       std::memset(qh, 0, 32);
       for (int c = 0; c < 4; ++c) {
         for (int l = 0; l < 32; ++l) {
           qs[c * 32 + l] = static_cast<uint8_t>(
               (q[c * 64 + l] & 0xF) | ((q[c * 64 + 32 + l] & 0xF) << 4));
         }
       }
       for (int e = 0; e < 256; ++e) {
         qh[e % 32] |= static_cast<uint8_t>(((q[e] >> 4) & 1) << (e / 32));
       }
     }},
    // Q6_K: ql[128] at 0, qh[64] at 128, scales[16] at 192, d at 208.
    {GgmlType::kQ6_K, 16, 64, -32, nullptr,
     [](const uint8_t* b, SubGrid* g) {
       const float d = Half(b + 208);
       for (int s = 0; s < 16; ++s) {
         int8_t sc;
         std::memcpy(&sc, b + 192 + s, 1);
         g[s] = {d * static_cast<float>(sc), 0.0f};
       }
     },
     [](const uint8_t* q, uint8_t* b) {
       std::memset(b, 0, 192);
       for (int e = 0; e < 256; ++e) {
         const int half = e / 128;
         const int ee = e % 128;
         const int k = ee / 32;
         const int l = ee % 32;
         uint8_t* ql = b + 64 * half + l + (k % 2) * 32;
         *ql |= static_cast<uint8_t>((q[e] & 0xF) << (4 * (k / 2)));
         b[128 + 32 * half + l] |=
             static_cast<uint8_t>(((q[e] >> 4) & 3) << (2 * k));
       }
     }},
    {GgmlType::kIq4Nl, 32, 16, 0, kGgmlIq4NlValues,
     [](const uint8_t* b, SubGrid* g) { g[0] = {Half(b), 0.0f}; },
     [](const uint8_t* q, uint8_t* b) { Nibbles32(q, b + 2); }},
    // IQ4_XS: d at 0, scales_h at 2, scales_l[4] at 4, qs[128] at 8.
    {GgmlType::kIq4Xs, 32, 16, 0, kGgmlIq4NlValues,
     [](const uint8_t* b, SubGrid* g) {
       const float d = Half(b);
       const auto scales_h = static_cast<unsigned>(b[2] | (b[3] << 8));
       for (int s = 0; s < 8; ++s) {
         const int ls = ((b[4 + s / 2] >> (4 * (s % 2))) & 0x0F) |
                        static_cast<int>(((scales_h >> (2 * s)) & 3) << 4);
         g[s] = {d * static_cast<float>(ls - 32), 0.0f};
       }
     },
     [](const uint8_t* q, uint8_t* b) {
       for (int s = 0; s < 8; ++s) Nibbles32(q + 32 * s, b + 8 + 16 * s);
     }},
    {GgmlType::kMxfp4, 32, 16, 0, kGgmlMxfp4Values,
     [](const uint8_t* b, SubGrid* g) {
       g[0] = {GgmlE8m0ToFloatHalf(b[0]), 0.0f};
     },
     [](const uint8_t* q, uint8_t* b) { Nibbles32(q, b + 1); }},
};

const GridSpec* FindSpec(GgmlType type) {
  for (const GridSpec& s : kSpecs) {
    if (s.type == type) return &s;
  }
  return nullptr;
}

int Level(const GridSpec& spec, int q) {
  return spec.table != nullptr ? spec.table[q] : q + spec.level0;
}

float Value(const GridSpec& spec, const SubGrid& g, int q) {
  return g.scale * static_cast<float>(Level(spec, q)) - g.offset;
}

// The allowed q of least |v(q) - x| (the smaller q on ties); with a zero
// scale, the q whose level is nearest 0.
int Nearest(const GridSpec& spec, const SubGrid& g, float x) {
  int lo = 0;
  int hi = spec.num_codes - 1;
  if (g.scale == 0.0f) {
    int best = 0;
    for (int q = 1; q < spec.num_codes; ++q) {
      if (std::abs(Level(spec, q)) < std::abs(Level(spec, best))) best = q;
    }
    return best;
  }
  if (spec.table == nullptr) {
    // v is monotone in q, so the nearest is next to the real estimate.
    float t = (x + g.offset) / g.scale - static_cast<float>(spec.level0);
    t = std::clamp(t, 0.0f, static_cast<float>(hi));
    const int est = static_cast<int>(std::nearbyint(t));
    lo = std::max(0, est - 1);
    hi = std::min(hi, est + 1);
  }
  int best = lo;
  float best_err = std::fabs(Value(spec, g, lo) - x);
  for (int q = lo + 1; q <= hi; ++q) {
    const float err = std::fabs(Value(spec, g, q) - x);
    if (err < best_err) {
      best = q;
      best_err = err;
    }
  }
  return best;
}

}  // namespace

absl::StatusOr<GptqGgmlResult> GptqGgmlQuantize(const GgmlFormatTraits& format,
                                                const float* w, int64_t rows,
                                                int64_t cols,
                                                const GramView& gram,
                                                const GptqGgmlOptions& options) {
  const GridSpec* spec = FindSpec(format.type);
  if (spec == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPTQ does not support the ggml format ", format.name));
  }
  if (rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight has ", rows, " rows, must be >= 1"));
  }
  QUANTD_ASSIGN_OR_RETURN(const int64_t row_bytes,
                          GgmlRowBytes(format, cols));
  QUANTD_RETURN_IF_ERROR(internal::CheckGptqInputs(
      w, rows, cols, gram, options.damp_percent, options.block_size));

  // 1. The static pass: ggml's quantizer fixes every block's grid.
  GptqGgmlResult result;
  const int block = format.block_size;
  const int64_t blocks_per_row = cols / block;
  std::vector<float> importance;
  if (options.use_importance && format.uses_importance) {
    importance.resize(Sz(cols));
    for (int64_t c = 0; c < cols; ++c) {
      importance[Sz(c)] = static_cast<float>(
          gram.at(c, c) / static_cast<double>(gram.tokens));
    }
  }
  result.rtn_bytes.resize(Sz(rows * row_bytes));
  QUANTD_RETURN_IF_ERROR(GgmlQuantize(
      format, w, rows, cols, importance.empty() ? nullptr : importance.data(),
      result.rtn_bytes.data()));
  const int64_t subs_per_row = cols / spec->sub_block;
  const int subs_per_block = block / spec->sub_block;
  std::vector<SubGrid> grids(Sz(rows * subs_per_row));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks_per_row; ++b) {
      SubGrid* g = grids.data() + r * subs_per_row + b * subs_per_block;
      spec->extract(
          result.rtn_bytes.data() + r * row_bytes + b * format.block_bytes, g);
      for (int s = 0; s < subs_per_block; ++s) {
        if (!std::isfinite(g[s].scale) || !std::isfinite(g[s].offset)) {
          return absl::InvalidArgumentError(absl::StrCat(
              format.name, " block ", b, " of row ", r,
              " has a non-finite scale or minimum after ggml's quantizer "
              "(weights beyond its f16 range); GPTQ needs a finite grid"));
        }
      }
    }
  }

  // 2. The column loop on the fixed grids.
  QUANTD_ASSIGN_OR_RETURN(
      internal::GptqHessian hess,
      internal::GptqInverseHessianFactor(gram, options.damp_percent,
                                         options.act_order));
  result.dead_columns = hess.dead_columns;
  const std::vector<int32_t>& perm = hess.perm;
  std::vector<float> work(Sz(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      const int32_t c = perm[Sz(j)];
      work[Sz(r * cols + j)] =
          hess.dead[Sz(c)] != 0 ? 0.0f : w[r * cols + c];
    }
  }
  if (options.act_order) result.perm = perm;
  std::vector<uint8_t> codes(Sz(rows * cols));  // original order
  std::vector<float> w_hat(Sz(rows * cols));     // original order
  const auto no_cut = [](int64_t, int64_t i2) { return i2; };
  const auto round = [&](int64_t r, int64_t i, float* row) {
    const int64_t c = perm[Sz(i)];
    const SubGrid& g = grids[Sz(r * subs_per_row + c / spec->sub_block)];
    const int q = Nearest(*spec, g, row[i]);
    const float v = Value(*spec, g, q);
    codes[Sz(r * cols + c)] = static_cast<uint8_t>(q);
    w_hat[Sz(r * cols + c)] = v;
    return v;
  };
  QUANTD_RETURN_IF_ERROR(internal::GptqColumnLoop(
      work.data(), rows, cols, hess.hinv.data(), options.block_size, no_cut,
      round, &result.loss));

  // 3. The codes into the static pass's blocks.
  result.bytes = result.rtn_bytes;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks_per_row; ++b) {
      spec->write(codes.data() + r * cols + b * block,
                  result.bytes.data() + r * row_bytes + b * format.block_bytes);
    }
  }

  result.output_error = std::numeric_limits<double>::quiet_NaN();
  result.rtn_output_error = std::numeric_limits<double>::quiet_NaN();
  if (options.measure_output_error) {
    QUANTD_ASSIGN_OR_RETURN(
        result.output_error,
        OutputRelativeError(w, w_hat.data(), rows, cols, gram));
    std::vector<float> rtn_hat(Sz(rows * cols));
    QUANTD_RETURN_IF_ERROR(GgmlDequantize(format, result.rtn_bytes.data(),
                                          rows, cols, rtn_hat.data()));
    QUANTD_ASSIGN_OR_RETURN(
        result.rtn_output_error,
        OutputRelativeError(w, rtn_hat.data(), rows, cols, gram));
  }
  if (options.return_w_hat) result.w_hat = std::move(w_hat);
  return result;
}

}  // namespace quantd

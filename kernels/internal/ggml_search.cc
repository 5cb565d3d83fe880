// ggml's search helpers (see ggml_search.h): scalar, the specification.
// Expressions keep ggml's left-to-right evaluation: `w*x[i]*l` is
// (w * x[i]) * l, `scale*L[i] + min - x[i]` is ((scale * L[i]) + min) - x[i].
#include "kernels/internal/ggml_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace quantd::internal {
namespace {

// ggml's MIN / MAX macros on ints.
int ClampInt(int v, int lo, int hi) { return std::max(lo, std::min(hi, v)); }

// The weight make_qx_quants gives element i.
float QxWeight(const float* x, const float* qw, int rmse_type, int i) {
  if (qw != nullptr) return qw[i];
  switch (rmse_type) {
    case 1:
      return x[i] * x[i];
    case 2:
      return 1.0f;
    case 3:
      return std::fabs(x[i]);
    default:
      return std::sqrt(std::fabs(x[i]));
  }
}

}  // namespace

float GgmlMakeQxQuants(int n, int nmax, const float* x, int8_t* L,
                       int rmse_type, const float* qw) {
  float max = 0.0f;
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGgmlGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  const float fnmax = static_cast<float>(nmax);
  float iscale = static_cast<float>(-nmax) / max;
  if (rmse_type == 0) {
    for (int i = 0; i < n; ++i) {
      const int l = GgmlNearestInt(iscale * x[i]);
      L[i] = static_cast<int8_t>(nmax + ClampInt(l, -nmax, nmax - 1));
    }
    return 1.0f / iscale;
  }
  bool return_early = false;
  if (rmse_type < 0) {
    rmse_type = -rmse_type;
    return_early = true;
  }
  float sumlx = 0.0f;
  float suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = ClampInt(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = QxWeight(x, qw, rmse_type, i);
    const auto fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  if (return_early) {
    return suml2 > 0.0f ? 0.5f * (scale + 1.0f / iscale) : 1.0f / iscale;
  }
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(fnmax + 0.1f * static_cast<float>(is)) / max;
    sumlx = 0.0f;
    suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = ClampInt(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1);
      const float w = QxWeight(x, qw, rmse_type, i);
      const auto fl = static_cast<float>(l);
      sumlx += w * x[i] * fl;
      suml2 += w * fl * fl;
    }
    if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = GgmlNearestInt(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + ClampInt(l, -nmax, nmax - 1));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float GgmlMakeQ3Quants(int n, int nmax, const float* x, int8_t* L,
                       bool do_rmse) {
  float max = 0.0f;
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGgmlGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  if (do_rmse) {
    float sumlx = 0.0f;
    float suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = ClampInt(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1);
      L[i] = static_cast<int8_t>(l);
      const float w = x[i] * x[i];
      const auto fl = static_cast<float>(l);
      sumlx += w * x[i] * fl;
      suml2 += w * fl * fl;
    }
    for (int itry = 0; itry < 5; ++itry) {
      int n_changed = 0;
      for (int i = 0; i < n; ++i) {
        const float w = x[i] * x[i];
        const auto li = static_cast<float>(L[i]);
        float slx = sumlx - w * x[i] * li;
        if (slx > 0.0f) {
          float sl2 = suml2 - w * li * li;
          const int new_l =
              ClampInt(GgmlNearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
          if (new_l != L[i]) {
            const auto fl = static_cast<float>(new_l);
            slx += w * x[i] * fl;
            sl2 += w * fl * fl;
            if (sl2 > 0.0f && slx * slx * suml2 > sumlx * sumlx * sl2) {
              L[i] = static_cast<int8_t>(new_l);
              sumlx = slx;
              suml2 = sl2;
              ++n_changed;
            }
          }
        }
      }
      if (n_changed == 0) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
  }
  for (int i = 0; i < n; ++i) {
    const int l = ClampInt(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
  }
  return 1.0f / iscale;
}

namespace {

// make_qkx2_quants and make_qkx3_quants differ in four places, the flags.
template <bool kQkx3>
float MakeQkxQuants(int n, int nmax, const float* x, const float* weights,
                    uint8_t* L, float* the_min, uint8_t* Laux, float rmin,
                    float rdelta, int nstep, bool use_mad) {
  auto weight = [&](int i) {
    if constexpr (kQkx3) {
      return weights != nullptr ? weights[i] : x[i] * x[i];
    } else {
      return weights[i];
    }
  };
  const float fnmax = static_cast<float>(nmax);
  float min = x[0];
  float max = x[0];
  float sum_w = weight(0);
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weight(i);
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0.0f) min = 0.0f;
  if (kQkx3 ? max <= min : max == min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.0f;
  }
  float iscale = fnmax / (max - min);
  float scale = 1.0f / iscale;
  float best_error = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = GgmlNearestInt(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(ClampInt(l, 0, nmax));
    float diff = scale * static_cast<float>(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weight(i) * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + fnmax) / (max - min);
    float sum_l = 0.0f;
    float sum_l2 = 0.0f;
    float sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      int l;
      if constexpr (kQkx3) {
        // `min` may by now be a fitted minimum at or beyond max, so v can be
        // huge, infinite or NaN; ggml clamps it before rounding.
        const float v = iscale * (x[i] - min);
        l = v > 0.0f ? GgmlNearestInt(v < fnmax ? v : fnmax) : 0;
      } else {
        l = ClampInt(GgmlNearestInt(iscale * (x[i] - min)), 0, nmax);
      }
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weight(i);
      const auto fl = static_cast<float>(l);
      sum_l += w * fl;
      sum_l2 += w * fl * fl;
      sum_xl += w * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0.0f) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0.0f) {
        this_min = 0.0f;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0.0f;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weight(i) * diff;
      }
      if (cur_error < best_error) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

}  // namespace

float GgmlMakeQkx2Quants(int n, int nmax, const float* x, const float* weights,
                         uint8_t* L, float* the_min, uint8_t* Laux, float rmin,
                         float rdelta, int nstep, bool use_mad) {
  return MakeQkxQuants<false>(n, nmax, x, weights, L, the_min, Laux, rmin,
                              rdelta, nstep, use_mad);
}

float GgmlMakeQkx3Quants(int n, int nmax, const float* x, const float* weights,
                         uint8_t* L, float* the_min, uint8_t* Laux, float rmin,
                         float rdelta, int nstep, bool use_mad) {
  return MakeQkxQuants<true>(n, nmax, x, weights, L, the_min, Laux, rmin,
                             rdelta, nstep, use_mad);
}

float GgmlMakeQpQuants(int n, int nmax, const float* x, uint8_t* L,
                       const float* quant_weights) {
  float max = 0.0f;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGgmlGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  const float fnmax = static_cast<float>(nmax);
  float iscale = fnmax / max;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(GgmlNearestInt(iscale * x[i]));
  }
  const float scale = 1.0f / iscale;
  float best_mse = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(L[i]);
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + fnmax) / max;
    const float scale_is = 1.0f / iscale_is;
    float mse = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, GgmlNearestInt(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0.0f;
  float suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    // The sums take the int code, L keeps its low byte (as ggml's uint8_t).
    const int l = std::min(nmax, GgmlNearestInt(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    const auto fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      const auto li = static_cast<float>(L[i]);
      float slx = sumlx - w * x[i] * li;
      float sl2 = suml2 - w * li * li;
      if (slx > 0.0f && sl2 > 0.0f) {
        const int new_l = std::min(nmax, GgmlNearestInt(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          const auto fl = static_cast<float>(new_l);
          slx += w * x[i] * fl;
          sl2 += w * fl * fl;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (n_changed == 0) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

}  // namespace quantd::internal

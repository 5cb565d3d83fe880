#include "kernels/onednn_int8.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "dnnl.hpp"
#include "kernels/cpu.h"
#include "kernels/internal/isa_kernels.h"

namespace quantd {
namespace {

// Scalar per-row scales for CPUs without AVX-512 (same arithmetic as the
// reference; the vector helper is bit-identical).
int64_t RowScalesScalar(const float* src, int64_t rows, int64_t row_length,
                        float* scales, float* inv_scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * row_length;
    const int64_t bad = internal::FirstNonFinite(x, row_length);
    if (bad >= 0) return r * row_length + bad;
    float amax = 0.0f;
    for (int64_t i = 0; i < row_length; ++i) {
      amax = std::max(amax, std::fabs(x[i]));
    }
    float scale = amax / 127.0f;
    if (scale < FLT_MIN) scale = FLT_MIN;
    scales[r] = scale;
    inv_scales[r] = 1.0f / scale;
  }
  return -1;
}

// One f32 [rows, K] -> s8 [rows, K] reorder per shape, with per-row output
// scales supplied at execution time.
//
// The mutex below is the only synchronization in kernels/: it guards the
// primitive cache, which is shared by every worker thread. Primitives are
// created under the lock (once per shape) and executed outside it; oneDNN
// primitives may be executed concurrently.
class ReorderCache {
 public:
  static ReorderCache& Get() {
    static ReorderCache* cache = new ReorderCache();  // never destroyed
    return *cache;
  }

  const dnnl::engine& engine() const { return engine_; }

  // Throws dnnl::error.
  dnnl::reorder Find(int64_t rows, int64_t k) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = reorders_.find(std::make_pair(rows, k));
    if (it != reorders_.end()) return it->second;
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::desc src_md({rows, k}, dt::f32, tag::ab);
    const dnnl::memory::desc dst_md({rows, k}, dt::s8, tag::ab);
    dnnl::primitive_attr attr;
    attr.set_output_scales(1 << 0, {DNNL_RUNTIME_F32_VAL});
    const dnnl::reorder::primitive_desc pd(engine_, src_md, engine_, dst_md,
                                           attr);
    dnnl::reorder reorder(pd);
    reorders_.emplace(std::make_pair(rows, k), reorder);
    return reorder;
  }

 private:
  ReorderCache() : engine_(dnnl::engine::kind::cpu, 0) {}

  const dnnl::engine engine_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<int64_t, int64_t>, dnnl::reorder> reorders_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::Status QuantizeInt8PerChannelOneDnn(const float* src,
                                          QuantizedTensor& dst) {
  const Layout& layout = dst.layout;
  if (layout.bits != 8 || !layout.scheme.symmetric ||
      layout.scheme.format != "int8" ||
      layout.group_size != layout.row_length ||
      layout.num_groups != layout.rows || layout.rows < 1 ||
      layout.row_length < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuantizeInt8PerChannelOneDnn needs an int8 symmetric per-channel "
        "layout, got ",
        SchemeToString(layout.scheme)));
  }
  if (dst.codes.size() != static_cast<size_t>(layout.num_elements) ||
      dst.scales.size() != static_cast<size_t>(layout.rows)) {
    return absl::InvalidArgumentError(
        "destination not sized for the layout; use AllocateQuantized");
  }
  std::vector<float> inv_scales(static_cast<size_t>(layout.rows));
  const int64_t bad =
      internal::CpuIsa() == Isa::kAvx512
          ? internal::RowScalesSymInt8(src, layout.rows, layout.row_length,
                                       dst.scales.data(), inv_scales.data())
          : RowScalesScalar(src, layout.rows, layout.row_length,
                            dst.scales.data(), inv_scales.data());
  if (bad >= 0) return internal::NonFiniteError(bad, src[bad]);

  // The one place dnnl::error becomes a status.
  try {
    ReorderCache& cache = ReorderCache::Get();
    const dnnl::reorder reorder = cache.Find(layout.rows, layout.row_length);
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::engine& engine = cache.engine();
    dnnl::memory src_mem({{layout.rows, layout.row_length}, dt::f32, tag::ab},
                         engine, const_cast<float*>(src));
    dnnl::memory dst_mem({{layout.rows, layout.row_length}, dt::s8, tag::ab},
                         engine, dst.codes.data());
    dnnl::memory scales_mem({{layout.rows}, dt::f32, tag::a}, engine,
                            inv_scales.data());
    dnnl::stream stream(engine);
    reorder.execute(stream, {{DNNL_ARG_FROM, src_mem},
                             {DNNL_ARG_TO, dst_mem},
                             {DNNL_ARG_ATTR_OUTPUT_SCALES, scales_mem}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(
        absl::StrCat("oneDNN int8 reorder failed: ", e.what(), " (status ",
                     static_cast<int>(e.status), ")"));
  }
  return absl::OkStatus();
}

}  // namespace quantd

// Low-precision float formats: the format logic (options, scales, double
// quantization) shared by every path, and the scalar element loops, which
// are the specification the vector loops are tested against.
#include "kernels/float_formats.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu.h"
#include "kernels/internal/float_kernels.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/layout.h"

namespace quantd {
namespace internal {

uint8_t EncodeMiniFloat(float v, const MiniFloatSpec& spec) {
  const uint32_t sign =
      std::signbit(v) ? 1u << (spec.exp_bits + spec.man_bits) : 0u;
  const float a = std::min(std::fabs(v), spec.max_value);
  // The binade of a (floor(log2 a)), at least the smallest normal one, whose
  // quantum 2^(binade - man_bits) also spaces the subnormals.
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  const int binade = a == 0.0f ? spec.emin : std::max(e - 1, spec.emin);
  // a / quantum is exact (a power-of-two scaling of a normal result);
  // nearbyint rounds half to even in the default rounding mode.
  const float k = std::nearbyint(std::ldexp(a, spec.man_bits - binade));
  // k in [2^m, 2^(m+1)] above the smallest binade, [0, 2^(m+1)] in it; a k
  // of 2^(m+1) carries into the exponent field, as it should.
  const uint32_t magnitude =
      static_cast<uint32_t>(k) +
      (static_cast<uint32_t>(binade - spec.emin) << spec.man_bits);
  return static_cast<uint8_t>(sign | magnitude);
}

float DecodeMiniFloat(uint32_t code, const MiniFloatSpec& spec) {
  const int width = spec.exp_bits + spec.man_bits;
  const bool negative = ((code >> width) & 1u) != 0;
  const uint32_t exp_field = (code >> spec.man_bits) & ((1u << spec.exp_bits) - 1);
  const uint32_t man = code & ((1u << spec.man_bits) - 1);
  float magnitude;
  if (exp_field == 0) {
    magnitude = std::ldexp(static_cast<float>(man), spec.emin - spec.man_bits);
  } else {
    magnitude = std::ldexp(static_cast<float>(man + (1u << spec.man_bits)),
                           static_cast<int>(exp_field) - 1 + spec.emin -
                               spec.man_bits);
  }
  if (magnitude > spec.max_value) {
    // Beyond the finite range: E5M2's Inf (mantissa 0) and NaNs, E4M3's NaN.
    magnitude = man == 0 ? std::numeric_limits<float>::infinity()
                         : std::numeric_limits<float>::quiet_NaN();
  }
  return negative ? -magnitude : magnitude;
}

namespace {

void GroupAmaxScalar(const float* src, int64_t num_groups, int64_t group_size,
                     float* amax) {
  for (int64_t g = 0; g < num_groups; ++g) {
    const float* x = src + g * group_size;
    float m = 0.0f;
    for (int64_t j = 0; j < group_size; ++j) m = std::max(m, std::fabs(x[j]));
    amax[g] = m;
  }
}

void StoreCode(uint8_t code, int64_t i, int bits, NibbleOrder order,
               uint8_t* dst) {
  if (bits == 8) {
    dst[i] = code;
    return;
  }
  const bool first = (i & 1) == 0;
  const int shift = (first == (order == NibbleOrder::kLowFirst)) ? 0 : 4;
  uint8_t& byte = dst[i >> 1];
  if (first) byte = 0;
  byte = static_cast<uint8_t>(byte | (code << shift));
}

uint8_t LoadCode(const uint8_t* src, int64_t i, int bits, NibbleOrder order) {
  if (bits == 8) return src[i];
  const bool first = (i & 1) == 0;
  const int shift = (first == (order == NibbleOrder::kLowFirst)) ? 0 : 4;
  return static_cast<uint8_t>((src[i >> 1] >> shift) & 0x0F);
}

void EncodeMiniFloatScalar(const float* src, int64_t n, int64_t group_size,
                           const float* divisors, const MiniFloatSpec& spec,
                           int bits, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = divisors[i / group_size];
    const uint8_t code = d == 0.0f ? uint8_t{0} : EncodeMiniFloat(src[i] / d, spec);
    StoreCode(code, i, bits, NibbleOrder::kLowFirst, dst);
  }
}

void EncodeNf4Scalar(const float* src, int64_t n, int64_t group_size,
                     const float* inv_absmax, const float* midpoints,
                     uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const float s =
        std::min(std::max(src[i] * inv_absmax[i / group_size], -1.0f), 1.0f);
    uint8_t code = 0;
    for (int k = 0; k < 15; ++k) code = static_cast<uint8_t>(code + (midpoints[k] < s ? 1 : 0));
    StoreCode(code, i, 4, NibbleOrder::kHighFirst, dst);
  }
}

void DecodeScalar(const uint8_t* src, int64_t n, int64_t group_size,
                  const float* scales, const float* table, int bits,
                  NibbleOrder order, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = table[LoadCode(src, i, bits, order)] * scales[i / group_size];
  }
}

}  // namespace

const FloatKernels& FloatKernelsScalar() {
  static constexpr FloatKernels kKernels = {GroupAmaxScalar,
                                            EncodeMiniFloatScalar,
                                            EncodeNf4Scalar, DecodeScalar};
  return kKernels;
}

const FloatKernels& SelectedFloatKernels() {
  static const FloatKernels* const kSelected = [] {
    switch (DetectedIsa()) {
      case Isa::kAvx512:
        return &FloatKernelsAvx512();
      case Isa::kAvx2:
        return &FloatKernelsAvx2();
      case Isa::kScalar:
        break;
    }
    return &FloatKernelsScalar();
  }();
  return *kSelected;
}

}  // namespace internal

namespace {

using internal::FloatKernels;
using internal::MiniFloatSpec;
using internal::NibbleOrder;

constexpr int kMxBlock = 32;
constexpr int kNvfp4Block = 16;
constexpr int kDoubleQuantBlock = 256;  // absmax values per second-level block

struct FormatInfo {
  FloatFormat format;
  const char* name;
  int code_bits;
  const MiniFloatSpec* spec;  // element type; nullptr for NF4
  int default_block;
};

constexpr FormatInfo kFormats[] = {
    {FloatFormat::kFp8E4m3, "fp8_e4m3", 8, &internal::kE4m3Spec, 128},
    {FloatFormat::kFp8E5m2, "fp8_e5m2", 8, &internal::kE5m2Spec, 128},
    {FloatFormat::kFp4E2m1, "fp4_e2m1", 4, &internal::kE2m1Spec, 32},
    {FloatFormat::kNf4, "nf4", 4, nullptr, 64},
    {FloatFormat::kOcpMxfp8, "ocp_mxfp8", 8, &internal::kE4m3Spec, kMxBlock},
    {FloatFormat::kOcpMxfp4, "ocp_mxfp4", 4, &internal::kE2m1Spec, kMxBlock},
    {FloatFormat::kNvfp4, "modelopt_nvfp4", 4, &internal::kE2m1Spec,
     kNvfp4Block},
};

const FormatInfo& Info(FloatFormat format) {
  for (const FormatInfo& info : kFormats) {
    if (info.format == format) return info;
  }
  return kFormats[0];  // unreachable for a valid enum value
}

bool IsMx(FloatFormat f) {
  return f == FloatFormat::kOcpMxfp8 || f == FloatFormat::kOcpMxfp4;
}
bool HasFreeGranularity(FloatFormat f) {
  return f == FloatFormat::kFp8E4m3 || f == FloatFormat::kFp8E5m2 ||
         f == FloatFormat::kFp4E2m1;
}

absl::string_view GranularityName(FloatGranularity g) {
  switch (g) {
    case FloatGranularity::kDefault:
      return "default";
    case FloatGranularity::kTensor:
      return "tensor";
    case FloatGranularity::kChannel:
      return "channel";
    case FloatGranularity::kBlock:
      return "block";
  }
  return "unknown";
}

// Defaults and the checks that need no tensor shape.
absl::StatusOr<FloatFormatOptions> ResolveDefaults(FloatFormatOptions o) {
  const FormatInfo& info = Info(o.format);
  const std::string name(info.name);
  if (o.block_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": block size ", o.block_size, " is negative"));
  }
  if (o.granularity == FloatGranularity::kDefault) {
    o.granularity = (o.format == FloatFormat::kFp8E4m3 ||
                     o.format == FloatFormat::kFp8E5m2)
                        ? FloatGranularity::kTensor
                        : FloatGranularity::kBlock;
  }
  if (!HasFreeGranularity(o.format) &&
      o.granularity != FloatGranularity::kBlock) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has block scales only, not per ",
                     GranularityName(o.granularity), " scales"));
  }
  if (o.block_size == 0) o.block_size = info.default_block;
  if ((IsMx(o.format) || o.format == FloatFormat::kNvfp4) &&
      o.block_size != info.default_block) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " blocks are ", info.default_block,
                     " elements, not ", o.block_size));
  }
  if (info.code_bits == 4 && o.granularity == FloatGranularity::kBlock &&
      o.block_size % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " packs two codes per byte: block size ", o.block_size,
        " must be even"));
  }
  if (o.double_quant && o.format != FloatFormat::kNf4) {
    return absl::InvalidArgumentError(
        absl::StrCat("double quantization is for nf4 only, not ", name));
  }
  return o;
}

// Elements per scale group of a resolved tensor (n > 0).
int64_t GroupSize(const FloatFormatOptions& o, int64_t rows,
                  int64_t row_length) {
  switch (o.granularity) {
    case FloatGranularity::kTensor:
      return rows * row_length;
    case FloatGranularity::kChannel:
      return row_length;
    default:
      return o.block_size;
  }
}

float FloorLog2Exponent(float amax) {
  // floor(log2(amax)) for a finite amax > 0, exact, from the bits.
  const uint32_t bits = std::bit_cast<uint32_t>(amax);
  const int exp_field = static_cast<int>(bits >> 23);
  if (exp_field > 0) return static_cast<float>(exp_field - 127);
  const uint32_t mantissa = bits & 0x7FFFFFu;
  return static_cast<float>(31 - std::countl_zero(mantissa) - 149);
}

// OCP MX shared exponent byte for a block maximum.
uint8_t MxScaleByte(float amax, int emax_elem) {
  if (amax == 0.0f) return 0;  // floor(log2(0)) = -inf, clamped to -127
  const int e = static_cast<int>(FloorLog2Exponent(amax)) - emax_elem;
  return static_cast<uint8_t>(std::clamp(e, -127, 127) + 127);
}

int64_t ScalarFirstNonFinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return i;
  }
  return -1;
}

std::array<float, 15> Nf4Midpoints() {
  std::array<float, 15> mid{};
  for (int k = 0; k < 15; ++k) mid[k] = (kNf4Values[k] + kNf4Values[k + 1]) / 2.0f;
  return mid;
}

// bitsandbytes' quantize_blockwise of the centred absmax values.
void DoubleQuantize(const std::vector<float>& absmax, FloatQuantized& q) {
  const int64_t n = static_cast<int64_t>(absmax.size());
  double sum = 0.0;
  for (float a : absmax) sum += static_cast<double>(a);
  const float offset = static_cast<float>(sum / static_cast<double>(n));
  const absl::Span<const float> map = NfDynamicMap();
  std::array<float, 255> mid{};
  for (int k = 0; k < 255; ++k) mid[k] = (map[k] + map[k + 1]) / 2.0f;
  const int64_t blocks = (n + kDoubleQuantBlock - 1) / kDoubleQuantBlock;
  q.scale_offset = offset;
  q.block_scales.resize(static_cast<size_t>(n));
  q.second_scales.resize(static_cast<size_t>(blocks));
  std::vector<float> centred(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) centred[i] = absmax[i] - offset;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kDoubleQuantBlock;
    const int64_t end = std::min(n, begin + kDoubleQuantBlock);
    float a2 = 0.0f;
    for (int64_t i = begin; i < end; ++i) a2 = std::max(a2, std::fabs(centred[i]));
    q.second_scales[b] = a2;
    const float inv = 1.0f / std::max(a2, 1e-38f);
    for (int64_t i = begin; i < end; ++i) {
      const float s = std::min(std::max(centred[i] * inv, -1.0f), 1.0f);
      // The number of midpoints below s (they are sorted).
      q.block_scales[i] = static_cast<uint8_t>(
          std::lower_bound(mid.begin(), mid.end(), s) - mid.begin());
    }
  }
}

absl::StatusOr<FloatQuantized> QuantizeWith(const FloatKernels& kernels,
                                            bool reference, const float* src,
                                            int64_t rows, int64_t row_length,
                                            const FloatFormatOptions& options) {
  FloatQuantized q;
  QUANTD_ASSIGN_OR_RETURN(q.options,
                          ResolveFloatOptions(options, rows, row_length));
  q.rows = rows;
  q.row_length = row_length;
  const int64_t n = rows * row_length;
  const int64_t bad = reference ? ScalarFirstNonFinite(src, n)
                                : internal::FirstNonFinite(src, n);
  if (bad >= 0) return internal::NonFiniteError(bad, src[bad]);
  const FormatInfo& info = Info(q.options.format);
  q.codes.assign(static_cast<size_t>(info.code_bits == 8 ? n : n / 2), 0);
  if (n == 0) return q;
  const int64_t group_size = GroupSize(q.options, rows, row_length);
  const int64_t groups = n / group_size;
  std::vector<float> amax(static_cast<size_t>(groups));
  kernels.group_amax(src, groups, group_size, amax.data());
  std::vector<float> divisors(static_cast<size_t>(groups));

  switch (q.options.format) {
    case FloatFormat::kFp8E4m3:
    case FloatFormat::kFp8E5m2:
    case FloatFormat::kFp4E2m1: {
      q.scales.resize(static_cast<size_t>(groups));
      for (int64_t g = 0; g < groups; ++g) {
        const float scale = amax[g] / info.spec->max_value;
        q.scales[g] = scale == 0.0f ? 1.0f : scale;
      }
      kernels.encode_minifloat(src, n, group_size, q.scales.data(),
                               *info.spec, info.code_bits, q.codes.data());
      break;
    }
    case FloatFormat::kNf4: {
      const std::array<float, 15> mid = Nf4Midpoints();
      for (int64_t g = 0; g < groups; ++g) {
        divisors[g] = 1.0f / std::max(amax[g], 1e-38f);
      }
      kernels.encode_nf4(src, n, group_size, divisors.data(), mid.data(),
                         q.codes.data());
      if (q.options.double_quant) {
        DoubleQuantize(amax, q);
      } else {
        q.scales = std::move(amax);
      }
      break;
    }
    case FloatFormat::kOcpMxfp8:
    case FloatFormat::kOcpMxfp4: {
      // emax of the element type: E4M3 448 = 1.75 * 2^8, E2M1 6 = 1.5 * 2^2.
      const int emax_elem =
          static_cast<int>(FloorLog2Exponent(info.spec->max_value));
      q.block_scales.resize(static_cast<size_t>(groups));
      for (int64_t g = 0; g < groups; ++g) {
        q.block_scales[g] = MxScaleByte(amax[g], emax_elem);
        divisors[g] = E8m0ToFloat(q.block_scales[g]);
      }
      kernels.encode_minifloat(src, n, group_size, divisors.data(), *info.spec,
                               info.code_bits, q.codes.data());
      break;
    }
    case FloatFormat::kNvfp4: {
      float tensor_amax = 0.0f;
      kernels.group_amax(src, 1, n, &tensor_amax);
      float g_scale = tensor_amax / (6.0f * 448.0f);
      if (g_scale == 0.0f) g_scale = 1.0f;
      q.tensor_scale = g_scale;
      q.block_scales.resize(static_cast<size_t>(groups));
      const float six_g = 6.0f * g_scale;
      for (int64_t g = 0; g < groups; ++g) {
        float s = amax[g] / six_g;
        if (s == 0.0f) s = 1.0f;
        q.block_scales[g] = internal::EncodeMiniFloat(s, internal::kE4m3Spec);
        divisors[g] = E4m3ToFloat(q.block_scales[g]) * g_scale;
      }
      kernels.encode_minifloat(src, n, group_size, divisors.data(), *info.spec,
                               4, q.codes.data());
      break;
    }
  }
  return q;
}

template <size_t N>
std::array<float, N> DecodeTable(const MiniFloatSpec& spec) {
  std::array<float, N> table{};
  for (size_t c = 0; c < N; ++c) {
    table[c] = internal::DecodeMiniFloat(static_cast<uint32_t>(c), spec);
  }
  return table;
}

const float* ElementTable(const MiniFloatSpec* spec) {
  static const std::array<float, 256> kE4m3 =
      DecodeTable<256>(internal::kE4m3Spec);
  static const std::array<float, 256> kE5m2 =
      DecodeTable<256>(internal::kE5m2Spec);
  static const std::array<float, 16> kE2m1 =
      DecodeTable<16>(internal::kE2m1Spec);
  if (spec == &internal::kE4m3Spec) return kE4m3.data();
  if (spec == &internal::kE5m2Spec) return kE5m2.data();
  return kE2m1.data();
}

absl::Status SizeError(absl::string_view what, size_t have, size_t want) {
  return absl::InvalidArgumentError(absl::StrCat(
      "quantized tensor has ", have, " ", what, ", expected ", want));
}

absl::Status DequantizeWith(const FloatKernels& kernels, const FloatQuantized& q,
                            float* dst) {
  QUANTD_ASSIGN_OR_RETURN(const FloatFormatOptions o,
                          ResolveFloatOptions(q.options, q.rows, q.row_length));
  const FormatInfo& info = Info(o.format);
  const int64_t n = q.rows * q.row_length;
  const size_t code_bytes = static_cast<size_t>(info.code_bits == 8 ? n : n / 2);
  if (q.codes.size() != code_bytes) {
    return SizeError("code bytes", q.codes.size(), code_bytes);
  }
  if (n == 0) return absl::OkStatus();
  const int64_t group_size = GroupSize(o, q.rows, q.row_length);
  const auto groups = static_cast<size_t>(n / group_size);
  std::vector<float> scales(groups);
  const float* table = nullptr;
  NibbleOrder order = NibbleOrder::kLowFirst;
  switch (o.format) {
    case FloatFormat::kFp8E4m3:
    case FloatFormat::kFp8E5m2:
    case FloatFormat::kFp4E2m1:
      if (q.scales.size() != groups) return SizeError("scales", q.scales.size(), groups);
      scales = q.scales;
      table = ElementTable(info.spec);
      break;
    case FloatFormat::kNf4:
      table = kNf4Values;
      order = NibbleOrder::kHighFirst;
      if (!o.double_quant) {
        if (q.scales.size() != groups) return SizeError("scales", q.scales.size(), groups);
        scales = q.scales;
      } else {
        const size_t blocks2 = (groups + kDoubleQuantBlock - 1) / kDoubleQuantBlock;
        if (q.block_scales.size() != groups) {
          return SizeError("block scale codes", q.block_scales.size(), groups);
        }
        if (q.second_scales.size() != blocks2) {
          return SizeError("second-level scales", q.second_scales.size(), blocks2);
        }
        const absl::Span<const float> map = NfDynamicMap();
        for (size_t g = 0; g < groups; ++g) {
          scales[g] = map[q.block_scales[g]] * q.second_scales[g / kDoubleQuantBlock] +
                      q.scale_offset;
        }
      }
      break;
    case FloatFormat::kOcpMxfp8:
    case FloatFormat::kOcpMxfp4:
      if (q.block_scales.size() != groups) {
        return SizeError("block scales", q.block_scales.size(), groups);
      }
      for (size_t g = 0; g < groups; ++g) scales[g] = E8m0ToFloat(q.block_scales[g]);
      table = ElementTable(info.spec);
      break;
    case FloatFormat::kNvfp4:
      if (q.block_scales.size() != groups) {
        return SizeError("block scales", q.block_scales.size(), groups);
      }
      for (size_t g = 0; g < groups; ++g) {
        scales[g] = E4m3ToFloat(q.block_scales[g]) * q.tensor_scale;
      }
      table = ElementTable(info.spec);
      break;
  }
  kernels.decode(q.codes.data(), n, group_size, scales.data(), table,
                 info.code_bits, order, dst);
  return absl::OkStatus();
}

}  // namespace

absl::string_view FloatFormatName(FloatFormat format) {
  return Info(format).name;
}

absl::StatusOr<FloatFormat> ParseFloatFormat(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (const FormatInfo& info : kFormats) {
    if (lower == info.name) return info.format;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown float format \"", name,
      "\" (expected fp8_e4m3, fp8_e5m2, fp4_e2m1, nf4, ocp_mxfp8, ocp_mxfp4 "
      "or modelopt_nvfp4)"));
}

int FloatFormatCodeBits(FloatFormat format) { return Info(format).code_bits; }

absl::StatusOr<FloatFormatOptions> ParseFloatFormatOptions(
    absl::string_view format, absl::string_view granularity, int block_size,
    bool double_quant) {
  FloatFormatOptions o;
  QUANTD_ASSIGN_OR_RETURN(o.format, ParseFloatFormat(format));
  const std::string g = absl::AsciiStrToLower(granularity);
  if (g.empty() || g == "default") {
    o.granularity = FloatGranularity::kDefault;
  } else if (g == "tensor") {
    o.granularity = FloatGranularity::kTensor;
  } else if (g == "channel") {
    o.granularity = FloatGranularity::kChannel;
  } else if (g == "block") {
    o.granularity = FloatGranularity::kBlock;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown granularity \"", granularity,
        "\" (expected tensor, channel or block)"));
  }
  o.block_size = block_size;
  o.double_quant = double_quant;
  return ResolveDefaults(o);
}

absl::StatusOr<FloatFormatOptions> ResolveFloatOptions(
    const FloatFormatOptions& options, int64_t rows, int64_t row_length) {
  QUANTD_ASSIGN_OR_RETURN(FloatFormatOptions o, ResolveDefaults(options));
  const std::string name(FloatFormatName(o.format));
  if (rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("rows ", rows, " < 0"));
  }
  if (row_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("row length ", row_length, " < 1"));
  }
  if (rows > (int64_t{1} << 62) / row_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor of ", rows, " x ", row_length, " elements is too large"));
  }
  if (o.granularity == FloatGranularity::kBlock &&
      row_length % o.block_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": row length ", row_length,
                     " is not a multiple of the block size ", o.block_size));
  }
  if (FloatFormatCodeBits(o.format) == 4 && row_length % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " packs two codes per byte: row length ",
                     row_length, " must be even"));
  }
  return o;
}

namespace internal {

absl::StatusOr<FloatQuantized> FloatQuantizeWith(
    const FloatKernels& kernels, const float* src, int64_t rows,
    int64_t row_length, const FloatFormatOptions& options) {
  return QuantizeWith(kernels, /*reference=*/&kernels == &FloatKernelsScalar(),
                      src, rows, row_length, options);
}

absl::Status FloatDequantizeWith(const FloatKernels& kernels,
                                 const FloatQuantized& q, float* dst) {
  return DequantizeWith(kernels, q, dst);
}

}  // namespace internal

absl::StatusOr<FloatQuantized> FloatQuantize(const float* src, int64_t rows,
                                             int64_t row_length,
                                             const FloatFormatOptions& options) {
  return QuantizeWith(internal::SelectedFloatKernels(), /*reference=*/false,
                      src, rows, row_length, options);
}

absl::StatusOr<FloatQuantized> FloatQuantizeReference(
    const float* src, int64_t rows, int64_t row_length,
    const FloatFormatOptions& options) {
  return QuantizeWith(internal::FloatKernelsScalar(), /*reference=*/true, src,
                      rows, row_length, options);
}

absl::Status FloatDequantize(const FloatQuantized& q, float* dst) {
  return DequantizeWith(internal::SelectedFloatKernels(), q, dst);
}

absl::Status FloatDequantizeReference(const FloatQuantized& q, float* dst) {
  return DequantizeWith(internal::FloatKernelsScalar(), q, dst);
}

double FloatBitsPerWeight(const FloatQuantized& q) {
  const int64_t n = q.rows * q.row_length;
  if (n <= 0) return 0.0;
  double bits = 8.0 * static_cast<double>(q.codes.size()) +
                32.0 * static_cast<double>(q.scales.size()) +
                8.0 * static_cast<double>(q.block_scales.size()) +
                32.0 * static_cast<double>(q.second_scales.size());
  if (q.options.format == FloatFormat::kNvfp4) bits += 32.0;  // tensor scale
  if (q.options.double_quant) bits += 32.0;                   // offset
  return bits / static_cast<double>(n);
}

uint8_t FloatToE4m3(float v) {
  return internal::EncodeMiniFloat(v, internal::kE4m3Spec);
}
uint8_t FloatToE5m2(float v) {
  return internal::EncodeMiniFloat(v, internal::kE5m2Spec);
}
uint8_t FloatToE2m1(float v) {
  return internal::EncodeMiniFloat(v, internal::kE2m1Spec);
}
float E4m3ToFloat(uint8_t code) {
  return internal::DecodeMiniFloat(code, internal::kE4m3Spec);
}
float E5m2ToFloat(uint8_t code) {
  return internal::DecodeMiniFloat(code, internal::kE5m2Spec);
}
float E2m1ToFloat(uint8_t code) {
  return internal::DecodeMiniFloat(code & 0x0Fu, internal::kE2m1Spec);
}

float E8m0ToFloat(uint8_t code) {
  if (code == 255) return std::numeric_limits<float>::quiet_NaN();
  // 2^(code - 127): a normal f32 for code >= 1, 2^-127 (subnormal) for 0.
  if (code == 0) return std::bit_cast<float>(uint32_t{0x00400000});
  return std::bit_cast<float>(static_cast<uint32_t>(code) << 23);
}

absl::Span<const float> NfDynamicMap() {
  static const std::array<float, 256> kMap = [] {
    std::vector<float> data;
    // f32(10^(i - 6)), i = 0..6, as Python's 10 ** (i - 6) cast to f32.
    constexpr double kPowers[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    for (int i = 0; i < 7; ++i) {
      const int steps = (1 << i) + 1;
      // torch.linspace(0.1, 1, steps, dtype=float32) on the CPU.
      const float start = 0.1f;
      const float end = 1.0f;
      const float step = (end - start) / static_cast<float>(steps - 1);
      const int halfway = steps / 2;
      std::vector<float> boundaries(static_cast<size_t>(steps));
      for (int k = 0; k < steps; ++k) {
        boundaries[k] = k < halfway
                            ? start + step * static_cast<float>(k)
                            : end - step * static_cast<float>(steps - k - 1);
      }
      const auto scale = static_cast<float>(kPowers[i]);
      for (int k = 0; k + 1 < steps; ++k) {
        const float mean = (boundaries[k] + boundaries[k + 1]) / 2.0f;
        data.push_back(scale * mean);
        data.push_back(-scale * mean);
      }
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    std::sort(data.begin(), data.end());
    std::array<float, 256> map{};
    std::copy(data.begin(), data.end(), map.begin());
    return map;
  }();
  return kMap;
}

int64_t FloatWorkingSetBytes(const Layout& layout) {
  const int64_t n = layout.num_elements;
  return layout.packed_bytes + 4 * layout.num_groups + n +
         9 * layout.num_block_scales + 4 * layout.num_second_scales;
}

}  // namespace quantd

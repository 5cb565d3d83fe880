// Conversions between wire messages (quantd.v1) and kernel values. Every
// function that reads a wire value validates it: unknown enum values and
// missing fields are INVALID_ARGUMENT. A Scheme naming a ggml block format
// (any case) becomes the canonical Scheme of that format; its symmetry,
// granularity and group size fields are ignored. A float, codebook or HQQ
// format (any case, the name alone) takes the format's default granularity
// when granularity is unset, and its default block for PER_GROUP with
// group_size 0 (proto comments); symmetric is ignored.
#ifndef QUANTD_PROTO_WIRE_CONVERT_H_
#define QUANTD_PROTO_WIRE_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"
#include "kernels/metrics.h"
#include "kernels/output_error.h"
#include "kernels/parts.h"
#include "kernels/range_estimators.h"
#include "kernels/scheme.h"
#include "quantd/v1/quantizer.pb.h"

namespace quantd {

// The scheme a v1::Scheme gives: its `text` (ParseScheme's grammar, and
// then no other field) or its fields. InvalidArgument naming the field or
// the text, for both forms alike.
absl::StatusOr<Scheme> SchemeFromProto(const v1::Scheme& proto);
void SchemeToProto(const Scheme& scheme, v1::Scheme* proto);
absl::StatusOr<DType> DTypeFromProto(int dtype);
v1::DType DTypeToProto(DType dtype);
// Every field the Layout determines, scheme_text (the canonical
// SchemeToString) included; the per-tensor values (tensor_scale,
// scale_offset) are the caller's to set from the quantized result.
void LayoutToProto(const Layout& layout, v1::Layout* proto);
v1::LayoutKind LayoutKindToProto(LayoutKind kind);
// The Layout a received v1::Layout describes: MakeLayout of its scheme and
// shape, which must give back every field LayoutToProto sets (the
// per-tensor values aside). InvalidArgument naming the first field that
// differs, or what SchemeFromProto / MakeLayout refuse.
absl::StatusOr<Layout> LayoutFromProto(const v1::Layout& proto);
// OK when `proto` is exactly LayoutToProto(layout) apart from the
// per-tensor values; else InvalidArgument naming the fields that differ.
absl::Status CheckLayoutProto(const Layout& layout, const v1::Layout& proto);
// The ShardChunk.Part of a part-table row (PartSpec::wire), and back:
// nullptr for PART_UNSPECIFIED or a value the table lacks.
v1::ShardChunk::Part PartToProto(Part part);
// UNSPECIFIED means packed. InvalidArgument for an unknown value.
absl::StatusOr<OutputKind> OutputKindFromProto(int output);
const PartSpec* PartFromProto(int part);
// Appends one FormatInfo per format: the int formats of FormatTable(), then
// the ggml block formats of GgmlFormatTable(), in table order, then the
// float formats, kmeans1..8, pot2..8 and hqq1..8 (bits_per_weight at their
// default granularity for a 4096 x 4096 tensor).
void FormatTablesToProto(v1::ServerInfo* info);
void MetricsToProto(const ErrorMetrics& metrics, v1::Metrics* proto);
// UNSPECIFIED method means min-max; percentile 0 means 99.99.
// INVALID_ARGUMENT for an unknown method, a percentile outside [50, 100] or
// a percentile with another method.
absl::StatusOr<RangeOptions> RangeOptionsFromProto(
    const v1::ActivationRangeOptions& proto);
v1::RangeMethod RangeMethodToProto(RangeMethod method);
void OutputErrorToProto(const OutputError& error, const std::string& set,
                        int64_t tokens, v1::OutputMetrics* proto);
// `channels`: the per-channel ranges (empty unless options.per_channel).
void ActivationRangeToProto(const ActivationRange& range,
                            absl::Span<const ActivationRange> channels,
                            const RangeOptions& options, const std::string& set,
                            v1::ActivationRange* proto);

}  // namespace quantd

#endif  // QUANTD_PROTO_WIRE_CONVERT_H_

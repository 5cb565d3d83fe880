#include "server/shard_writer.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "base/crc32c.h"
#include "proto/wire_convert.h"

namespace quantd {

ShardWriter::ShardWriter(TensorOutput output, double queue_seconds,
                         int64_t max_chunk_bytes)
    : output_(std::move(output)),
      queue_seconds_(queue_seconds),
      max_chunk_bytes_(max_chunk_bytes) {
  SkipEmptyParts();
}

void ShardWriter::SkipEmptyParts() {
  while (part_ < kNumParts &&
         offset_ >= static_cast<int64_t>(
                        output_.parts[PartTable()[part_].part].size())) {
    ++part_;
    offset_ = 0;
  }
}

bool ShardWriter::Next(v1::QuantizeResponse* response) {
  response->Clear();
  if (part_ > kNumParts) return false;
  if (part_ == kNumParts) {
    v1::TensorResult* r = response->mutable_result();
    r->set_tensor(output_.name);
    LayoutToProto(output_.layout, r->mutable_layout());
    r->mutable_layout()->set_tensor_scale(output_.tensor_scale);
    r->mutable_layout()->set_scale_offset(output_.scale_offset);
    MetricsToProto(output_.metrics, r->mutable_metrics());
    r->set_bytes_in(static_cast<uint64_t>(output_.bytes_in));
    r->set_bytes_out(static_cast<uint64_t>(output_.bytes_out));
    r->set_queue_seconds(queue_seconds_);
    r->set_compute_seconds(output_.compute_seconds);
    for (const PartSpec& spec : PartTable()) {
      const PartBuffer& part = output_.parts[spec.part];
      if (part.empty()) continue;
      v1::PartInfo* info = r->add_parts();
      info->set_part(PartToProto(spec.part));
      info->set_bytes(part.size());
      info->set_crc32c(output_.crc32c[spec.part]);
    }
    if (const auto& c = output_.calibration; c.has_value()) {
      if (c->output_error) {
        OutputErrorToProto(*c->output_error, c->calibration, c->tokens,
                           r->mutable_output_metrics());
      }
      if (c->activation_range) {
        ActivationRangeToProto(*c->activation_range, c->channel_ranges,
                               c->range_options, c->calibration,
                               r->mutable_activation_range());
      }
      if (c->w8a8) {
        v1::W8A8Check* w = r->mutable_w8a8();
        w->set_calibration(c->calibration);
        w->set_rows(static_cast<uint64_t>(c->w8a8->rows));
        w->set_relative_error(c->w8a8->report.w8a8.relative_error);
        w->set_sqnr_db(c->w8a8->report.w8a8.sqnr_db);
        w->set_max_abs_error(c->w8a8->report.w8a8.max_abs_error);
        w->set_weight_only_relative_error(
            c->w8a8->report.weight_only.relative_error);
        w->set_weight_only_sqnr_db(c->w8a8->report.weight_only.sqnr_db);
        w->set_clipped_fraction(c->w8a8->report.clipped_fraction);
        w->set_activation_scale(c->w8a8->activation.scale);
        w->set_activation_zero_point(c->w8a8->activation.zero_point);
        w->set_gemm(c->w8a8->report.gemm);
      }
      r->set_importance_from_calibration(c->importance_from_calibration);
    }
    ++part_;
    return true;
  }
  const PartSpec& spec = PartTable()[part_];
  const absl::Span<const uint8_t> bytes = output_.parts[spec.part].bytes();
  const auto n = static_cast<size_t>(std::min<int64_t>(
      max_chunk_bytes_, static_cast<int64_t>(bytes.size()) - offset_));
  const uint8_t* data = bytes.data() + offset_;
  v1::ShardChunk* chunk = response->mutable_shard();
  chunk->set_tensor(output_.name);
  chunk->set_part(PartToProto(spec.part));
  chunk->set_offset(static_cast<uint64_t>(offset_));
  chunk->set_data(data, n);
  chunk->set_crc32c(Crc32c(data, n));
  offset_ += static_cast<int64_t>(n);
  SkipEmptyParts();
  return true;
}

}  // namespace quantd

#include "server/shard_writer.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "kernels/crc32c.h"
#include "proto/wire_convert.h"

namespace quantd {

ShardWriter::ShardWriter(TensorOutput output, double queue_seconds,
                         int64_t max_chunk_bytes)
    : output_(std::move(output)),
      queue_seconds_(queue_seconds),
      max_chunk_bytes_(max_chunk_bytes) {
  SkipEmptyParts();
}

const char* ShardWriter::PartData(Part part, int64_t* size) const {
  const QuantizedTensor& q = output_.quantized;
  *size = 0;
  switch (part) {
    case kCodes:
      if (!output_.send_packed) return nullptr;
      *size = static_cast<int64_t>(q.codes.size());
      return reinterpret_cast<const char*>(q.codes.data());
    case kScales:
      if (!output_.send_packed) return nullptr;
      *size = static_cast<int64_t>(q.scales.size() * sizeof(float));
      return reinterpret_cast<const char*>(q.scales.data());
    case kZeroPoints:
      if (!output_.send_packed) return nullptr;
      *size = static_cast<int64_t>(q.zero_points.size());
      return reinterpret_cast<const char*>(q.zero_points.data());
    case kBlockScales:
      if (!output_.send_packed) return nullptr;
      *size = static_cast<int64_t>(output_.block_scales.size());
      return reinterpret_cast<const char*>(output_.block_scales.data());
    case kSecondScales:
      if (!output_.send_packed) return nullptr;
      *size = static_cast<int64_t>(output_.second_scales.size() * sizeof(float));
      return reinterpret_cast<const char*>(output_.second_scales.data());
    case kCodebooks:
      if (!output_.send_packed) return nullptr;
      *size = static_cast<int64_t>(output_.codebooks.size() * sizeof(float));
      return reinterpret_cast<const char*>(output_.codebooks.data());
    case kZeroPointsF32:
      if (!output_.send_packed) return nullptr;
      *size =
          static_cast<int64_t>(output_.zero_points_f32.size() * sizeof(float));
      return reinterpret_cast<const char*>(output_.zero_points_f32.data());
    case kGroupIndex:
      if (!output_.send_packed) return nullptr;
      *size = static_cast<int64_t>(q.group_index.size() * sizeof(int32_t));
      return reinterpret_cast<const char*>(q.group_index.data());
    case kFakeQuant:
      *size = static_cast<int64_t>(output_.fake_quant.size() * sizeof(float));
      return reinterpret_cast<const char*>(output_.fake_quant.data());
    case kChannelScales:
      *size = static_cast<int64_t>(output_.channel_scales.size() * sizeof(float));
      return reinterpret_cast<const char*>(output_.channel_scales.data());
    case kResult:
      return nullptr;
  }
  return nullptr;
}

void ShardWriter::SkipEmptyParts() {
  while (part_ < kResult) {
    int64_t size;
    PartData(static_cast<Part>(part_), &size);
    if (offset_ < size) return;
    ++part_;
    offset_ = 0;
  }
}

bool ShardWriter::Next(v1::QuantizeResponse* response) {
  response->Clear();
  if (part_ > kResult) return false;
  if (part_ == kResult) {
    v1::TensorResult* r = response->mutable_result();
    r->set_tensor(output_.name);
    LayoutToProto(output_.quantized.layout, r->mutable_layout());
    r->mutable_layout()->set_tensor_scale(output_.tensor_scale);
    r->mutable_layout()->set_scale_offset(output_.scale_offset);
    MetricsToProto(output_.metrics, r->mutable_metrics());
    r->set_bytes_in(static_cast<uint64_t>(output_.bytes_in));
    r->set_bytes_out(static_cast<uint64_t>(output_.bytes_out));
    r->set_queue_seconds(queue_seconds_);
    r->set_compute_seconds(output_.compute_seconds);
    r->set_codes_crc32c(output_.codes_crc32c);
    r->set_scales_crc32c(output_.scales_crc32c);
    r->set_zero_points_crc32c(output_.zero_points_crc32c);
    r->set_fake_quant_crc32c(output_.fake_quant_crc32c);
    r->set_channel_scales_crc32c(output_.channel_scales_crc32c);
    r->set_block_scales_crc32c(output_.block_scales_crc32c);
    r->set_second_scales_crc32c(output_.second_scales_crc32c);
    r->set_codebooks_crc32c(output_.codebooks_crc32c);
    r->set_zero_points_f32_crc32c(output_.zero_points_f32_crc32c);
    r->set_group_index_crc32c(output_.group_index_crc32c);
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
  int64_t size;
  const char* data = PartData(static_cast<Part>(part_), &size);
  const int64_t n = std::min(max_chunk_bytes_, size - offset_);
  v1::ShardChunk* chunk = response->mutable_shard();
  chunk->set_tensor(output_.name);
  static constexpr v1::ShardChunk::Part kWireParts[] = {
      v1::ShardChunk::PART_CODES, v1::ShardChunk::PART_SCALES,
      v1::ShardChunk::PART_ZERO_POINTS, v1::ShardChunk::PART_BLOCK_SCALES,
      v1::ShardChunk::PART_SECOND_SCALES, v1::ShardChunk::PART_CODEBOOKS,
      v1::ShardChunk::PART_ZERO_POINTS_F32, v1::ShardChunk::PART_GROUP_INDEX,
      v1::ShardChunk::PART_FAKE_QUANT, v1::ShardChunk::PART_CHANNEL_SCALES};
  static_assert(std::size(kWireParts) == kResult);
  chunk->set_part(kWireParts[part_]);
  chunk->set_offset(static_cast<uint64_t>(offset_));
  chunk->set_data(data + offset_, static_cast<size_t>(n));
  chunk->set_crc32c(Crc32c(data + offset_, static_cast<size_t>(n)));
  offset_ += n;
  SkipEmptyParts();
  return true;
}

}  // namespace quantd

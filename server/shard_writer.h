// Turns one finished tensor into its response messages, one at a time, so a
// reactor builds each message just before writing it: ShardChunks for codes,
// scales, zero points, the float / codebook / HQQ parts (block scales,
// second scales, codebooks, f32 zero points), GPTQ's group index and
// fake-quant values, then
// channel scales (each part in order, at most
// max_chunk_bytes of data per message), then the TensorResult.
//
//   ShardWriter writer(std::move(output), queue_seconds, 1 << 20);
//   v1::QuantizeResponse response;
//   while (writer.Next(&response)) Write(response);
//
// Thread-compatible.
#ifndef QUANTD_SERVER_SHARD_WRITER_H_
#define QUANTD_SERVER_SHARD_WRITER_H_

#include <cstdint>

#include "quantd/v1/quantizer.pb.h"
#include "server/quantize_job.h"

namespace quantd {

class ShardWriter {
 public:
  ShardWriter(TensorOutput output, double queue_seconds, int64_t max_chunk_bytes);

  // Fills `response` with the next message; false when all were produced.
  bool Next(v1::QuantizeResponse* response);
  bool done() const { return part_ > kResult; }
  const TensorOutput& output() const { return output_; }

 private:
  enum Part {
    kCodes,
    kScales,
    kZeroPoints,
    kBlockScales,
    kSecondScales,
    kCodebooks,
    kZeroPointsF32,
    kGroupIndex,
    kFakeQuant,
    kChannelScales,
    kResult
  };
  // Bytes of `part` to send (empty when it is not sent).
  const char* PartData(Part part, int64_t* size) const;
  void SkipEmptyParts();

  TensorOutput output_;
  double queue_seconds_;
  int64_t max_chunk_bytes_;
  int part_ = kCodes;
  int64_t offset_ = 0;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SHARD_WRITER_H_

// Turns one finished tensor into its response messages, one at a time, so a
// reactor builds each message just before writing it: ShardChunks for each
// non-empty part of TensorOutput::parts in the part table's order
// (kernels/parts.h), at most max_chunk_bytes of data per message, then the
// TensorResult listing every part sent with its size and CRC-32C.
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
  bool done() const { return part_ > kNumParts; }
  const TensorOutput& output() const { return output_; }

 private:
  void SkipEmptyParts();

  TensorOutput output_;
  double queue_seconds_;
  int64_t max_chunk_bytes_;
  size_t part_ = 0;  // PartTable() row; kNumParts: the result; then done
  int64_t offset_ = 0;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SHARD_WRITER_H_

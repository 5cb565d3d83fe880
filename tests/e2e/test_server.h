// Test helpers for end-to-end tests: a real QuantdServer on 127.0.0.1 with
// ephemeral ports, a channel to it, raw stream calls and a tiny HTTP GET.
#ifndef QUANTD_TESTS_E2E_TEST_SERVER_H_
#define QUANTD_TESTS_E2E_TEST_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "quantd/v1/quantizer.grpc.pb.h"
#include "server/server.h"

namespace quantd::testing {

// Starts a server on loopback; fails the test if it cannot.
std::unique_ptr<QuantdServer> StartTestServer(ServiceOptions service = {});

std::shared_ptr<grpc::Channel> ChannelTo(const QuantdServer& server);

struct StreamResult {
  grpc::Status status;
  std::vector<v1::QuantizeResponse> responses;
};

// Writes every request, half-closes, reads every response.
StreamResult RunRawStream(v1::Quantizer::Stub& stub,
                          const std::vector<v1::QuantizeRequest>& requests,
                          int deadline_seconds = 60);

// Requests for one tensor: header, chunks of `chunk_bytes`, end.
void AppendTensor(std::vector<v1::QuantizeRequest>& requests,
                  const std::string& name, const std::vector<int64_t>& shape,
                  const void* data, size_t bytes,
                  v1::DType dtype = v1::DTYPE_F32, size_t chunk_bytes = 1 << 20,
                  const v1::Scheme* scheme = nullptr);
v1::QuantizeRequest StartRequest(const std::string& format, bool symmetric,
                                 v1::Granularity granularity,
                                 uint32_t group_size = 0,
                                 v1::OutputKind output = v1::OUTPUT_KIND_PACKED);

// LLM-like weights: Gaussian with a few outlier channels, seeded.
std::vector<float> RandomWeights(int64_t n, uint32_t seed);

// Correlated layer inputs, tokens x features: x = z M + 0.3 noise with
// `latent` Gaussian factors (M drawn first, then per token z and the noise),
// every `outlier_every`-th feature (from 0) scaled by `outlier_scale`.
std::vector<float> CorrelatedActivations(int64_t tokens, int64_t features,
                                         int64_t latent, int64_t outlier_every,
                                         float outlier_scale, uint32_t seed);

// The bytes of a buffer, and f32 values back from little-endian bytes.
inline absl::Span<const uint8_t> AsBytes(const void* p, size_t bytes) {
  return {static_cast<const uint8_t*>(p), bytes};
}
std::vector<float> Floats(const std::vector<uint8_t>& bytes);
// The CRC-32C a TensorResult lists for `part` (its PartInfo), or 0 when the
// result lists no such part. Fails the test if the part is listed twice.
uint32_t PartCrc(const v1::TensorResult& result, v1::ShardChunk::Part part);

// GET http://127.0.0.1:port/path; the body, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_E2E_TEST_SERVER_H_

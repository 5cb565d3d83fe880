#include "tests/e2e/test_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace quantd::testing {

std::unique_ptr<QuantdServer> StartTestServer(ServiceOptions service) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "127.0.0.1:0";
  options.service = service;
  absl::StatusOr<std::unique_ptr<QuantdServer>> server =
      QuantdServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::shared_ptr<grpc::Channel> ChannelTo(const QuantdServer& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server.grpc_port()),
                                   grpc::InsecureChannelCredentials(), args);
}

StreamResult RunRawStream(v1::Quantizer::Stub& stub,
                          const std::vector<v1::QuantizeRequest>& requests,
                          int deadline_seconds) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(deadline_seconds));
  auto stream = stub.Quantize(&ctx);
  StreamResult result;
  for (const v1::QuantizeRequest& r : requests) {
    if (!stream->Write(r)) break;  // the server already finished the stream
  }
  stream->WritesDone();
  v1::QuantizeResponse response;
  while (stream->Read(&response)) result.responses.push_back(response);
  result.status = stream->Finish();
  return result;
}

v1::QuantizeRequest StartRequest(const std::string& format, bool symmetric,
                                 v1::Granularity granularity,
                                 uint32_t group_size, v1::OutputKind output) {
  v1::QuantizeRequest r;
  v1::Scheme* s = r.mutable_start()->mutable_scheme();
  s->set_format(format);
  s->set_symmetric(symmetric);
  s->set_granularity(granularity);
  s->set_group_size(group_size);
  r.mutable_start()->mutable_options()->set_output(output);
  r.mutable_start()->set_client("e2e-test");
  return r;
}

void AppendTensor(std::vector<v1::QuantizeRequest>& requests,
                  const std::string& name, const std::vector<int64_t>& shape,
                  const void* data, size_t bytes, v1::DType dtype,
                  size_t chunk_bytes, const v1::Scheme* scheme) {
  v1::QuantizeRequest h;
  h.mutable_header()->set_name(name);
  h.mutable_header()->set_dtype(dtype);
  for (int64_t d : shape) h.mutable_header()->add_shape(static_cast<uint64_t>(d));
  if (scheme != nullptr) *h.mutable_header()->mutable_scheme() = *scheme;
  requests.push_back(std::move(h));
  const char* p = static_cast<const char*>(data);
  for (size_t off = 0; off < bytes; off += chunk_bytes) {
    v1::QuantizeRequest c;
    c.mutable_chunk()->set_offset(off);
    c.mutable_chunk()->set_data(p + off, std::min(chunk_bytes, bytes - off));
    requests.push_back(std::move(c));
  }
  v1::QuantizeRequest e;
  e.mutable_end();
  requests.push_back(std::move(e));
}

std::vector<float> RandomWeights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) x = normal(rng);
  for (size_t i = 0; i < w.size(); i += 97) w[i] *= 40.0f;  // outliers
  return w;
}

std::vector<float> CorrelatedActivations(int64_t tokens, int64_t features,
                                         int64_t latent, int64_t outlier_every,
                                         float outlier_scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> m(static_cast<size_t>(latent * features));
  for (float& v : m) v = dist(rng);
  std::vector<float> x(static_cast<size_t>(tokens * features));
  std::vector<float> z(static_cast<size_t>(latent));
  for (int64_t t = 0; t < tokens; ++t) {
    for (float& v : z) v = dist(rng);
    for (int64_t f = 0; f < features; ++f) {
      float s = 0.3f * dist(rng);
      for (int64_t l = 0; l < latent; ++l) {
        s += z[static_cast<size_t>(l)] * m[static_cast<size_t>(l * features + f)];
      }
      x[static_cast<size_t>(t * features + f)] =
          s * (f % outlier_every == 0 ? outlier_scale : 1.0f);
    }
  }
  return x;
}

std::vector<float> Floats(const std::vector<uint8_t>& bytes) {
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError("connect");
  }
  const std::string req = absl::StrCat("GET ", path,
                                       " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return absl::UnavailableError("write");
  }
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) {
    return absl::InternalError("bad HTTP response");
  }
  if (response.find(" 200 ") == std::string::npos) {
    return absl::InternalError(response.substr(0, response.find("\r\n")));
  }
  return response.substr(body + 4);
}

uint32_t PartCrc(const v1::TensorResult& result, v1::ShardChunk::Part part) {
  uint32_t crc = 0;
  int found = 0;
  for (const v1::PartInfo& info : result.parts()) {
    if (info.part() != part) continue;
    ++found;
    crc = info.crc32c();
  }
  EXPECT_LE(found, 1) << "part " << part << " listed " << found << " times";
  return crc;
}

}  // namespace quantd::testing

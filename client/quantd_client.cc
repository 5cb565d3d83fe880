#include "client/quantd_client.h"

#include <fstream>

#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "base/crc32c.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"
#include "base/status_macros.h"

namespace quantd {

absl::Status GrpcToAbslStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

QuantdClient::QuantdClient(std::shared_ptr<grpc::Channel> channel,
                           std::string auth_token)
    : channel_(std::move(channel)),
      stub_(v1::Quantizer::NewStub(channel_)),
      auth_token_(std::move(auth_token)) {}

void QuantdClient::Authorize(grpc::ClientContext& context) const {
  if (!auth_token_.empty()) {
    context.AddMetadata("authorization", "Bearer " + auth_token_);
  }
}

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f.good()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " cannot be read"));
  }
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const std::string& ca_file, const std::string& cert_file,
    const std::string& key_file) {
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs both its certificate and its key file");
  }
  if (ca_file.empty()) {
    if (!cert_file.empty()) {
      return absl::InvalidArgumentError(
          "a client certificate needs TLS: give the CA file too");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  QUANTD_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(ca_file, "CA file"));
  if (!cert_file.empty()) {
    QUANTD_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                            ReadPem(cert_file, "certificate file"));
    QUANTD_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(key_file, "key file"));
  }
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<v1::ServerInfo> QuantdClient::GetServerInfo(
    absl::Duration timeout, std::string* peer) {
  grpc::ClientContext context;
  Authorize(context);
  if (timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  v1::ServerInfo info;
  grpc::Status status =
      stub_->GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  if (!status.ok()) return GrpcToAbslStatus(status);
  if (peer != nullptr) *peer = context.peer();
  return info;
}

namespace {

// A tensor sent on the stream and not yet answered.
struct Pending {
  uint64_t num_elements = 0;
  absl::Time sent;
  TensorReply reply;  // parts accumulate here
  // Per part: the bytes the requested scheme and shape imply (0 if the
  // client cannot make the layout), to size the part's buffer once, and the
  // CRC-32C of the chunks received, folded so the whole part is never read
  // again.
  PerPart<uint64_t> expected_bytes;
  PerPart<uint32_t> crc32c;
};

// The part sizes the server's layout will have, from the scheme and shape
// (a hint: nothing depends on it but how the buffers are allocated).
void ExpectParts(const Scheme& scheme, const std::vector<int64_t>& shape,
                 OutputKind output, Pending& p) {
  absl::StatusOr<Layout> layout = MakeLayout(scheme, shape);
  if (!layout.ok()) return;
  for (const PartSpec& spec : PartTable()) {
    p.expected_bytes[spec.part] =
        static_cast<uint64_t>(PartBytes(spec, *layout, output));
  }
}

// Checks an assembled reply against its TensorResult, part by part of the
// table: the size the result's layout implies, the size and CRC-32C the
// result lists (`crc32c` holds each part's CRC folded from its chunks as
// they arrived), and nothing else listed.
absl::Status VerifyReply(const TensorReply& reply, const v1::TensorResult& r,
                         OutputKind output, const PerPart<uint32_t>& crc32c) {
  auto loss = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("tensor \"", reply.name, "\": ", what));
  };
  absl::StatusOr<Layout> layout = LayoutFromProto(r.layout());
  if (!layout.ok()) return loss(layout.status().message());
  PerPart<const v1::PartInfo*> listed;
  for (const v1::PartInfo& info : r.parts()) {
    const PartSpec* spec = PartFromProto(info.part());
    if (spec == nullptr) {
      return loss(absl::StrCat("result lists an unknown part ", info.part()));
    }
    if (listed[spec->part] != nullptr) {
      return loss(absl::StrCat("result lists ", spec->name, " twice"));
    }
    listed[spec->part] = &info;
  }
  for (const PartSpec& spec : PartTable()) {
    const std::vector<uint8_t>& bytes = reply.part(spec.part);
    const auto want = static_cast<uint64_t>(PartBytes(spec, *layout, output));
    const v1::PartInfo* info = listed[spec.part];
    if (bytes.size() != want) {
      return loss(absl::StrCat(spec.name, " has ", bytes.size(),
                               " bytes, the layout says ", want));
    }
    if (want == 0) {
      if (info != nullptr) {
        return loss(absl::StrCat("result lists ", spec.name,
                                 ", which the layout and output do not have"));
      }
      continue;
    }
    if (info == nullptr || info->bytes() != want) {
      return loss(absl::StrCat("result lists ",
                               info == nullptr ? 0 : info->bytes(), " bytes of ",
                               spec.name, ", the layout says ", want));
    }
    if (crc32c[spec.part] != info->crc32c()) {
      return loss(absl::StrCat(spec.name, " crc32c ", crc32c[spec.part],
                               " differs from the server's ", info->crc32c()));
    }
  }
  if (const std::vector<uint8_t>& raw = reply.part(Part::kGroupIndex);
      !raw.empty()) {
    // Each entry names a group of its row: a client dequantizing through
    // the index must not read past the scales.
    std::vector<int32_t> g_idx(raw.size() / 4);
    std::memcpy(g_idx.data(), raw.data(), raw.size());
    absl::Status bad = CheckGroupIndex(*layout, g_idx);
    if (!bad.ok()) return loss(bad.message());
  }
  return absl::OkStatus();
}

// What the sender thread and the receiving thread of one job share.
struct JobState {
  bool CanSend() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return stop || static_cast<int>(pending.size()) < max_in_flight;
  }

  absl::Mutex mu;
  int max_in_flight = 1;
  absl::flat_hash_map<std::string, Pending> pending ABSL_GUARDED_BY(mu);
  std::vector<std::string> taken ABSL_GUARDED_BY(mu);  // in send order
  absl::flat_hash_map<std::string, bool> answered ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  // Tensors the sender refused before sending them (caller errors).
  std::vector<std::pair<std::string, absl::Status>> refused
      ABSL_GUARDED_BY(mu);
};

// Sends one calibration set: header, chunks (whole rows for activations,
// each with its CRC-32C), end with the whole set's CRC-32C. False when the
// stream broke.
bool WriteCalibrationSet(
    const CalibrationSetRequest& set, uint64_t chunk_bytes,
    grpc::ClientReaderWriter<v1::QuantizeRequest, v1::QuantizeResponse>& stream) {
  v1::QuantizeRequest request;
  v1::CalibrationHeader* header = request.mutable_calibration_header();
  header->set_name(set.name);
  header->set_kind(set.kind);
  header->set_features(static_cast<uint64_t>(std::max<int64_t>(set.features, 0)));
  // Sent as given, so the server judges it (ACTIVATIONS only).
  header->set_holdout_rows(static_cast<uint32_t>(
      std::clamp<int64_t>(set.holdout_rows, 0, std::numeric_limits<uint32_t>::max())));
  uint64_t step = chunk_bytes;
  if (set.kind == v1::CALIBRATION_KIND_ACTIVATIONS ||
      set.kind == v1::CALIBRATION_KIND_UNSPECIFIED) {
    header->set_dtype(DTypeToProto(set.dtype));
    header->set_channel_histograms(set.channel_histograms);
    const uint64_t row_bytes =
        static_cast<uint64_t>(std::max<int64_t>(set.features, 1)) *
        static_cast<uint64_t>(DTypeSize(set.dtype));
    step = std::max<uint64_t>(chunk_bytes / row_bytes, 1) * row_bytes;
  } else {
    header->set_tokens(static_cast<uint64_t>(std::max<int64_t>(set.tokens, 0)));
  }
  if (!stream.Write(request)) return false;
  uint32_t set_crc = 0;
  for (uint64_t offset = 0; offset < set.data.size(); offset += step) {
    request.Clear();
    v1::CalibrationChunk* chunk = request.mutable_calibration_chunk();
    chunk->set_offset(offset);
    absl::Span<const uint8_t> piece = set.data.subspan(offset, step);
    chunk->set_data(piece.data(), piece.size());
    const uint32_t crc = Crc32c(piece.data(), piece.size());
    chunk->set_crc32c(crc);
    set_crc = Crc32cCombine(set_crc, crc, piece.size());
    if (!stream.Write(request)) return false;
  }
  request.Clear();
  request.mutable_calibration_end()->set_crc32c(set_crc);
  return stream.Write(request);
}

}  // namespace

absl::Status QuantdClient::RunJob(const JobConfig& config,
                                  const TensorSource& source,
                                  const ResultCallback& on_result,
                                  std::vector<std::string>* unanswered) {
  grpc::ClientContext context;
  Authorize(context);
  if (config.timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + config.timeout));
  }
  std::unique_ptr<grpc::ClientReaderWriter<v1::QuantizeRequest,
                                           v1::QuantizeResponse>>
      stream = stub_->Quantize(&context);

  const int max_in_flight = std::max(config.max_in_flight_tensors, 1);
  const uint64_t chunk_bytes = std::max<uint64_t>(config.chunk_bytes, 1);
  QUANTD_ASSIGN_OR_RETURN(const OutputKind output,
                          OutputKindFromProto(config.output));

  JobState state;
  state.max_in_flight = max_in_flight;

  std::thread sender([&] {
    v1::QuantizeRequest request;
    v1::JobStart* start = request.mutable_start();
    SchemeToProto(config.scheme, start->mutable_scheme());
    start->mutable_options()->set_output(config.output);
    if (config.activation_range.ByteSizeLong() > 0) {
      *start->mutable_options()->mutable_activation_range() =
          config.activation_range;
    }
    start->set_client(config.client_name);
    if (!stream->Write(request)) return;
    for (const CalibrationSetRequest& set : config.calibration_sets) {
      if (!WriteCalibrationSet(set, chunk_bytes, *stream)) return;
    }
    while (true) {
      {
        absl::MutexLock lock(&state.mu);
        state.mu.Await(absl::Condition(&state, &JobState::CanSend));
        if (state.stop) break;
      }
      std::optional<TensorRequest> tensor = source();
      if (!tensor) break;
      uint64_t num_elements = 1;
      for (int64_t d : tensor->shape) {
        num_elements *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
      }
      const uint64_t want_bytes =
          num_elements * static_cast<uint64_t>(DTypeSize(tensor->dtype));
      {
        absl::MutexLock lock(&state.mu);
        if (state.answered.contains(tensor->name)) {
          state.refused.emplace_back(tensor->name,
                               absl::InvalidArgumentError(absl::StrCat(
                                   "tensor \"", tensor->name,
                                   "\" sent twice in one job")));
          continue;
        }
        if (tensor->data.size() != want_bytes) {
          state.refused.emplace_back(
              tensor->name,
              absl::InvalidArgumentError(absl::StrCat(
                  "tensor \"", tensor->name, "\" has ", tensor->data.size(),
                  " bytes, its shape and dtype need ", want_bytes)));
          continue;
        }
        Pending& p = state.pending[tensor->name];
        p.num_elements = num_elements;
        ExpectParts(tensor->scheme ? *tensor->scheme : config.scheme,
                    tensor->shape, output, p);
        p.sent = absl::Now();
        p.reply.name = tensor->name;
        state.taken.push_back(tensor->name);
        state.answered[tensor->name] = false;
      }
      request.Clear();
      v1::TensorHeader* header = request.mutable_header();
      header->set_name(tensor->name);
      header->set_dtype(DTypeToProto(tensor->dtype));
      for (int64_t d : tensor->shape) {
        header->add_shape(static_cast<uint64_t>(d));
      }
      if (tensor->scheme) {
        SchemeToProto(*tensor->scheme, header->mutable_scheme());
      }
      header->mutable_importance()->Add(tensor->importance.begin(),
                                        tensor->importance.end());
      header->mutable_scales()->Add(tensor->scales.begin(), tensor->scales.end());
      for (uint8_t zp : tensor->zero_points) header->add_zero_points(zp);
      header->set_calibration(tensor->calibration);
      if (tensor->activation_range) {
        *header->mutable_activation_range() = *tensor->activation_range;
      }
      if (!stream->Write(request)) return;
      // Each chunk carries its CRC-32C; the end carries the whole tensor's,
      // folded from the chunks' so the data is read once.
      uint32_t tensor_crc = 0;
      for (uint64_t offset = 0; offset < tensor->data.size();
           offset += chunk_bytes) {
        request.Clear();
        v1::TensorChunk* chunk = request.mutable_chunk();
        chunk->set_offset(offset);
        absl::Span<const uint8_t> piece =
            tensor->data.subspan(offset, chunk_bytes);
        chunk->set_data(piece.data(), piece.size());
        const uint32_t crc = Crc32c(piece.data(), piece.size());
        chunk->set_crc32c(crc);
        tensor_crc = Crc32cCombine(tensor_crc, crc, piece.size());
        if (!stream->Write(request)) return;
      }
      request.Clear();
      request.mutable_end()->set_crc32c(tensor_crc);
      if (!stream->Write(request)) return;
    }
    stream->WritesDone();
  });

  absl::Status protocol_error;
  auto fail = [&](absl::Status s) {
    if (protocol_error.ok()) {
      protocol_error = std::move(s);
      context.TryCancel();
    }
  };
  std::string current;  // tensor whose shards are arriving
  v1::QuantizeResponse response;
  while (stream->Read(&response)) {
    if (!protocol_error.ok()) continue;  // draining after cancel
    if (response.has_shard()) {
      const v1::ShardChunk& shard = response.shard();
      if (!current.empty() && shard.tensor() != current) {
        fail(absl::InternalError(absl::StrCat(
            "protocol violation: shard of tensor \"", shard.tensor(),
            "\" interleaved with tensor \"", current, "\"")));
        continue;
      }
      absl::MutexLock lock(&state.mu);
      auto it = state.pending.find(shard.tensor());
      if (it == state.pending.end()) {
        fail(absl::InternalError(absl::StrCat(
            "protocol violation: shard of tensor \"", shard.tensor(),
            "\", which is not in flight")));
        continue;
      }
      const PartSpec* spec = PartFromProto(shard.part());
      std::vector<uint8_t>* buffer =
          spec == nullptr ? nullptr : &it->second.reply.parts[spec->part];
      // Codebooks may exceed 4 bytes per element (2^b f32 per small group):
      // their bound is what the layout implies.
      const uint64_t bound = std::max<uint64_t>(
          it->second.num_elements * 4 + 64,
          spec == nullptr ? 0 : it->second.expected_bytes[spec->part]);
      if (buffer == nullptr || shard.offset() != buffer->size() ||
          buffer->size() + shard.data().size() > bound) {
        fail(absl::InternalError(absl::StrCat(
            "protocol violation: tensor \"", shard.tensor(), "\" part ",
            v1::ShardChunk::Part_Name(shard.part()), " chunk at offset ",
            shard.offset(), " (", shard.data().size(),
            " bytes) is out of order or too large")));
        continue;
      }
      const uint32_t crc = Crc32c(shard.data().data(), shard.data().size());
      if (crc != shard.crc32c()) {
        fail(absl::DataLossError(absl::StrCat(
            "tensor \"", shard.tensor(), "\" part ",
            v1::ShardChunk::Part_Name(shard.part()), " chunk at offset ",
            shard.offset(), ": crc32c mismatch (corrupted in transit)")));
        continue;
      }
      const Part part = spec->part;
      if (buffer->empty()) {
        buffer->reserve(static_cast<size_t>(std::min(
            bound, std::max<uint64_t>(it->second.expected_bytes[part],
                                      shard.data().size()))));
      }
      buffer->insert(buffer->end(), shard.data().begin(), shard.data().end());
      it->second.crc32c[part] = Crc32cCombine(it->second.crc32c[part], crc,
                                              shard.data().size());
      current = shard.tensor();
    } else if (response.has_result()) {
      const v1::TensorResult& result = response.result();
      current.clear();
      Pending done;
      {
        absl::MutexLock lock(&state.mu);
        auto it = state.pending.find(result.tensor());
        if (it == state.pending.end()) {
          fail(absl::InternalError(absl::StrCat(
              "protocol violation: result for tensor \"", result.tensor(),
              "\", which is not in flight")));
          continue;
        }
        done = std::move(it->second);
        state.pending.erase(it);
        state.answered[result.tensor()] = true;
      }
      TensorReply& reply = done.reply;
      reply.layout = result.layout();
      reply.metrics = result.metrics();
      if (result.has_output_metrics()) {
        reply.output_metrics = result.output_metrics();
      }
      if (result.has_activation_range()) {
        reply.activation_range = result.activation_range();
      }
      reply.importance_from_calibration = result.importance_from_calibration();
      if (result.has_w8a8()) reply.w8a8 = result.w8a8();
      reply.bytes_in = result.bytes_in();
      reply.bytes_out = result.bytes_out();
      reply.queue_seconds = result.queue_seconds();
      reply.compute_seconds = result.compute_seconds();
      reply.seconds = absl::ToDoubleSeconds(absl::Now() - done.sent);
      absl::Status verified =
          VerifyReply(reply, result, output, done.crc32c);
      reply.crc32c = done.crc32c;  // checked: writers need not read again
      const std::string name = reply.name;  // reply is moved below
      if (verified.ok()) {
        on_result(name, std::move(reply));
      } else {
        on_result(name, verified);
      }
    } else {
      fail(absl::InternalError("protocol violation: empty response"));
    }
  }
  {
    absl::MutexLock lock(&state.mu);
    state.stop = true;
  }
  sender.join();
  absl::Status status = GrpcToAbslStatus(stream->Finish());

  std::vector<std::string> missing;
  std::vector<std::pair<std::string, absl::Status>> refused_copy;
  {
    absl::MutexLock lock(&state.mu);
    for (const std::string& name : state.taken) {
      if (!state.answered[name]) missing.push_back(name);
    }
    refused_copy = std::move(state.refused);
  }
  for (auto& [name, s] : refused_copy) on_result(name, s);
  if (unanswered != nullptr) {
    unanswered->insert(unanswered->end(), missing.begin(), missing.end());
  }
  if (!protocol_error.ok()) return protocol_error;
  if (!status.ok()) return status;
  if (!missing.empty()) {
    return absl::DataLossError(absl::StrCat(
        "server finished the stream without answering ", missing.size(),
        " tensor(s): ", absl::StrJoin(missing, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace quantd

#include "server/quantizer_service.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "kernels/cpu.h"
#include "kernels/quantize.h"
#include "kernels/version.h"
#include "server/log.h"
#include "proto/wire_convert.h"
#include "server/shard_writer.h"
#include "server/status_util.h"

namespace quantd {
namespace {

constexpr char kQuantizeMethod[] = "Quantize";
constexpr char kBidiStream[] = "bidi_stream";

// True iff a == b; the time taken depends only on the lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff = static_cast<unsigned char>(diff | (x ^ y));
  }
  return diff == 0;
}

std::string OutcomeLabel(const absl::Status& status) {
  if (status.ok()) return "ok";
  return absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
}

// One Quantize stream. Owns itself: deleted when gRPC is done with it
// (OnDone) and no job of its stream is still running.
class QuantizeReactor final
    : public grpc::ServerBidiReactor<v1::QuantizeRequest, v1::QuantizeResponse>,
      public StreamHandle {
 public:
  QuantizeReactor(QuantizerService* service, grpc::CallbackServerContext* ctx)
      : service_(service),
        ctx_(ctx),
        assembler_(service->options().limits),
        calibration_(
            StreamCalibration::Hooks{
                [this](std::function<void()> work) {
                  return SubmitWork(std::move(work));
                },
                [this](const absl::Status& status) { Fail(status); },
                [this] {
                  absl::MutexLock lock(&mu_);
                  MaybeResumeReadLocked();
                }},
            cancelled_.get()),
        start_(absl::Now()) {
    service_->metrics().RpcStarted(kQuantizeMethod, kBidiStream);
    service_->metrics().SetStreamsActive(
        static_cast<double>(++active_streams_));
    absl::Status refused = service_->Authorize(*ctx);
    if (refused.ok() && service_->draining()) {
      refused = absl::UnavailableError(
          "server is draining; retry on another replica");
    }
    if (!refused.ok()) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      final_status_ = refused;
      Finish(ToGrpcStatus(final_status_));
      return;
    }
    service_->Register(this);
    registered_ = true;
    StartRead(&request_);
  }

  void Abort(const absl::Status& status) override { Fail(status); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      OnHalfClose();
      return;
    }
    const size_t calibration_bytes = request_.has_calibration_chunk()
                                         ? request_.calibration_chunk().data().size()
                                         : 0;
    absl::StatusOr<StreamAssembler::Event> ev = assembler_.Consume(request_);
    if (!ev.ok()) {
      Fail(ev.status());
      return;
    }
    if (request_.has_chunk()) {
      service_->metrics().AddReceivedBytes(
          static_cast<double>(request_.chunk().data().size()));
    }
    if (calibration_bytes > 0) {
      service_->metrics().AddReceivedBytes(static_cast<double>(calibration_bytes));
    }
    if (absl::Status s = OnCalibrationEvent(*ev); !s.ok()) {
      Fail(s);
      return;
    }
    switch (ev->kind) {
      case StreamAssembler::Event::kHeader: {
        absl::StatusOr<MemoryBudget::Reservation> r =
            service_->budget().Reserve(ev->working_set_bytes,
                                       absl::StrCat("tensor ", ev->name));
        if (!r.ok()) {
          Fail(r.status());
          return;
        }
        open_reservation_ = *std::move(r);
        break;
      }
      case StreamAssembler::Event::kTensor:
        if (absl::Status s = OnTensor(std::move(ev->tensor)); !s.ok()) {
          Fail(s);
          return;
        }
        break;
      default:
        break;
    }
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || pending_error_.has_value()) return;
      if (!CanReadLocked()) {
        // Backpressure: read on once a tensor's responses are written or a
        // calibration chunk is folded.
        read_paused_ = true;
        return;
      }
    }
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) {
      // The client is gone; the stream is cancelled. Stop producing.
      FailLocked(absl::CancelledError("write failed: client went away"));
    }
    PumpLocked();
  }

  void OnCancel() override {
    cancelled_->store(true);
    absl::MutexLock lock(&mu_);
    if (!finished_) {
      FailLocked(absl::CancelledError("stream cancelled by the client or deadline"));
      PumpLocked();
    }
  }

  void OnDone() override {
    const absl::Status status = [&] {
      absl::MutexLock lock(&mu_);
      return final_status_;
    }();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
    service_->metrics().RpcHandled(
        kQuantizeMethod, kBidiStream,
        GrpcCodeName(static_cast<grpc::StatusCode>(status.code())), seconds);
    service_->metrics().SetStreamsActive(
        static_cast<double>(--active_streams_));
    Log(status.ok() ? LogLevel::kInfo : LogLevel::kWarning, "stream done",
        {{"peer", ctx_->peer()},
         {"code", GrpcCodeName(static_cast<grpc::StatusCode>(status.code()))},
         {"message", std::string(status.message())},
         {"tensors", tensors_done_},
         {"seconds", seconds}});
    cancelled_->store(true);
    if (registered_) service_->Unregister(this);
    // Queued chunks, waiting tensors and the sets' reservations go now (sets
    // still read by a running job go when it ends).
    calibration_.Abandon();
    bool delete_now;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      ready_.clear();
      current_.reset();
      delete_now = jobs_in_flight_ == 0;
    }
    open_reservation_.Release();
    if (delete_now) delete this;
  }

 private:
  struct Ready {
    std::unique_ptr<ShardWriter> writer;
    MemoryBudget::Reservation reservation;
  };

  // Calibration sets: reserve at the header, fold chunks on the pool.
  absl::Status OnCalibrationEvent(StreamAssembler::Event& ev) {
    MemoryBudget& budget = service_->budget();
    const std::string what = absl::StrCat("calibration set '", ev.name, "'");
    switch (ev.kind) {
      case StreamAssembler::Event::kCalibrationHeader: {
        absl::StatusOr<MemoryBudget::Reservation> set =
            budget.Reserve(ev.working_set_bytes, what);
        if (!set.ok()) return set.status();
        absl::StatusOr<MemoryBudget::Reservation> buffer =
            budget.Reserve(ev.buffer_bytes, what);
        if (!buffer.ok()) return buffer.status();
        calibration_.Open(std::move(ev.calibration), *std::move(set),
                          *std::move(buffer));
        return absl::OkStatus();
      }
      case StreamAssembler::Event::kCalibrationChunk: {
        absl::StatusOr<MemoryBudget::Reservation> r =
            budget.Reserve(ev.working_set_bytes, what);
        if (!r.ok()) return r.status();
        return calibration_.AddChunk(std::move(ev.data), *std::move(r));
      }
      case StreamAssembler::Event::kCalibrationEnd:
        return calibration_.Close(std::move(ev.payload));
      default:
        return absl::OkStatus();
    }
  }

  // A complete tensor: queued now, or once its calibration set is complete.
  absl::Status OnTensor(std::unique_ptr<TensorInput> tensor) {
    {
      absl::MutexLock lock(&mu_);
      ++pending_tensors_;
    }
    auto reservation = std::make_shared<MemoryBudget::Reservation>(
        std::move(open_reservation_));
    std::shared_ptr<TensorInput> input(std::move(tensor));
    if (input->calibration_name.empty()) return Submit(input, reservation);
    const std::string set_name = input->calibration_name;
    return calibration_.WhenComplete(
        set_name, [this, input, reservation](
                      std::shared_ptr<const CalibrationSet> set) {
          input->calibration = std::move(set);
          return Submit(input, reservation);
        });
  }

  absl::Status Submit(std::shared_ptr<TensorInput> input,
                      std::shared_ptr<MemoryBudget::Reservation> reservation) {
    {
      absl::MutexLock lock(&mu_);
      ++jobs_in_flight_;
    }
    absl::Status s = service_->pool().Submit(
        [this, input, reservation](absl::Duration queue_wait) mutable {
          RunJob(*input, std::move(*reservation), queue_wait);
        });
    if (!s.ok()) {
      absl::MutexLock lock(&mu_);
      --jobs_in_flight_;
    }
    return s;
  }

  // Runs `work` on the pool as a job of this stream (which outlives it).
  absl::Status SubmitWork(std::function<void()> work) {
    {
      absl::MutexLock lock(&mu_);
      if (done_ || finished_ || pending_error_.has_value()) {
        return absl::CancelledError("the stream is over");
      }
      ++jobs_in_flight_;
    }
    absl::Status s = service_->pool().Submit(
        [this, work = std::move(work)](absl::Duration) {
          work();
          bool delete_now = false;
          {
            absl::MutexLock lock(&mu_);
            --jobs_in_flight_;
            if (done_) {
              delete_now = jobs_in_flight_ == 0;
            } else {
              PumpLocked();
            }
          }
          if (delete_now) delete this;
        });
    if (!s.ok()) {
      absl::MutexLock lock(&mu_);
      --jobs_in_flight_;
    }
    return s;
  }

  // Reading stops while this stream has max_pending_tensors_per_stream
  // tensors unanswered or kMaxQueuedCalibrationChunks chunks unfolded.
  bool CanReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_tensors_ < service_->options().max_pending_tensors_per_stream &&
           calibration_.queued_chunks() < kMaxQueuedCalibrationChunks;
  }

  void MaybeResumeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (read_paused_ && !reads_done_ && !finished_ && !done_ &&
        !pending_error_.has_value() && CanReadLocked()) {
      read_paused_ = false;
      StartRead(&request_);
    }
  }

  // On a worker thread.
  void RunJob(TensorInput& input, MemoryBudget::Reservation reservation,
              absl::Duration queue_wait) {
    const double wait_s = absl::ToDoubleSeconds(queue_wait);
    service_->metrics().QueueWait(wait_s);
    const std::string format = input.layout.scheme.format;
    absl::StatusOr<TensorOutput> out;
    if (cancelled_->load()) {
      out = absl::CancelledError(absl::StrCat("tensor ", input.name, ": cancelled"));
    } else {
      out = RunQuantizeJob(input, *cancelled_);
    }
    service_->metrics().JobDone(format, OutcomeLabel(out.status()),
                                out.ok() ? out->compute_seconds : 0,
                                out.ok() ? out->metrics.sqnr_db : 0);
    if (out.ok()) {
      Log(LogLevel::kDebug, "tensor done",
          {{"tensor", input.name},
           {"scheme", SchemeToString(input.layout.scheme)},
           {"queue_seconds", wait_s},
           {"compute_seconds", out->compute_seconds},
           {"sqnr_db", out->metrics.sqnr_db}});
    }
    bool delete_now = false;
    {
      absl::MutexLock lock(&mu_);
      --jobs_in_flight_;
      if (done_) {
        delete_now = jobs_in_flight_ == 0;
      } else if (!out.ok()) {
        FailLocked(out.status());
        PumpLocked();
      } else if (!finished_) {
        ready_.push_back(Ready{std::make_unique<ShardWriter>(
                                   *std::move(out), wait_s,
                                   service_->options().limits.max_chunk_bytes),
                               std::move(reservation)});
        PumpLocked();
      }
    }
    if (delete_now) delete this;
  }

  void OnHalfClose() {
    absl::MutexLock lock(&mu_);
    reads_done_ = true;
    if (finished_) {
      PumpLocked();
      return;
    }
    if (absl::Status s = assembler_.Finish(); !s.ok()) {
      FailLocked(s);
    }
    PumpLocked();
  }

  void Fail(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    FailLocked(status);
    PumpLocked();
  }

  // Records the first error; the stream finishes with it once no write is in
  // flight. Running jobs see the cancel flag and stop early.
  void FailLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || pending_error_.has_value()) return;
    pending_error_ = status;
    cancelled_->store(true);
    ready_.clear();
    current_.reset();
  }

  // Advances the stream: start the next write, or finish. Called with mu_
  // held; gRPC's Start*/Finish do not run reactions inline.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || done_ || write_in_flight_) return;
    if (pending_error_.has_value()) {
      finished_ = true;
      final_status_ = *pending_error_;
      Finish(ToGrpcStatus(*pending_error_));
      return;
    }
    while (true) {
      if (current_ == nullptr) {
        if (ready_.empty()) break;
        current_ = std::make_unique<Ready>(std::move(ready_.front()));
        ready_.pop_front();
      }
      if (current_->writer->Next(&response_)) {
        if (response_.has_shard()) {
          service_->metrics().AddSentBytes(
              static_cast<double>(response_.shard().data().size()));
        } else {
          ++tensors_done_;
        }
        write_in_flight_ = true;
        StartWrite(&response_);
        return;
      }
      current_.reset();  // releases the tensor's reservation
      --pending_tensors_;
      MaybeResumeReadLocked();
    }
    if (reads_done_ && jobs_in_flight_ == 0) {
      finished_ = true;
      final_status_ = absl::OkStatus();
      Finish(grpc::Status::OK);
    }
  }

  static inline std::atomic<int64_t> active_streams_{0};
  // Calibration chunks of one stream queued for folding, at most (each
  // holds up to max_chunk_bytes and its f32 conversion, reserved).
  static constexpr int64_t kMaxQueuedCalibrationChunks = 4;

  QuantizerService* const service_;
  grpc::CallbackServerContext* const ctx_;
  const std::shared_ptr<std::atomic<bool>> cancelled_ =
      std::make_shared<std::atomic<bool>>(false);
  // Touched only by reactions on the read side, which gRPC serializes.
  StreamAssembler assembler_;
  v1::QuantizeRequest request_;
  MemoryBudget::Reservation open_reservation_;
  // Declared after cancelled_, whose flag it reads.
  StreamCalibration calibration_;
  const absl::Time start_;

  absl::Mutex mu_;
  v1::QuantizeResponse response_ ABSL_GUARDED_BY(mu_);
  std::deque<Ready> ready_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Ready> current_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> pending_error_ ABSL_GUARDED_BY(mu_);
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  int64_t jobs_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t tensors_done_ ABSL_GUARDED_BY(mu_) = 0;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  // Tensors submitted whose responses are not all written yet.
  int64_t pending_tensors_ ABSL_GUARDED_BY(mu_) = 0;
  // No read in flight because of backpressure.
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ = false;  // set in the constructor only
};

}  // namespace

QuantizerService::QuantizerService(const ServiceOptions& options,
                                   ServerMetrics* metrics)
    : options_(options),
      metrics_(metrics),
      budget_(options.memory_budget_bytes, [metrics](int64_t reserved) {
        metrics->SetMemoryReserved(static_cast<double>(reserved));
      }) {
  metrics->SetMemoryBudget(static_cast<double>(options.memory_budget_bytes));
  WorkerPool::Options pool_options;
  pool_options.workers = options.workers;
  pool_options.max_queue_jobs = options.max_queue_jobs;
  pool_options.on_change = [metrics](int64_t depth, int64_t busy) {
    metrics->SetQueueDepth(static_cast<double>(depth));
    metrics->SetWorkersBusy(static_cast<double>(busy));
  };
  pool_ = std::make_unique<WorkerPool>(std::move(pool_options));
}

QuantizerService::~QuantizerService() { pool_.reset(); }

void QuantizerService::Register(StreamHandle* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.insert(stream);
}

void QuantizerService::Unregister(StreamHandle* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(stream);
}

int64_t QuantizerService::active_streams() const {
  absl::MutexLock lock(&streams_mu_);
  return static_cast<int64_t>(streams_.size());
}

bool QuantizerService::WaitForStreams(absl::Time deadline) {
  absl::MutexLock lock(&streams_mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
    return streams_.empty();
  };
  return streams_mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
}

void QuantizerService::AbortAll(const absl::Status& status) {
  // A stream unregisters only in OnDone, which never runs while Abort is
  // being called on it from here (Abort takes no service lock).
  absl::MutexLock lock(&streams_mu_);
  for (StreamHandle* stream : streams_) stream->Abort(status);
}

absl::Status QuantizerService::Authorize(
    const grpc::CallbackServerContext& context) const {
  if (options_.auth_tokens.empty()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "missing \"authorization: Bearer <token>\" metadata");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (value.size() <= kBearer.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), kBearer)) {
    return absl::UnauthenticatedError(
        "authorization metadata is not \"Bearer <token>\"");
  }
  const absl::string_view token = value.substr(kBearer.size());
  // Every token is compared in full, whatever matches, so the time taken
  // does not depend on where a guess differs.
  bool accepted = false;
  for (const std::string& t : options_.auth_tokens) {
    accepted |= ConstantTimeEquals(token, t);
  }
  if (!accepted) return absl::PermissionDeniedError("token not accepted");
  return absl::OkStatus();
}

grpc::ServerBidiReactor<v1::QuantizeRequest, v1::QuantizeResponse>*
QuantizerService::Quantize(grpc::CallbackServerContext* context) {
  return new QuantizeReactor(this, context);
}

grpc::ServerUnaryReactor* QuantizerService::GetServerInfo(
    grpc::CallbackServerContext* context, const v1::GetServerInfoRequest*,
    v1::ServerInfo* info) {
  const absl::Time start = absl::Now();
  metrics_->RpcStarted("GetServerInfo", "unary");
  if (absl::Status auth = Authorize(*context); !auth.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(auth));
    metrics_->RpcHandled(
        "GetServerInfo", "unary",
        GrpcCodeName(static_cast<grpc::StatusCode>(auth.code())),
        absl::ToDoubleSeconds(absl::Now() - start));
    return reactor;
  }
  info->set_version(QUANTD_VERSION);
  info->set_build(QUANTD_GIT_REV);
  FormatTablesToProto(info);
  info->add_dtypes(v1::DTYPE_F32);
  info->add_dtypes(v1::DTYPE_F16);
  info->add_dtypes(v1::DTYPE_BF16);
  v1::Limits* limits = info->mutable_limits();
  limits->set_max_tensor_bytes(static_cast<uint64_t>(options_.limits.max_tensor_bytes));
  limits->set_max_chunk_bytes(static_cast<uint64_t>(options_.limits.max_chunk_bytes));
  limits->set_memory_budget_bytes(static_cast<uint64_t>(options_.memory_budget_bytes));
  limits->set_max_queue_jobs(static_cast<uint64_t>(options_.max_queue_jobs));
  info->set_workers(static_cast<uint32_t>(pool_->workers()));
  info->set_kernel_isa(std::string(IsaName(DetectedIsa())));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  metrics_->RpcHandled("GetServerInfo", "unary", "OK",
                       absl::ToDoubleSeconds(absl::Now() - start));
  return reactor;
}

}  // namespace quantd

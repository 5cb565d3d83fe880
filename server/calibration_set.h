// Calibration sets of one Quantize stream: activations X (or precomputed
// statistics) that several weight tensors share as their input, folded into
// sufficient statistics on the worker pool as their chunks arrive, so the
// server never holds X and a set's memory depends on its feature count, not
// on its token count.
//
//   StreamCalibration calibration(hooks, &cancelled);
//   calibration.Open(spec, std::move(set_reservation),
//                    std::move(buffer_reservation));           // reaction
//   calibration.AddChunk(std::move(chunk_bytes), std::move(r)); // reaction
//   calibration.Close(std::move(payload));                      // reaction
//   calibration.WhenComplete("blk.0.attn_in",                    // reaction
//       [](std::shared_ptr<const CalibrationSet> set) {
//         return SubmitTensor(..., set);  // queued once the set is whole
//       });
//
// Each set has a FIFO of pending operations (fold a chunk of rows; complete
// the set). The first operation queued while nothing drains the set
// submits one pool job that drains the FIFO in order, so at most one worker
// touches a set's accumulator at a time, sets drain in parallel, and the
// reaction never computes. A tensor that uses a set waits in the set's list
// (it is not a pool job, so no worker ever blocks on a set) and is handed to
// `start` by the worker that completes the set. Once complete a set is
// immutable: jobs read it through `std::shared_ptr<const CalibrationSet>`
// (the accumulator, the full G and the importance weights), which keeps its
// memory reservation alive.
#ifndef QUANTD_SERVER_CALIBRATION_SET_H_
#define QUANTD_SERVER_CALIBRATION_SET_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/calibration_stats.h"
#include "kernels/dtype.h"
#include "server/memory_budget.h"

namespace quantd {

enum class CalibrationKind { kActivations, kGram, kImportance };

// A set as its CalibrationHeader describes it (validated by the assembler).
struct CalibrationSpec {
  std::string name;
  CalibrationKind kind = CalibrationKind::kActivations;
  DType dtype = DType::kF32;  // kActivations only
  int64_t features = 0;       // in [1, 2^24]
  int64_t tokens = 0;         // kGram / kImportance: >= 1
  bool channel_histograms = false;
  // kActivations only: the first rows held back from the statistics and
  // kept for the integer-only check (CalibrationHeader.holdout_rows).
  int64_t holdout_rows = 0;
};

// Most rows a set may hold back (CalibrationHeader.holdout_rows).
inline constexpr int64_t kMaxHoldoutRows = 4096;

// The accumulator options the server uses for `spec` (G always; per-tensor
// histogram of 2048 bins; per-channel histograms of 2048 bins when asked;
// GEMMs on the calling worker's thread).
CalibrationOptions CalibrationOptionsFor(const CalibrationSpec& spec);

// Bytes a set holds from its header to the end of the stream: the
// accumulator (what CalibrationAccumulator::MemoryBytes reports once built)
// plus the full G and the importance weights cached at completion.
int64_t CalibrationSetBytes(const CalibrationSpec& spec);
// Bytes a GRAM / IMPORTANCE set's wire bytes take until the set completes
// (0 for activations, whose chunks are folded and dropped).
int64_t CalibrationBufferBytes(const CalibrationSpec& spec);
// Bytes one activations chunk of `bytes` takes while queued and folded: the
// bytes and their aligned f32 conversion.
int64_t CalibrationChunkBytes(DType dtype, int64_t bytes);

// A GRAM or IMPORTANCE set's values as received (one of the two is used).
struct CalibrationPayload {
  std::vector<double> gram;        // features² (kGram)
  std::vector<float> importance;   // features (kImportance)
};

// One set's statistics. Built by one worker at a time (AddRows, Complete);
// after Complete it is immutable and every const method may be called
// concurrently.
class CalibrationSet {
 public:
  // `reservation` covers CalibrationSetBytes(spec) and is held as long as
  // the set lives.
  CalibrationSet(CalibrationSpec spec, MemoryBudget::Reservation reservation);

  // Folds `bytes` (whole rows of spec().dtype, little-endian) into the
  // accumulator, creating it on the first call. INVALID_ARGUMENT naming the
  // set for non-finite values; INTERNAL if oneDNN fails.
  absl::Status AddRows(absl::string_view bytes);
  // Finishes the set: builds the accumulator of a GRAM / IMPORTANCE set from
  // `payload` (INVALID_ARGUMENT naming the set for non-finite G, negative or
  // non-finite importance), then caches G and the importance weights.
  // INVALID_ARGUMENT naming the set if an activations set has no rows.
  absl::Status Complete(CalibrationPayload payload);

  const CalibrationSpec& spec() const { return spec_; }
  const std::string& name() const { return spec_.name; }
  int64_t features() const { return spec_.features; }
  // REQUIRES: Complete() returned OK.
  const CalibrationAccumulator& accumulator() const { return *accumulator_; }
  int64_t tokens() const { return accumulator_->tokens(); }
  // Full G = XᵀX (features², row-major); empty for an IMPORTANCE set.
  absl::Span<const double> gram() const { return gram_; }
  // Σx²/tokens per feature (llama.cpp's imatrix).
  absl::Span<const float> importance() const { return importance_; }
  // True for ACTIVATIONS sets: min / max and histograms (activation ranges).
  bool has_stats() const { return accumulator_->has_stats(); }
  // The held-back rows as f32, row-major (holdout_rows() x features()):
  // spec().holdout_rows of them once complete.
  absl::Span<const float> holdout() const { return holdout_; }
  int64_t holdout_rows() const {
    return static_cast<int64_t>(holdout_.size()) / spec_.features;
  }

 private:
  const CalibrationSpec spec_;
  MemoryBudget::Reservation reservation_;
  std::optional<CalibrationAccumulator> accumulator_;
  std::vector<double> gram_;
  std::vector<float> importance_;
  std::vector<float> holdout_;
};

// The calibration sets of one stream and their work queues. The reaction
// side (Open, AddChunk, Close, WhenComplete) is called by one thread at a
// time; workers run the drains. Thread-safe otherwise.
class StreamCalibration {
 public:
  struct Hooks {
    // Runs `work` on the worker pool, counted as a job of the stream (the
    // stream outlives it). An error (queue full, stream over) means `work`
    // will not run.
    std::function<absl::Status(std::function<void()> work)> submit;
    // A set failed (the status names it): the stream ends with it.
    std::function<void(const absl::Status&)> fail;
    // A queued chunk was folded or dropped (reading may resume).
    std::function<void()> progress;
  };
  // Receives a complete set; returns the status of handing its work on.
  using Start =
      std::function<absl::Status(std::shared_ptr<const CalibrationSet>)>;

  // `cancelled` (the stream's flag) must outlive this object.
  StreamCalibration(Hooks hooks, const std::atomic<bool>* cancelled);
  StreamCalibration(const StreamCalibration&) = delete;
  StreamCalibration& operator=(const StreamCalibration&) = delete;
  ~StreamCalibration();

  // Opens a set (the assembler checked the name is new). `buffer` covers
  // the payload of a GRAM / IMPORTANCE set until it completes.
  void Open(CalibrationSpec spec, MemoryBudget::Reservation set_reservation,
            MemoryBudget::Reservation buffer_reservation);
  // Queues whole rows of the open set, with the reservation that covers
  // them; the error of the pool's submit.
  absl::Status AddChunk(std::string bytes, MemoryBudget::Reservation reservation);
  // Queues the completion of the open set.
  absl::Status Close(CalibrationPayload payload);
  // Calls `start` with set `name` once it is complete: now, on this thread,
  // if it already is; else on the worker that completes it. Never called if
  // the set fails or the stream is abandoned. NotFound for an unknown name
  // (the assembler prevents it).
  absl::Status WhenComplete(const std::string& name, Start start);

  // Activations chunks queued and not yet folded.
  int64_t queued_chunks() const;
  // Drops queued work and waiting tensors (the stream is over). Drains in
  // progress stop after their current operation.
  void Abandon();

 private:
  struct Op {
    bool complete = false;
    std::string bytes;                      // !complete
    MemoryBudget::Reservation reservation;  // covers `bytes` or the payload
    CalibrationPayload payload;             // complete
  };
  struct Entry {
    std::shared_ptr<CalibrationSet> set;
    std::deque<Op> ops;
    bool draining = false;
    bool complete = false;
    std::vector<Start> waiting;
  };

  struct Dropped {
    std::vector<Op> ops;
    std::vector<Start> waiting;
  };

  absl::Status Enqueue(Op op);
  void Drain(std::shared_ptr<Entry> entry);
  void DropLocked(Entry& entry, Dropped& dropped);

  const Hooks hooks_;
  const std::atomic<bool>* const cancelled_;
  // std::mutex so ThreadSanitizer sees the hand-offs (see worker_pool.h).
  mutable std::mutex mu_;
  // Guarded by mu_:
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> sets_;
  std::shared_ptr<Entry> open_;
  MemoryBudget::Reservation pending_buffer_;  // the open set's payload
  int64_t queued_chunks_ = 0;
  bool abandoned_ = false;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_CALIBRATION_SET_H_

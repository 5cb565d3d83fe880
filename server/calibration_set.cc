#include "server/calibration_set.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/convert.h"

namespace quantd {
namespace {

constexpr int64_t kHistogramBins = 2048;
constexpr int64_t kGramBlockRows = 512;
constexpr int64_t kGramPanel = 256;  // calibration.cc's scratch panel width

absl::Status SetError(absl::StatusCode code, const std::string& name,
                      absl::string_view what) {
  return absl::Status(code, absl::StrCat("calibration set '", name, "': ", what));
}

}  // namespace

CalibrationOptions CalibrationOptionsFor(const CalibrationSpec& spec) {
  CalibrationOptions options;
  options.gram = true;
  options.gram_block_rows = kGramBlockRows;
  options.tensor_histogram_bins = kHistogramBins;
  options.channel_histogram_bins = spec.channel_histograms ? kHistogramBins : 0;
  options.gemm_threads = 1;
  return options;
}

int64_t CalibrationSetBytes(const CalibrationSpec& spec) {
  const int64_t f = spec.features;
  // Fixed part: the object, its name, the per-tensor histogram.
  int64_t bytes = static_cast<int64_t>(sizeof(CalibrationAccumulator)) +
                  static_cast<int64_t>(spec.name.size()) + 64 +
                  8 * kHistogramBins;
  switch (spec.kind) {
    case CalibrationKind::kActivations:
      bytes += 8 * f * f;                   // G (f64)
      bytes += 4 * f * kGramBlockRows;      // rows of the unfinished block
      bytes += 4 * f * std::min(kGramPanel, f);  // GEMM scratch while folding
      bytes += (8 + 16 + 12) * f;           // min/max, sums, per-chunk extremes
      if (spec.channel_histograms) bytes += 4 * f + 4 * f * kHistogramBins;
      bytes += 8 * f * f + 4 * f;           // cached full G, importance
      bytes += 4 * f * spec.holdout_rows;   // held-back rows (f32)
      break;
    case CalibrationKind::kGram:
      bytes += 8 * f * f + 4 * f * kGramBlockRows;  // FromGram's G, pending
      bytes += 8 * f * f + 4 * f;                   // cached full G, importance
      break;
    case CalibrationKind::kImportance:
      bytes += 8 * f + 4 * f;  // the accumulator's f64 copy, cached f32
      break;
  }
  return bytes;
}

int64_t CalibrationBufferBytes(const CalibrationSpec& spec) {
  switch (spec.kind) {
    case CalibrationKind::kGram:
      return 8 * spec.features * spec.features;
    case CalibrationKind::kImportance:
      return 4 * spec.features;
    default:
      return 0;
  }
}

int64_t CalibrationChunkBytes(DType dtype, int64_t bytes) {
  return bytes + bytes / DTypeSize(dtype) * 4;
}

CalibrationSet::CalibrationSet(CalibrationSpec spec,
                               MemoryBudget::Reservation reservation)
    : spec_(std::move(spec)), reservation_(std::move(reservation)) {}

absl::Status CalibrationSet::AddRows(absl::string_view bytes) {
  // The first holdout_rows rows are kept aside, not folded.
  const int64_t row_bytes = spec_.features * DTypeSize(spec_.dtype);
  const int64_t held = holdout_rows();
  if (held < spec_.holdout_rows && row_bytes > 0) {
    const int64_t rows = std::min<int64_t>(
        spec_.holdout_rows - held, static_cast<int64_t>(bytes.size()) / row_bytes);
    const size_t n = static_cast<size_t>(rows * spec_.features);
    const size_t start = holdout_.size();
    holdout_.resize(start + n);
    QUANTD_RETURN_IF_ERROR(
        ConvertToF32(spec_.dtype, bytes.data(), n, holdout_.data() + start));
    for (size_t i = start; i < holdout_.size(); ++i) {
      if (!std::isfinite(holdout_[i])) {
        const int64_t row = static_cast<int64_t>(i) / spec_.features;
        return SetError(absl::StatusCode::kInvalidArgument, spec_.name,
                        absl::StrCat("row ", row, " (held back) has a "
                                     "non-finite value at column ",
                                     static_cast<int64_t>(i) % spec_.features));
      }
    }
    bytes.remove_prefix(static_cast<size_t>(rows * row_bytes));
    if (bytes.empty()) return absl::OkStatus();
  }
  if (!accumulator_.has_value()) {
    QUANTD_ASSIGN_OR_RETURN(
        CalibrationAccumulator acc,
        CalibrationAccumulator::Create(spec_.name, spec_.features,
                                       CalibrationOptionsFor(spec_)));
    accumulator_.emplace(std::move(acc));
  }
  return accumulator_->Add(spec_.dtype, bytes.data(), bytes.size(),
                           spec_.features);
}

absl::Status CalibrationSet::Complete(CalibrationPayload payload) {
  switch (spec_.kind) {
    case CalibrationKind::kActivations:
      if (!accumulator_.has_value() || accumulator_->tokens() == 0) {
        return SetError(
            absl::StatusCode::kInvalidArgument, spec_.name,
            spec_.holdout_rows > 0
                ? absl::StrCat("no rows arrived before CalibrationEnd besides "
                               "the ", holdout_rows(), " held back "
                               "(holdout_rows ", spec_.holdout_rows, ")")
                : std::string("no rows arrived before CalibrationEnd"));
      }
      break;
    case CalibrationKind::kGram: {
      QUANTD_ASSIGN_OR_RETURN(
          CalibrationAccumulator acc,
          CalibrationAccumulator::FromGram(spec_.name, spec_.features,
                                           payload.gram, spec_.tokens));
      accumulator_.emplace(std::move(acc));
      break;
    }
    case CalibrationKind::kImportance: {
      QUANTD_ASSIGN_OR_RETURN(
          CalibrationAccumulator acc,
          CalibrationAccumulator::FromImportance(
              spec_.name, payload.importance, spec_.tokens));
      accumulator_.emplace(std::move(acc));
      break;
    }
  }
  // The wire copy is not needed once the accumulator holds the values.
  payload = CalibrationPayload();
  if (accumulator_->has_gram()) {
    QUANTD_ASSIGN_OR_RETURN(gram_, accumulator_->Gram());
  }
  QUANTD_ASSIGN_OR_RETURN(importance_, accumulator_->Importance());
  return absl::OkStatus();
}

StreamCalibration::StreamCalibration(Hooks hooks,
                                     const std::atomic<bool>* cancelled)
    : hooks_(std::move(hooks)), cancelled_(cancelled) {}

StreamCalibration::~StreamCalibration() { Abandon(); }

void StreamCalibration::Open(CalibrationSpec spec,
                             MemoryBudget::Reservation set_reservation,
                             MemoryBudget::Reservation buffer_reservation) {
  auto entry = std::make_shared<Entry>();
  std::string name = spec.name;
  entry->set = std::make_shared<CalibrationSet>(std::move(spec),
                                                std::move(set_reservation));
  std::lock_guard<std::mutex> lock(mu_);
  if (abandoned_) return;
  sets_[name] = entry;
  open_ = std::move(entry);
  // The payload's reservation travels with the completion.
  pending_buffer_ = std::move(buffer_reservation);
}

absl::Status StreamCalibration::AddChunk(std::string bytes,
                                         MemoryBudget::Reservation reservation) {
  Op op;
  op.bytes = std::move(bytes);
  op.reservation = std::move(reservation);
  return Enqueue(std::move(op));
}

absl::Status StreamCalibration::Close(CalibrationPayload payload) {
  Op op;
  op.complete = true;
  op.payload = std::move(payload);
  {
    std::lock_guard<std::mutex> lock(mu_);
    op.reservation = std::move(pending_buffer_);
  }
  return Enqueue(std::move(op));
}

absl::Status StreamCalibration::Enqueue(Op op) {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (abandoned_ || open_ == nullptr) {
      return absl::CancelledError("calibration: stream is over");
    }
    entry = open_;
    if (op.complete) {
      open_.reset();
    } else {
      ++queued_chunks_;
    }
    entry->ops.push_back(std::move(op));
    if (entry->draining) return absl::OkStatus();
    entry->draining = true;
  }
  absl::Status s = hooks_.submit([this, entry] { Drain(entry); });
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    entry->draining = false;
  }
  return s;
}

// Empties `entry`'s queue and waiting list into `dropped` (destroyed by
// the caller, outside the lock).
void StreamCalibration::DropLocked(Entry& entry, Dropped& dropped) {
  for (Op& op : entry.ops) {
    if (!op.complete) --queued_chunks_;
    dropped.ops.push_back(std::move(op));
  }
  entry.ops.clear();
  for (Start& start : entry.waiting) dropped.waiting.push_back(std::move(start));
  entry.waiting.clear();
  entry.draining = false;
}

void StreamCalibration::Drain(std::shared_ptr<Entry> entry) {
  while (true) {
    Op op;
    Dropped dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (abandoned_ || cancelled_->load()) {
        DropLocked(*entry, dropped);
        return;  // `dropped` goes after the lock
      }
      if (entry->ops.empty()) {
        entry->draining = false;
        return;
      }
      op = std::move(entry->ops.front());
      entry->ops.pop_front();
    }
    const bool complete = op.complete;
    // This drain is the set's only writer: no lock while computing.
    const absl::Status s = complete
                               ? entry->set->Complete(std::move(op.payload))
                               : entry->set->AddRows(op.bytes);
    op = Op();  // the chunk's bytes and its reservation go now
    std::vector<Start> ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!complete) --queued_chunks_;
      if (!s.ok()) {
        DropLocked(*entry, dropped);
      } else if (complete) {
        entry->complete = true;
        ready.swap(entry->waiting);
      }
    }
    if (!complete) hooks_.progress();
    if (!s.ok()) {
      hooks_.fail(s);
      return;
    }
    const std::shared_ptr<const CalibrationSet> set = entry->set;
    for (Start& start : ready) {
      if (absl::Status started = start(set); !started.ok()) {
        hooks_.fail(started);
        break;
      }
    }
  }
}

absl::Status StreamCalibration::WhenComplete(const std::string& name,
                                             Start start) {
  std::shared_ptr<const CalibrationSet> set;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sets_.find(name);
    if (it == sets_.end()) {
      return absl::NotFoundError(
          absl::StrCat("calibration set '", name, "' is not in this stream"));
    }
    if (!it->second->complete) {
      it->second->waiting.push_back(std::move(start));
      return absl::OkStatus();
    }
    set = it->second->set;
  }
  return start(set);
}

int64_t StreamCalibration::queued_chunks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_chunks_;
}

void StreamCalibration::Abandon() {
  Dropped dropped;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> sets;
  MemoryBudget::Reservation buffer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned_ = true;
    for (auto& [name, entry] : sets_) DropLocked(*entry, dropped);
    sets.swap(sets_);
    open_.reset();
    buffer = std::move(pending_buffer_);
  }
}

}  // namespace quantd

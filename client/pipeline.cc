#include "client/pipeline.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "client/progress.h"

namespace quantd {
namespace {

double JsonNumber(const Json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) {
    return std::numeric_limits<double>::infinity();  // written as null
  }
  return j[key].get<double>();
}

uint32_t InputCrc(const PipelineItem& item) {
  return Crc32c(item.request.data.data(), item.request.data.size());
}

// Whether a manifest line still describes item's output in the file; on
// success the container counts its parts written and `summary` is filled.
bool TryResume(const Json& entry, const PipelineItem& item, bool fake_quant,
               OutputContainer& output, TensorSummary& summary) {
  if (!entry.contains("input_crc32c") ||
      !entry["input_crc32c"].is_number_unsigned() ||
      entry["input_crc32c"].get<uint64_t>() != InputCrc(item) ||
      !entry.contains("scheme") || !entry["scheme"].is_string() ||
      entry["scheme"].get<std::string>() != summary.scheme ||
      !entry.contains("fake_quant") || !entry["fake_quant"].is_boolean() ||
      entry["fake_quant"].get<bool>() != fake_quant ||
      !entry.contains("parts") || !entry["parts"].is_object() ||
      !entry.contains("metrics") || !entry["metrics"].is_object()) {
    return false;
  }
  if (!output.Keep(item.container_index, entry["parts"])) return false;
  if (item.primary) {
    const Json& m = entry["metrics"];
    summary.metrics.set_mse(JsonNumber(m, "mse"));
    summary.metrics.set_rmse(JsonNumber(m, "rmse"));
    summary.metrics.set_max_abs_error(JsonNumber(m, "max_abs_error"));
    summary.metrics.set_sqnr_db(JsonNumber(m, "sqnr_db"));
    summary.metrics.set_cosine_similarity(JsonNumber(m, "cosine_similarity"));
    summary.metrics.set_bits_per_weight(JsonNumber(m, "bits_per_weight"));
  }
  summary.action =
      fake_quant ? TensorAction::kFakeQuantized : TensorAction::kQuantized;
  if (entry.contains("bytes_out") && entry["bytes_out"].is_number_unsigned()) {
    summary.bytes_out += entry["bytes_out"].get<uint64_t>();
  }
  if (entry.contains("server") && entry["server"].is_string()) {
    summary.server = entry["server"].get<std::string>();
  }
  return true;
}

// Stores what the servers answer: the output parts, the manifest line and
// the tensor's summary.
class Store {
 public:
  Store(bool fake_quant, const std::vector<PipelineItem>& items,
        std::vector<TensorSummary>& summaries, OutputContainer& output,
        Manifest& manifest, Progress& progress)
      : fake_quant_(fake_quant),
        items_(items),
        summaries_(summaries),
        output_(output),
        manifest_(manifest),
        progress_(progress) {}

  absl::Status Answer(size_t index, const TensorReply& reply,
                      const DispatchInfo& info) {
    const PipelineItem& item = items_[index];
    QUANTD_RETURN_IF_ERROR(output_.Check(item.container_index, reply));
    absl::StatusOr<std::vector<StoredPart>> parts =
        output_.Write(item.container_index, reply);
    if (!parts.ok()) {
      RecordIoError(parts.status());
      return parts.status();
    }
    OrderedJson crcs = OrderedJson::object();
    uint64_t bytes_out = 0;
    for (const StoredPart& part : *parts) {
      crcs[part.name] = part.crc32c;
      bytes_out += part.bytes;
    }
    TensorSummary& summary = summaries_[item.summary];
    OrderedJson line;
    line["tensor"] = item.request.name;
    line["input_crc32c"] = InputCrc(item);
    line["scheme"] = summary.scheme;
    line["fake_quant"] = fake_quant_;
    line["parts"] = std::move(crcs);
    line["metrics"] = MetricsToJson(reply.metrics);
    line["bytes_out"] = bytes_out;
    line["server"] = info.server;
    if (absl::Status status = manifest_.Append(line); !status.ok()) {
      RecordIoError(status);
      return status;
    }
    absl::MutexLock lock(&mu_);
    if (summary.action != TensorAction::kFailed) {
      summary.action = fake_quant_ ? TensorAction::kFakeQuantized
                                   : TensorAction::kQuantized;
    }
    if (item.primary) {
      summary.metrics = reply.metrics;
      summary.output_metrics = reply.output_metrics;
      summary.activation_range = reply.activation_range;
      summary.w8a8 = reply.w8a8;
    }
    summary.bytes_out += bytes_out;
    summary.seconds += reply.seconds;
    summary.queue_seconds += reply.queue_seconds;
    summary.compute_seconds += reply.compute_seconds;
    summary.server = info.server;
    summary.attempts = std::max(summary.attempts, info.attempts);
    summary.moved = summary.moved || info.moved;
    progress_.Done(item.request.data.size(), /*failed=*/false);
    return absl::OkStatus();
  }

  void Fail(size_t index, const absl::Status& status,
            const DispatchInfo& info) {
    absl::MutexLock lock(&mu_);
    const PipelineItem& item = items_[index];
    TensorSummary& summary = summaries_[item.summary];
    if (summary.action != TensorAction::kFailed) summary.status = status;
    summary.action = TensorAction::kFailed;
    summary.attempts = std::max(summary.attempts, info.attempts);
    progress_.Done(item.request.data.size(), /*failed=*/true);
  }

  absl::Status io_status() {
    absl::MutexLock lock(&mu_);
    return io_status_;
  }

 private:
  void RecordIoError(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    if (io_status_.ok()) io_status_ = status;
  }

  const bool fake_quant_;
  const std::vector<PipelineItem>& items_;
  std::vector<TensorSummary>& summaries_;  // each entry guarded by mu_
  OutputContainer& output_;
  Manifest& manifest_;
  Progress& progress_;
  absl::Mutex mu_;
  absl::Status io_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Manifest>> OpenManifest(
    const OutputContainer& output) {
  return Manifest::Open(output.partial_path() + ".manifest",
                        /*keep_existing=*/output.resumed());
}

uint64_t KeepFinished(OutputContainer& output, const Manifest& manifest,
                      bool fake_quant, std::vector<PipelineItem>& items,
                      RunSummary& run) {
  // Pieces per tensor, and how many of them were kept.
  absl::flat_hash_map<size_t, std::pair<int, int>> pieces;
  for (const PipelineItem& item : items) ++pieces[item.summary].first;
  std::vector<PipelineItem> to_send;
  uint64_t send_bytes = 0;
  for (PipelineItem& item : items) {
    TensorSummary& s = run.tensors[item.summary];
    const Json* entry =
        output.resumed() ? manifest.Find(item.request.name) : nullptr;
    if (entry != nullptr && TryResume(*entry, item, fake_quant, output, s)) {
      ++pieces[item.summary].second;
      continue;
    }
    send_bytes += item.request.data.size();
    to_send.push_back(std::move(item));
  }
  items = std::move(to_send);
  for (const auto& [summary, count] : pieces) {
    if (count.second == count.first) {
      run.tensors[summary].resumed = true;
      ++run.num_resumed;
    }
  }
  return send_bytes;
}

absl::Status SendItems(
    const RunOptions& options, bool fake_quant, const DispatchOptions& dispatch,
    absl::Span<const DispatchServer> targets,
    const std::vector<std::vector<CalibrationSetRequest>>& batch_sets,
    const std::vector<PipelineItem>& items, uint64_t send_bytes,
    OutputContainer& output, Manifest& manifest, RunSummary& run,
    const std::function<absl::Status()>& copy_while_sending) {
  Progress progress(options.progress, static_cast<int64_t>(items.size()),
                    send_bytes);
  Store store(fake_quant, items, run.tensors, output, manifest, progress);
  for (const PipelineItem& item : items) {
    if (!item.request.calibration.empty()) {
      run.tensors[item.summary].calibration = item.request.calibration;
    }
  }
  std::thread sender([&] {
    // One round per batch of calibration sets.
    for (size_t b = 0; b < batch_sets.size(); ++b) {
      std::vector<TensorRequest> batch;
      std::vector<size_t> where;
      for (size_t i = 0; i < items.size(); ++i) {
        if (items[i].batch != b) continue;
        batch.push_back(items[i].request);
        where.push_back(i);
      }
      if (batch.empty()) continue;
      DispatchOptions round = dispatch;
      round.job.calibration_sets = batch_sets[b];
      Dispatch(
          round, targets, batch,
          [&](size_t i, TensorReply reply, const DispatchInfo& info) {
            return store.Answer(where[i], reply, info);
          },
          [&](size_t i, const absl::Status& status, const DispatchInfo& info) {
            store.Fail(where[i], status, info);
          });
    }
  });
  absl::Status copy_status =
      copy_while_sending ? copy_while_sending() : absl::OkStatus();
  sender.join();
  progress.Finish();
  QUANTD_RETURN_IF_ERROR(copy_status);
  return store.io_status();
}

void ComputeTotals(uint64_t send_bytes, absl::Time start, RunSummary& run) {
  double quantized_bits = 0;
  for (const TensorSummary& s : run.tensors) {
    ++run.num_tensors;
    run.params += s.num_elements;
    run.input_bytes += s.bytes_in;
    switch (s.action) {
      case TensorAction::kQuantized:
      case TensorAction::kFakeQuantized:
        ++run.num_quantized;
        run.quantized_params += s.num_elements;
        quantized_bits += std::round(s.metrics.bits_per_weight() *
                                     static_cast<double>(s.num_elements));
        run.output_bytes += s.bytes_out;
        break;
      case TensorAction::kCopied:
        ++run.num_copied;
        run.output_bytes += s.bytes_out;
        break;
      case TensorAction::kFailed:
        ++run.num_failed;
        break;
    }
  }
  run.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (run.params > 0) {
    run.bits_per_weight = 8.0 * static_cast<double>(run.output_bytes) /
                          static_cast<double>(run.params);
  }
  if (run.quantized_params > 0) {
    run.quantized_bits_per_weight =
        quantized_bits / static_cast<double>(run.quantized_params);
  }
  run.bytes_per_second =
      static_cast<double>(send_bytes) / std::max(run.wall_seconds, 1e-9);
}

absl::Status FinishRun(const RunOptions& options, OutputContainer& output,
                       Manifest& manifest, RunSummary& run) {
  if (run.num_failed == 0) {
    QUANTD_RETURN_IF_ERROR(output.Finish());
    manifest.Remove();
    run.output = options.output;
  } else {
    run.partial = output.partial_path();
  }
  output.Close();
  if (options.write_report) {
    run.report = options.report.empty() ? options.output + ".report.json"
                                        : options.report;
    QUANTD_RETURN_IF_ERROR(
        WriteTextFile(run.report, WritePrettyJson(SummaryToJson(run))));
  }
  return absl::OkStatus();
}

}  // namespace quantd

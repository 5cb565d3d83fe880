#include "client/quantize_model.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <list>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/calibration_input.h"
#include "client/dispatcher.h"
#include "client/overrides.h"
#include "client/quantd_client.h"
#include "client/safetensors.h"
#include "base/crc32c.h"
#include "kernels/dtype.h"
#include "kernels/ggml_formats.h"
#include "kernels/layout.h"
#include "kernels/scheme.h"
#include "base/status_macros.h"
#include "kernels/version.h"

namespace quantd {

const char* TensorActionName(TensorAction action) {
  switch (action) {
    case TensorAction::kQuantized:
      return "quantized";
    case TensorAction::kFakeQuantized:
      return "fake_quantized";
    case TensorAction::kCopied:
      return "copied";
    case TensorAction::kFailed:
      return "failed";
  }
  return "unknown";
}

namespace {

// For a gRPC target URI that names replicas ("dns:///host:port",
// "dns://authority/host:port", "ipv4:a:p,b:p", "ipv6:[a]:p,[b]:p"): how many
// addresses it stands for now (at least 1; a name that does not resolve
// counts 1 and gRPC reports the error). 0 for a plain "host:port".
int BalancedAddressCount(absl::string_view target) {
  for (absl::string_view scheme : {"ipv4:", "ipv6:"}) {
    if (absl::ConsumePrefix(&target, scheme)) {
      return static_cast<int>(
          std::vector<absl::string_view>(
              absl::StrSplit(target, ',', absl::SkipEmpty()))
              .size());
    }
  }
  if (!absl::ConsumePrefix(&target, "dns:")) return 0;
  if (absl::ConsumePrefix(&target, "//")) {
    const size_t slash = target.find('/');  // skip the DNS server authority
    target = slash == absl::string_view::npos ? "" : target.substr(slash + 1);
  }
  std::string host(target);
  std::string port = "443";  // gRPC's default port for dns: targets
  if (absl::ConsumePrefix(&target, "[")) {
    const size_t close = target.find(']');
    if (close == absl::string_view::npos) return 1;
    host = std::string(target.substr(0, close));
    if (absl::StartsWith(target.substr(close + 1), ":")) {
      port = std::string(target.substr(close + 2));
    }
  } else if (const size_t colon = target.rfind(':');
             colon != absl::string_view::npos) {
    host = std::string(target.substr(0, colon));
    port = std::string(target.substr(colon + 1));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return 1;
  absl::flat_hash_set<std::string> distinct;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    distinct.insert(
        std::string(reinterpret_cast<const char*>(a->ai_addr), a->ai_addrlen));
  }
  freeaddrinfo(found);
  return std::max(static_cast<int>(distinct.size()), 1);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// One safetensors entry NAME.<suffix> of a quantized tensor's output: a
// row of the part table the layout has (its file suffix, element type and
// shape: .qweight, .scales, .zero_points, .block_scales, .g_idx, ...), or
// a per-tensor value of the layout stored as one F32 (NF4 double quant's
// .scale_offset, NVFP4's .tensor_scale). A fake-quant output is the
// dequantized values alone, under the tensor's own name (already in the
// original space, so AWQ's channel scales are not needed).
struct OutputEntry {
  std::string suffix;  // "" for the tensor's own name
  absl::string_view dtype;
  std::vector<int64_t> shape;
  std::optional<Part> part;       // a part of the reply, or
  float (*value)(const v1::Layout&) = nullptr;  // a per-tensor value
};
std::vector<OutputEntry> OutputEntries(const Layout& layout, bool fake_quant) {
  std::vector<OutputEntry> entries;
  for (const PartSpec& spec : PartTable()) {
    const bool wanted = fake_quant ? spec.part == Part::kFakeQuant
                                   : PartBytes(spec, layout, OutputKind::kPacked) > 0;
    if (!wanted) continue;
    entries.push_back({std::string(spec.file_suffix),
                       PartElementName(spec.element), spec.file_shape(layout),
                       spec.part});
  }
  if (fake_quant) return entries;
  if (layout.num_second_scales > 0) {
    entries.push_back({"scale_offset", "F32", {1}, std::nullopt,
                       [](const v1::Layout& l) { return l.scale_offset(); }});
  }
  if (layout.scheme.format == "modelopt_nvfp4") {
    entries.push_back({"tensor_scale", "F32", {1}, std::nullopt,
                       [](const v1::Layout& l) { return l.tensor_scale(); }});
  }
  return entries;
}

std::string EntryName(const std::string& tensor, const OutputEntry& entry) {
  return entry.suffix.empty() ? tensor : absl::StrCat(tensor, ".", entry.suffix);
}

// A tensor to send, and what the output expects of it.
struct Item {
  const SafetensorsTensor* tensor = nullptr;
  DType dtype = DType::kF32;
  Scheme scheme;
  bool has_scheme_override = false;
  Layout layout;
  size_t summary = 0;  // index into summaries
};

// Shows progress on stderr.
class Progress {
 public:
  Progress(ProgressStyle style, int64_t total_tensors, uint64_t total_bytes)
      : total_tensors_(total_tensors),
        total_bytes_(total_bytes),
        start_(absl::Now()),
        last_print_(start_) {
    if (style == ProgressStyle::kAuto) {
      style =
          ::isatty(STDERR_FILENO) ? ProgressStyle::kBar : ProgressStyle::kLines;
    }
    style_ = style;
  }

  void Done(uint64_t bytes, bool failed) {
    absl::MutexLock lock(&mu_);
    ++done_tensors_;
    done_bytes_ += bytes;
    if (failed) ++failed_;
    absl::Time now = absl::Now();
    absl::Duration every = style_ == ProgressStyle::kBar
                               ? absl::Milliseconds(100)
                               : absl::Seconds(5);
    if (now - last_print_ >= every || done_tensors_ == total_tensors_) {
      last_print_ = now;
      Print(now);
    }
  }

  void Finish() {
    absl::MutexLock lock(&mu_);
    if (style_ == ProgressStyle::kBar && total_tensors_ > 0) {
      std::fputc('\n', stderr);
    }
  }

 private:
  void Print(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (style_ == ProgressStyle::kNone) return;
    double seconds = std::max(absl::ToDoubleSeconds(now - start_), 1e-9);
    double fraction = total_bytes_ == 0 ? 1.0
                                        : static_cast<double>(done_bytes_) /
                                              static_cast<double>(total_bytes_);
    std::string text = absl::StrFormat(
        "%d/%d tensors  %.2f/%.2f GB  %.1f MB/s%s", done_tensors_,
        total_tensors_, static_cast<double>(done_bytes_) / 1e9,
        static_cast<double>(total_bytes_) / 1e9,
        static_cast<double>(done_bytes_) / 1e6 / seconds,
        failed_ > 0 ? absl::StrCat("  ", failed_, " failed") : "");
    if (style_ == ProgressStyle::kBar) {
      constexpr int kWidth = 30;
      int filled = static_cast<int>(fraction * kWidth);
      std::string bar(static_cast<size_t>(filled), '=');
      bar.resize(kWidth, ' ');
      std::fprintf(stderr, "\r[%s] %3d%%  %s\033[K", bar.c_str(),
                   static_cast<int>(fraction * 100), text.c_str());
    } else {
      std::fprintf(stderr, "quantctl: %s\n", text.c_str());
    }
    std::fflush(stderr);
  }

  const int64_t total_tensors_;
  const uint64_t total_bytes_;
  const absl::Time start_;
  ProgressStyle style_;
  absl::Mutex mu_;
  absl::Time last_print_ ABSL_GUARDED_BY(mu_);
  int64_t done_tensors_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
};

OrderedJson MetricsToJson(const v1::Metrics& m) {
  OrderedJson j;
  j["mse"] = m.mse();
  j["rmse"] = m.rmse();
  j["max_abs_error"] = m.max_abs_error();
  j["sqnr_db"] = m.sqnr_db();
  j["cosine_similarity"] = m.cosine_similarity();
  j["bits_per_weight"] = m.bits_per_weight();
  return j;
}

// The partial output's manifest, OUTPUT.partial.manifest: one JSON line per
// tensor whose output parts are complete in OUTPUT.partial, written after
// the parts. A rerun of the same command (same plan, hence the same
// safetensors header) keeps every tensor whose line matches its input
// (CRC-32C), scheme and output kind and whose parts in the file still have
// the CRC-32C the line records; everything else is sent again. A torn last
// line (the writer killed mid-line) is ignored.
class Manifest {
 public:
  static absl::StatusOr<std::unique_ptr<Manifest>> Open(const std::string& path,
                                                        bool keep_existing) {
    auto manifest = std::unique_ptr<Manifest>(new Manifest());
    manifest->path_ = path;
    if (keep_existing) {
      std::ifstream in(path, std::ios::binary);
      std::string line;
      while (std::getline(in, line)) {
        absl::StatusOr<Json> entry = ParseJson(line);
        if (!entry.ok() || !entry->is_object() || !entry->contains("tensor") ||
            !(*entry)["tensor"].is_string()) {
          continue;  // torn or foreign line
        }
        std::string name = (*entry)["tensor"].get<std::string>();
        manifest->entries_[name] = *std::move(entry);
      }
    }
    manifest->fd_ = ::open(path.c_str(),
                           O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
                               (keep_existing ? 0 : O_TRUNC),
                           0644);
    if (manifest->fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
    }
    return manifest;
  }
  ~Manifest() {
    if (fd_ >= 0) ::close(fd_);
  }

  const Json* Find(const std::string& tensor) const {
    auto it = entries_.find(tensor);
    return it == entries_.end() ? nullptr : &it->second;
  }

  // Appends one line with a single write (O_APPEND): lines never interleave.
  absl::Status Append(const OrderedJson& entry) {
    const std::string line = WriteJson(entry) + "\n";
    absl::MutexLock lock(&mu_);
    size_t done = 0;
    while (done < line.size()) {
      ssize_t w = ::write(fd_, line.data() + done, line.size() - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(
            absl::StrCat("cannot write ", path_, ": ", std::strerror(errno)));
      }
      done += static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }

  // After the output is complete.
  void Remove() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ::unlink(path_.c_str());
  }

 private:
  Manifest() = default;
  std::string path_;
  int fd_ = -1;
  absl::flat_hash_map<std::string, Json> entries_;  // fixed after Open
  absl::Mutex mu_;
};

// The output tensors of one quantized tensor.
std::vector<std::string> OutputNames(const Item& item, bool fake_quant) {
  std::vector<std::string> names;
  for (const OutputEntry& e : OutputEntries(item.layout, fake_quant)) {
    names.push_back(EntryName(item.tensor->name, e));
  }
  return names;
}

double JsonNumber(const Json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) {
    return std::numeric_limits<double>::infinity();  // written as null
  }
  return j[key].get<double>();
}

// Whether a manifest entry still describes item's output in the file; on
// success marks its parts complete in `writer` and fills `summary`.
bool TryResume(const Json& entry, const Item& item, bool fake_quant,
               SafetensorsWriter& writer, TensorSummary& summary) {
  const auto input_crc =
      Crc32c(item.tensor->data.data(), item.tensor->data.size());
  if (!entry.contains("input_crc32c") ||
      !entry["input_crc32c"].is_number_unsigned() ||
      entry["input_crc32c"].get<uint64_t>() != input_crc ||
      !entry.contains("scheme") || !entry["scheme"].is_string() ||
      entry["scheme"].get<std::string>() != summary.scheme ||
      !entry.contains("fake_quant") || !entry["fake_quant"].is_boolean() ||
      entry["fake_quant"].get<bool>() != fake_quant ||
      !entry.contains("parts") || !entry["parts"].is_object() ||
      !entry.contains("metrics") || !entry["metrics"].is_object()) {
    return false;
  }
  const std::vector<std::string> names = OutputNames(item, fake_quant);
  const Json& parts = entry["parts"];
  if (parts.size() != names.size()) return false;
  for (const std::string& name : names) {
    if (!parts.contains(name) || !parts[name].is_number_unsigned()) {
      return false;
    }
    absl::StatusOr<uint32_t> crc = writer.SlotCrc32c(name);
    if (!crc.ok() || parts[name].get<uint64_t>() != *crc) return false;
  }
  for (const std::string& name : names) {
    if (!writer.MarkComplete(name).ok()) return false;
  }
  const Json& m = entry["metrics"];
  summary.metrics.set_mse(JsonNumber(m, "mse"));
  summary.metrics.set_rmse(JsonNumber(m, "rmse"));
  summary.metrics.set_max_abs_error(JsonNumber(m, "max_abs_error"));
  summary.metrics.set_sqnr_db(JsonNumber(m, "sqnr_db"));
  summary.metrics.set_cosine_similarity(JsonNumber(m, "cosine_similarity"));
  summary.metrics.set_bits_per_weight(JsonNumber(m, "bits_per_weight"));
  summary.action =
      fake_quant ? TensorAction::kFakeQuantized : TensorAction::kQuantized;
  if (entry.contains("bytes_out") && entry["bytes_out"].is_number_unsigned()) {
    summary.bytes_out = entry["bytes_out"].get<uint64_t>();
  }
  if (entry.contains("server") && entry["server"].is_string()) {
    summary.server = entry["server"].get<std::string>();
  }
  summary.resumed = true;
  return true;
}

// Stores what the servers answer: the output parts, the manifest line and
// the tensor's summary.
class Store {
 public:
  Store(const QuantizeModelOptions& options, const std::vector<Item>& items,
        std::vector<TensorSummary>& summaries, SafetensorsWriter& writer,
        Manifest& manifest, Progress& progress)
      : options_(options),
        items_(items),
        summaries_(summaries),
        writer_(writer),
        manifest_(manifest),
        progress_(progress) {}

  absl::Status Answer(size_t index, const TensorReply& reply,
                      const DispatchInfo& info) {
    const Item& item = items_[index];
    const std::string& name = item.tensor->name;
    struct Entry {
      std::string name;
      const std::vector<uint8_t>* bytes;
      uint32_t crc32c;  // the reply's checked CRC, or of a scalar
    };
    std::vector<Entry> parts;
    std::list<std::vector<uint8_t>> scalars;  // per-tensor f32 values
    const Layout& want = item.layout;
    if (!options_.fake_quant) {
      // The client checked the reply's layout against its scheme and shape;
      // it must also be the one this output was planned for.
      if (absl::Status s = CheckLayoutProto(want, reply.layout); !s.ok()) {
        return absl::InternalError(
            absl::StrCat("tensor \"", name, "\": server ", s.message(),
                         "; the output was planned for ",
                         SchemeToString(want.scheme)));
      }
    }
    for (const OutputEntry& e : OutputEntries(want, options_.fake_quant)) {
      if (e.part.has_value()) {
        parts.push_back({EntryName(name, e), &reply.part(*e.part),
                         reply.crc32c[*e.part]});
      } else {
        const float v = e.value(reply.layout);
        std::vector<uint8_t>& scalar = scalars.emplace_back(sizeof(float));
        std::memcpy(scalar.data(), &v, sizeof(float));
        parts.push_back({EntryName(name, e), &scalar,
                         Crc32c(scalar.data(), scalar.size())});
      }
    }
    OrderedJson crcs = OrderedJson::object();
    uint64_t bytes_out = 0;
    for (const Entry& entry : parts) {
      absl::Status status = writer_.Write(entry.name, 0, *entry.bytes);
      if (!status.ok()) {
        RecordIoError(status);
        return status;
      }
      crcs[entry.name] = entry.crc32c;
      bytes_out += entry.bytes->size();
    }
    TensorSummary& summary = summaries_[item.summary];
    OrderedJson line;
    line["tensor"] = name;
    line["input_crc32c"] =
        Crc32c(item.tensor->data.data(), item.tensor->data.size());
    line["scheme"] = summary.scheme;
    line["fake_quant"] = options_.fake_quant;
    line["parts"] = std::move(crcs);
    line["metrics"] = MetricsToJson(reply.metrics);
    line["bytes_out"] = bytes_out;
    line["server"] = info.server;
    if (absl::Status status = manifest_.Append(line); !status.ok()) {
      RecordIoError(status);
      return status;
    }
    absl::MutexLock lock(&mu_);
    summary.action = options_.fake_quant ? TensorAction::kFakeQuantized
                                         : TensorAction::kQuantized;
    summary.metrics = reply.metrics;
    summary.bytes_out = bytes_out;
    summary.seconds = reply.seconds;
    summary.queue_seconds = reply.queue_seconds;
    summary.compute_seconds = reply.compute_seconds;
    summary.server = info.server;
    summary.attempts = info.attempts;
    summary.moved = info.moved;
    summary.output_metrics = reply.output_metrics;
    summary.activation_range = reply.activation_range;
    summary.w8a8 = reply.w8a8;
    progress_.Done(summary.bytes_in, /*failed=*/false);
    return absl::OkStatus();
  }

  void Fail(size_t index, const absl::Status& status,
            const DispatchInfo& info) {
    absl::MutexLock lock(&mu_);
    TensorSummary& summary = summaries_[items_[index].summary];
    summary.action = TensorAction::kFailed;
    summary.status = status;
    summary.attempts = info.attempts;
    progress_.Done(summary.bytes_in, /*failed=*/true);
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

  const QuantizeModelOptions& options_;
  const std::vector<Item>& items_;
  std::vector<TensorSummary>& summaries_;  // each entry guarded by mu_
  SafetensorsWriter& writer_;
  Manifest& manifest_;
  Progress& progress_;
  absl::Mutex mu_;
  absl::Status io_status_ ABSL_GUARDED_BY(mu_);
};

std::string LayoutMetadata(const Layout& layout, const std::string& dtype,
                           bool fake_quant) {
  OrderedJson j;
  j["scheme"] = SchemeToString(layout.scheme);
  j["format"] = layout.scheme.format;
  if (layout.IsBlockFormat()) {
    // A ggml block format: NAME.qweight holds the blocks as in a GGUF.
    const GgmlFormatTraits* ggml = GgmlFormatOf(layout.scheme);
    j["ggml_type"] = ggml != nullptr ? static_cast<int>(ggml->type) : -1;
    j["block_size"] = layout.block_size;
    j["block_bytes"] = layout.block_bytes;
    j["bits_per_weight"] = layout.BitsPerWeight();
    j["shape"] = layout.shape;
    j["packed_bytes"] = layout.packed_bytes;
    j["dtype"] = dtype;
    j["fake_quant"] = fake_quant;
    return WriteJson(j);
  }
  if (layout.kind != LayoutKind::kInt) {
    // Float, codebook and HQQ formats: message Layout of the proto states
    // how the parts read.
    j["kind"] = std::string(LayoutKindName(layout.kind));
    j["bits"] = layout.bits;
    j["granularity"] = std::string(GranularityName(layout.scheme.granularity));
    j["group_size"] = layout.group_size;
    j["shape"] = layout.shape;
    j["num_scales"] = layout.num_groups;
    j["packed_bytes"] = layout.packed_bytes;
    j["num_block_scales"] = layout.num_block_scales;
    j["block_scale_group_size"] = layout.block_scale_group_size;
    j["num_second_scales"] = layout.num_second_scales;
    j["num_codebooks"] = layout.num_codebooks;
    j["codebook_entries"] = layout.codebook_entries;
    j["float_zero_points"] = layout.float_zero_points;
    j["double_quant"] = layout.scheme.double_quant;
    j["bits_per_weight"] = layout.BitsPerWeight();
    j["dtype"] = dtype;
    j["fake_quant"] = fake_quant;
    return WriteJson(j);
  }
  j["bits"] = layout.bits;
  j["symmetric"] = layout.scheme.symmetric;
  if (layout.scheme.full_range) j["full_range"] = true;
  j["granularity"] = std::string(GranularityName(layout.scheme.granularity));
  j["group_size"] = layout.group_size;
  j["shape"] = layout.shape;
  j["num_scales"] = layout.num_groups;
  j["packed_bytes"] = layout.packed_bytes;
  // NAME.g_idx: column c of row r uses scale r * groups_per_row + g_idx[c]
  // (with --fake-quant no .g_idx is written: the values are dequantized).
  if (layout.group_index && !fake_quant) j["group_index"] = true;
  j["dtype"] = dtype;
  j["fake_quant"] = fake_quant;
  return WriteJson(j);
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

// Why `tensor` is copied through rather than quantized; empty if it is
// quantized.
std::string CopyNote(const SafetensorsTensor& tensor,
                     const SchemeOverride* rule, bool quantize_1d) {
  if (!ParseDType(tensor.dtype).ok()) {
    return absl::StrCat("dtype ", tensor.dtype, " is not quantizable");
  }
  if (rule != nullptr && !rule->scheme) {
    return absl::StrCat("skipped by override \"", rule->text, "\"");
  }
  if (tensor.num_elements == 0) return "empty tensor";
  if (tensor.shape.size() < 2 && !quantize_1d) {
    return tensor.shape.empty() ? "scalar" : "1-D tensor";
  }
  return "";
}

// Whole bits of `scheme` on `tensor`; nullopt if it does not fit.
std::optional<double> SchemeBits(const Scheme& scheme,
                                 const SafetensorsTensor& tensor) {
  absl::StatusOr<Layout> layout = MakeLayout(scheme, tensor.shape);
  if (!layout.ok()) return std::nullopt;
  return std::round(layout->BitsPerWeight() *
                    static_cast<double>(tensor.num_elements));
}

// The run's calibration input: the sets, each quantized tensor's set, and
// the batches the sets are sent in.
struct Calibration {
  CalibrationInputs inputs;
  // Tensor name -> its set (index into inputs.sets).
  absl::flat_hash_map<std::string, size_t> set_of;
  // Set index -> batch index.
  std::vector<size_t> batch_of_set;
  size_t num_batches = 0;
  std::optional<v1::ActivationRangeOptions> range;

  // The batch of a tensor: that of its set, or num_batches (no set).
  size_t BatchOf(const std::string& tensor) const {
    auto it = set_of.find(tensor);
    return it == set_of.end() ? num_batches : batch_of_set[it->second];
  }
  const CalibrationSetRequest* SetOf(const std::string& tensor) const {
    auto it = set_of.find(tensor);
    return it == set_of.end() ? nullptr : &inputs.sets[it->second];
  }
  // The sets of batch `b` (none for b == num_batches).
  std::vector<CalibrationSetRequest> Sets(size_t b) const {
    std::vector<CalibrationSetRequest> out;
    for (size_t i = 0; i < inputs.sets.size(); ++i) {
      if (batch_of_set[i] == b) out.push_back(inputs.sets[i]);
    }
    return out;
  }
};

absl::StatusOr<Calibration> LoadCalibration(
    const QuantizeModelOptions& options, const SafetensorsModel& model,
    absl::Span<const SchemeOverride> overrides) {
  Calibration c;
  if (!options.activation_range.empty()) {
    QUANTD_ASSIGN_OR_RETURN(c.range,
                            ParseActivationRange(options.activation_range));
  }
  if (options.calibration_files.empty()) {
    if (!options.calibration_rules.empty() || options.holdout_rows != 0) {
      return absl::InvalidArgumentError(
          "calibration rules and held-back rows need calibration files");
    }
    return c;
  }
  if (options.holdout_rows < 0 || options.holdout_rows > 4096) {
    return absl::InvalidArgumentError("held-back rows must be in [0, 4096]");
  }
  CalibrationInputOptions input_options;
  input_options.holdout_rows = options.holdout_rows;
  input_options.channel_histograms =
      c.range.has_value() && c.range->per_channel() &&
      c.range->method() != v1::RANGE_METHOD_MINMAX &&
      c.range->method() != v1::RANGE_METHOD_UNSPECIFIED;
  QUANTD_ASSIGN_OR_RETURN(
      c.inputs, LoadCalibrationInputs(options.calibration_files, input_options));
  QUANTD_ASSIGN_OR_RETURN(std::vector<CalibrationRule> rules,
                          ParseCalibrationRules(options.calibration_rules));
  std::vector<bool> used(c.inputs.sets.size(), false);
  for (const SafetensorsTensor* tensor : model.tensors()) {
    if (!CopyNote(*tensor, FindOverride(overrides, tensor->name),
                  options.quantize_1d)
             .empty()) {
      continue;
    }
    QUANTD_ASSIGN_OR_RETURN(const CalibrationSetRequest* set,
                            CalibrationSetFor(tensor->name, rules, c.inputs));
    if (set == nullptr) continue;
    const int64_t row = tensor->shape.empty() ? 1 : tensor->shape.back();
    if (set->features != row) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", tensor->name, "\" has rows of ", row,
          " elements and its calibration set \"", set->name, "\" has ",
          set->features, " features"));
    }
    const size_t index = static_cast<size_t>(set - c.inputs.sets.data());
    c.set_of[tensor->name] = index;
    used[index] = true;
  }
  // Sets no tensor uses are not sent.
  std::vector<CalibrationSetRequest> kept;
  std::vector<size_t> new_index(c.inputs.sets.size());
  for (size_t i = 0; i < c.inputs.sets.size(); ++i) {
    if (!used[i]) continue;
    new_index[i] = kept.size();
    kept.push_back(c.inputs.sets[i]);
  }
  for (auto& [name, index] : c.set_of) index = new_index[index];
  c.inputs.sets = std::move(kept);
  const std::vector<std::vector<size_t>> batches = BatchCalibrationSets(
      c.inputs.sets, std::max<int64_t>(options.calibration_batch_bytes, 1));
  c.batch_of_set.resize(c.inputs.sets.size());
  for (size_t b = 0; b < batches.size(); ++b) {
    for (size_t i : batches[b]) c.batch_of_set[i] = b;
  }
  c.num_batches = batches.size();
  return c;
}

// The mixed-precision pass: measures the candidates on every quantized
// tensor that no override fixes and chooses their schemes for the target.
absl::StatusOr<MixedPrecisionPlan> PlanMixedPrecision(
    const QuantizeModelOptions& options, const SafetensorsModel& model,
    absl::Span<const SchemeOverride> rules, const Scheme& default_scheme,
    uint64_t max_tensor_bytes, const DispatchOptions& dispatch,
    absl::Span<const DispatchServer> targets, const Calibration& calibration) {
  if (!(options.target_bpw >= 0) || !std::isfinite(options.target_bpw) ||
      (options.target_bpw > 0) == (options.target_bytes > 0)) {
    return absl::InvalidArgumentError(
        "give one mixed-precision target: a positive bits per weight or a "
        "positive byte count");
  }
  MixedPrecisionPlan plan;
  plan.target_bpw = options.target_bpw;
  plan.target_bytes = options.target_bytes;
  QUANTD_ASSIGN_OR_RETURN(std::vector<Scheme> candidates,
                          ParseCandidates(options.candidates));
  for (const Scheme& c : candidates) {
    plan.candidates.push_back(SchemeToString(c));
  }
  std::vector<CandidateTensor> free;
  std::vector<const SafetensorsTensor*> free_tensors;
  for (const SafetensorsTensor* tensor : model.tensors()) {
    const SchemeOverride* rule = FindOverride(rules, tensor->name);
    if (!CopyNote(*tensor, rule, options.quantize_1d).empty()) {
      plan.copied_bits += 8.0 * static_cast<double>(tensor->data.size());
      continue;
    }
    plan.quantized_params += tensor->num_elements;
    if (rule != nullptr || tensor->data.size() > max_tensor_bytes) {
      // Fixed by an override (a tensor that cannot be sent fails the run).
      plan.fixed_bits +=
          SchemeBits(rule != nullptr ? *rule->scheme : default_scheme, *tensor)
              .value_or(0);
      continue;
    }
    const CalibrationSetRequest* set = calibration.SetOf(tensor->name);
    free.push_back({tensor->name, *ParseDType(tensor->dtype), tensor->shape,
                    tensor->data, set != nullptr ? set->name : ""});
    free_tensors.push_back(tensor);
  }
  // Measured batch by batch of calibration sets (one round without sets).
  std::vector<TensorCurve> curves(free.size());
  for (size_t b = 0; b <= calibration.num_batches; ++b) {
    std::vector<CandidateTensor> subset;
    std::vector<size_t> where;
    for (size_t i = 0; i < free.size(); ++i) {
      if (calibration.BatchOf(free[i].name) != b) continue;
      subset.push_back(free[i]);
      where.push_back(i);
    }
    if (subset.empty()) continue;
    DispatchOptions batch = dispatch;
    batch.job.calibration_sets = calibration.Sets(b);
    std::vector<TensorCurve> measured =
        MeasureCandidates(batch, targets, subset, candidates);
    for (size_t k = 0; k < measured.size(); ++k) {
      curves[where[k]] = std::move(measured[k]);
    }
  }
  bool all_output = !free.empty();
  for (const CandidateTensor& t : free) all_output &= !t.calibration.empty();
  if (options.mixed_error == "output" && !all_output) {
    return absl::InvalidArgumentError(
        "mixed precision on the output error needs a calibration set for every "
        "tensor it chooses for");
  }
  if (options.mixed_error != "auto" && options.mixed_error != "weight" &&
      options.mixed_error != "output") {
    return absl::InvalidArgumentError(absl::StrCat(
        "mixed error \"", options.mixed_error, "\": expected auto, weight or "
        "output"));
  }
  plan.measure = options.mixed_error == "output" ||
                         (options.mixed_error == "auto" && all_output)
                     ? ErrorMeasure::kOutput
                     : ErrorMeasure::kWeight;
  for (size_t i = 0; i < curves.size(); ++i) {
    if (curves[i].points.empty()) {  // nothing fits: the default scheme
      plan.fixed_bits +=
          SchemeBits(default_scheme, *free_tensors[i]).value_or(0);
    } else {
      plan.curves.push_back(std::move(curves[i]));
    }
  }
  const double quantized_params = static_cast<double>(plan.quantized_params);
  const double total =
      plan.target_bpw > 0
          ? plan.target_bpw * quantized_params
          : 8.0 * static_cast<double>(plan.target_bytes) - plan.copied_bits;
  plan.budget_bits = total - plan.fixed_bits;
  double min_bits = plan.fixed_bits;
  for (const TensorCurve& curve : plan.curves) {
    double least = std::numeric_limits<double>::infinity();
    for (const CurvePoint& p : curve.points) least = std::min(least, p.bits);
    min_bits += least;
  }
  if (min_bits > total) {
    return absl::InvalidArgumentError(
        plan.target_bpw > 0
            ? absl::StrFormat(
                  "target of %.3f bits per weight is below the least the "
                  "candidates and overrides allow, %.3f",
                  plan.target_bpw,
                  min_bits / std::max(quantized_params, 1.0))
            : absl::StrFormat(
                  "target of %d bytes is below the least the candidates, "
                  "overrides and copied tensors allow, %.0f",
                  plan.target_bytes, (min_bits + plan.copied_bits) / 8));
  }
  MixedChoiceOptions choice_options;
  choice_options.measure = plan.measure;
  QUANTD_ASSIGN_OR_RETURN(
      plan.choice,
      ChooseMixedPrecision(plan.curves, plan.budget_bits, choice_options));
  plan.planned_bpw =
      (plan.fixed_bits + plan.choice.bits) / std::max(quantized_params, 1.0);
  return plan;
}

}  // namespace

absl::StatusOr<RunSummary> QuantizeModel(const QuantizeModelOptions& options) {
  const absl::Time start = absl::Now();
  if (options.model.empty()) {
    return absl::InvalidArgumentError("no model given");
  }
  if (options.output.empty()) {
    return absl::InvalidArgumentError("no output file given");
  }
  if (options.servers.empty() && options.channels.empty()) {
    return absl::InvalidArgumentError("no server given");
  }
  if (options.streams_per_server < 1 || options.max_in_flight_tensors < 1 ||
      options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        "streams per server, tensors in flight and attempts must be >= 1");
  }
  absl::StatusOr<Scheme> parsed_scheme = ParseScheme(options.scheme);
  if (!parsed_scheme.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheme \"", options.scheme, "\": ", parsed_scheme.status().message()));
  }
  const Scheme default_scheme = *parsed_scheme;
  QUANTD_ASSIGN_OR_RETURN(std::vector<SchemeOverride> rules,
                          ParseOverrides(options.overrides));
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsModel> model,
                          SafetensorsModel::Open(options.model));
  QUANTD_ASSIGN_OR_RETURN(Calibration calibration,
                          LoadCalibration(options, *model, rules));

  // Servers: one channel and client each, checked with GetServerInfo.
  RunSummary run;
  run.model = options.model;
  run.scheme = SchemeToString(default_scheme);
  run.fake_quant = options.fake_quant;
  std::vector<std::shared_ptr<grpc::Channel>> channels = options.channels;
  std::vector<std::string> addresses;
  // Per channel: how many replicas it balances over (1 but for URI targets).
  std::vector<int> replicas(channels.size(), 1);
  if (channels.empty()) {
    QUANTD_ASSIGN_OR_RETURN(
        std::shared_ptr<grpc::ChannelCredentials> credentials,
        MakeChannelCredentials(options.tls_ca_file, options.tls_cert_file,
                               options.tls_key_file));
    for (const std::string& address : options.servers) {
      const int count = BalancedAddressCount(address);
      grpc::ChannelArguments args;
      if (count > 0) args.SetLoadBalancingPolicyName("round_robin");
      channels.push_back(grpc::CreateCustomChannel(address, credentials, args));
      addresses.push_back(address);
      replicas.push_back(std::max(count, 1));
    }
  } else {
    for (size_t i = 0; i < channels.size(); ++i) {
      addresses.push_back(absl::StrCat("channel", i));
    }
  }
  std::vector<std::unique_ptr<QuantdClient>> clients;
  std::vector<uint64_t> chunk_bytes;
  // Servers that do not answer at start are left out (and reported) as long
  // as one answers.
  std::vector<std::unique_ptr<QuantdClient>> all_clients(channels.size());
  std::vector<absl::StatusOr<v1::ServerInfo>> infos(channels.size());
  std::vector<std::string> peers(channels.size());
  {
    std::vector<std::thread> probes;
    for (size_t i = 0; i < channels.size(); ++i) {
      all_clients[i] =
          std::make_unique<QuantdClient>(channels[i], options.auth_token);
      probes.emplace_back([&, i] {
        infos[i] = all_clients[i]->GetServerInfo(
            absl::Seconds(options.connect_timeout_seconds), &peers[i]);
      });
    }
    for (std::thread& t : probes) t.join();
  }
  std::vector<std::string> answering;
  std::vector<int> answering_replicas;
  for (size_t i = 0; i < channels.size(); ++i) {
    if (!infos[i].ok()) {
      ServerSummary down;
      down.address = addresses[i];
      down.status = absl::Status(infos[i].status().code(),
                                 absl::StrCat("server ", addresses[i], ": ",
                                              infos[i].status().message()));
      run.down_servers.push_back(std::move(down));
    }
  }
  if (run.down_servers.size() == channels.size()) {
    return run.down_servers.front().status;
  }
  for (size_t i = 0; i < channels.size(); ++i) {
    if (!infos[i].ok()) continue;
    clients.push_back(std::move(all_clients[i]));
    answering.push_back(addresses[i]);
    answering_replicas.push_back(replicas[i]);
    std::string peer = peers[i];
    absl::StatusOr<v1::ServerInfo>& info = infos[i];
    if (replicas[i] > 1) {
      // round_robin gives a new stream to the next *connected* replica, and
      // streams live for the whole run: wait (bounded) until every replica
      // has answered once, so the streams start spread over all of them.
      absl::flat_hash_set<std::string> answered = {peer};
      const absl::Time deadline = absl::Now() + absl::Seconds(2);
      while (static_cast<int>(answered.size()) < replicas[i] &&
             absl::Now() < deadline) {
        if (clients.back()->GetServerInfo(absl::Seconds(1), &peer).ok()) {
          answered.insert(peer);
        } else {
          absl::SleepFor(absl::Milliseconds(20));
        }
      }
    }
    uint64_t chunk = uint64_t{1} << 20;
    if (info->limits().max_chunk_bytes() > 0) {
      chunk = std::min(chunk, info->limits().max_chunk_bytes());
    }
    chunk_bytes.push_back(chunk);
    run.servers.push_back({addresses[i], *std::move(info), absl::OkStatus()});
  }
  addresses = std::move(answering);
  replicas = std::move(answering_replicas);

  // The smallest tensor limit of all servers (any tensor may go anywhere).
  uint64_t max_tensor_bytes = std::numeric_limits<uint64_t>::max();
  std::string max_tensor_bytes_server;
  for (const ServerSummary& server : run.servers) {
    uint64_t limit = server.info.limits().max_tensor_bytes();
    if (limit > 0 && limit < max_tensor_bytes) {
      max_tensor_bytes = limit;
      max_tensor_bytes_server = server.address;
    }
  }

  std::vector<DispatchServer> targets;
  for (size_t i = 0; i < clients.size(); ++i) {
    targets.push_back({clients[i].get(), addresses[i], chunk_bytes[i],
                       options.streams_per_server * replicas[i]});
  }
  DispatchOptions dispatch;
  dispatch.job.scheme = default_scheme;
  dispatch.job.output =
      options.fake_quant ? v1::OUTPUT_KIND_FAKE_QUANT : v1::OUTPUT_KIND_PACKED;
  dispatch.job.client_name = options.client_name;
  dispatch.job.max_in_flight_tensors = options.max_in_flight_tensors;
  dispatch.max_attempts = options.max_attempts;
  if (calibration.range) dispatch.job.activation_range = *calibration.range;

  // Mixed precision: each free tensor's scheme, chosen for the target.
  absl::flat_hash_map<std::string, Scheme> mixed_schemes;
  if (options.target_bpw != 0 || options.target_bytes != 0) {
    const bool talk = options.progress != ProgressStyle::kNone;
    if (talk) {
      std::fprintf(stderr, "quantctl: measuring the candidate schemes\n");
    }
    QUANTD_ASSIGN_OR_RETURN(
        MixedPrecisionPlan plan,
        PlanMixedPrecision(options, *model, rules, default_scheme,
                           max_tensor_bytes, dispatch, targets, calibration));
    for (size_t i = 0; i < plan.curves.size(); ++i) {
      const CurvePoint& point = plan.curves[i].points[static_cast<size_t>(
          plan.choice.point[i])];
      mixed_schemes[plan.curves[i].name] = *ParseScheme(point.scheme);
    }
    if (talk) {
      std::fprintf(stderr,
                   "quantctl: mixed precision: %d tensors, planned %.3f bits "
                   "per weight\n",
                   static_cast<int>(plan.curves.size()), plan.planned_bpw);
    }
    run.mixed = std::move(plan);
  }

  // Plan: what happens to each tensor, and the output's entries.
  std::vector<TensorSummary>& summaries = run.tensors;
  std::vector<Item> items;
  std::vector<SafetensorsWriter::Entry> entries;
  std::map<std::string, std::string> metadata = model->metadata();
  metadata["quantd.version"] = QUANTD_VERSION;
  metadata["quantd.format_version"] = kOutputFormatVersion;
  metadata["quantd.scheme"] = run.scheme;
  metadata["quantd.fake_quant"] = options.fake_quant ? "true" : "false";
  std::vector<const SafetensorsTensor*> copies;
  uint64_t send_bytes = 0;
  for (const SafetensorsTensor* tensor : model->tensors()) {
    TensorSummary s;
    s.name = tensor->name;
    s.dtype = tensor->dtype;
    s.shape = tensor->shape;
    s.num_elements = tensor->num_elements;
    s.bytes_in = tensor->data.size();
    const SchemeOverride* rule = FindOverride(rules, tensor->name);
    absl::StatusOr<DType> dtype = ParseDType(tensor->dtype);
    s.note = CopyNote(*tensor, rule, options.quantize_1d);
    if (!s.note.empty()) {
      s.action = TensorAction::kCopied;
      s.bytes_out = s.bytes_in;
      entries.push_back({tensor->name, tensor->dtype, tensor->shape});
      copies.push_back(tensor);
      summaries.push_back(std::move(s));
      continue;
    }
    Item item;
    item.tensor = tensor;
    item.dtype = *dtype;
    item.scheme = rule != nullptr ? *rule->scheme : default_scheme;
    if (auto it = mixed_schemes.find(tensor->name);
        rule == nullptr && it != mixed_schemes.end()) {
      item.scheme = it->second;
    }
    item.has_scheme_override = !(item.scheme == default_scheme);
    s.scheme = SchemeToString(item.scheme);
    absl::StatusOr<Layout> layout = MakeLayout(item.scheme, tensor->shape);
    if (!layout.ok()) {
      s.action = TensorAction::kFailed;
      s.status =
          absl::Status(layout.status().code(),
                       absl::StrCat("tensor \"", tensor->name, "\" ",
                                    ShapeText(s.shape), " with scheme ",
                                    s.scheme, ": ", layout.status().message()));
      summaries.push_back(std::move(s));
      continue;
    }
    item.layout = *std::move(layout);
    if (tensor->data.size() > max_tensor_bytes) {
      // Known in advance: sending it would only be refused.
      s.action = TensorAction::kFailed;
      s.status = absl::ResourceExhaustedError(
          absl::StrCat("tensor \"", tensor->name, "\": ", tensor->data.size(),
                       " bytes exceed max_tensor_bytes=", max_tensor_bytes,
                       " of server ", max_tensor_bytes_server));
      summaries.push_back(std::move(s));
      continue;
    }
    metadata[absl::StrCat("quantd.", tensor->name)] =
        LayoutMetadata(item.layout, tensor->dtype, options.fake_quant);
    for (const OutputEntry& e : OutputEntries(item.layout, options.fake_quant)) {
      entries.push_back(
          {EntryName(tensor->name, e), std::string(e.dtype), e.shape});
    }
    item.summary = summaries.size();
    send_bytes += tensor->data.size();
    items.push_back(std::move(item));
    summaries.push_back(std::move(s));
  }

  SafetensorsWriter::Options writer_options;
  writer_options.resume = options.resume;
  writer_options.keep_partial = true;  // a failed run can be resumed
  QUANTD_ASSIGN_OR_RETURN(
      std::unique_ptr<SafetensorsWriter> writer,
      SafetensorsWriter::Create(options.output, std::move(entries), metadata,
                                writer_options));
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<Manifest> manifest,
                          Manifest::Open(writer->partial_path() + ".manifest",
                                         /*keep_existing=*/writer->resumed()));

  // Tensors an interrupted earlier run already finished are kept.
  std::vector<Item> to_send;
  for (Item& item : items) {
    TensorSummary& s = summaries[item.summary];
    const Json* entry =
        writer->resumed() ? manifest->Find(item.tensor->name) : nullptr;
    if (entry != nullptr &&
        TryResume(*entry, item, options.fake_quant, *writer, s)) {
      ++run.num_resumed;
      send_bytes -= item.tensor->data.size();
      continue;
    }
    to_send.push_back(std::move(item));
  }
  items = std::move(to_send);

  Progress progress(options.progress, static_cast<int64_t>(items.size()),
                    send_bytes);
  Store store(options, items, summaries, *writer, *manifest, progress);
  std::vector<TensorRequest> requests;
  requests.reserve(items.size());
  for (const Item& item : items) {
    TensorRequest request;
    request.name = item.tensor->name;
    request.dtype = item.dtype;
    request.shape = item.tensor->shape;
    if (item.has_scheme_override) request.scheme = item.scheme;
    request.data = item.tensor->data;
    if (const CalibrationSetRequest* set = calibration.SetOf(request.name);
        set != nullptr) {
      request.calibration = set->name;
      summaries[item.summary].calibration = set->name;
    }
    requests.push_back(std::move(request));
  }
  std::thread sender([&] {
    // One round per batch of calibration sets, then the tensors without.
    for (size_t b = 0; b <= calibration.num_batches; ++b) {
      std::vector<TensorRequest> batch;
      std::vector<size_t> where;
      for (size_t i = 0; i < requests.size(); ++i) {
        if (calibration.BatchOf(requests[i].name) != b) continue;
        batch.push_back(requests[i]);
        where.push_back(i);
      }
      if (batch.empty()) continue;
      DispatchOptions round = dispatch;
      round.job.calibration_sets = calibration.Sets(b);
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
  // Tensors passed through are copied while the streams run.
  absl::Status copy_status;
  for (const SafetensorsTensor* tensor : copies) {
    constexpr size_t kPiece = size_t{64} << 20;
    for (size_t offset = 0; offset < tensor->data.size() && copy_status.ok();
         offset += kPiece) {
      copy_status = writer->Write(tensor->name, offset,
                                  tensor->data.subspan(offset, kPiece));
    }
  }
  sender.join();
  progress.Finish();
  QUANTD_RETURN_IF_ERROR(copy_status);
  QUANTD_RETURN_IF_ERROR(store.io_status());

  // Totals.
  double quantized_bits = 0;
  for (const TensorSummary& s : summaries) {
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
  if (run.num_failed == 0) {
    QUANTD_RETURN_IF_ERROR(writer->Finish());
    manifest->Remove();
    run.output = options.output;
  } else {
    run.partial = writer->partial_path();
  }
  writer.reset();
  if (options.write_report) {
    run.report = options.report.empty() ? options.output + ".report.json"
                                        : options.report;
    QUANTD_RETURN_IF_ERROR(
        WriteTextFile(run.report, WritePrettyJson(SummaryToJson(run))));
  }
  return run;
}

namespace {

// `format` is a printf conversion of one double, e.g. "%.3f".
std::string Number(double v, const char* format) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, v);
  return buffer;
}

std::string Pad(absl::string_view text, size_t width, bool right) {
  if (text.size() >= width) return std::string(text);
  std::string fill(width - text.size(), ' ');
  return right ? absl::StrCat(fill, text) : absl::StrCat(text, fill);
}

}  // namespace

namespace {

// What a mixed-precision run achieved, from the final results.
struct MixedAchieved {
  uint64_t bytes = 0;       // quantized tensors packed + copied tensors
  double free_error = 0;    // total squared error of the chosen tensors
};

MixedAchieved Achieved(const RunSummary& s) {
  MixedAchieved a;
  absl::flat_hash_set<std::string> free;
  if (s.mixed) {
    for (const TensorCurve& curve : s.mixed->curves) free.insert(curve.name);
  }
  double bits = 0;
  for (const TensorSummary& t : s.tensors) {
    const auto n = static_cast<double>(t.num_elements);
    if (t.action == TensorAction::kCopied) {
      bits += 8.0 * static_cast<double>(t.bytes_out);
    } else if (t.action != TensorAction::kFailed) {
      bits += std::round(t.metrics.bits_per_weight() * n);
      if (free.contains(t.name)) a.free_error += t.metrics.mse() * n;
    }
  }
  a.bytes = static_cast<uint64_t>(std::ceil(bits / 8));
  return a;
}

}  // namespace

std::string FormatTotals(const RunSummary& s) {
  std::string mixed;
  if (s.mixed) {
    const MixedAchieved a = Achieved(s);
    mixed = absl::StrFormat(
        "mixed precision: %s  achieved: %.3f bpw over quantized tensors, %d "
        "bytes  error: %.4e (lower bound %.4e)  %d tensors chosen from %d "
        "candidates\n",
        s.mixed->target_bpw > 0
            ? absl::StrFormat("target %.3f bpw", s.mixed->target_bpw)
            : absl::StrFormat("target %d bytes", s.mixed->target_bytes),
        s.quantized_bits_per_weight, a.bytes, a.free_error,
        s.mixed->choice.lower_bound, s.mixed->curves.size(),
        s.mixed->candidates.size());
  }
  return absl::StrFormat(
      "tensors: %d (%d quantized%s, %d copied, %d failed)  params: %d  "
      "input: %.3f GB  output: %.3f GB  bpw: %.3f  %.3f GB/s  wall: %.2f s\n",
      s.num_tensors, s.num_quantized,
      s.num_resumed > 0 ? absl::StrCat(", ", s.num_resumed, " resumed") : "",
      s.num_copied, s.num_failed, s.params,
      static_cast<double>(s.input_bytes) / 1e9,
      static_cast<double>(s.output_bytes) / 1e9, s.bits_per_weight,
      s.bytes_per_second / 1e9, s.wall_seconds) +
         mixed;
}

std::string FormatSummaryTable(const RunSummary& summary) {
  // Output error (calibration sets) and W8A8 columns when any tensor has them.
  bool output = false;
  bool w8a8 = false;
  for (const TensorSummary& t : summary.tensors) {
    output |= t.output_metrics.has_value();
    w8a8 |= t.w8a8.has_value();
  }
  std::vector<std::string> header = {"name",    "shape",  "scheme",
                                     "bpw",     "MSE",    "max|err|",
                                     "SQNR dB", "cosine"};
  if (output) header.push_back("out err");
  if (w8a8) header.push_back("W8A8 err");
  header.push_back("ms");
  std::vector<std::vector<std::string>> rows;
  for (const TensorSummary& t : summary.tensors) {
    std::vector<std::string> row = {t.name, ShapeText(t.shape)};
    switch (t.action) {
      case TensorAction::kQuantized:
      case TensorAction::kFakeQuantized:
        row.push_back(t.action == TensorAction::kFakeQuantized
                          ? absl::StrCat(t.scheme, " (fake)")
                          : t.scheme);
        row.push_back(Number(t.metrics.bits_per_weight(), "%.3f"));
        row.push_back(Number(t.metrics.mse(), "%.3e"));
        row.push_back(Number(t.metrics.max_abs_error(), "%.3e"));
        row.push_back(Number(t.metrics.sqnr_db(), "%.2f"));
        row.push_back(Number(t.metrics.cosine_similarity(), "%.6f"));
        if (output) {
          row.push_back(t.output_metrics
                            ? Number(t.output_metrics->relative_error(), "%.4f")
                            : "-");
        }
        if (w8a8) {
          row.push_back(t.w8a8 ? Number(t.w8a8->relative_error(), "%.4f") : "-");
        }
        row.push_back(t.resumed ? "resumed"
                                : absl::StrCat(Number(t.seconds * 1e3, "%.1f"),
                                               t.moved ? " (moved)" : ""));
        break;
      case TensorAction::kCopied:
        row.push_back(absl::StrCat("copy ", t.dtype));
        row.push_back(absl::StrCat("(", t.note, ")"));
        break;
      case TensorAction::kFailed:
        row.push_back(t.scheme.empty() ? "-" : t.scheme);
        row.push_back(absl::StrCat("FAILED: ", t.status.ToString()));
        break;
    }
    rows.push_back(std::move(row));
  }
  // Widths over complete rows only (notes and errors run to the end).
  std::vector<size_t> widths(header.size());
  for (size_t c = 0; c < header.size(); ++c) widths[c] = header[c].size();
  for (const auto& row : rows) {
    if (row.size() != header.size()) {
      for (size_t c = 0; c < 3; ++c)
        widths[c] = std::max(widths[c], row[c].size());
      continue;
    }
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) out += "  ";
      bool last = c + 1 == row.size();
      out += last && row.size() != header.size()
                 ? row[c]
                 : Pad(row[c], widths[c], /*right=*/c >= 3);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  for (const ServerSummary& server : summary.down_servers) {
    out += absl::StrCat("server left out: ", server.status.ToString(), "\n");
  }
  out += FormatTotals(summary);
  return out;
}

OrderedJson SummaryToJson(const RunSummary& s) {
  OrderedJson j;
  j["quantd_report_version"] = 1;
  j["model"] = s.model;
  j["output"] = s.output;
  if (!s.partial.empty()) j["partial"] = s.partial;
  j["scheme"] = s.scheme;
  j["fake_quant"] = s.fake_quant;
  OrderedJson servers = OrderedJson::array();
  for (const ServerSummary& server : s.servers) {
    OrderedJson e;
    e["address"] = server.address;
    e["version"] = server.info.version();
    e["build"] = server.info.build();
    e["kernel_isa"] = server.info.kernel_isa();
    e["workers"] = server.info.workers();
    e["limits"] = {
        {"max_tensor_bytes", server.info.limits().max_tensor_bytes()},
        {"max_chunk_bytes", server.info.limits().max_chunk_bytes()},
        {"memory_budget_bytes", server.info.limits().memory_budget_bytes()},
        {"max_queue_jobs", server.info.limits().max_queue_jobs()}};
    servers.push_back(std::move(e));
  }
  for (const ServerSummary& server : s.down_servers) {
    OrderedJson e;
    e["address"] = server.address;
    e["status"] = absl::StatusCodeToString(server.status.code());
    e["error"] = std::string(server.status.message());
    servers.push_back(std::move(e));
  }
  j["servers"] = std::move(servers);
  OrderedJson tensors = OrderedJson::array();
  for (const TensorSummary& t : s.tensors) {
    OrderedJson e;
    e["name"] = t.name;
    e["dtype"] = t.dtype;
    e["shape"] = t.shape;
    e["num_elements"] = t.num_elements;
    e["action"] = TensorActionName(t.action);
    e["scheme"] = t.scheme;
    if (!t.note.empty()) e["note"] = t.note;
    e["status"] = absl::StatusCodeToString(t.status.code());
    if (!t.status.ok()) e["error"] = std::string(t.status.message());
    if (t.action == TensorAction::kQuantized ||
        t.action == TensorAction::kFakeQuantized) {
      e["metrics"] = MetricsToJson(t.metrics);
      e["seconds"] = t.seconds;
      e["queue_seconds"] = t.queue_seconds;
      e["compute_seconds"] = t.compute_seconds;
      e["server"] = t.server;
      e["resumed"] = t.resumed;
      e["moved"] = t.moved;
      if (!t.calibration.empty()) e["calibration"] = t.calibration;
      if (t.output_metrics) {
        OrderedJson o;
        o["tokens"] = t.output_metrics->tokens();
        o["relative_error"] = t.output_metrics->relative_error();
        o["sqnr_db"] = t.output_metrics->sqnr_db();
        o["error_sq"] = t.output_metrics->error_sq();
        e["output_metrics"] = std::move(o);
      }
      if (t.activation_range) {
        OrderedJson r;
        r["method"] = v1::RangeMethod_Name(t.activation_range->method());
        r["symmetric"] = t.activation_range->symmetric();
        r["lo"] = t.activation_range->lo();
        r["hi"] = t.activation_range->hi();
        r["scale"] = t.activation_range->scale();
        r["zero_point"] = t.activation_range->zero_point();
        if (t.activation_range->channels_size() > 0) {
          std::vector<float> scales;
          std::vector<int32_t> zero_points;
          for (const v1::ChannelRange& c : t.activation_range->channels()) {
            scales.push_back(c.scale());
            zero_points.push_back(c.zero_point());
          }
          r["channel_scales"] = scales;
          r["channel_zero_points"] = zero_points;
        }
        e["activation_range"] = std::move(r);
      }
      if (t.w8a8) {
        OrderedJson w;
        w["rows"] = t.w8a8->rows();
        w["relative_error"] = t.w8a8->relative_error();
        w["sqnr_db"] = t.w8a8->sqnr_db();
        w["weight_only_relative_error"] = t.w8a8->weight_only_relative_error();
        w["clipped_fraction"] = t.w8a8->clipped_fraction();
        w["activation_scale"] = t.w8a8->activation_scale();
        w["gemm"] = t.w8a8->gemm();
        e["w8a8"] = std::move(w);
      }
    }
    e["bytes_in"] = t.bytes_in;
    e["bytes_out"] = t.bytes_out;
    e["attempts"] = t.attempts;
    tensors.push_back(std::move(e));
  }
  j["tensors"] = std::move(tensors);
  OrderedJson totals;
  totals["tensors"] = s.num_tensors;
  totals["quantized"] = s.num_quantized;
  totals["copied"] = s.num_copied;
  totals["failed"] = s.num_failed;
  totals["resumed"] = s.num_resumed;
  totals["params"] = s.params;
  totals["quantized_params"] = s.quantized_params;
  totals["input_bytes"] = s.input_bytes;
  totals["output_bytes"] = s.output_bytes;
  totals["bits_per_weight"] = s.bits_per_weight;
  totals["bytes_per_second"] = s.bytes_per_second;
  totals["wall_seconds"] = s.wall_seconds;
  totals["quantized_bits_per_weight"] = s.quantized_bits_per_weight;
  j["totals"] = std::move(totals);
  if (s.mixed) {
    OrderedJson mixed = MixedPrecisionToJson(*s.mixed);
    const MixedAchieved a = Achieved(s);
    mixed["achieved_bpw"] = s.quantized_bits_per_weight;
    mixed["achieved_bytes"] = a.bytes;
    mixed["achieved_error"] = a.free_error;
    j["mixed_precision"] = std::move(mixed);
  }
  return j;
}

}  // namespace quantd

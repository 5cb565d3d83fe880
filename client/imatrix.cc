#include "client/imatrix.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "client/gguf.h"
#include "client/safetensors.h"  // MappedFile

namespace quantd {
namespace {

// A bounds-checked cursor over the legacy file.
class Cursor {
 public:
  Cursor(absl::Span<const uint8_t> bytes, const std::string& path)
      : bytes_(bytes), path_(path) {}
  bool at_end() const { return pos_ == bytes_.size(); }
  size_t remaining() const { return bytes_.size() - pos_; }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", what));
  }
  absl::Status I32(int32_t& v, absl::string_view reading) {
    return Raw(&v, 4, reading);
  }
  absl::Status Raw(void* dst, size_t n, absl::string_view reading) {
    if (remaining() < n) {
      return Error(absl::StrCat("truncated while reading ", reading));
    }
    if (n > 0) std::memcpy(dst, bytes_.data() + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  absl::Span<const uint8_t> bytes_;
  const std::string& path_;
  size_t pos_ = 0;
};

absl::Status CheckFinite(const std::string& path, const std::string& name,
                         const std::vector<float>& weights) {
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!std::isfinite(weights[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": entry ", name, ": weight ", i, " is ",
                       weights[i], " (not finite)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Imatrix> LoadLegacy(const std::string& path,
                                   absl::Span<const uint8_t> bytes) {
  Imatrix out;
  out.legacy = true;
  Cursor in(bytes, path);
  int32_t n_entries = 0;
  QUANTD_RETURN_IF_ERROR(in.I32(n_entries, "the entry count"));
  if (n_entries < 1) {
    return in.Error(absl::StrCat("no entries (count ", n_entries, ")"));
  }
  for (int32_t e = 0; e < n_entries; ++e) {
    const std::string what = absl::StrCat("entry ", e + 1);
    int32_t len = 0;
    QUANTD_RETURN_IF_ERROR(in.I32(len, what));
    if (len < 0 || static_cast<size_t>(len) > in.remaining()) {
      return in.Error(absl::StrCat(what, ": bad name length ", len));
    }
    std::string name(static_cast<size_t>(len), '\0');
    QUANTD_RETURN_IF_ERROR(in.Raw(name.data(), name.size(), what));
    // llama.cpp reads the name as a C string.
    name.resize(std::strlen(name.c_str()));
    int32_t ncall = 0;
    int32_t nval = 0;
    QUANTD_RETURN_IF_ERROR(in.I32(ncall, what));
    QUANTD_RETURN_IF_ERROR(in.I32(nval, what));
    if (nval < 1 || static_cast<size_t>(nval) > in.remaining() / 4) {
      return in.Error(absl::StrCat(what, " (", name, "): bad value count ",
                                   nval));
    }
    std::vector<float> sums(static_cast<size_t>(nval));
    QUANTD_RETURN_IF_ERROR(in.Raw(sums.data(), sums.size() * 4, what));
    std::vector<float> weights(sums.size());
    for (size_t i = 0; i < sums.size(); ++i) {
      weights[i] = ncall > 0 ? sums[i] / static_cast<float>(ncall) : sums[i];
    }
    QUANTD_RETURN_IF_ERROR(CheckFinite(path, name, weights));
    out.weights[name] = std::move(weights);  // a repeated name: last wins
  }
  if (!in.at_end()) {
    int32_t chunks = 0;
    if (in.I32(chunks, "").ok()) {
      out.chunk_count = chunks;
      int32_t len = 0;
      if (in.I32(len, "").ok() && len > 0 &&
          static_cast<size_t>(len) <= in.remaining()) {
        std::string dataset(static_cast<size_t>(len), '\0');
        QUANTD_RETURN_IF_ERROR(in.Raw(dataset.data(), dataset.size(), ""));
        dataset.resize(std::strlen(dataset.c_str()));
        out.datasets.push_back(std::move(dataset));
      }
    }
  }
  return out;
}

absl::StatusOr<Imatrix> LoadGguf(const std::string& path) {
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file,
                          GgufFile::Open(path));
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (file->tensors().empty()) return bad("no entries (no tensors)");
  const GgufMetadata& meta = file->metadata();
  const GgufValue* datasets = meta.Find("imatrix.datasets");
  const GgufValue* chunk_count = meta.Find("imatrix.chunk_count");
  const GgufValue* chunk_size = meta.Find("imatrix.chunk_size");
  if (datasets == nullptr || chunk_count == nullptr || chunk_size == nullptr) {
    return bad(
        "missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, "
        "imatrix.chunk_size)");
  }
  Imatrix out;
  if (datasets->is_array() &&
      datasets->element_type() == GgufValueType::kString) {
    out.datasets = datasets->strings();
  }
  if (chunk_count->type() != GgufValueType::kUint32) {
    return bad("imatrix.chunk_count is not a UINT32");
  }
  out.chunk_count = static_cast<int64_t>(*chunk_count->AsUint());

  struct Parts {
    const GgufTensor* in_sum = nullptr;
    const GgufTensor* in_sum2 = nullptr;
    const GgufTensor* counts = nullptr;
  };
  std::map<std::string, Parts> parts;
  for (const GgufTensor& t : file->tensors()) {
    absl::string_view name = t.name;
    if (absl::ConsumeSuffix(&name, ".in_sum2")) {
      parts[std::string(name)].in_sum2 = &t;
    } else if (absl::ConsumeSuffix(&name, ".in_sum")) {
      parts[std::string(name)].in_sum = &t;
    } else if (absl::ConsumeSuffix(&name, ".counts")) {
      parts[std::string(name)].counts = &t;
    }
  }
  for (const auto& [name, p] : parts) {
    if (p.in_sum2 == nullptr || p.counts == nullptr ||
        (p.in_sum != nullptr && p.in_sum->num_elements != p.in_sum2->num_elements)) {
      return bad(absl::StrCat("mismatched sums and counts for ", name));
    }
    if (p.in_sum2->type != kGgmlTypeF32 || p.counts->type != kGgmlTypeF32 ||
        (p.in_sum != nullptr && p.in_sum->type != kGgmlTypeF32)) {
      return bad(absl::StrCat("sums and counts for ", name, " must be F32"));
    }
    const int64_t n_sums = p.in_sum2->num_elements;
    const int64_t n_counts = p.counts->num_elements;
    if (n_counts == 0 || n_sums == 0) continue;  // as llama-quantize skips
    if (n_sums % n_counts != 0) {
      return bad(absl::StrCat("entry ", name, ": ", n_sums,
                              " sums are not a multiple of its ", n_counts,
                              " counts"));
    }
    const int64_t ne0 = n_sums / n_counts;
    std::vector<float> sums(static_cast<size_t>(n_sums));
    std::memcpy(sums.data(), p.in_sum2->data.data(), sums.size() * 4);
    std::vector<float> counts(static_cast<size_t>(n_counts));
    std::memcpy(counts.data(), p.counts->data.data(), counts.size() * 4);
    std::vector<float> weights(sums.size());
    for (int64_t j = 0; j < n_counts; ++j) {
      // llama.cpp stores the count as an integer (rounded) and divides by
      // it as a float.
      const float c = counts[static_cast<size_t>(j)];
      const float count =
          std::isfinite(c) && std::fabs(c) < 1e18f
              ? static_cast<float>(std::llround(c))
              : c;
      for (int64_t i = 0; i < ne0; ++i) {
        const size_t k = static_cast<size_t>(j * ne0 + i);
        weights[k] = count > 0.0f ? sums[k] / count : 1.0f;
      }
    }
    QUANTD_RETURN_IF_ERROR(CheckFinite(path, name, weights));
    out.weights[name] = std::move(weights);
  }
  return out;
}

}  // namespace

const std::vector<float>* Imatrix::Find(absl::string_view name) const {
  auto it = weights.find(std::string(name));
  return it == weights.end() ? nullptr : &it->second;
}

absl::StatusOr<Imatrix> LoadImatrix(const std::string& path) {
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped,
                          MappedFile::Open(path));
  absl::Span<const uint8_t> bytes = mapped->bytes();
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0) {
    return LoadGguf(path);
  }
  return LoadLegacy(path, bytes);
}

}  // namespace quantd

// Importance matrices made by llama.cpp's llama-imatrix, read into the
// per-column weights llama-quantize hands to ggml's quantizers.
//
//   QUANTD_ASSIGN_OR_RETURN(Imatrix imatrix, LoadImatrix("model.imatrix"));
//   const std::vector<float>* w = imatrix.Find("blk.0.ffn_down.weight");
//   // w->size() == row length (times the expert count for 3-D tensors)
//
// Two file formats are read:
//   - GGUF (current llama-imatrix output): per weight NAME an F32 tensor
//     NAME.in_sum2 (sums of squared activations, ne0 per matrix, one matrix
//     per expert) and an F32 tensor NAME.counts (activations seen, one per
//     matrix), optionally NAME.in_sum; keys imatrix.datasets (array of
//     strings), imatrix.chunk_count and imatrix.chunk_size (u32) must be
//     present. Weight = in_sum2 / round(count), or 1 where the count is 0.
//   - the legacy binary ".dat" (little-endian): i32 n_entries, then per
//     entry i32 name length, the name, i32 ncall, i32 nval, nval f32
//     values; then optionally i32 chunk count, i32 dataset name length and
//     the name. Weight = value / ncall (the value itself when ncall is 0).
// The format is told by the file's first four bytes ("GGUF" or not).
//
// Thread-safety: Imatrix is a value; LoadImatrix is reentrant.
#ifndef QUANTD_CLIENT_IMATRIX_H_
#define QUANTD_CLIENT_IMATRIX_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

struct Imatrix {
  // Weights per tensor name, in name order.
  std::map<std::string, std::vector<float>> weights;
  std::vector<std::string> datasets;  // may be empty
  int64_t chunk_count = 0;            // 0 if not recorded
  bool legacy = false;                // read from the .dat format

  // nullptr if the tensor has no entry.
  const std::vector<float>* Find(absl::string_view name) const;
};

// Reads `path`. NotFound if it does not exist; InvalidArgument naming the
// file (and entry) when it is truncated or malformed, has no entries, lacks
// the GGUF metadata keys, has an in_sum2 without counts (or the reverse) or
// not in F32, a sum count that is not a multiple of the count count, or a
// weight that is NaN or infinite (llama-quantize refuses those too).
absl::StatusOr<Imatrix> LoadImatrix(const std::string& path);

}  // namespace quantd

#endif  // QUANTD_CLIENT_IMATRIX_H_

// Calibration activations for quantctl: safetensors files whose 2-D float
// tensors are the inputs X of a model's linear layers (rows = tokens,
// columns = input features), one calibration set per tensor, named after it,
// and the rules that give each weight its set.
//
//   QUANTD_ASSIGN_OR_RETURN(CalibrationInputs inputs,
//       LoadCalibrationInputs({"acts.safetensors"}, options));
//   QUANTD_ASSIGN_OR_RETURN(std::vector<CalibrationRule> rules,
//       ParseCalibrationRules({"self_attn\\.[qkv]_proj=layers.0.attn_in"}));
//   const CalibrationSetRequest* set =
//       CalibrationSetFor("model.layers.0.mlp.up_proj.weight", rules, inputs);
//   // The set "model.layers.0.mlp.up_proj" (the weight's module) unless a
//   // rule names another; nullptr when there is none.
//
// Batches. A server holds a stream's sets (about 16 bytes per feature²
// each) for the stream's life, so a run sends them in batches:
// BatchCalibrationSets groups consecutive sets up to a byte limit, and each
// batch is one round of streams with the tensors that use its sets.
#ifndef QUANTD_CLIENT_CALIBRATION_INPUT_H_
#define QUANTD_CLIENT_CALIBRATION_INPUT_H_

#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/quantd_client.h"
#include "client/safetensors.h"

namespace quantd {

struct CalibrationInputOptions {
  // CalibrationHeader.holdout_rows of every set (capped at half its rows).
  int64_t holdout_rows = 0;
  // CalibrationHeader.channel_histograms of every set.
  bool channel_histograms = false;
};

// The sets of the files, in file order then tensor-name order; their data
// points into the files, which this owns.
struct CalibrationInputs {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::vector<CalibrationSetRequest> sets;
};

// Opens every file; each 2-D F32 / F16 / BF16 tensor with at least one row
// becomes an ACTIVATIONS set named after the tensor. InvalidArgument naming
// the file (and tensor) for a file without such tensors, a tensor of
// another rank or dtype, or a set name given twice; NotFound for a missing
// file.
absl::StatusOr<CalibrationInputs> LoadCalibrationInputs(
    absl::Span<const std::string> paths, const CalibrationInputOptions& options);

// "REGEX=SET": weights whose name the ECMAScript REGEX finds use SET
// ("none": no set). First match wins.
struct CalibrationRule {
  std::string text;
  std::regex regex;
  std::string set;
};
// InvalidArgument quoting the rule for a missing '=', an empty or invalid
// regex or an empty set name.
absl::StatusOr<std::vector<CalibrationRule>> ParseCalibrationRules(
    absl::Span<const std::string> texts);

// The set of weight `name`: the first rule's set (nullptr for "none"), else
// the set named `name` without a trailing ".weight", else the set named
// `name`; nullptr if none exists. A rule naming an unknown set is
// InvalidArgument naming the rule and the weight.
absl::StatusOr<const CalibrationSetRequest*> CalibrationSetFor(
    absl::string_view name, absl::Span<const CalibrationRule> rules,
    const CalibrationInputs& inputs);

// Bytes a server reserves for `set` on a stream (CalibrationHeader's
// features comment): 16·features² + 3 KiB·features (+ 8 KiB·features with
// per-channel histograms) + the held-back rows.
int64_t CalibrationSetServerBytes(const CalibrationSetRequest& set);

// Consecutive groups of `sets` (indices) whose server bytes sum to at most
// `limit_bytes`; a set above the limit is a batch of its own.
std::vector<std::vector<size_t>> BatchCalibrationSets(
    absl::Span<const CalibrationSetRequest> sets, int64_t limit_bytes);

// "minmax" | "percentile[:P]" | "mse" | "kl", then optionally ",asym" and
// ",per_channel" (any order): the ActivationRangeOptions the text names.
// InvalidArgument quoting the text for anything else.
absl::StatusOr<v1::ActivationRangeOptions> ParseActivationRange(
    absl::string_view text);

}  // namespace quantd

#endif  // QUANTD_CLIENT_CALIBRATION_INPUT_H_

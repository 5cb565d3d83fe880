#include "client/calibration_input.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace quantd {

absl::StatusOr<CalibrationInputs> LoadCalibrationInputs(
    absl::Span<const std::string> paths, const CalibrationInputOptions& options) {
  CalibrationInputs inputs;
  absl::flat_hash_set<std::string> names;
  for (const std::string& path : paths) {
    QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                            SafetensorsFile::Open(path));
    size_t sets_before = inputs.sets.size();
    for (const SafetensorsTensor& t : file->tensors()) {
      auto bad = [&](absl::string_view what) {
        return absl::InvalidArgumentError(absl::StrCat(
            "calibration file ", path, ": tensor \"", t.name, "\" ", what));
      };
      absl::StatusOr<DType> dtype = ParseDType(t.dtype);
      if (!dtype.ok()) {
        return bad(absl::StrCat("has dtype ", t.dtype,
                                " (activations are F32, F16 or BF16)"));
      }
      if (t.shape.size() != 2 || t.shape[0] < 1 || t.shape[1] < 1) {
        return bad("is not [tokens, features] with at least one row");
      }
      if (!names.insert(t.name).second) {
        return bad("names a calibration set given twice");
      }
      CalibrationSetRequest set;
      set.name = t.name;
      set.kind = v1::CALIBRATION_KIND_ACTIVATIONS;
      set.dtype = *dtype;
      set.features = t.shape[1];
      set.data = t.data;
      set.channel_histograms = options.channel_histograms;
      set.holdout_rows = std::min(options.holdout_rows, t.shape[0] / 2);
      inputs.sets.push_back(std::move(set));
    }
    if (inputs.sets.size() == sets_before) {
      return absl::InvalidArgumentError(
          absl::StrCat("calibration file ", path, " holds no tensor"));
    }
    inputs.files.push_back(std::move(file));
  }
  return inputs;
}

absl::StatusOr<std::vector<CalibrationRule>> ParseCalibrationRules(
    absl::Span<const std::string> texts) {
  std::vector<CalibrationRule> rules;
  for (const std::string& text : texts) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("calibration rule \"", text, "\": ", what));
    };
    const size_t eq = text.rfind('=');
    if (eq == std::string::npos) return bad("expected REGEX=SET");
    CalibrationRule rule;
    rule.text = text;
    rule.set = text.substr(eq + 1);
    const std::string pattern = text.substr(0, eq);
    if (pattern.empty()) return bad("empty regex");
    if (rule.set.empty()) return bad("empty set name (\"none\" for no set)");
    try {
      rule.regex = std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return bad(absl::StrCat("invalid regex: ", e.what()));
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

namespace {

const CalibrationSetRequest* FindSet(const CalibrationInputs& inputs,
                                     absl::string_view name) {
  for (const CalibrationSetRequest& set : inputs.sets) {
    if (set.name == name) return &set;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<const CalibrationSetRequest*> CalibrationSetFor(
    absl::string_view name, absl::Span<const CalibrationRule> rules,
    const CalibrationInputs& inputs) {
  for (const CalibrationRule& rule : rules) {
    if (!std::regex_search(name.begin(), name.end(), rule.regex)) continue;
    if (rule.set == "none") return nullptr;
    const CalibrationSetRequest* set = FindSet(inputs, rule.set);
    if (set == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("calibration rule \"", rule.text, "\" gives tensor \"",
                       name, "\" the set \"", rule.set,
                       "\", which no calibration file holds"));
    }
    return set;
  }
  if (absl::EndsWith(name, ".weight")) {
    if (const CalibrationSetRequest* set =
            FindSet(inputs, name.substr(0, name.size() - 7));
        set != nullptr) {
      return set;
    }
  }
  return FindSet(inputs, name);
}

int64_t CalibrationSetServerBytes(const CalibrationSetRequest& set) {
  const int64_t f = set.features;
  return 16 * f * f + 3072 * f + (set.channel_histograms ? 8192 * f : 0) +
         4 * f * set.holdout_rows;
}

std::vector<std::vector<size_t>> BatchCalibrationSets(
    absl::Span<const CalibrationSetRequest> sets, int64_t limit_bytes) {
  std::vector<std::vector<size_t>> batches;
  int64_t bytes = 0;
  for (size_t i = 0; i < sets.size(); ++i) {
    const int64_t b = CalibrationSetServerBytes(sets[i]);
    if (batches.empty() || bytes + b > limit_bytes) {
      batches.emplace_back();
      bytes = 0;
    }
    batches.back().push_back(i);
    bytes += b;
  }
  return batches;
}

absl::StatusOr<v1::ActivationRangeOptions> ParseActivationRange(
    absl::string_view text) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation range \"", text, "\": ", what));
  };
  v1::ActivationRangeOptions options;
  bool first = true;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    if (first) {
      first = false;
      absl::string_view method = part;
      absl::string_view percentile;
      if (const size_t colon = part.find(':'); colon != absl::string_view::npos) {
        method = part.substr(0, colon);
        percentile = part.substr(colon + 1);
      }
      if (method == "minmax") {
        options.set_method(v1::RANGE_METHOD_MINMAX);
      } else if (method == "percentile") {
        options.set_method(v1::RANGE_METHOD_PERCENTILE);
      } else if (method == "mse") {
        options.set_method(v1::RANGE_METHOD_MSE);
      } else if (method == "kl") {
        options.set_method(v1::RANGE_METHOD_KL);
      } else {
        return bad("expected minmax, percentile[:P], mse or kl first");
      }
      if (!percentile.empty()) {
        double p = 0;
        if (method != "percentile" || !absl::SimpleAtod(percentile, &p) ||
            !(p >= 50 && p <= 100)) {
          return bad("a percentile is a number in [50, 100] after "
                     "\"percentile:\"");
        }
        options.set_percentile(p);
      }
    } else if (part == "asym") {
      options.set_asymmetric(true);
    } else if (part == "per_channel") {
      options.set_per_channel(true);
    } else {
      return bad(absl::StrCat("unknown option \"", part,
                              "\" (asym, per_channel)"));
    }
  }
  return options;
}

}  // namespace quantd

// Per-tensor scheme overrides: "REGEX=SCHEME" rules, first match wins.
//
//   QUANTD_ASSIGN_OR_RETURN(std::vector<SchemeOverride> rules,
//       ParseOverrides({"lm_head=skip", R"(\.mlp\.=int4_g128)"}));
//   const SchemeOverride* rule = FindOverride(rules, "model.layers.0.mlp.up");
//   // rule->scheme == int4 per group of 128; "lm_head.weight" -> skip
//
// A rule matches a tensor when REGEX (ECMAScript syntax, as std::regex)
// matches anywhere in the name (search, not full match: anchor with ^ and $
// for whole names). The text splits at its last '=' (schemes never contain
// one), so the regex may contain '='. SCHEME is a ParseScheme text or
// "skip", which copies the tensor through unquantized.
//
// Thread-safety: SchemeOverride is immutable after parsing; FindOverride may
// run concurrently.
#ifndef QUANTD_CLIENT_OVERRIDES_H_
#define QUANTD_CLIENT_OVERRIDES_H_

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/scheme.h"

namespace quantd {

struct SchemeOverride {
  std::string text;     // the rule as given, for messages
  std::string pattern;  // REGEX
  std::regex regex;
  // nullopt means "skip": pass the tensor through unquantized.
  std::optional<Scheme> scheme;
};

// InvalidArgument (quoting the rule) if there is no '=', the regex is empty
// or invalid, or the scheme is neither "skip" nor a valid scheme.
absl::StatusOr<SchemeOverride> ParseOverride(absl::string_view text);
absl::StatusOr<std::vector<SchemeOverride>> ParseOverrides(
    absl::Span<const std::string> texts);

// The first rule whose regex is found in `name`; nullptr if none.
const SchemeOverride* FindOverride(absl::Span<const SchemeOverride> rules,
                                   absl::string_view name);

}  // namespace quantd

#endif  // QUANTD_CLIENT_OVERRIDES_H_

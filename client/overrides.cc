#include "client/overrides.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace quantd {

absl::StatusOr<SchemeOverride> ParseOverride(absl::string_view text) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("override \"", text, "\": ", what));
  };
  size_t eq = text.rfind('=');
  if (eq == absl::string_view::npos) return bad("expected REGEX=SCHEME");
  SchemeOverride rule;
  rule.text = std::string(text);
  rule.pattern = std::string(text.substr(0, eq));
  absl::string_view scheme_text = text.substr(eq + 1);
  if (rule.pattern.empty()) return bad("empty regex");
  try {
    rule.regex = std::regex(rule.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return bad(absl::StrCat("invalid regex: ", e.what()));
  }
  if (scheme_text == "skip") return rule;
  absl::StatusOr<Scheme> scheme = ParseScheme(scheme_text);
  if (!scheme.ok()) return bad(scheme.status().message());
  rule.scheme = *std::move(scheme);
  return rule;
}

absl::StatusOr<std::vector<SchemeOverride>> ParseOverrides(
    absl::Span<const std::string> texts) {
  std::vector<SchemeOverride> rules;
  for (const std::string& text : texts) {
    QUANTD_ASSIGN_OR_RETURN(SchemeOverride rule, ParseOverride(text));
    rules.push_back(std::move(rule));
  }
  return rules;
}

const SchemeOverride* FindOverride(absl::Span<const SchemeOverride> rules,
                                   absl::string_view name) {
  for (const SchemeOverride& rule : rules) {
    if (std::regex_search(name.begin(), name.end(), rule.regex)) return &rule;
  }
  return nullptr;
}

}  // namespace quantd

#include "client/json.h"

#include <exception>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace quantd {
namespace {

// Thrown from the parser callback to abort parsing; caught in ParseJson.
struct JsonRejected {
  std::string message;
};

}  // namespace

absl::StatusOr<Json> ParseJson(absl::string_view text,
                               const JsonParseOptions& options) {
  std::vector<absl::flat_hash_set<std::string>> keys_per_object;
  int depth = 0;
  auto callback = [&](int /*depth*/, Json::parse_event_t event,
                      Json& parsed) -> bool {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (++depth > options.max_depth) {
          throw JsonRejected{absl::StrCat("nesting deeper than ",
                                          options.max_depth, " levels")};
        }
        if (event == Json::parse_event_t::object_start) {
          keys_per_object.emplace_back();
        }
        break;
      case Json::parse_event_t::object_end:
        --depth;
        keys_per_object.pop_back();
        break;
      case Json::parse_event_t::array_end:
        --depth;
        break;
      case Json::parse_event_t::key:
        if (!options.allow_duplicate_keys && !keys_per_object.empty() &&
            !keys_per_object.back().insert(parsed.get<std::string>()).second) {
          throw JsonRejected{
              absl::StrCat("duplicate key \"", parsed.get<std::string>(), "\"")};
        }
        break;
      case Json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback,
                       /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const JsonRejected& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", e.message));
  } catch (const Json::exception& e) {
    // e.what() reads like "[json.exception.parse_error.101] parse error at
    // line 1, column 7: syntax error while parsing value - ...".
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", e.what()));
  }
}

std::string WriteJson(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string WriteJson(const OrderedJson& value) {
  return value.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

std::string WritePrettyJson(const OrderedJson& value, int indent) {
  return value.dump(indent, ' ', false, OrderedJson::error_handler_t::replace) +
         "\n";
}

}  // namespace quantd

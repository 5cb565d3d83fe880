// Strict JSON parsing and writing for file headers (safetensors) and run
// reports, over nlohmann::json (Debian's nlohmann-json3-dev, header-only).
//
//   absl::StatusOr<quantd::Json> header = quantd::ParseJson(text);
//   if (!header.ok()) return header.status();  // InvalidArgument, with offset
//   std::string compact = quantd::WriteJson(*header);
//
// Strict means RFC 8259 and nothing more: no comments, no trailing commas,
// no NaN/Infinity literals, valid UTF-8 (\uXXXX escapes and surrogate pairs
// are decoded), and -- unlike plain nlohmann::json::parse -- duplicate object
// keys are an error and nesting is limited. Numbers become int64 when they
// are integers that fit, uint64 when they fit only there, double otherwise.
//
// Thread-safety: free functions over values; no shared state.
#ifndef QUANTD_CLIENT_JSON_H_
#define QUANTD_CLIENT_JSON_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

// Keys sorted (std::map): the default for parsed values.
using Json = nlohmann::json;
// Keys in insertion order: for documents whose key order is part of their
// readability (reports, safetensors headers written by us).
using OrderedJson = nlohmann::ordered_json;

struct JsonParseOptions {
  // Deepest allowed nesting of arrays/objects. Default: 64.
  int max_depth = 64;
  // Default: false (a repeated key is InvalidArgument naming the key).
  bool allow_duplicate_keys = false;
};

// Parses exactly one JSON value (surrounding whitespace allowed). Returns
// InvalidArgument describing the first problem and its byte offset.
absl::StatusOr<Json> ParseJson(absl::string_view text,
                               const JsonParseOptions& options = {});

// Compact text (no whitespace). Non-finite doubles are written as null;
// invalid UTF-8 in strings is replaced by U+FFFD (never throws).
std::string WriteJson(const Json& value);
std::string WriteJson(const OrderedJson& value);
// Indented text for humans, newline-terminated. Same rules as WriteJson.
std::string WritePrettyJson(const OrderedJson& value, int indent = 2);

}  // namespace quantd

#endif  // QUANTD_CLIENT_JSON_H_

// Structured logs: one JSON object per line on stderr, for example
//   {"ts":"2026-11-23T14:02:11.123Z","level":"info","msg":"tensor done",
//    "tensor":"layer.0.q","scheme":"int4_sym_g128","seconds":0.012}
//
//   Log(LogLevel::kInfo, "listening", {{"address", addr}, {"workers", 2}});
//
// Thread-safe: each line is written with one call under a lock.
#ifndef QUANTD_SERVER_LOG_H_
#define QUANTD_SERVER_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <variant>

#include "absl/strings/string_view.h"

namespace quantd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// A field value: text, integer, float or bool.
using LogValue = std::variant<std::string, int64_t, double, bool>;
struct LogField {
  LogField(absl::string_view k, absl::string_view v)
      : key(k), value(std::string(v)) {}
  LogField(absl::string_view k, const char* v) : key(k), value(std::string(v)) {}
  LogField(absl::string_view k, const std::string& v) : key(k), value(v) {}
  template <typename T>
    requires std::is_integral_v<T> && (!std::is_same_v<T, bool>)
  LogField(absl::string_view k, T v) : key(k), value(static_cast<int64_t>(v)) {}
  LogField(absl::string_view k, double v) : key(k), value(v) {}
  LogField(absl::string_view k, bool v) : key(k), value(v) {}
  std::string key;
  LogValue value;
};

// Lines below `level` are dropped. Default: kInfo.
void SetMinLogLevel(LogLevel level);
void Log(LogLevel level, absl::string_view msg,
         std::initializer_list<LogField> fields = {});

}  // namespace quantd

#endif  // QUANTD_SERVER_LOG_H_

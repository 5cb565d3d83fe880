#include "server/token_file.h"

#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace quantd {

absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path) {
  // A directory opens as a stream that reads nothing: it cannot be read
  // either, and is not a file without tokens.
  std::error_code error;
  std::ifstream f(path);
  if (!f.good() || std::filesystem::is_directory(path, error)) {
    return absl::NotFoundError(absl::StrCat("token file ", path, " cannot be read"));
  }
  std::vector<std::string> tokens;
  std::string line;
  int number = 0;
  while (std::getline(f, line)) {
    ++number;
    const absl::string_view token = absl::StripAsciiWhitespace(line);
    if (token.empty() || token.front() == '#') continue;
    for (char c : token) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token file ", path, " line ", number, ": white space inside a token"));
      }
    }
    tokens.emplace_back(token);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " holds no token"));
  }
  return tokens;
}

}  // namespace quantd

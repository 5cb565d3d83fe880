// Reading the bearer-token file of --auth_token_file.
#ifndef QUANTD_SERVER_TOKEN_FILE_H_
#define QUANTD_SERVER_TOKEN_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quantd {

// One token per line; surrounding white space is trimmed; empty lines and
// lines starting with '#' are skipped. NOT_FOUND if the file cannot be
// read; INVALID_ARGUMENT if it holds no token or a token with inner white
// space.
absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path);

}  // namespace quantd

#endif  // QUANTD_SERVER_TOKEN_FILE_H_

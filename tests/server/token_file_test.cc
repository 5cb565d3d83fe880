#include "server/token_file.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("quantd_token_file_") +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  fs::path dir_;
};

TEST_F(TokenFileTest, ParsesTokens) {
  struct Case {
    const char* what;
    std::string text;
    std::vector<std::string> tokens;
  };
  const Case cases[] = {
      {"one per line", "alpha\nbeta\n", {"alpha", "beta"}},
      {"no final newline", "alpha\nbeta", {"alpha", "beta"}},
      {"white space around", "  alpha \t\n\tbeta  \n", {"alpha", "beta"}},
      {"CRLF line ends", "alpha\r\nbeta\r\n", {"alpha", "beta"}},
      {"blank lines", "\n\n  \n\talpha\n\n", {"alpha"}},
      {"comments", "# the first\nalpha\n  # indented\nbeta\n#", {"alpha", "beta"}},
      {"'#' inside a token is the token's", "al#pha\n", {"al#pha"}},
      {"order and repeats kept", "b\na\nb\n", {"b", "a", "b"}},
      {"punctuation", "Zm9v+/=_-.~\n", {"Zm9v+/=_-.~"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const absl::StatusOr<std::vector<std::string>> got =
        ReadTokenFile(Write("tokens", c.text));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, c.tokens);
  }
}

TEST_F(TokenFileTest, RejectsFilesWithoutAUsableToken) {
  struct Case {
    const char* what;
    std::string text;
    const char* message;  // a part of the message
  };
  const Case cases[] = {
      {"empty", "", "holds no token"},
      {"blank lines only", "\n \n\t\n", "holds no token"},
      {"comments only", "# a\n  # b\n", "holds no token"},
      {"space inside", "good\nbad token\n", "line 2: white space inside a token"},
      {"tab inside", "a\tb\n", "line 1: white space inside a token"},
      {"after comments and blanks", "# c\n\nok\nx y\n", "line 4:"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string path = Write("tokens", c.text);
    const absl::StatusOr<std::vector<std::string>> got = ReadTokenFile(path);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(got.status().message(), c.message))
        << got.status();
    EXPECT_TRUE(absl::StrContains(got.status().message(), path)) << got.status();
  }
}

TEST_F(TokenFileTest, MissingFileIsNotFoundNamingIt) {
  const std::string path = (dir_ / "absent").string();
  const absl::StatusOr<std::vector<std::string>> got = ReadTokenFile(path);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), path)) << got.status();
}

TEST_F(TokenFileTest, DirectoryIsNotFound) {
  const absl::StatusOr<std::vector<std::string>> got =
      ReadTokenFile(dir_.string());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
}

}  // namespace
}  // namespace quantd

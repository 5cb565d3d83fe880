// The cases the C++ code and the Python SDK must agree on
// (tests/data/shared_cases.json, also read by
// client/python/tests/test_shared_cases.py), against the C++ side: scheme
// texts through ParseScheme / SchemeToString, knapsack instances through
// ChooseMixedPrecision, and the retried status codes through
// IsRetryableCode. CMake passes the file's path as QUANTD_SHARED_CASES.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/dispatcher.h"
#include "client/json.h"
#include "client/mixed_precision.h"
#include "kernels/scheme.h"

#ifndef QUANTD_SHARED_CASES
#error "QUANTD_SHARED_CASES must name tests/data/shared_cases.json"
#endif

namespace quantd {
namespace {

const Json& Cases() {
  static const Json* const cases = [] {
    std::ifstream in(QUANTD_SHARED_CASES, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<Json> parsed = ParseJson(text.str());
    if (!in || !parsed.ok()) {
      ADD_FAILURE() << QUANTD_SHARED_CASES << ": "
                    << (in ? parsed.status().ToString() : "cannot read");
      return new Json(Json::object());
    }
    return new Json(*std::move(parsed));
  }();
  return *cases;
}

// `section`[`key`], failing the test when the file lacks it.
const Json& Entry(const char* section, const char* key) {
  static const Json kEmpty = Json::array();
  const Json& cases = Cases();
  if (!cases.contains(section) || !cases[section].contains(key)) {
    ADD_FAILURE() << "no " << section << "." << key << " in "
                  << QUANTD_SHARED_CASES;
    return kEmpty;
  }
  return cases[section][key];
}

TEST(SharedCasesTest, SchemeTextsGiveTheirCanonicalForm) {
  const Json& cases = Entry("schemes", "canonical");
  ASSERT_FALSE(cases.empty());
  for (const Json& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const std::string canonical = c.at("canonical").get<std::string>();
    SCOPED_TRACE(text);
    absl::StatusOr<Scheme> scheme = ParseScheme(text);
    ASSERT_TRUE(scheme.ok()) << scheme.status();
    EXPECT_EQ(SchemeToString(*scheme), canonical);
    // The canonical text is a fixed point and means the same scheme.
    absl::StatusOr<Scheme> again = ParseScheme(canonical);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *scheme);
    EXPECT_EQ(SchemeToString(*again), canonical);
  }
}

TEST(SharedCasesTest, RefusedSchemeTextsAreInvalidArgument) {
  for (const char* key : {"refused", "sdk_accepts"}) {
    const Json& texts = Entry("schemes", key);
    ASSERT_FALSE(texts.empty()) << key;
    for (const Json& t : texts) {
      const std::string text = t.get<std::string>();
      SCOPED_TRACE(absl::StrCat(key, ": '", text, "'"));
      absl::StatusOr<Scheme> scheme = ParseScheme(text);
      EXPECT_EQ(scheme.status().code(), absl::StatusCode::kInvalidArgument)
          << (scheme.ok() ? SchemeToString(*scheme) : "");
    }
  }
}

// The least total error over every choice within `budget`; +inf if none.
double BruteForce(const std::vector<TensorCurve>& curves, double budget) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> at(curves.size(), 0);
  while (true) {
    double bits = 0, error = 0;
    for (size_t i = 0; i < curves.size(); ++i) {
      bits += curves[i].points[at[i]].bits;
      error += curves[i].points[at[i]].weight_error;
    }
    if (bits <= budget) best = std::min(best, error);
    size_t i = 0;
    while (i < curves.size() && ++at[i] == curves[i].points.size()) {
      at[i++] = 0;
    }
    if (i == curves.size()) return best;
  }
}

std::vector<TensorCurve> CurvesOf(const Json& tensors) {
  std::vector<TensorCurve> curves;
  for (const Json& points : tensors) {
    TensorCurve curve;
    curve.name = absl::StrCat("t", curves.size());
    for (const Json& p : points) {
      CurvePoint point;
      point.bits = p.at(0).get<double>();
      point.weight_error = p.at(1).get<double>();
      point.scheme = absl::StrCat(curve.name, "[", curve.points.size(), "]");
      curve.points.push_back(point);
    }
    curves.push_back(curve);
  }
  return curves;
}

TEST(SharedCasesTest, MixedPrecisionFindsTheOptimum) {
  const Json& instances = Entry("mixed_precision", "instances");
  ASSERT_FALSE(instances.empty());
  int solved = 0, refused = 0;
  for (const Json& instance : instances) {
    const std::string about = instance.at("about").get<std::string>();
    SCOPED_TRACE(about);
    for (const Json& b : instance.at("budgets")) {
      const double budget = b.at("budget_bits").get<double>();
      SCOPED_TRACE(absl::StrCat("budget_bits ", budget));
      std::vector<TensorCurve> curves = CurvesOf(instance.at("tensors"));
      const double brute = BruteForce(curves, budget);
      absl::StatusOr<MixedChoice> choice = ChooseMixedPrecision(curves, budget);
      if (b.at("optimum_error").is_null()) {
        EXPECT_TRUE(std::isinf(brute)) << "the file says infeasible";
        EXPECT_EQ(choice.status().code(), absl::StatusCode::kInvalidArgument);
        ++refused;
        continue;
      }
      const double optimum = b.at("optimum_error").get<double>();
      const double tolerance = 1e-9 * std::max(1.0, optimum);
      EXPECT_NEAR(brute, optimum, tolerance) << "the file's optimum is wrong";
      ASSERT_TRUE(choice.ok()) << choice.status();
      ++solved;
      EXPECT_TRUE(choice->exact);
      ASSERT_EQ(choice->point.size(), curves.size());
      double bits = 0, error = 0;
      for (size_t i = 0; i < curves.size(); ++i) {
        const CurvePoint& p =
            curves[i].points.at(static_cast<size_t>(choice->point[i]));
        bits += p.bits;
        error += p.weight_error;
      }
      EXPECT_LE(bits, budget);
      EXPECT_DOUBLE_EQ(choice->bits, bits);
      EXPECT_NEAR(error, optimum, tolerance);
      EXPECT_NEAR(choice->error, optimum, tolerance);
      EXPECT_LE(choice->lower_bound, optimum + tolerance);
    }
  }
  EXPECT_GT(solved, 0);
  EXPECT_GT(refused, 0);
}

TEST(SharedCasesTest, RetriedCodesAreTheFilesAndOnlyThose) {
  std::set<std::string> retried;
  for (const Json& name : Entry("retry", "retried")) {
    retried.insert(name.get<std::string>());
  }
  ASSERT_FALSE(retried.empty());
  std::set<std::string> known;
  std::set<absl::StatusCode> table;
  for (int c = 0; c <= 16; ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    const std::string name = absl::StatusCodeToString(code);
    SCOPED_TRACE(name);
    known.insert(name);
    EXPECT_EQ(IsRetryableCode(code), retried.contains(name));
  }
  for (absl::StatusCode code : kRetryableCodes) {
    EXPECT_TRUE(table.insert(code).second)
        << absl::StatusCodeToString(code) << " twice in kRetryableCodes";
  }
  EXPECT_EQ(table.size(), retried.size());
  for (const std::string& name : retried) {
    EXPECT_TRUE(known.contains(name)) << "not a status code: " << name;
  }
}

}  // namespace
}  // namespace quantd

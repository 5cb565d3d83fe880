#include "client/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace quantd {

Progress::Progress(ProgressStyle style, int64_t total_tensors,
                   uint64_t total_bytes)
    : total_tensors_(total_tensors),
      total_bytes_(total_bytes),
      start_(absl::Now()),
      last_print_(start_) {
  if (style == ProgressStyle::kAuto) {
    style =
        ::isatty(STDERR_FILENO) ? ProgressStyle::kBar : ProgressStyle::kLines;
  }
  style_ = style;
}

void Progress::Done(uint64_t bytes, bool failed) {
  absl::MutexLock lock(&mu_);
  ++done_tensors_;
  done_bytes_ += bytes;
  if (failed) ++failed_;
  absl::Time now = absl::Now();
  absl::Duration every = style_ == ProgressStyle::kBar
                             ? absl::Milliseconds(100)
                             : absl::Seconds(5);
  if (now - last_print_ >= every || done_tensors_ == total_tensors_) {
    last_print_ = now;
    Print(now);
  }
}

void Progress::Finish() {
  absl::MutexLock lock(&mu_);
  if (style_ == ProgressStyle::kBar && total_tensors_ > 0) {
    std::fputc('\n', stderr);
  }
}

void Progress::Print(absl::Time now) {
  if (style_ == ProgressStyle::kNone) return;
  double seconds = std::max(absl::ToDoubleSeconds(now - start_), 1e-9);
  double fraction = total_bytes_ == 0 ? 1.0
                                      : static_cast<double>(done_bytes_) /
                                            static_cast<double>(total_bytes_);
  std::string text = absl::StrFormat(
      "%d/%d tensors  %.2f/%.2f GB  %.1f MB/s%s", done_tensors_,
      total_tensors_, static_cast<double>(done_bytes_) / 1e9,
      static_cast<double>(total_bytes_) / 1e9,
      static_cast<double>(done_bytes_) / 1e6 / seconds,
      failed_ > 0 ? absl::StrCat("  ", failed_, " failed") : "");
  if (style_ == ProgressStyle::kBar) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '=');
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "\r[%s] %3d%%  %s\033[K", bar.c_str(),
                 static_cast<int>(fraction * 100), text.c_str());
  } else {
    std::fprintf(stderr, "quantctl: %s\n", text.c_str());
  }
  std::fflush(stderr);
}

}  // namespace quantd

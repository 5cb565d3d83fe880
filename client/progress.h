// Progress: what a quantctl run shows on stderr while its tensors are sent
// -- a redrawn one-line bar on a terminal, else a line every few seconds.
//
//   Progress progress(ProgressStyle::kAuto, /*total_tensors=*/12,
//                     /*total_bytes=*/1 << 30);
//   progress.Done(tensor_bytes, /*failed=*/false);  // per settled tensor
//   progress.Finish();
//
// Thread-safety: Done and Finish may be called from any thread.
#ifndef QUANTD_CLIENT_PROGRESS_H_
#define QUANTD_CLIENT_PROGRESS_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace quantd {

enum class ProgressStyle {
  kAuto,   // a bar if stderr is a terminal, else periodic lines
  kBar,    // a redrawn one-line bar on stderr
  kLines,  // a line on stderr every few seconds
  kNone,
};

// Shows progress on stderr.
class Progress {
 public:
  Progress(ProgressStyle style, int64_t total_tensors, uint64_t total_bytes);

  void Done(uint64_t bytes, bool failed);

  void Finish();

 private:
  void Print(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t total_tensors_;
  const uint64_t total_bytes_;
  const absl::Time start_;
  ProgressStyle style_;
  absl::Mutex mu_;
  absl::Time last_print_ ABSL_GUARDED_BY(mu_);
  int64_t done_tensors_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace quantd

#endif  // QUANTD_CLIENT_PROGRESS_H_

// A byte budget shared by every stream of a server: a tensor reserves what
// it will hold (input, f32 copy, outputs) before its bytes arrive and
// releases it when its responses are written or the stream ends.
//
//   MemoryBudget budget(4 << 30);
//   absl::StatusOr<MemoryBudget::Reservation> r = budget.Reserve(n, "w.q");
//   // RESOURCE_EXHAUSTED "tensor w.q needs 1234 bytes; memory_budget_bytes=
//   //   4294967296 with 4294000000 reserved" when over.
//
// Thread-safe.
#ifndef QUANTD_SERVER_MEMORY_BUDGET_H_
#define QUANTD_SERVER_MEMORY_BUDGET_H_

#include <cstdint>
#include <functional>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quantd {

class MemoryBudget {
 public:
  // Movable handle; releases its bytes when destroyed or Release()d.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& other) noexcept;
    Reservation& operator=(Reservation&& other) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation() { Release(); }
    void Release();
    int64_t bytes() const { return bytes_; }

   private:
    friend class MemoryBudget;
    Reservation(MemoryBudget* budget, int64_t bytes)
        : budget_(budget), bytes_(bytes) {}
    MemoryBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // `on_change` (optional) is called with the reserved total after every
  // change, outside the lock order of callers (it must not call back).
  explicit MemoryBudget(int64_t limit_bytes,
                        std::function<void(int64_t)> on_change = nullptr);
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Reserves `bytes` for `what` (named in the error), or RESOURCE_EXHAUSTED
  // naming memory_budget_bytes, its value and what is reserved now.
  absl::StatusOr<Reservation> Reserve(int64_t bytes, absl::string_view what);

  int64_t limit_bytes() const { return limit_bytes_; }
  int64_t reserved_bytes() const;

 private:
  void Return(int64_t bytes);

  const int64_t limit_bytes_;
  const std::function<void(int64_t)> on_change_;
  // std::mutex (not absl::Mutex) so that ThreadSanitizer sees it; see
  // worker_pool.h.
  mutable std::mutex mu_;
  int64_t reserved_bytes_ = 0;  // guarded by mu_
};

}  // namespace quantd

#endif  // QUANTD_SERVER_MEMORY_BUDGET_H_

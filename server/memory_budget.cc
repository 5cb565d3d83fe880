#include "server/memory_budget.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace quantd {

MemoryBudget::Reservation::Reservation(Reservation&& other) noexcept
    : budget_(std::exchange(other.budget_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

MemoryBudget::Reservation& MemoryBudget::Reservation::operator=(
    Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = std::exchange(other.budget_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void MemoryBudget::Reservation::Release() {
  if (budget_ != nullptr) {
    budget_->Return(bytes_);
    budget_ = nullptr;
    bytes_ = 0;
  }
}

MemoryBudget::MemoryBudget(int64_t limit_bytes,
                           std::function<void(int64_t)> on_change)
    : limit_bytes_(limit_bytes), on_change_(std::move(on_change)) {}

absl::StatusOr<MemoryBudget::Reservation> MemoryBudget::Reserve(
    int64_t bytes, absl::string_view what) {
  if (bytes < 0) return absl::InvalidArgumentError("negative reservation");
  int64_t now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (bytes > limit_bytes_ - reserved_bytes_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          what, " needs ", bytes, " bytes; memory_budget_bytes=", limit_bytes_,
          " with ", reserved_bytes_, " reserved"));
    }
    reserved_bytes_ += bytes;
    now = reserved_bytes_;
  }
  if (on_change_) on_change_(now);
  return Reservation(this, bytes);
}

int64_t MemoryBudget::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_bytes_;
}

void MemoryBudget::Return(int64_t bytes) {
  int64_t now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reserved_bytes_ -= bytes;
    now = reserved_bytes_;
  }
  if (on_change_) on_change_(now);
}

}  // namespace quantd

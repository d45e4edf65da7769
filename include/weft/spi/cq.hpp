#pragma once
// The completion queue that every provider writes to. Capacity is reserved
// when an operation is posted (reserve()), so a push never overflows: a full
// CQ turns into back-pressure (errc::again) at post time, never a lost entry.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "weft/detail/ops.hpp"
#include "weft/spi/progress.hpp"
#include "weft/types.hpp"

namespace weft::spi {

class cq : public detail::cq_ops, public progress_group {
 public:
  explicit cq(std::size_t size);
  cq(const cq&) = delete;
  cq& operator=(const cq&) = delete;

  // provider side
  [[nodiscard]] bool reserve() noexcept {
    if (credits_ == 0) return false;
    --credits_;
    return true;
  }
  void unreserve() noexcept { ++credits_; }
  void push(const cq_entry& e) noexcept;          // uses a reserved credit
  void push_error(const cq_err_entry& e) noexcept;  // uses a reserved credit

  // consumer side (detail::cq_ops, what completion_queue calls)
  [[nodiscard]] errc read(std::span<cq_entry> out, std::size_t& n) noexcept final;
  [[nodiscard]] errc read_held(std::span<cq_entry> out, std::size_t& n) noexcept;
  [[nodiscard]] errc read_error(cq_err_entry& out) noexcept final;
  [[nodiscard]] errc wait(std::span<cq_entry> out, std::size_t& n, int timeout_ms) noexcept final;
  void progress() noexcept final { progress_group::progress(); }
  [[nodiscard]] sleep_stats wait_stats() const noexcept final {
    sleep_stats s = wake_stats();
    s.room_returns = room_returns_.load(std::memory_order_relaxed);
    return s;
  }
  [[nodiscard]] std::size_t size() const noexcept { return cap_; }

 private:
  [[nodiscard]] errc pop(std::span<cq_entry> out, std::size_t& n) noexcept;

  std::size_t cap_;
  std::size_t credits_;
  std::vector<cq_entry> ring_;
  std::size_t head_ = 0, count_ = 0;
  std::vector<cq_err_entry> errs_;
  std::size_t ehead_ = 0, ecount_ = 0;
  std::atomic<std::uint64_t> room_returns_{0};
};

}  // namespace weft::spi

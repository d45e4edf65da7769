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

#include "weft/types.hpp"

namespace weft::spi {

// Something a CQ drives when it is read (an endpoint's progress engine).
class progressable {
 public:
  virtual ~progressable() = default;
  virtual void progress() noexcept = 0;
  // Blocking waits: arm() asks peers to ring a doorbell and returns the
  // futex word to sleep on (nullptr if it cannot); disarm() undoes it.
  virtual std::atomic<std::uint32_t>* arm() noexcept { return nullptr; }
  virtual void disarm() noexcept {}
  // Or a file descriptor that polls readable when progress has work (epoll).
  [[nodiscard]] virtual int wait_fd() const noexcept { return -1; }
};

class cq {
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

  // consumer side
  [[nodiscard]] errc read(std::span<cq_entry> out, std::size_t& n) noexcept;
  [[nodiscard]] errc read_error(cq_err_entry& out) noexcept;
  [[nodiscard]] errc wait(std::span<cq_entry> out, std::size_t& n, int timeout_ms) noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return cap_; }

  void attach(progressable* p);
  void detach(progressable* p) noexcept;
  // Objects of an automatic-progress domain share its lock with the queues
  // they are bound to. A queue serves one such domain at most: false if it
  // already belongs to another. release_lock() when such an object unbinds.
  [[nodiscard]] bool set_lock(std::recursive_mutex* m) noexcept {
    if (!m) return true;
    if (lock_ && lock_ != m) return false;
    lock_ = m;
    ++lock_users_;
    return true;
  }
  [[nodiscard]] bool lock_in_use() const noexcept { return lock_ != nullptr; }
  void release_lock(std::recursive_mutex* m) noexcept {
    if (m && lock_ == m && --lock_users_ == 0) lock_ = nullptr;
  }
  void progress() noexcept;
  // Objects driven by an automatic progress thread share their domain's lock
  // with the CQ; without one, no lock is taken.

 private:
  [[nodiscard]] std::unique_lock<std::recursive_mutex> guard() const noexcept {
    return lock_ ? std::unique_lock<std::recursive_mutex>(*lock_) : std::unique_lock<std::recursive_mutex>();
  }
  std::recursive_mutex* lock_ = nullptr;
  int lock_users_ = 0;
  [[nodiscard]] errc pop(std::span<cq_entry> out, std::size_t& n) noexcept;

  std::size_t cap_;
  std::size_t credits_;
  std::vector<cq_entry> ring_;
  std::size_t head_ = 0, count_ = 0;
  std::vector<cq_err_entry> errs_;
  std::size_t ehead_ = 0, ecount_ = 0;
  std::vector<progressable*> sources_;
  bool in_progress_ = false;
};

}  // namespace weft::spi

#pragma once
// What CQs, EQs and counters have in common: the objects whose progress
// reading them drives, the refusal to re-enter progress, and the lock of an
// automatic-progress domain they may share.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace weft::spi {

// Something a queue drives when it is read (an endpoint's progress engine).
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
  // Called before a queue sleeps on wait_fd(): every event must reach it.
  virtual void prepare_sleep() noexcept {}
};

// How many sources this thread has driven so far, through any queue of any
// provider (counted before each call). A source that finds the count one
// above what it saw at its previous call knows that the application came
// straight back to it and polled nothing else in between.
[[nodiscard]] std::uint64_t thread_progress_calls() noexcept;

class progress_group {
 public:
  void attach(progressable* p);
  void detach(progressable* p) noexcept;
  // Drives every attached source once; re-entry (from a callback) is refused.
  void progress() noexcept;
  // Objects of an automatic-progress domain share its lock with the queues
  // they are bound to. A queue serves one such domain at most: false if it
  // already belongs to another. release_lock() when such an object unbinds.
  [[nodiscard]] bool set_lock(std::recursive_mutex* m) noexcept;
  void release_lock(std::recursive_mutex* m) noexcept;
  [[nodiscard]] bool lock_in_use() const noexcept { return lock_ != nullptr; }

 protected:
  [[nodiscard]] std::unique_lock<std::recursive_mutex> guard() const noexcept {
    return lock_ ? std::unique_lock<std::recursive_mutex>(*lock_) : std::unique_lock<std::recursive_mutex>();
  }
  // Sleeps at most ms on the first source's descriptor (or briefly).
  void sleep_slice(int ms) const noexcept;
  std::vector<progressable*> sources_;

 private:
  std::recursive_mutex* lock_ = nullptr;
  int lock_users_ = 0;
  bool in_progress_ = false;
};

}  // namespace weft::spi

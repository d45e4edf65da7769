#pragma once
// The process that created an object owning shared or cross-process state
// (a shm region, an MR table, a socket's connection, a progress thread).
// After fork() the child holds copies of such objects; when it destroys them
// it may release only what is its own (its mapping, its descriptors, its
// memory) and must touch nothing the parent still uses (docs/design.md,
// "Threading"). Asked on the control path only (a getpid() system call).
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace weft::util {

class creator_process {
 public:
  // True in the process that constructed this object, false in a forked child.
  [[nodiscard]] bool is_this_process() const noexcept { return ::getpid() == pid_; }

 private:
  pid_t pid_ = ::getpid();
};

// What a data path records instead of a pid (getpid() is a system call): a
// number that changes in every forked child. Something taken in one
// generation (a hold on a memory region, an access slot) was taken by a
// thread of that process; a child, where those threads do not exist, never
// waits for it. count_forks() once (control path) before the first use:
// it installs the pthread_atfork handler.
namespace detail {
inline std::atomic<std::uint32_t> forks{0};
}
inline void count_forks() noexcept {
  static const int once =
      ::pthread_atfork(nullptr, nullptr, [] { detail::forks.fetch_add(1, std::memory_order_relaxed); });
  (void)once;
}
[[nodiscard]] inline std::uint32_t fork_generation() noexcept {
  return detail::forks.load(std::memory_order_relaxed);
}

}  // namespace weft::util

#pragma once
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

namespace weft::util {

// Shared (not process-private) futex: works on words in shared memory.
// 0 when woken, else -errno (-ETIMEDOUT, -EAGAIN: the word differs, -EFAULT).
inline int futex_wait(std::atomic<std::uint32_t>* w, std::uint32_t val, int timeout_ms) noexcept {
  timespec ts{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1000000L};
  const long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), FUTEX_WAIT, val, &ts, nullptr, 0);
  return r == 0 ? 0 : -errno;
}
inline void futex_wake(std::atomic<std::uint32_t>* w) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}
inline void futex_wake_all(std::atomic<std::uint32_t>* w) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

#ifndef __NR_futex_waitv
#define __NR_futex_waitv 449
#endif

// futex_waitv (Linux >= 5.16): sleeps until one of the n words differs from
// what was seen, a wake on one of them, or the absolute CLOCK_MONOTONIC
// deadline (~0: none). >= 0: woken (index of the word) or a word had
// already changed; -ETIMEDOUT; -EINTR; -ENOSYS when the kernel lacks it.
// W: {std::atomic<std::uint32_t>* word; std::uint32_t seen;} (spi::wait_word).
template <class W>
inline int futex_waitv(const W* w, unsigned n, std::uint64_t deadline_ns) noexcept {
  struct waiter {  // struct futex_waitv of <linux/futex.h>, spelled out for older headers
    std::uint64_t val;
    std::uint64_t uaddr;
    std::uint32_t flags;
    std::uint32_t reserved;
  } v[128];
  if (n > 128) n = 128;
  for (unsigned i = 0; i < n; ++i)
    v[i] = waiter{w[i].seen, reinterpret_cast<std::uint64_t>(w[i].word), 2 /* FUTEX2_SIZE_U32, shared */, 0};
  timespec ts{static_cast<time_t>(deadline_ns / 1000000000ull), static_cast<long>(deadline_ns % 1000000000ull)};
  const long r = ::syscall(__NR_futex_waitv, v, n, 0u, deadline_ns == ~0ull ? nullptr : &ts, CLOCK_MONOTONIC);
  if (r >= 0) return static_cast<int>(r);
  if (errno == EAGAIN) return 0;  // a word had already changed
  return -errno;
}

}  // namespace weft::util

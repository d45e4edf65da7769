#pragma once
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace weft::util {

// Shared (not process-private) futex: works on words in shared memory.
inline void futex_wait(std::atomic<std::uint32_t>* w, std::uint32_t val, int timeout_ms) noexcept {
  timespec ts{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1000000L};
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), FUTEX_WAIT, val, &ts, nullptr, 0);
}
inline void futex_wake(std::atomic<std::uint32_t>* w) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(w), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

}  // namespace weft::util

#pragma once
#include <cstdint>

#include "util/clock.hpp"

namespace weft::util {

// One spin-wait hint: lets a sibling hardware thread (or, in a virtual
// machine, the host thread next to this vCPU) run, and stops the spinning
// core from hammering the cache lines another core is about to write.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

// Spin with cpu_relax() until now_ns() reaches `until` (checked every few
// hints, so the wait overshoots by well under 100 ns).
inline void relax_until(std::uint64_t until) noexcept {
  do {
    for (int i = 0; i < 8; ++i) cpu_relax();
  } while (now_ns() < until);
}

}  // namespace weft::util

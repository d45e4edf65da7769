#pragma once
// Data-path failures that a provider reports to the application: each sets
// the thread's last_error_message() (no allocation) and returns the code,
// so that a provider writes `return spi::no_peer("send", m.addr, av_ != nullptr);`.
#include <sys/uio.h>

#include <cstddef>

#include "weft/types.hpp"

namespace weft::spi {

// code, with what as the text
[[nodiscard]] errc fail(errc code, const char* what) noexcept;
// bad_state: op on an endpoint that is not enabled
[[nodiscard]] errc not_enabled(const char* op) noexcept;
// bad_state: op on a MSG endpoint that is not connected
[[nodiscard]] errc not_connected(const char* op) noexcept;
// invalid_argument: more than max iov entries, or a null iov with entries
[[nodiscard]] errc bad_iov(const char* op, std::size_t count, std::size_t max) noexcept;
// invalid_argument: a is not in the address vector (have_av), or none is bound
[[nodiscard]] errc no_peer(const char* op, fi_addr_t a, bool have_av) noexcept;
// too_big: len bytes, more than limit (its name) allows
[[nodiscard]] errc over_limit(const char* op, std::size_t len, const char* limit, std::size_t max) noexcept;
// peer_dead: op to a, whose endpoint is closed or whose process has exited
[[nodiscard]] errc peer_gone(const char* op, fi_addr_t a) noexcept;

// Whether the lengths of an iov list add up to more than 2^64 - 1 (a wrapped
// sum would give a receive a false small capacity).
[[nodiscard]] inline bool iov_overflows(const ::iovec* v, std::size_t n) noexcept {
  std::size_t t = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (__builtin_add_overflow(t, v[i].iov_len, &t)) return true;
  return false;
}

}  // namespace weft::spi

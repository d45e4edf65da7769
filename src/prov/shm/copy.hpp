#pragma once
// Copies between iov lists, local and in another process (cross-memory
// attach), and the chunk claims of a cooperative copy (docs/wire/shm.md).
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <type_traits>

#include "prov/shm/layout.hpp"
#include "prov/shm/shm.hpp"
#include "util/relax.hpp"

namespace weft::prov::shm {

inline std::size_t iov_total(const ::iovec* v, std::size_t n) noexcept {
  std::size_t t = 0;
  for (std::size_t i = 0; i < n; ++i) t += v[i].iov_len;
  return t;
}

// The total of an iov list, or SIZE_MAX when it does not fit in 64 bits.
template <class V>
std::uint64_t checked_total(const V* v, std::size_t n) noexcept {
  std::uint64_t t = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t l;
    if constexpr (std::is_same_v<V, ::iovec>) l = v[i].iov_len;
    else l = v[i].len;
    if (__builtin_add_overflow(t, l, &t)) return ~std::uint64_t{0};
  }
  return t;
}

// Copies len bytes of src into the iov list, starting at byte offset off.
inline void scatter(const ::iovec* v, std::size_t n, std::size_t off, const std::byte* src, std::size_t len) noexcept {
  for (std::size_t i = 0; i < n && len; ++i) {
    if (off >= v[i].iov_len) {
      off -= v[i].iov_len;
      continue;
    }
    std::size_t c = std::min(len, v[i].iov_len - off);
    std::memcpy(static_cast<std::byte*>(v[i].iov_base) + off, src, c);
    src += c;
    len -= c;
    off = 0;
  }
}

// Copies len bytes from the iov list, starting at offset off, into dst.
inline void gather(const ::iovec* v, std::size_t n, std::size_t off, std::byte* dst, std::size_t len) noexcept {
  for (std::size_t i = 0; i < n && len; ++i) {
    if (off >= v[i].iov_len) {
      off -= v[i].iov_len;
      continue;
    }
    std::size_t c = std::min(len, v[i].iov_len - off);
    std::memcpy(dst, static_cast<const std::byte*>(v[i].iov_base) + off, c);
    dst += c;
    len -= c;
    off = 0;
  }
}

// The part [off, off + len) of an iov list, as at most max_iov iovecs.
template <class V>
std::size_t slice(const V* v, std::size_t n, std::size_t off, std::size_t len, ::iovec* out) noexcept {
  std::size_t k = 0;
  for (std::size_t i = 0; i < n && len && k < max_iov; ++i) {
    const std::size_t vl = [&] {
      if constexpr (std::is_same_v<V, ::iovec>) return v[i].iov_len;
      else return static_cast<std::size_t>(v[i].len);
    }();
    if (off >= vl) {
      off -= vl;
      continue;
    }
    std::byte* base = [&] {
      if constexpr (std::is_same_v<V, ::iovec>) return static_cast<std::byte*>(v[i].iov_base);
      else return reinterpret_cast<std::byte*>(v[i].addr);
    }();
    const std::size_t c = std::min(len, vl - off);
    out[k++] = {base + off, c};
    len -= c;
    off = 0;
  }
  return k;
}

// Copies len bytes between a local iov list (from byte loff) and a remote
// one (from byte roff) with process_vm_readv (read = true: remote to local)
// or process_vm_writev. 0 or an errno (EFAULT when a list ends early).
inline int cma_copy_at(bool read, pid_t pid, const ::iovec* local, std::size_t ln, std::size_t loff,
                       const remote_iov* remote, std::size_t rn, std::size_t roff, std::size_t len) noexcept {
  std::size_t done = 0;
  while (done < len) {
    ::iovec l[max_iov], r[max_iov];
    const std::size_t lc = slice(local, ln, loff + done, len - done, l);
    const std::size_t rc = slice(remote, rn, roff + done, len - done, r);
    if (lc == 0 || rc == 0) return EFAULT;
    const ssize_t n = read ? ::process_vm_readv(pid, l, lc, r, rc, 0) : ::process_vm_writev(pid, l, lc, r, rc, 0);
    if (n <= 0) return n < 0 ? errno : EFAULT;
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

// The same at one offset in both lists.
inline int cma_copy(bool read, pid_t pid, const ::iovec* local, std::size_t ln, const remote_iov* remote,
                    std::size_t rn, std::size_t off, std::size_t len) noexcept {
  return cma_copy_at(read, pid, local, ln, off, remote, rn, off, len);
}

// Takes the next chunk of a cooperative copy, if any is left in this generation.
inline bool claim_chunk(split_entry& se, std::uint32_t gen, std::uint32_t nchunks, std::uint32_t& chunk) noexcept {
  std::uint64_t w = se.claim.load(std::memory_order_acquire);
  for (;;) {
    if (static_cast<std::uint32_t>(w >> 32) != gen || static_cast<std::uint32_t>(w) >= nchunks) return false;
    if (se.claim.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel)) {
      chunk = static_cast<std::uint32_t>(w);
      return true;
    }
  }
}

// Receiver, closing with a cooperative copy in progress (its generation
// already closed to new claims): returns once the `claimed` chunks are done,
// or once their other claimer, the sender owning `sender`, is gone (dead or
// closed: it writes nothing any more). A live sender is waited for however
// long it takes (stopped by a debugger or SIGSTOP mid-chunk): spins a
// little, then sleeps 10 us doubling to 1 ms between looks.
inline void wait_claimed_chunks(const split_entry& se, std::uint32_t claimed, mapping& sender) noexcept {
  long pause_ns = 10'000;
  for (int round = 0; se.done.load(std::memory_order_acquire) < claimed; ++round) {
    if (!sender.owner_alive()) return;
    if (round < 2000) {
      util::cpu_relax();
      continue;
    }
    timespec ts{0, pause_ns};
    ::nanosleep(&ts, nullptr);
    pause_ns = std::min(pause_ns * 2, 1'000'000L);
  }
}

}  // namespace weft::prov::shm

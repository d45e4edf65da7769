#include "weft/error.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "weft/address.hpp"
#include "weft/detail/ops.hpp"
#include "weft/spi/error.hpp"
#include "weft/types.hpp"

namespace weft {

namespace {
// Read and written only on failures (libweft uses TLS descriptors: no
// __tls_get_addr call, and dlopen() works).
thread_local char last_error_tl[256];
}  // namespace

const char* last_error_message() noexcept { return last_error_tl; }

void detail::set_last_error(const char* msg) noexcept {
  std::size_t n = msg ? std::strlen(msg) : 0;
  if (n > sizeof last_error_tl - 1) n = sizeof last_error_tl - 1;
  std::memcpy(last_error_tl, msg ? msg : "", n);
  last_error_tl[n] = 0;
}

void detail::format_last_error(const char* fmt, ...) noexcept {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(last_error_tl, sizeof last_error_tl, fmt, ap);
  va_end(ap);
}

errc detail::fail(errc code, const char* what) noexcept {
  set_last_error(what);
  return code;
}

errc detail::closed(const char* object) noexcept {
  format_last_error("%s is closed (or was never opened)", object);
  return errc::bad_state;
}

errc detail::invalid_atomic(const atomic_desc& d) noexcept {
  if (d.op > atomic_op::cswap || d.type > atomic_type::f64)
    set_last_error("atomic: op is an atomic_op and type an atomic_type");
  else if (!atomic_valid(d.op, d.type))
    set_last_error("atomic: bitwise operations (band, bor, bxor) are not defined on f32 and f64 (atomic_valid())");
  else if (d.count == 0)
    set_last_error("atomic: count is 0 (at least one element)");
  else if (d.count > atomic_max_bytes / size_of(d.type))
    format_last_error("atomic: %zu elements of %zu bytes: at most %zu bytes per operation", d.count,
                      size_of(d.type), atomic_max_bytes);
  else if (!d.operand)
    set_last_error("atomic: no operand");
  else
    set_last_error("compare_atomic: compare and result are needed");
  return errc::invalid_argument;
}

errc spi::fail(errc code, const char* what) noexcept { return detail::fail(code, what); }

errc spi::not_enabled(const char* op) noexcept {
  detail::format_last_error("%s on an endpoint that is not enabled: bind its completion queue (and, for RDM, "
                            "address vector), then enable() it",
                            op);
  return errc::bad_state;
}

errc spi::not_connected(const char* op) noexcept {
  detail::format_last_error("%s on a MSG endpoint that is not connected: connect() (or accept()) first", op);
  return errc::bad_state;
}

errc spi::bad_iov(const char* op, std::size_t count, std::size_t max) noexcept {
  detail::format_last_error("%s with %zu iov entries: at most %zu (info.tx.iov_limit, rx.iov_limit), and a null "
                            "iov only with none",
                            op, count, max);
  return errc::invalid_argument;
}

errc spi::peer_gone(const char* op, fi_addr_t a) noexcept {
  detail::format_last_error("%s: the peer at fi_addr %llu is gone (its endpoint is closed or its process exited); "
                            "remove it from the address vector, or insert its new address",
                            op, static_cast<unsigned long long>(a));
  return errc::peer_dead;
}

errc spi::no_peer(const char* op, fi_addr_t a, bool have_av) noexcept {
  if (!have_av)
    detail::format_last_error("%s: the endpoint has no address vector bound (bind one before enable())", op);
  else if (a == addr_unspec)
    detail::format_last_error("%s without a destination (addr_unspec): name a peer by the fi_addr_t that "
                              "address_vector::insert() returned",
                              op);
  else
    detail::format_last_error("%s: fi_addr %llu is not in the address vector (insert the peer's address first; "
                              "a removed entry no longer works)",
                              op, static_cast<unsigned long long>(a));
  return errc::invalid_argument;
}

errc spi::over_limit(const char* op, std::size_t len, const char* limit, std::size_t max) noexcept {
  detail::format_last_error("%s of %zu bytes: more than %s (%zu)", op, len, limit, max);
  return errc::too_big;
}

const char* to_string(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::again:
      return "again (back-pressure: read the completion queue (that frees room and drives progress), then retry; "
             "endpoint::again_reason() says why)";
    case errc::error_available: return "error entry available (call read_error)";
    case errc::invalid_argument: return "invalid argument";
    case errc::no_memory: return "out of memory";
    case errc::not_found: return "not found";
    case errc::no_message: return "no matching message";
    case errc::truncated: return "message truncated";
    case errc::canceled: return "operation canceled";
    case errc::peer_dead: return "peer is gone";
    case errc::timed_out: return "timed out";
    case errc::io_error: return "I/O error";
    case errc::not_supported: return "not supported";
    case errc::busy: return "busy";
    case errc::address_in_use: return "address in use";
    case errc::bad_state: return "object not ready";
    case errc::too_big: return "too big";
    case errc::permission_denied: return "permission denied";
  }
  return "unknown error";
}

const char* to_string(again_reason r) noexcept {
  switch (r) {
    case again_reason::none: return "none";
    case again_reason::cq_full: return "cq_full (the completion queue is full: read it, then retry)";
    case again_reason::tx_full:
      return "tx_full (operations in flight fill the transmit queue: read the completion queue, then retry)";
    case again_reason::rx_full:
      return "rx_full (posted receives fill the receive queue: read the completion queue, then retry)";
    case again_reason::peer_busy:
      return "peer_busy (the peer has not consumed what was sent yet: wait on the completion queue, then retry)";
    case again_reason::no_resources:
      return "no_resources (a system resource, e.g. file descriptors, is short: free some or retry later)";
  }
  return "unknown";
}

std::string to_string(const address& a) {
  switch (a.format) {
    case addr_format::shm_name: return "shm://" + std::string(a.view());
    case addr_format::inet: {
      sockaddr_in sa{};
      std::memcpy(&sa, a.bytes.data(), std::min<std::size_t>(a.size, sizeof sa));
      char ip[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
      return "tcp://" + std::string(ip) + ":" + std::to_string(ntohs(sa.sin_port));
    }
    case addr_format::inet6: {
      sockaddr_in6 sa{};
      std::memcpy(&sa, a.bytes.data(), std::min<std::size_t>(a.size, sizeof sa));
      char ip[INET6_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET6, &sa.sin6_addr, ip, sizeof ip);
      return "tcp://[" + std::string(ip) + "]:" + std::to_string(ntohs(sa.sin6_port));
    }
    default: return std::string(a.view());
  }
}

}  // namespace weft

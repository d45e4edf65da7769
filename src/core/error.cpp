#include "weft/error.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "weft/address.hpp"
#include "weft/types.hpp"

namespace weft {

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

#include "weft/error.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "weft/address.hpp"

namespace weft {

const char* to_string(errc e) noexcept {
  switch (e) {
    case errc::ok: return "ok";
    case errc::again: return "again (resource busy: drive progress and retry)";
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

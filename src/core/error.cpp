#include "weft/error.hpp"

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
    default: return std::string(a.view());
  }
}

}  // namespace weft

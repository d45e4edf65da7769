#pragma once
// Error model: data path returns errc (noexcept, no allocation); control path
// returns weft::result<T> = std::expected<T, weft::error>.
#include <cstdint>
#include <expected>
#include <string>
#include <utility>

namespace weft {

enum class errc : std::int32_t {
  ok = 0,
  again,              // back-pressure (a post): read the CQ, then retry (endpoint::again_reason() says why);
                      // from a CQ or EQ read: nothing yet
  error_available,    // a CQ error entry is waiting: call read_error()
  invalid_argument,
  no_memory,
  not_found,
  no_message,         // peek found nothing
  truncated,          // receive buffer smaller than the message
  canceled,
  peer_dead,          // the peer process exited or closed its endpoint
  timed_out,
  io_error,
  not_supported,
  busy,
  address_in_use,
  bad_state,          // object not ready (e.g. endpoint not enabled)
  too_big,            // exceeds a size limit (inject_size, max_msg_size...)
  permission_denied,
};

[[nodiscard]] const char* to_string(errc e) noexcept;

// Why the last data-path call on this thread that failed with an error
// other than again (a post, a CQ or counter read) failed, in words: "send:
// fi_addr 7 is not in the address vector (insert the peer's address
// first; ...)". A thread-local fixed buffer (no allocation), overwritten by the
// next such failure on this thread and not cleared by successes: read it
// right after the call. Empty before the first failure. (Control-path
// calls carry their text in result<T>'s error; operations that fail later,
// in cq_err_entry::msg.)
[[nodiscard]] const char* last_error_message() noexcept;

struct error {
  errc code = errc::ok;
  std::string message;
};

template <class T>
using result = std::expected<T, error>;

[[nodiscard]] inline std::unexpected<error> make_error(errc code, std::string message) {
  return std::unexpected<error>(error{code, std::move(message)});
}

}  // namespace weft

#pragma once
// Event queue for connection management (cf. fi_eq(3), fi_cm(3)). Control
// path: events own their data. Reading it drives the progress of the objects
// bound to it.
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "weft/info.hpp"
#include "weft/spi/cq.hpp"

namespace weft {

struct eq_event {
  enum class kind : std::uint8_t {
    connreq,    // a peer asks to connect: open an endpoint from `req`, then accept() or reject()
    connected,  // the connection is up (both sides get it)
    shutdown,   // the peer shut the connection down
    error,      // connect failed: refused, unreachable, timed out, rejected (see err and message)
  };
  kind type = kind::error;
  void* context = nullptr;       // the endpoint's context (endpoint::set_context)
  info req;                      // connreq: the info to open the accepting endpoint with
  std::vector<std::byte> data;   // connection data: connreq (connect's), connected (accept's), rejected (reject's)
  errc err = errc::ok;           // error events
  std::string message;           // error events: what happened and what to do
};

namespace spi {

class eq : public progress_group {
 public:
  void push(eq_event e) {
    auto g = guard();
    q_.push_back(std::move(e));
  }
  // ok (an event), again (none), or a later error entry is just an event of kind error.
  [[nodiscard]] errc read(eq_event& out);
  [[nodiscard]] errc wait(eq_event& out, int timeout_ms);
  // for providers pushing from their progress (the lock is held there)
  void push_locked(eq_event e) { push(std::move(e)); }

 private:
  std::deque<eq_event> q_;
};

}  // namespace spi
}  // namespace weft

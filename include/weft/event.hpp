#pragma once
// Events an event queue carries (cf. fi_eq(3), fi_cm(3)): connection
// management on MSG endpoints, and peer failures on every endpoint type.
// Control path: events own their data.
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "weft/address.hpp"
#include "weft/error.hpp"
#include "weft/info.hpp"
#include "weft/types.hpp"

namespace weft {

struct eq_event {
  enum class kind : std::uint8_t {
    connreq,    // a peer asks to connect: open an endpoint from `req`, then accept() or reject()
    connected,  // the connection is up (both sides get it)
    shutdown,   // the peer shut the connection down
    error,      // connect failed: refused, unreachable, timed out, rejected (see err and message)
    peer_dead,  // a peer of an RDM endpoint died or closed: `peer` and `addr` name it; its
                // directed receives and operations in flight complete with errc::peer_dead
  };
  // The fixed part (docs/abi.md): plain values, no implicit padding.
  kind type = kind::error;
  std::uint8_t reserved0[3] = {0, 0, 0};  // zero
  errc err = errc::ok;           // error and peer_dead events
  void* context = nullptr;       // the endpoint's context (endpoint::set_context)
  fi_addr_t addr = addr_notavail;  // peer_dead: its address-vector entry (addr_notavail: not in the AV)
  address peer;                  // peer_dead: the dead peer's address
  std::uint8_t reserved1[6] = {0, 0, 0, 0, 0, 0};  // zero
  // The owned part (C++ values; a C wrapper converts them).
  info req;                      // connreq: the info to open the accepting endpoint with
  std::vector<std::byte> data;   // connection data: connreq (connect's), connected (accept's), rejected (reject's)
  std::string message;           // error and peer_dead events: what happened and what to do
};

static_assert(alignof(eq_event) == 8 && offsetof(eq_event, type) == 0 && offsetof(eq_event, reserved0) == 1 &&
              offsetof(eq_event, err) == 4 && offsetof(eq_event, context) == 8 && offsetof(eq_event, addr) == 16 &&
              offsetof(eq_event, peer) == 24 && offsetof(eq_event, reserved1) == 90 && offsetof(eq_event, req) == 96);
static_assert(std::is_standard_layout_v<eq_event>);

}  // namespace weft

#pragma once
// Discovery: capabilities, attributes, hints and info entries (cf. fi_getinfo(3)).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "weft/address.hpp"
#include "weft/error.hpp"

namespace weft {

using caps_t = std::uint64_t;
namespace cap {
inline constexpr caps_t msg = 1ull << 0;
inline constexpr caps_t tagged = 1ull << 1;
inline constexpr caps_t rma = 1ull << 2;
inline constexpr caps_t atomic = 1ull << 3;
inline constexpr caps_t source = 1ull << 4;         // completions report the sender
inline constexpr caps_t directed_recv = 1ull << 5;  // receives may name a source
inline constexpr caps_t remote_cq_data = 1ull << 6;
inline constexpr caps_t local_comm = 1ull << 7;     // peers on this host
inline constexpr caps_t remote_comm = 1ull << 8;    // peers on other hosts
inline constexpr caps_t pmem = 1ull << 9;
}  // namespace cap

[[nodiscard]] std::string caps_to_string(caps_t c);
[[nodiscard]] result<caps_t> caps_from_string(const std::string& s);  // "msg,tagged"

enum class ep_type : std::uint8_t { unspec, msg, rdm };
[[nodiscard]] const char* to_string(ep_type t) noexcept;

enum class progress_mode : std::uint8_t { manual, automatic };
enum class threading : std::uint8_t { domain };  // one thread at a time per domain

struct fabric_attr {
  std::string name;
  std::string prov_name;
  std::uint32_t prov_version = 0;
};

struct domain_attr {
  std::string name;
  threading thread = threading::domain;
  progress_mode progress = progress_mode::manual;
  std::size_t cq_data_size = 8;
  std::size_t max_ep_count = 0;
  // Local buffers must be registered and named by their region's desc in
  // every operation (FI_MR_LOCAL). shm and tcp: false (they ignore descs).
  bool mr_local = false;
};

struct ep_attr {
  ep_type type = ep_type::unspec;
  std::size_t max_msg_size = 0;
};

struct tx_attr {
  std::size_t size = 0;         // operations in flight per endpoint
  std::size_t inject_size = 0;  // largest inject()
  std::size_t iov_limit = 0;
  std::size_t rma_iov_limit = 0;  // remote ranges per RMA operation
  // Default completion level of RMA and atomic operations on an endpoint
  // opened from this info: flag::transmit_complete, delivery_complete or
  // commit_complete; 0 = the provider's default (docs/rma.md).
  std::uint64_t op_flags = 0;
};

struct rx_attr {
  std::size_t size = 0;                 // posted receives per endpoint
  std::size_t iov_limit = 0;
  std::size_t total_buffered_recv = 0;  // bytes of unexpected messages buffered
};

struct info {
  caps_t caps = 0;
  fabric_attr fabric;
  domain_attr domain;
  ep_attr ep;
  tx_attr tx;
  rx_attr rx;
  addr_format format = addr_format::unspec;
  std::optional<address> src_addr;   // where an endpoint opened from this info listens
  std::optional<address> dest_addr;  // the peer that node/service resolved to
  std::uint16_t src_port = 0;        // integer service an endpoint registers (0: none)
  std::shared_ptr<void> handle;      // connreq: the pending connection (opaque)
};

struct hints {
  caps_t caps = 0;
  ep_type type = ep_type::unspec;
  std::string provider;               // "shm", "tcp", "" = any
  std::string node;                   // host name or address
  std::optional<std::uint16_t> port;  // integer service
  std::string service;                // string service ("7471" or a name from /etc/services)
  bool source = false;                // node/service name the local (listening) side
  std::size_t min_inject_size = 0;
  std::size_t min_tx_size = 0;
  std::size_t min_rx_size = 0;
};

// Every provider/endpoint-type combination that satisfies the hints, best
// first. WEFT_PROVIDER=shm,tcp restricts the providers considered. When
// nothing matches, the error names the first hint nothing could satisfy.
[[nodiscard]] result<std::vector<info>> get_info(const hints& h = {});

}  // namespace weft

#pragma once
// tcp: when a peer whose kernel holds our data is dead. A pure function of
// what TCP_INFO says (docs/design.md, "Peer failure (tcp RDM endpoints)"),
// so the rule is tested without a network (tests/unit/test_tcp_liveness_rule).
// liveness.cpp fills kernel_view from tcp_info at most every timeout/8.
#include <algorithm>
#include <cstdint>

namespace weft::prov::tcp {

// What the kernel says of one connection (times in ms, as tcp_info has them).
struct kernel_view {
  std::uint32_t unacked = 0;        // tcpi_unacked: segments sent, not acknowledged
  std::uint32_t notsent = 0;        // tcpi_notsent_bytes: bytes waiting (for the window)
  std::uint32_t probes = 0;         // tcpi_probes: zero-window probes unanswered (any answer resets it)
  std::uint64_t since_ack = 0;      // tcpi_last_ack_recv: since the last acknowledgement
  std::uint64_t since_data = 0;     // tcpi_last_data_recv: since the peer last sent us bytes
  std::uint64_t rto = 0;            // tcpi_rto / 1000: the retransmission timeout, backed off
};

// Kept per connection between judgements (times in ms of the caller's clock).
struct watch_state {
  bool holding = false;         // the kernel held data at the last judgement
  std::uint64_t since = 0;      // ... since then (an idle connection's last ack is old)
  bool probes2 = false;         // tcpi_probes >= 2 at the last judgement
  std::uint64_t probes2_at = 0; // ... first seen then
};

enum class verdict : std::uint8_t { idle, alive, dead };

// Silence is the shortest of: since the last acknowledgement, since the
// peer last sent us bytes (its data proves its host alive even when its
// acknowledgement number does not move, which does not renew
// tcpi_last_ack_recv), and since the kernel started holding data.
//  - Packets in flight: dead once the silence exceeds both the timeout and
//    the backed-off RTO. The kernel retransmits at RTO intervals that
//    double; silence > RTO means the retransmission before the current one
//    went unanswered for its whole interval (at least the original and one
//    retransmission were lost with no answer), so a receiver that drops one
//    retransmission under memory pressure, once the RTO has backed off past
//    the timeout, is not declared dead for it. (Silence never exceeds twice
//    the backed-off RTO while the kernel keeps retransmitting: a 2 x RTO rule
//    would never fire before the RTO reaches its 120 s cap.)
//  - Nothing in flight, a closed window: dead when at least two
//    zero-window probes are unanswered, the second one for a whole RTO
//    (tcpi_rto is not backed off by probing; a live receiver answers within
//    a round trip, which the RTO exceeds), and the silence exceeds the
//    timeout. One lost probe or answer is not enough.
[[nodiscard]] inline verdict judge(const kernel_view& k, watch_state& s, std::uint64_t now,
                                   std::uint64_t timeout) noexcept {
  if (k.unacked == 0 && k.notsent == 0) {
    s = watch_state{};
    return verdict::idle;
  }
  if (!s.holding) {
    s.holding = true;
    s.since = now;
  }
  if (k.probes < 2) {
    s.probes2 = false;
  } else if (!s.probes2) {
    s.probes2 = true;
    s.probes2_at = now;
  }
  const std::uint64_t silence = std::min({k.since_ack, k.since_data, now - s.since});
  if (k.unacked > 0) return silence > std::max(timeout, k.rto) ? verdict::dead : verdict::alive;
  if (s.probes2 && silence > timeout && now - s.probes2_at >= k.rto) return verdict::dead;
  return verdict::alive;
}

}  // namespace weft::prov::tcp

#pragma once
// The shm scenario of large messages whose sender the receiver cannot map
// for want of resources (descriptors: test_shm_rndv_emfile; memory:
// test_shm_peer_oom). A large message matched while its sender cannot be
// mapped would need a cts or an ack the receiver cannot send; it is not
// failed (its live sender would wait for an answer forever): an announcement
// matching a posted receive waits in the ring (the CQ read answers again),
// and a receive posted for an arrived one returns again with
// again_reason::no_resources; once the resource is back both complete, at
// both ends, with their bytes.
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/limited_child.hpp"
#include "fault/shm_peer.hpp"

namespace weft::test {

// Reads one completion of n, if any (an error entry is noted in out): true when one was read.
inline bool take_one(node& n, std::string& out, const char* who, int& got) {
  cq_entry e{};
  const errc x = n.cq.read(e);
  if (x == errc::ok) {
    ++got;
    return true;
  }
  if (x == errc::error_available) {
    cq_err_entry ee{};
    (void)n.cq.read_error(ee);
    out += std::string(who) + " error: " + ee.msg + "\n";
    ++got;
    return true;
  }
  return false;
}

// begin_lack() starts the shortage ("" when it did, else what failed);
// end_lack() ends it. Between the two the receiver only reads its CQ and
// posts a receive (nothing here allocates or opens anything). "ok" or what
// went wrong.
inline std::string unmappable_sender_scenario(const std::function<std::string()>& begin_lack,
                                              const std::function<void()>& end_lack) {
  using clk = std::chrono::steady_clock;
  constexpr std::size_t len = 64 * 1024;  // a rendezvous message (larger than inline)
  // the receiver and two senders, each in a domain of its own: the receiver has mapped neither
  node r = open_node("shm");
  node s1 = open_node("shm");
  node s2 = open_node("shm");
  auto d1 = s1.av.insert(*r.ep.name());
  auto d2 = s2.av.insert(*r.ep.name());
  if (!d1 || !d2) return "insert failed";
  if (!warm_up({&r, &s1, &s2})) return "cancel of nothing";
  std::vector<char> src1(len, '1'), src2(len, '2'), dst1(len, 0), dst2(len, 0);
  // 1: a receive posted before its announcement arrives
  if (r.ep.trecv(dst1.data(), len, addr_unspec, 1, 0, &dst1) != errc::ok) return "trecv 1";
  // 2: an announcement that arrives unexpected; then 1's, for the posted receive
  if (s2.ep.tsend(src2.data(), len, *d2, 2, &src2) != errc::ok) return "tsend 2";
  if (s1.ep.tsend(src1.data(), len, *d1, 1, &src1) != errc::ok) return "tsend 1";
  if (std::string e = begin_lack(); !e.empty()) return e;
  cq_entry e{};
  const errc read1 = r.cq.read(e);  // takes in 2 (unexpected), then 1 waits: its sender cannot be mapped
  const errc post2 = r.ep.trecv(dst2.data(), len, addr_unspec, 2, 0, &dst2);
  const again_reason why2 = post2 == errc::again ? r.ep.again_reason() : again_reason::none;
  end_lack();
  std::string out;
  if (read1 != errc::again)
    out += std::string("receiver CQ read while the sender cannot be mapped: ") + to_string(read1) +
           " (expected again)\n";
  if (post2 != errc::again)
    out += std::string("receive for an arrived message from an unmappable sender: ") + to_string(post2) +
           " (expected again)\n";
  else if (why2 != again_reason::no_resources)
    out += std::string("again_reason: ") + to_string(why2) + " (expected no_resources)\n";
  if (post2 == errc::again && r.ep.trecv(dst2.data(), len, addr_unspec, 2, 0, &dst2) != errc::ok)
    out += "receive 2 with the resource back\n";
  int rgot = 0, g1 = 0, g2 = 0;
  for (auto until = clk::now() + std::chrono::seconds(20); (rgot < 2 || g1 < 1 || g2 < 1) && clk::now() < until;) {
    (void)take_one(r, out, "receiver", rgot);
    (void)take_one(s1, out, "sender 1", g1);
    (void)take_one(s2, out, "sender 2", g2);
  }
  if (rgot != 2) out += "receiver completions: " + std::to_string(rgot) + " of 2\n";
  if (g1 != 1 || g2 != 1) out += "sender completions: " + std::to_string(g1) + ", " + std::to_string(g2) + "\n";
  if (dst1 != src1) out += "message 1 not received intact\n";
  if (dst2 != src2) out += "message 2 not received intact\n";
  return out.empty() ? "ok" : out;
}

}  // namespace weft::test

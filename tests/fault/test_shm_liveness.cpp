// shm peer failure (docs/design.md "Peer failure"): peers killed with SIGKILL
// or closing their endpoint are found while the application reads or waits
// on its CQ or EQ; directed receives and sends fail with peer_dead; the death
// is reported once, on the EQ when one is bound, else as a CQ error entry.
#include <cstring>

#include "common/node_with_eq.hpp"
#include "fault/shm_peer.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// The peer_dead event on eq (other events are collected too); bounded.
std::optional<eq_event> wait_peer_dead(event_queue& eq, std::vector<eq_event>& others, int timeout_ms = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    eq_event e;
    if (eq.wait(e, 50) != errc::ok) continue;
    if (e.type == eq_event::kind::peer_dead) return e;
    others.push_back(std::move(e));
  }
  return std::nullopt;
}

bool names(const char* msg, const std::string& peer) { return std::strstr(msg, peer.c_str()) != nullptr; }

}  // namespace

// No EQ: the directed receive fails, and one CQ error entry (flags recv,
// no context, data = the AV entry) names the peer. The killed child is not
// reaped before: an unreaped zombie is dead too.
TEST(shm_liveness, directed_receive_from_killed_peer_fails_and_cq_reports_it) {
  node s = open_node("shm");
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  char buf[64];
  int ctx = 0;
  ASSERT_EQ(s.ep.recv(buf, sizeof buf, *fa, &ctx), errc::ok);
  c.kill9();  // not reaped yet
  cq_log log;
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) {
    return count_err(l, &ctx, errc::peer_dead) >= 1 && count_err(l, nullptr, errc::peer_dead) >= 1;
  })) << "the directed receive and the report must arrive; errors seen: " << log.err.size();
  for (const auto& e : log.err) {
    EXPECT_EQ(e.err, errc::peer_dead) << e.msg;
    EXPECT_TRUE(e.flags & flag::recv) << e.msg;
    EXPECT_TRUE(names(e.msg, c.name())) << "the entry names the peer: " << e.msg;
    if (e.context == nullptr) {
      EXPECT_EQ(e.data, *fa) << "the report carries the AV entry";
    }
  }
  EXPECT_TRUE(log.ok.empty());
  // Once: further ticks report nothing more.
  drain_until(s.cq, log, [](const cq_log&) { return false; }, 200);
  EXPECT_EQ(count_err(log, nullptr, errc::peer_dead), 1u);
  EXPECT_EQ(count_err(log, &ctx, errc::peer_dead), 1u);
  EXPECT_EQ(log.err.size(), 2u);
  // A directed receive posted afterwards fails at once, with an error entry.
  int ctx2 = 0;
  ASSERT_EQ(s.ep.recv(buf, sizeof buf, *fa, &ctx2), errc::ok);
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) { return count_err(l, &ctx2, errc::peer_dead) == 1; }));
  EXPECT_TRUE(names(log.err.back().msg, c.name())) << log.err.back().msg;
}

// With an EQ: a peer_dead event names the peer's address and AV entry; the
// CQ gets only the directed receive's failure. Found in blocking CQ waits.
TEST(shm_liveness, peer_dead_event_names_address_and_av_entry) {
  node_with_eq s = open_shm_node_with_eq();
  int ep_ctx = 0;
  s.ep.set_context(&ep_ctx);
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  char buf[64];
  int ctx = 0;
  ASSERT_EQ(s.ep.trecv(buf, sizeof buf, *fa, 7, 0, &ctx), errc::ok);
  c.reap();  // killed and reaped
  cq_log log;
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) { return count_err(l, &ctx, errc::peer_dead) == 1; },
                          5000, true))
      << "found while the application sleeps in cq.wait";
  EXPECT_TRUE(names(log.err[0].msg, c.name())) << log.err[0].msg;
  EXPECT_TRUE(log.err[0].flags & flag::tagged);
  std::vector<eq_event> others;
  auto ev = wait_peer_dead(s.eq, others);
  ASSERT_TRUE(ev) << "no peer_dead event";
  EXPECT_EQ(ev->peer, c.addr);
  EXPECT_EQ(ev->addr, *fa);
  EXPECT_EQ(ev->err, errc::peer_dead);
  EXPECT_EQ(ev->context, &ep_ctx);
  EXPECT_NE(ev->message.find(c.name()), std::string::npos) << ev->message;
  EXPECT_NE(ev->message.find("died"), std::string::npos) << ev->message;
  EXPECT_TRUE(others.empty());
  // Once, and the CQ carries no report of its own.
  eq_event more;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(s.eq.wait(more, 50), errc::timed_out);
  drain_until(s.cq, log, [](const cq_log&) { return false; }, 100);
  EXPECT_EQ(log.err.size(), 1u);
}

TEST(shm_liveness, peer_closing_its_endpoint_counts_as_gone) {
  node_with_eq s = open_shm_node_with_eq();
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  char buf[64];
  int ctx = 0;
  ASSERT_EQ(s.ep.recv(buf, sizeof buf, *fa, &ctx), errc::ok);
  ASSERT_TRUE(c.command('c'));  // closes its endpoint; the process lives on
  std::vector<eq_event> others;
  auto ev = wait_peer_dead(s.eq, others);
  ASSERT_TRUE(ev) << "no peer_dead event for a peer that closed its endpoint";
  EXPECT_EQ(ev->peer, c.addr);
  EXPECT_EQ(ev->addr, *fa);
  EXPECT_NE(ev->message.find("closed its endpoint"), std::string::npos) << ev->message;
  cq_log log;
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) { return count_err(l, &ctx, errc::peer_dead) == 1; }));
  EXPECT_EQ(s.ep.send("x", 1, *fa), errc::peer_dead);
}

// Without an EQ, closing is not dying: the directed receive fails, but no
// error entry reports a peer that simply finished (as on tcp).
TEST(shm_liveness, clean_close_without_eq_fails_directed_receives_only) {
  node s = open_node("shm");
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  char buf[64];
  int ctx = 0;
  ASSERT_EQ(s.ep.recv(buf, sizeof buf, *fa, &ctx), errc::ok);
  ASSERT_TRUE(c.command('c'));
  cq_log log;
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) { return count_err(l, &ctx, errc::peer_dead) == 1; }));
  EXPECT_TRUE(names(log.err[0].msg, c.name())) << log.err[0].msg;
  EXPECT_TRUE(std::strstr(log.err[0].msg, "closed its endpoint")) << log.err[0].msg;
  drain_until(s.cq, log, [](const cq_log&) { return false; }, 200);
  EXPECT_EQ(log.err.size(), 1u) << "no report entry for a clean close";
  EXPECT_EQ(s.ep.send("x", 1, *fa), errc::peer_dead);
}

// Sends after the death is known fail, every one: none completes with success.
TEST(shm_liveness, sends_to_a_dead_peer_all_fail) {
  node_with_eq s = open_shm_node_with_eq();
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  c.reap();
  std::vector<eq_event> others;
  ASSERT_TRUE(wait_peer_dead(s.eq, others)) << "no peer_dead event";
  std::size_t dead = 0, posted = 0;
  char small[64] = {};
  static std::vector<char> big(1 << 20);
  for (int i = 0; i < 300; ++i) {
    errc r;
    switch (i % 5) {
      case 0: r = s.ep.send(small, sizeof small, *fa, &dead); break;
      case 1: r = s.ep.inject(small, sizeof small, *fa); break;
      case 2: r = s.ep.tsend(small, sizeof small, *fa, 9, &dead); break;
      case 3: r = s.ep.tinject(small, 8, *fa, 9); break;
      default: r = s.ep.send(big.data(), big.size(), *fa, &dead); break;  // rendezvous
    }
    if (r == errc::peer_dead) ++dead;
    else if (r == errc::ok) ++posted;
    else ADD_FAILURE() << "send " << i << ": " << to_string(r);
  }
  cq_log log;
  if (posted) {
    drain_until(s.cq, log, [&](const cq_log& l) { return l.ok.size() + l.err.size() >= posted; });
    dead += count_err(log, &dead, errc::peer_dead);
  }
  EXPECT_EQ(dead, 300u) << "returned or completed with peer_dead";
  EXPECT_EQ(log.ok.size(), 0u) << "no send to a dead peer succeeds";
}

// A sender that is not in the AV is known too: its death is reported, with
// the AV entry addr_notavail.
TEST(shm_liveness, sender_outside_the_av_is_watched) {
  node s = open_node("shm");
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  char buf[16] = {};
  ASSERT_EQ(s.ep.recv(buf, sizeof buf), errc::ok);
  address me = *s.ep.name();
  ASSERT_TRUE(c.command('s', &me));
  cq_log log;
  ASSERT_TRUE(drain_until(s.cq, log, [](const cq_log& l) { return l.ok.size() == 1; }));
  EXPECT_EQ(std::string(buf, 5), "hello");
  c.reap();
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) { return count_err(l, nullptr, errc::peer_dead) == 1; }))
      << "the death of a peer that sent to us is reported";
  EXPECT_TRUE(names(log.err[0].msg, c.name())) << log.err[0].msg;
  EXPECT_EQ(log.err[0].data, addr_notavail);
  EXPECT_TRUE(std::strstr(log.err[0].msg, "not in the address vector")) << log.err[0].msg;
}

// An operation in flight to a peer that dies completes with peer_dead; the
// report follows, once, on the CQ.
TEST(shm_liveness, rendezvous_send_in_flight_to_killed_peer_fails) {
  node s = open_node("shm");
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  static std::vector<char> big(1 << 20, 'x');
  int ctx = 0;
  ASSERT_EQ(s.ep.send(big.data(), big.size(), *fa, &ctx), errc::ok);
  c.reap();
  cq_log log;
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) {
    return count_err(l, &ctx, errc::peer_dead) == 1 && count_err(l, nullptr, errc::peer_dead) == 1;
  }));
  EXPECT_TRUE(log.ok.empty());
}

// A report that finds the CQ full waits for room: never dropped, still once.
TEST(shm_liveness, report_waits_for_room_in_a_full_cq) {
  node s = open_node("shm", cap::msg | cap::tagged, 0, false, 2);
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  char b1[8], b2[8];
  int x1 = 0, x2 = 0;
  ASSERT_EQ(s.ep.recv(b1, sizeof b1, *fa, &x1), errc::ok);
  ASSERT_EQ(s.ep.recv(b2, sizeof b2, *fa, &x2), errc::ok);  // the CQ's 2 entries are spoken for
  c.reap();
  // Drive progress without reading: both receives fail and fill the CQ; the
  // report has no room yet. (Bounded: 5 s.)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  errc r = errc::again;
  while (std::chrono::steady_clock::now() < deadline) {
    cq_entry e;
    if ((r = s.cq.read(e)) == errc::error_available) break;
  }
  ASSERT_EQ(r, errc::error_available);
  cq_log log;
  ASSERT_TRUE(drain_until(s.cq, log, [&](const cq_log& l) { return l.err.size() == 3; }))
      << "two directed receives and the report, which waited for room; got " << log.err.size();
  EXPECT_EQ(count_err(log, &x1, errc::peer_dead), 1u);
  EXPECT_EQ(count_err(log, &x2, errc::peer_dead), 1u);
  EXPECT_EQ(count_err(log, nullptr, errc::peer_dead), 1u);
  drain_until(s.cq, log, [](const cq_log&) { return false; }, 100);
  EXPECT_EQ(log.err.size(), 3u);
}

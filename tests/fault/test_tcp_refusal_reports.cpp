// tcp: an RDM listener out of memory refuses each connection it accepted
// (hello_ack no_resources, test hook fail_accepts) and tells its
// application. Each refusal used to queue an event of its own in room that
// no connection had reserved: a burst of them, while the CQ (no EQ bound)
// had no room, filled the endpoint's pending events and a later peer's
// death was dropped. Now the refusals are counted and reported by one event
// that takes one reserved place, whatever their number: the death is
// reported, and the counts reported add up to the refusals. Running out of
// memory later, while identifying a connection (its hello; test hook
// fail_hellos), closed it without a word (its peer saw a bare close, which
// a peer that knew us takes for our death): it is refused the same way.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/cm.hpp"
#include "common/raw_socket.hpp"
#include "prov/tcp/test_hooks.hpp"
#include "tcp_procs.hpp"

using namespace weft;
using namespace weft::test;

namespace {

namespace hooks = prov::tcp::test_hooks;

struct reset_hook {
  ~reset_hook() {
    hooks::fail_accepts = 0;
    hooks::fail_hellos = 0;
    hooks::fail_epoll_adds = 0;
  }
};

// The number of refusals an error entry reports (0: not a refusal report).
std::size_t refusals_in(const char* msg) {
  if (const char* w = std::strstr(msg, "cannot watch accepted connections (epoll_ctl: ")) {
    std::size_t n = 0;
    const char* c = std::strstr(w, "): ");
    return c && std::sscanf(c, "): %zu refused", &n) == 1 ? n : 1;
  }
  if (std::strstr(msg, "cannot watch an accepted connection")) return 1;  // one event each
  if (!std::strstr(msg, "out of memory accepting")) return 0;
  std::size_t n = 0;
  if (std::sscanf(msg, "out of memory accepting connections: %zu refused", &n) == 1) return n;
  return 1;  // a report of one refusal (the text before they were counted)
}

}  // namespace

// A burst of refusals (the hook makes each accepted connection fail: out
// of memory, or epoll cannot watch it) with nobody reading the CQ, then a
// peer's death: the death is reported, and the reports count every refusal.
static void burst_then_death(std::atomic<int>& hook) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  constexpr std::size_t refusals = 100;
  constexpr std::size_t cq_size = 4;  // full after a few reports: the rest wait in the endpoint
  pipe_pair up, down;
  child peer;
  peer.pid = ::fork();
  ASSERT_GE(peer.pid, 0);
  if (peer.pid == 0) {
    forked_child();
    int rc = 0;
    {
      node p = open_node("tcp", cap::msg | cap::source, 0, true);
      const address me = *p.ep.name();
      char hi[4] = {};
      if (!up.put(&me, sizeof me)) rc = 1;
      if (rc == 0 && p.ep.recv(hi, sizeof hi) != errc::ok) rc = 2;
      cq_entry e;
      if (rc == 0 && p.cq.wait(e, 20000) != errc::ok) rc = 3;
      if (rc == 0 && p.ep.send("ok", 3, e.src) != errc::ok) rc = 4;
      if (rc == 0 && p.cq.wait(e, 20000) != errc::ok) rc = 5;
      if (rc == 0 && !up.put_byte('R')) rc = 6;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (rc == 0 && std::chrono::steady_clock::now() < until) p.cq.progress();  // until killed
    }
    ::_exit(rc);
  }
  node srv = open_node("tcp", cap::msg | cap::source, 0, false, cq_size);  // no EQ: reports go to the CQ
  address peer_addr{};
  ASSERT_TRUE(up.get(&peer_addr, sizeof peer_addr, 20000)) << "the peer did not start";
  auto to = srv.av.insert(peer_addr);
  ASSERT_TRUE(to);
  // The peer is up: a message each way on the connection srv opened.
  char reply[3] = {};
  ASSERT_EQ(srv.ep.recv(reply, sizeof reply), errc::ok);
  ASSERT_EQ(srv.ep.send("hi", 3, *to), errc::ok);
  for (int k = 0; k < 2; ++k) {
    outcome o = next(srv, {}, 20000);
    ASSERT_TRUE(o.ok) << o.err.msg;
  }
  ASSERT_STREQ(reply, "ok");
  char r = 0;
  ASSERT_TRUE(up.get(&r, 1, 20000));

  // A burst of connections the listener cannot take, with nobody reading
  // its CQ meanwhile.
  reset_hook reset;
  hook = static_cast<int>(refusals);
  const std::uint16_t port = port_of(*srv.ep.name());
  std::vector<int> socks;
  for (std::size_t i = 0; i < refusals; ++i) {
    const int s = raw_connect(port);
    ASSERT_GE(s, 0) << std::strerror(errno);
    socks.push_back(s);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (hook.load() > 0 && std::chrono::steady_clock::now() < until) srv.cq.progress();
  ASSERT_EQ(hook.load(), 0) << "the listener did not accept every connection";
  // Each was told why (hello_ack no_resources), not closed silently.
  for (int s : socks) {
    prov::tcp::wire::frame_header h{};
    ASSERT_TRUE(read_within(s, &h, sizeof h, std::chrono::seconds(5)));
    EXPECT_EQ(h.op, static_cast<std::uint8_t>(prov::tcp::wire::op::hello_ack));
    EXPECT_EQ(h.data, static_cast<std::uint64_t>(prov::tcp::wire::hello_status::no_resources));
    ::close(s);
  }

  // The peer dies: its death must reach the application after the reports.
  peer.kill_and_reap();
  std::size_t reported = 0, entries = 0;
  bool death = false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!death && std::chrono::steady_clock::now() < end) {
    cq_entry e;
    const errc st = srv.cq.read(e);
    ASSERT_NE(st, errc::ok) << "a completion nobody asked for";
    if (st != errc::error_available) continue;
    cq_err_entry ee;
    ASSERT_EQ(srv.cq.read_error(ee), errc::ok);
    if (ee.err == errc::peer_dead) {
      EXPECT_EQ(ee.data, *to) << "the dead peer's address-vector entry";
      EXPECT_NE(std::string(ee.msg).find(to_string(peer_addr)), std::string::npos) << ee.msg;
      death = true;
      continue;
    }
    EXPECT_EQ(ee.err, errc::no_memory) << ee.msg;
    EXPECT_EQ(ee.context, nullptr);
    const std::size_t n = refusals_in(ee.msg);
    EXPECT_GT(n, 0u) << "not a refusal report: " << ee.msg;
    reported += n;
    ++entries;
  }
  // However many refusals, their reports take a bounded room: the CQ's,
  // then one place in the endpoint that counts the rest.
  EXPECT_LE(entries, cq_size + 2) << "one report per refusal";
  EXPECT_TRUE(death) << "the peer's death was not reported (crowded out by the refusal reports)";
  EXPECT_EQ(reported, refusals) << "the reports do not count every refusal";
  // Nothing more: every refusal was reported once.
  cq_entry e;
  EXPECT_EQ(srv.cq.read(e), errc::again);
}

TEST(tcp_refusal_reports, a_burst_of_refusals_never_crowds_out_a_peer_death) { burst_then_death(hooks::fail_accepts); }

// Connections epoll cannot watch (epoll_ctl ADD failing) are refused and
// counted the same way: one report for many, never one event each.
TEST(tcp_refusal_reports, a_burst_of_unwatchable_connections_never_crowds_out_a_peer_death) {
  burst_then_death(hooks::fail_epoll_adds);
}

TEST(tcp_refusal_reports, out_of_memory_taking_a_hello_refuses_the_connection_with_the_reason) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node srv = open_node("tcp", cap::msg);
  node cli = open_node("tcp", cap::msg);
  const fi_addr_t to = insert(cli, srv);
  reset_hook reset;
  hooks::fail_hellos = 1;
  ASSERT_EQ(post([&] { return cli.ep.send("lost", 5, to, reinterpret_cast<void*>(1)); }, {&srv}), errc::ok);
  outcome sent = next(cli, {&srv});
  EXPECT_EQ(hooks::fail_hellos.load(), 0) << "the hook was not reached";
  ASSERT_TRUE(sent.error) << "the send to a listener out of memory succeeded";
  EXPECT_EQ(sent.err.context, reinterpret_cast<void*>(1));
  EXPECT_EQ(sent.err.err, errc::busy) << "a bare close instead of the reason: " << sent.err.msg;
  EXPECT_NE(std::string(sent.err.msg).find("out of memory"), std::string::npos) << sent.err.msg;
  // The listener's application (no EQ: its CQ) is told, with the count.
  outcome told = next(srv, {&cli});
  ASSERT_TRUE(told.error) << "the listener's application was not told";
  EXPECT_EQ(told.err.err, errc::no_memory) << told.err.msg;
  EXPECT_EQ(refusals_in(told.err.msg), 1u) << told.err.msg;

  // Memory again: the next send is delivered.
  char in[8] = {};
  ASSERT_EQ(srv.ep.recv(in, sizeof in), errc::ok);
  ASSERT_EQ(post([&] { return cli.ep.send("found", 6, to, reinterpret_cast<void*>(2)); }, {&srv}), errc::ok);
  outcome ok = next(cli, {&srv});
  EXPECT_TRUE(ok.ok) << ok.err.msg;
  outcome got = next(srv, {&cli});
  EXPECT_TRUE(got.ok) << got.err.msg;
  EXPECT_STREQ(in, "found");
}

// tcp: a dead peer is reported, and nothing waits for it. Peers run in
// child processes killed with SIGKILL: receives directed at the dead peer
// complete with peer_dead, and the application is told once, by an event on
// the EQ bound to the endpoint, or (no EQ) by a CQ error entry.
#include <algorithm>

#include "common/node_with_eq.hpp"
#include "tcp_procs.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int wait_ms = 5000;  // well below WEFT_TCP_TIMEOUT_MS (10 s): a kill is seen at once

bool names(const char* msg, const address& a) { return std::string(msg).find(to_string(a)) != std::string::npos; }

// Waits (bounded) for the peer_dead report: an EQ event, or a CQ error
// entry without context. Checks that it names `peer` and its AV entry.
void expect_death_report(tcp_node_with_eq& x, bool with_eq, const address& peer, fi_addr_t a) {
  if (with_eq) {
    eq_event ev;
    ASSERT_EQ(x.eq.wait(ev, wait_ms), errc::ok) << "no peer_dead event";
    EXPECT_EQ(ev.type, eq_event::kind::peer_dead);
    EXPECT_EQ(ev.err, errc::peer_dead);
    EXPECT_EQ(ev.peer, peer) << to_string(ev.peer);
    EXPECT_EQ(ev.addr, a) << "the dead peer's address-vector entry";
    EXPECT_TRUE(names(ev.message.c_str(), peer)) << ev.message;
  } else {
    outcome o = next(x.n, {}, wait_ms);
    ASSERT_TRUE(o.error) << "no peer_dead error entry";
    EXPECT_EQ(o.err.context, nullptr);
    EXPECT_TRUE(o.err.flags & flag::recv);
    EXPECT_EQ(o.err.err, errc::peer_dead);
    EXPECT_EQ(o.err.data, a) << "data holds the dead peer's address-vector entry";
    EXPECT_TRUE(names(o.err.msg, peer)) << o.err.msg;
  }
}

}  // namespace

// The server is killed: each of 4 clients has a receive directed at it
// posted, and each completes with peer_dead (2 clients with an EQ, 2 without).
TEST(tcp_peer_dead, server_killed_fails_directed_receives_of_four_clients) {
  constexpr int clients = 4;
  pipe_pair up;
  child srv;
  srv.pid = ::fork();
  ASSERT_GE(srv.pid, 0);
  if (srv.pid == 0) {
    forked_child();
    int rc = 0;
    {
      node s = open_node("tcp", cap::msg | cap::tagged | cap::source, 0, true);
      const address me = *s.ep.name();
      if (!up.put(&me, sizeof me)) rc = 1;
      // Answer each client's hello, then serve until killed (bounded).
      for (int i = 0; i < clients && rc == 0; ++i) {
        char hi[8];
        if (s.ep.recv(hi, sizeof hi) != errc::ok) rc = 2;
        cq_entry e;
        if (rc == 0 && s.cq.wait(e, 20000) != errc::ok) rc = 3;
        if (rc == 0 && s.ep.send("ok", 2, e.src) != errc::ok) rc = 4;
        if (rc == 0 && s.cq.wait(e, 20000) != errc::ok) rc = 5;
      }
      if (rc == 0 && !up.put_byte('R')) rc = 6;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (rc == 0 && std::chrono::steady_clock::now() < until) s.cq.progress();
    }
    ::_exit(rc);
  }
  address srv_addr{};
  ASSERT_TRUE(up.get(&srv_addr, sizeof srv_addr, 20000)) << "the server did not start";
  std::vector<tcp_node_with_eq> c(clients);
  std::vector<fi_addr_t> to(clients);
  std::vector<char> last(clients);  // each client's directed receive (its context too)
  for (int i = 0; i < clients; ++i) {
    c[static_cast<std::size_t>(i)] = open_tcp_node_with_eq(i < 2);
    auto& x = c[static_cast<std::size_t>(i)];
    auto a = x.n.av.insert(srv_addr);
    ASSERT_TRUE(a);
    to[static_cast<std::size_t>(i)] = *a;
    char reply[2] = {};
    ASSERT_EQ(x.n.ep.recv(reply, sizeof reply, *a, reply), errc::ok);
    ASSERT_EQ(x.n.ep.send("hi", 2, *a), errc::ok);
    for (int k = 0; k < 2; ++k) {  // the send's completion and the reply, in any order
      outcome o = next(x.n, {}, 20000);
      ASSERT_TRUE(o.ok) << o.err.msg;
    }
    ASSERT_EQ(std::string(reply, 2), "ok");
  }
  char r = 0;
  ASSERT_TRUE(up.get(&r, 1, 20000));
  for (int i = 0; i < clients; ++i)
    ASSERT_EQ(c[static_cast<std::size_t>(i)].n.ep.recv(&last[static_cast<std::size_t>(i)], 1,
                                                       to[static_cast<std::size_t>(i)],
                                                       &last[static_cast<std::size_t>(i)]),
              errc::ok);
  srv.kill_and_reap();
  for (int i = 0; i < clients; ++i) {
    auto& x = c[static_cast<std::size_t>(i)];
    SCOPED_TRACE("client " + std::to_string(i));
    outcome o = next(x.n, {}, wait_ms);
    ASSERT_TRUE(o.error) << "the directed receive must end";
    EXPECT_EQ(o.err.context, &last[static_cast<std::size_t>(i)]);
    EXPECT_EQ(o.err.err, errc::peer_dead) << o.err.msg;
    EXPECT_TRUE(names(o.err.msg, srv_addr)) << o.err.msg;
    expect_death_report(x, i < 2, srv_addr, to[static_cast<std::size_t>(i)]);
    // A receive directed at it now ends at once; the death is not reported again.
    char more;
    ASSERT_EQ(x.n.ep.recv(&more, 1, to[static_cast<std::size_t>(i)], &more), errc::ok);
    outcome again = next(x.n, {}, wait_ms);
    ASSERT_TRUE(again.error);
    EXPECT_EQ(again.err.context, &more);
    EXPECT_EQ(again.err.err, errc::peer_dead);
    cq_entry e;
    EXPECT_EQ(x.n.cq.read(e), errc::again);
    if (i < 2) {
      eq_event ev;
      EXPECT_EQ(x.eq.read(ev), errc::again) << "one report per dead peer";
    }
  }
}

class tcp_client_killed : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

// A client is killed: the server's directed receive from it ends, and the
// server is told which peer died (its address and AV entry).
TEST_P(tcp_client_killed, server_is_told_which_peer_died) {
  const bool with_eq = std::get<0>(GetParam());
  const bool automatic = std::get<1>(GetParam());
  ::setenv("WEFT_PROGRESS", automatic ? "auto" : "manual", 1);
  tcp_node_with_eq s = open_tcp_node_with_eq(with_eq);
  ::setenv("WEFT_PROGRESS", "manual", 1);
  const address srv_addr = *s.n.ep.name();
  pipe_pair up, down;
  child cl;
  cl.pid = ::fork();
  ASSERT_GE(cl.pid, 0);
  if (cl.pid == 0) {
    forked_child();
    int rc = 0;
    {
      node c = open_node("tcp", cap::msg | cap::tagged);
      const address me = *c.ep.name();
      char go = 0;
      if (!up.put(&me, sizeof me) || !down.get(&go, 1, 20000)) rc = 1;
      auto d = c.av.insert(srv_addr);
      if (rc == 0 && (!d || c.ep.send("hi", 2, *d) != errc::ok)) rc = 2;
      cq_entry e;
      if (rc == 0 && c.cq.wait(e, 20000) != errc::ok) rc = 3;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (rc == 0 && std::chrono::steady_clock::now() < until) c.cq.progress();
    }
    ::_exit(rc);
  }
  address cl_addr{};
  ASSERT_TRUE(up.get(&cl_addr, sizeof cl_addr, 20000)) << "the client did not start";
  auto ca = s.n.av.insert(cl_addr);  // known before it connects: its events carry this entry
  ASSERT_TRUE(ca);
  char hi[2] = {};
  ASSERT_EQ(s.n.ep.recv(hi, sizeof hi, addr_unspec, hi), errc::ok);
  ASSERT_TRUE(down.put_byte('G'));
  outcome got = next(s.n, {}, 20000);
  ASSERT_TRUE(got.ok) << got.err.msg;
  ASSERT_EQ(std::string(hi, 2), "hi");
  char from_client = 0;
  ASSERT_EQ(s.n.ep.recv(&from_client, 1, *ca, &from_client), errc::ok);
  cl.kill_and_reap();
  ASSERT_TRUE(WIFSIGNALED(cl.status));
  // The directed receive ends, then the report.
  outcome o = next(s.n, {}, wait_ms);
  ASSERT_TRUE(o.error) << "the receive directed at the dead client must end";
  EXPECT_EQ(o.err.context, &from_client);
  EXPECT_EQ(o.err.err, errc::peer_dead) << o.err.msg;
  expect_death_report(s, with_eq, cl_addr, *ca);
  // A send to it tries again (refused: it is gone) and fails; not reported again.
  int ctx = 0;
  errc r = s.n.ep.send("x", 1, *ca, &ctx);
  if (r == errc::ok) {
    outcome f = next(s.n, {}, wait_ms);
    ASSERT_TRUE(f.error);
    EXPECT_EQ(f.err.context, &ctx);
    EXPECT_EQ(f.err.err, errc::peer_dead) << f.err.msg;
  } else {
    EXPECT_EQ(r, errc::peer_dead);
  }
  cq_entry e;
  EXPECT_EQ(s.n.cq.read(e), errc::again) << "one report per dead peer";
  if (with_eq) {
    eq_event ev;
    EXPECT_EQ(s.eq.read(ev), errc::again) << "one report per dead peer";
  }
}

INSTANTIATE_TEST_SUITE_P(eq_and_progress, tcp_client_killed,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<bool, bool>>& i) {
                           return std::string(std::get<0>(i.param) ? "eq" : "no_eq") +
                                  (std::get<1>(i.param) ? "_auto" : "_manual");
                         });

// An endpoint closed in order (not killed) is not a death: no CQ error entry
// for an application without an EQ; with one, an event says it closed.
TEST(tcp_peer_dead, orderly_close_is_an_event_not_an_error) {
  for (bool with_eq : {false, true}) {
    SCOPED_TRACE(with_eq ? "with an EQ" : "without an EQ");
    tcp_node_with_eq s = open_tcp_node_with_eq(with_eq);
    node c = open_node("tcp", cap::msg | cap::tagged);
    auto ca = insert(s.n, c);
    auto sa = insert(c, s.n);
    char hi[2] = {};
    ASSERT_EQ(s.n.ep.recv(hi, sizeof hi, addr_unspec, hi), errc::ok);
    ASSERT_EQ(c.ep.send("hi", 2, sa), errc::ok);
    outcome o = next(s.n, {&c}, 20000);
    ASSERT_TRUE(o.ok) << o.err.msg;
    char directed = 0;
    ASSERT_EQ(s.n.ep.recv(&directed, 1, ca, &directed), errc::ok);
    const address gone = *c.ep.name();
    c = node{};  // closed in order
    outcome d = next(s.n, {}, wait_ms);
    ASSERT_TRUE(d.error) << "the receive directed at the closed peer ends";
    EXPECT_EQ(d.err.context, &directed);
    EXPECT_EQ(d.err.err, errc::peer_dead) << d.err.msg;
    EXPECT_NE(std::string(d.err.msg).find("closed its endpoint"), std::string::npos) << d.err.msg;
    if (with_eq) {
      eq_event ev;
      ASSERT_EQ(s.eq.wait(ev, wait_ms), errc::ok);
      EXPECT_EQ(ev.type, eq_event::kind::peer_dead);
      EXPECT_EQ(ev.peer, gone);
      EXPECT_EQ(ev.addr, ca);
      EXPECT_NE(ev.message.find("closed its endpoint"), std::string::npos) << ev.message;
    }
    cq_entry e;
    EXPECT_EQ(s.n.cq.read(e), errc::again) << "an orderly close is no error entry";
  }
}

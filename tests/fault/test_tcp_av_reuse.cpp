// tcp: an address-vector handle freed by remove() and given to another peer
// by the next insert() belongs to that peer only. Connections of the removed
// peer lose the handle: their messages do not match receives directed at it
// (nor carry it as src), and their end does not declare the new peer dead.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>

#include "common/harness.hpp"
#include "common/node_with_eq.hpp"

namespace weft::test {
namespace {

constexpr int wait_ms = 5000;

tcp_node_with_eq open_server() {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  return open_tcp_node_with_eq();
}

TEST(tcp_av_reuse, a_reused_handle_names_the_new_peer_only) {
  tcp_node_with_eq s = open_server();
  ::setenv("WEFT_PROGRESS", "manual", 1);
  auto p = std::make_unique<node>(open_node("tcp"));
  node q = open_node("tcp");
  ASSERT_TRUE(s.n.ep && p->ep && q.ep);
  const fi_addr_t p_to_s = insert(*p, s.n);
  const fi_addr_t q_to_s = insert(q, s.n);

  // P is entry h and connected.
  const fi_addr_t h = insert(s.n, *p);
  char first[16] = "P first";
  char got[16] = {};
  int ctx_first = 0;
  ASSERT_EQ(s.n.ep.recv(got, sizeof got, h, &ctx_first), errc::ok);
  ASSERT_EQ(p->ep.send(first, sizeof first, p_to_s, nullptr), errc::ok);
  outcome o = next(s.n, {p.get()}, wait_ms);
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(o.e.src, h);
  EXPECT_STREQ(got, "P first");
  ASSERT_TRUE(next(*p, {&s.n}, wait_ms).ok);  // P's send completed

  // h goes to Q.
  ASSERT_TRUE(s.n.av.remove(h));
  auto hq = s.n.av.insert(*q.ep.name());
  ASSERT_TRUE(hq.has_value());
  ASSERT_EQ(*hq, h) << "the freed handle is reused (the case under test)";

  // A receive directed at h (Q), then one from anyone: P's message must take
  // the second, and carry no handle (P is no longer in the AV).
  char for_q[16] = {}, any[16] = {};
  int ctx_q = 0, ctx_any = 0;
  ASSERT_EQ(s.n.ep.recv(for_q, sizeof for_q, h, &ctx_q), errc::ok);
  ASSERT_EQ(s.n.ep.recv(any, sizeof any, addr_unspec, &ctx_any), errc::ok);
  char second[16] = "P second";
  ASSERT_EQ(p->ep.send(second, sizeof second, p_to_s, nullptr), errc::ok);
  o = next(s.n, {p.get()}, wait_ms);
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(o.e.context, &ctx_any) << "P's message matched the receive directed at Q's entry";
  EXPECT_EQ(o.e.src, addr_notavail) << "P's message carried the handle that names Q now";
  EXPECT_STREQ(any, "P second");
  ASSERT_TRUE(next(*p, {&s.n}, wait_ms).ok);

  // P closes its endpoint: reported for P (no handle), not for Q.
  const address p_name = *p->ep.name();
  p.reset();
  eq_event ev;
  ASSERT_EQ(s.eq.wait(ev, wait_ms), errc::ok) << "no report of P's close";
  EXPECT_EQ(ev.type, eq_event::kind::peer_dead);
  EXPECT_EQ(ev.peer, p_name);
  EXPECT_EQ(ev.addr, addr_notavail) << "P's end was reported under the handle that names Q now";

  // The receive directed at Q is still there, and Q's message completes it.
  char from_q[16] = "Q hello";
  ASSERT_EQ(q.ep.send(from_q, sizeof from_q, q_to_s, nullptr), errc::ok);
  o = next(s.n, {&q}, wait_ms);
  ASSERT_TRUE(o.ok) << (o.error ? o.err.msg : "") << " (the receive directed at Q failed with P's end)";
  EXPECT_EQ(o.e.context, &ctx_q);
  EXPECT_EQ(o.e.src, h);
  EXPECT_STREQ(for_q, "Q hello");
  ASSERT_TRUE(next(q, {&s.n}, wait_ms).ok);  // Q's send
  // Sends to h reach Q.
  char reply[16] = "to Q";
  char q_got[16] = {};
  ASSERT_EQ(q.ep.recv(q_got, sizeof q_got, addr_unspec, nullptr), errc::ok);
  ASSERT_EQ(s.n.ep.send(reply, sizeof reply, h, nullptr), errc::ok);
  o = next(q, {&s.n}, wait_ms);
  ASSERT_TRUE(o.ok);
  EXPECT_STREQ(q_got, "to Q");
}

// P removed and inserted again (another handle): its connection takes the
// new handle, so its messages carry it and directed receives match.
TEST(tcp_av_reuse, a_peer_inserted_again_gets_its_new_handle) {
  tcp_node_with_eq s = open_server();
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node p = open_node("tcp");
  ASSERT_TRUE(s.n.ep && p.ep);
  const fi_addr_t p_to_s = insert(p, s.n);
  const fi_addr_t filler = *s.n.av.insert(*s.n.ep.name());  // takes a handle, so P's next one differs
  const fi_addr_t h = insert(s.n, p);
  char msg[16] = "one";
  char got[16] = {};
  ASSERT_EQ(s.n.ep.recv(got, sizeof got, h, nullptr), errc::ok);
  ASSERT_EQ(p.ep.send(msg, sizeof msg, p_to_s, nullptr), errc::ok);
  ASSERT_TRUE(next(s.n, {&p}, wait_ms).ok);
  ASSERT_TRUE(next(p, {&s.n}, wait_ms).ok);
  ASSERT_TRUE(s.n.av.remove(filler));
  ASSERT_TRUE(s.n.av.remove(h));
  auto a2 = s.n.av.insert(*s.n.ep.name());  // reuses P's old handle (the last freed)
  auto h2 = s.n.av.insert(*p.ep.name());    // P gets the filler's
  ASSERT_TRUE(a2 && h2);
  ASSERT_NE(*h2, h);
  char msg2[16] = "two";
  ASSERT_EQ(s.n.ep.recv(got, sizeof got, *h2, nullptr), errc::ok);
  ASSERT_EQ(p.ep.send(msg2, sizeof msg2, p_to_s, nullptr), errc::ok);
  outcome o = next(s.n, {&p}, wait_ms);
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(o.e.src, *h2);
  EXPECT_STREQ(got, "two");
}

}  // namespace
}  // namespace weft::test

// tcp passive endpoints: a connection request that completes before an
// event queue is bound is kept and told when one is (it was dropped, its
// socket closed without a word); and with max_handshakes (256) connections
// waiting for their hello, a new one waits in the kernel's backlog until one
// of them finishes (it was accepted and closed without a reason).
//
// Peers are raw sockets speaking the wire protocol (docs/wire/tcp.md).
// Whether the listener has taken a connection is read from /proc/net/tcp
// (a listening socket's rx_queue is its accept queue), never guessed from
// time.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "../common/cm.hpp"
#include "../common/raw_frames.hpp"
#include "../common/raw_socket.hpp"
#include "prov/tcp/wire.hpp"

using namespace weft;
using namespace weft::test;
namespace wire = weft::prov::tcp::wire;

namespace {

using clock_type = std::chrono::steady_clock;

// A MSG connection request: connect and send its hello at once.
int raw_msg_hello(std::uint16_t port) { return raw_hello(port, 1); }

struct server {
  fabric fab;
  domain dom;
  event_queue eq;
  passive_endpoint pep;
  std::uint16_t port = 0;
};

server open_server() {
  server s;
  info i = msg_info(true);
  s.fab = std::move(*fabric::open(i));
  s.dom = std::move(*s.fab.open_domain(i));
  s.eq = std::move(*s.dom.open_eq());
  auto p = s.dom.open_passive_endpoint(i);
  EXPECT_TRUE(p) << p.error().message;
  if (!p) return s;
  s.pep = std::move(*p);
  sockaddr_in sa{};
  std::memcpy(&sa, s.pep.name()->bytes.data(), sizeof sa);
  s.port = ntohs(sa.sin_port);
  return s;
}

// Rejects the connreq ev; the raw peer s must get hello_ack rejected.
void reject_and_expect_answer(server& srv, const eq_event& ev, int s) {
  ASSERT_EQ(ev.type, eq_event::kind::connreq) << ev.message;
  ASSERT_TRUE(srv.pep.reject(ev.req, {}));
  auto h = read_frame(s, [&] {
    eq_event e;
    (void)srv.eq.read(e);
  });
  ASSERT_TRUE(h) << "the peer got no answer (closed without a reason)";
  EXPECT_EQ(h->op, static_cast<std::uint8_t>(wire::op::hello_ack));
  EXPECT_EQ(h->data, static_cast<std::uint64_t>(wire::hello_status::rejected));
}

}  // namespace

// A connection request whose hello arrives while no event queue is bound is
// kept, and its connreq event comes once one is bound (it was dropped).
TEST(tcp_passive_backlog, a_request_before_the_event_queue_is_bound_is_kept) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  server srv = open_server();
  ASSERT_NE(srv.port, 0);
  // Another endpoint of the domain: its progress polls the domain's sockets,
  // the listener's among them, so the request is accepted and its hello read
  // while no event queue is bound to the passive endpoint.
  auto cq = srv.dom.open_cq(16);
  ASSERT_TRUE(cq) << cq.error().message;
  auto eq2 = srv.dom.open_eq();
  ASSERT_TRUE(eq2) << eq2.error().message;
  auto helper = srv.dom.open_endpoint(msg_info(false, srv.port));
  ASSERT_TRUE(helper) << helper.error().message;
  ASSERT_TRUE(helper->bind(*cq));
  ASSERT_TRUE(helper->bind(*eq2));
  ASSERT_TRUE(helper->enable());
  const int s = raw_msg_hello(srv.port);
  ASSERT_GE(s, 0) << std::strerror(errno);
  // Until the listener has taken the connection and read its hello (the
  // accept queue empty, and the hello consumed: our socket's bytes acked
  // and read, seen as the peer socket's rx_queue in /proc/net/tcp).
  sockaddr_in me{};
  socklen_t ml = sizeof me;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&me), &ml);
  const unsigned my_port = ntohs(me.sin_port);
  auto hello_read = [&] {
    FILE* f = std::fopen("/proc/net/tcp", "r");
    if (!f) return false;
    char line[512];
    bool read = false;
    (void)std::fgets(line, sizeof line, f);
    while (std::fgets(line, sizeof line, f)) {
      unsigned sl, laddr, lport, raddr, rport, st, txq, rxq;
      if (std::sscanf(line, " %u: %x:%x %x:%x %x %x:%x", &sl, &laddr, &lport, &raddr, &rport, &st, &txq, &rxq) != 8)
        continue;
      // the server's end of our connection: established, nothing unread
      if (lport == srv.port && rport == my_port && st == 0x01 && rxq == 0) read = true;
    }
    std::fclose(f);
    return read;
  };
  const auto deadline = clock_type::now() + std::chrono::seconds(10);
  bool done = false;
  while (clock_type::now() < deadline && !closed_silently(s)) {
    if (accept_queue(srv.port) == 0u && hello_read()) {
      done = true;
      break;
    }
    (void)cq->progress();
  }
  ASSERT_FALSE(closed_silently(s)) << "the request was dropped: no event queue was bound";
  ASSERT_TRUE(done) << "the listener never read the hello";
  ASSERT_TRUE(srv.pep.bind(srv.eq));
  eq_event ev;
  ASSERT_EQ(srv.eq.wait(ev, 5000), errc::ok) << "no connreq once the event queue is bound";
  reject_and_expect_answer(srv, ev, s);
  ::close(s);
}

// 256 connections that never send their hello: a 257th waits in the
// backlog (it was accepted and closed at once, without a reason), and is
// taken as soon as one of them goes.
TEST(tcp_passive_backlog, past_max_handshakes_a_connection_waits_instead_of_being_closed) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  server srv = open_server();
  ASSERT_NE(srv.port, 0);
  ASSERT_TRUE(srv.pep.bind(srv.eq));
  constexpr int silent_n = 256;  // prov/tcp max_handshakes
  std::vector<int> silent;
  for (int i = 0; i < silent_n; ++i) {
    const int s = raw_connect(srv.port);
    ASSERT_GE(s, 0) << "connection " << i << ": " << std::strerror(errno);
    silent.push_back(s);
  }
  const int late = raw_msg_hello(srv.port);
  ASSERT_GE(late, 0) << std::strerror(errno);
  // Drive the listener until it has taken all it will: one left in the
  // queue, twice in a row with a progress call between (it takes 64 per
  // call, so one left once may be the last batch), or none left.
  eq_event ev;
  bool got_req = false;
  int ones = 0;
  const auto deadline = clock_type::now() + std::chrono::seconds(10);
  while (clock_type::now() < deadline && !closed_silently(late)) {
    if (srv.eq.read(ev) == errc::ok) {
      got_req = true;
      break;
    }
    const auto q = accept_queue(srv.port);
    ASSERT_TRUE(q) << "listener not found in /proc/net/tcp";
    if (*q == 0) break;
    ones = *q == 1 ? ones + 1 : 0;
    if (ones == 2) break;
  }
  EXPECT_FALSE(closed_silently(late)) << "the connection past the limit was closed without a reason";
  EXPECT_FALSE(got_req) << "the 257th was taken while 256 waited for their hello";
  EXPECT_EQ(accept_queue(srv.port), 1u) << "it waits in the kernel's backlog";
  // One silent connection goes: the late one is taken, and its request told.
  ::close(silent.front());
  silent.erase(silent.begin());
  if (!got_req) {
    ASSERT_EQ(srv.eq.wait(ev, 5000), errc::ok) << "the waiting connection was never taken";
  }
  reject_and_expect_answer(srv, ev, late);
  ::close(late);
  for (int s : silent) ::close(s);
}

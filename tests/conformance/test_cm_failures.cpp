// Connection management over tcp when something fails (cf. fi_cm(3),
// fi_eq(3)): a connreq event that cannot be allocated is delivered later,
// not dropped; an accept whose answer cannot be sent gives connected, then
// shutdown (never shutdown first); a connect that fails at once says why
// with the errno of the failing call.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "../common/cm.hpp"
#include "prov/tcp/test_hooks.hpp"
#include "prov/tcp/wire.hpp"

using namespace weft;
using namespace weft::test;
namespace wire = weft::prov::tcp::wire;

namespace {

class cm_failures : public ::testing::Test {
 protected:
  void SetUp() override {
    srv = open_side(msg_info(true));
    auto p = srv.dom.open_passive_endpoint(srv.inf);
    ASSERT_TRUE(p) << p.error().message;
    pep = std::move(*p);
    ASSERT_TRUE(pep.bind(srv.eq));
    sockaddr_in sa{};
    std::memcpy(&sa, pep.name()->bytes.data(), sizeof sa);
    port = ntohs(sa.sin_port);
  }
  void TearDown() override { prov::tcp::test_hooks::fail_connreq_events = 0; }
  side srv;
  passive_endpoint pep;
  std::uint16_t port = 0;
};

}  // namespace

// The event queue cannot allocate the connreq event: the request is not
// dropped; it stays pending and its event comes at a later read of the
// queue, with its data; accepting it connects both sides.
TEST_F(cm_failures, connreq_the_eq_cannot_allocate_is_delivered_later) {
  side cli = open_side(msg_info(false, port));
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e) << e.error().message;
  prov::tcp::test_hooks::fail_connreq_events = 3;  // the first three attempts fail
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr, bytes("knock knock")));
  auto req = poll_event(srv.eq, {&cli});
  ASSERT_TRUE(req) << "the connection request was dropped when its event could not be allocated";
  ASSERT_EQ(req->type, eq_event::kind::connreq) << req->message;
  EXPECT_EQ(prov::tcp::test_hooks::fail_connreq_events.load(), 0) << "every failed attempt was retried";
  EXPECT_EQ(text(req->data), "knock knock");
  auto s = make_ep(srv, req->req);
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_TRUE(s->accept());
  auto sc = poll_event(srv.eq, {&cli});
  ASSERT_TRUE(sc);
  EXPECT_EQ(sc->type, eq_event::kind::connected) << sc->message;
  auto cc = poll_event(cli.eq, {&srv});
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->type, eq_event::kind::connected) << cc->message;
}

// The connector resets its connection before the listener accepts: the
// answer cannot be sent. The application sees connected, then shutdown
// with the reason (fi_cm(3)), never a shutdown for a connection it was not
// told about; exactly these two events.
TEST_F(cm_failures, accept_whose_answer_cannot_be_sent_gives_connected_then_shutdown) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  // a well-formed MSG hello (no listening address: family only)
  std::uint8_t frame[sizeof(wire::frame_header) + sizeof(wire::hello_body)]{};
  const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::hello), 0, 0,
                             sizeof(wire::hello_body), 0, 0};
  wire::hello_body hb{};
  hb.magic = wire::hello_magic;
  hb.ep_type = 1;
  hb.family = AF_INET;
  std::memcpy(frame, &h, sizeof h);
  std::memcpy(frame + sizeof h, &hb, sizeof hb);
  ASSERT_EQ(::send(s, frame, sizeof frame, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof frame));
  auto req = poll_event(srv.eq);
  ASSERT_TRUE(req);
  ASSERT_EQ(req->type, eq_event::kind::connreq) << req->message;
  // reset (not FIN): the listener's next write on it fails
  linger lg{1, 0};
  ASSERT_EQ(::setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  ::close(s);
  auto ep = make_ep(srv, req->req);
  ASSERT_TRUE(ep) << ep.error().message;
  // on loopback the reset has reached the accepted socket when close() returns
  ASSERT_TRUE(ep->accept());
  auto first = poll_event(srv.eq);
  ASSERT_TRUE(first) << "no event for the accept";
  EXPECT_EQ(first->type, eq_event::kind::connected)
      << "the first event of an accepted connection is connected (got " << static_cast<int>(first->type) << ": "
      << first->message << ")";
  auto second = poll_event(srv.eq);
  ASSERT_TRUE(second) << "the failed answer is reported";
  EXPECT_EQ(second->type, eq_event::kind::shutdown) << second->message;
  EXPECT_FALSE(second->message.empty());
  EXPECT_FALSE(poll_event(srv.eq, {}, 200)) << "exactly two events";
}

// A connect that fails in the connect() call itself says why with that
// call's errno (not whatever a later call left in errno).
TEST_F(cm_failures, connect_failing_at_once_reports_the_errno_of_the_failing_call) {
  // 255.255.255.255: connect() fails at once (ENETUNREACH) without touching the network
  side cli = open_side(msg_info(false, port));
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e) << e.error().message;
  sockaddr_in bc{};
  bc.sin_family = AF_INET;
  bc.sin_port = htons(9);
  bc.sin_addr.s_addr = htonl(INADDR_BROADCAST);
  address to = *cli.inf.dest_addr;  // the format of a tcp address, and its size
  ASSERT_EQ(to.size, sizeof bc);
  std::memcpy(to.bytes.data(), &bc, sizeof bc);
  const int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(probe, 0);
  const int rc = ::connect(probe, reinterpret_cast<sockaddr*>(&bc), sizeof bc);
  const int want = rc == 0 ? 0 : errno;
  ::close(probe);
  if (want == 0 || want == EINPROGRESS) GTEST_SKIP() << "this host routes the broadcast address";
  auto r = e->connect(to);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::io_error);
  EXPECT_EQ(r.error().message, "cannot connect to tcp://255.255.255.255:9: " + std::string(std::strerror(want)));
}

// Connected (MSG) endpoints and connection management over tcp (cf. fi_cm(3)):
// listen on an integer port, connect with data, connreq / accept / connected,
// reject with data, shutdown, refused and timed-out connects.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/cm.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// next event on q, driving the others
eq_event next_event(event_queue& q, std::vector<side*> others = {}, int timeout_ms = 5000) {
  if (auto e = poll_event(q, others, timeout_ms)) return *e;
  ADD_FAILURE() << "no event within " << timeout_ms << " ms";
  eq_event e;
  e.type = eq_event::kind::error;
  e.message = "test timeout";
  return e;
}

class cm : public ::testing::Test {
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
    ASSERT_NE(port, 0) << "port 0 picks an ephemeral port that can be read back";
  }
  // client connects with data; server accepts with data; both see connected
  void connect_pair(side& cli, endpoint& cep, endpoint& sep) {
    cli = open_side(msg_info(false, port));
    auto e = make_ep(cli, cli.inf);
    ASSERT_TRUE(e) << e.error().message;
    cep = std::move(*e);
    ASSERT_TRUE(cep.connect(*cli.inf.dest_addr, bytes("hello from the client")));
    eq_event req = next_event(srv.eq, {&cli});
    ASSERT_EQ(req.type, eq_event::kind::connreq) << req.message;
    EXPECT_EQ(text(req.data), "hello from the client");
    auto s = make_ep(srv, req.req);
    ASSERT_TRUE(s) << s.error().message;
    sep = std::move(*s);
    ASSERT_TRUE(sep.accept(bytes("welcome")));
    eq_event sc = next_event(srv.eq, {&cli});
    EXPECT_EQ(sc.type, eq_event::kind::connected);
    eq_event cc = next_event(cli.eq, {&srv});
    ASSERT_EQ(cc.type, eq_event::kind::connected) << cc.message;
    EXPECT_EQ(text(cc.data), "welcome") << "accept data reaches the connector";
  }
  side srv;
  passive_endpoint pep;
  std::uint16_t port = 0;
};

outcome next_cq(side& s, std::vector<side*> others = {}, int timeout_ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  outcome o;
  while (std::chrono::steady_clock::now() < deadline) {
    errc r = s.cq.read(o.e);
    if (r == errc::ok) {
      o.ok = true;
      return o;
    }
    if (r == errc::error_available) {
      (void)s.cq.read_error(o.err);
      o.error = true;
      return o;
    }
    for (auto* x : others) x->cq.progress();
  }
  ADD_FAILURE() << "no completion";
  return o;
}

}  // namespace

TEST_F(cm, connect_accept_exchange_shutdown) {
  side cli;
  endpoint cep, sep;
  connect_pair(cli, cep, sep);
  // both directions, small and large, tagged and not
  auto big = pattern(1 << 20, 3);
  std::vector<unsigned char> got(big.size());
  ASSERT_EQ(sep.recv(got.data(), got.size()), errc::ok);
  ASSERT_EQ(cep.send(big.data(), big.size(), 0, nullptr), errc::ok);
  outcome r = next_cq(srv, {&cli});
  ASSERT_TRUE(r.ok) << r.err.msg;
  EXPECT_EQ(r.e.len, big.size());
  EXPECT_EQ(got, big);
  char pong[4] = {};
  ASSERT_EQ(cep.trecv(pong, 4, addr_unspec, 9, 0), errc::ok);
  ASSERT_EQ(sep.tinject("pong", 4, 0, 9), errc::ok);
  // drain the client's send completion and the pong
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(next_cq(cli, {&srv}).ok);
  EXPECT_EQ(std::string(pong, 4), "pong");
  // the server posts a receive; the client shuts down
  char never[8];
  int ctx = 0;
  ASSERT_EQ(sep.recv(never, 8, addr_unspec, &ctx), errc::ok);
  ASSERT_TRUE(cep.shutdown());
  eq_event sd = next_event(srv.eq, {&cli});
  EXPECT_EQ(sd.type, eq_event::kind::shutdown) << sd.message;
  outcome c = next_cq(srv);
  ASSERT_TRUE(c.error);
  EXPECT_EQ(c.err.err, errc::canceled) << "posted receives complete as canceled";
  EXPECT_EQ(c.err.context, &ctx);
  EXPECT_EQ(sep.send("x", 1, 0, nullptr), errc::peer_dead) << "no connection any more";
  EXPECT_FALSE(cep.shutdown()) << "shutting down twice is an error";
}

TEST_F(cm, reject_carries_data_to_the_connector) {
  side cli = open_side(msg_info(false, port));
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e);
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr, bytes("may I?")));
  eq_event req = next_event(srv.eq, {&cli});
  ASSERT_EQ(req.type, eq_event::kind::connreq);
  ASSERT_TRUE(pep.reject(req.req, bytes("no: server full")));
  eq_event ev = next_event(cli.eq, {&srv});
  ASSERT_EQ(ev.type, eq_event::kind::error);
  EXPECT_EQ(ev.err, errc::permission_denied);
  EXPECT_EQ(text(ev.data), "no: server full");
  EXPECT_NE(ev.message.find("rejected"), std::string::npos) << ev.message;
  EXPECT_FALSE(pep.reject(req.req)) << "a connreq is answered once";
}

TEST_F(cm, shutdown_with_a_large_unexpected_message_and_a_receive_in_progress) {
  side cli;
  endpoint cep, sep;
  connect_pair(cli, cep, sep);
  // a large message the server has not posted a receive for
  std::vector<char> big(100000, 'u');
  ASSERT_EQ(cep.send(big.data(), big.size(), 0, nullptr), errc::ok);
  for (int i = 0; i < 200; ++i) {
    srv.cq.progress();
    cli.cq.progress();
  }
  ASSERT_TRUE(sep.shutdown());
  std::vector<char> late(100000);
  EXPECT_EQ(sep.recv(late.data(), late.size()), errc::peer_dead) << "nothing can arrive after shutdown";
  eq_event sd = next_event(cli.eq, {&srv});
  EXPECT_EQ(sd.type, eq_event::kind::shutdown);
}

TEST_F(cm, reject_with_a_queued_send_opens_no_hidden_connection) {
  side cli = open_side(msg_info(false, port));
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e);
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr));
  int ctx = 0;
  ASSERT_EQ(e->send("queued", 6, 0, &ctx), errc::ok);  // queued until connected
  eq_event req = next_event(srv.eq, {&cli});
  ASSERT_EQ(req.type, eq_event::kind::connreq);
  ASSERT_TRUE(pep.reject(req.req));
  eq_event ev = next_event(cli.eq, {&srv});
  ASSERT_EQ(ev.type, eq_event::kind::error);
  outcome o = next_cq(cli, {&srv});
  ASSERT_TRUE(o.error) << "the queued send fails";
  EXPECT_EQ(o.err.context, &ctx);
  // no second connection request shows up at the server
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  eq_event extra;
  while (std::chrono::steady_clock::now() < until) {
    cli.cq.progress();
    ASSERT_EQ(srv.eq.read(extra), errc::again) << "a hidden reconnect";
  }
}

TEST_F(cm, refused_and_timed_out_connects_are_error_events) {
  // refused: a port nobody listens on
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t l = sizeof sa;
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::getsockname(s, reinterpret_cast<sockaddr*>(&sa), &l), 0);
  const std::uint16_t closed_port = ntohs(sa.sin_port);
  {
    side cli = open_side(msg_info(false, closed_port));
    ::close(s);
    auto e = make_ep(cli, cli.inf);
    ASSERT_TRUE(e);
    ASSERT_TRUE(e->connect(*cli.inf.dest_addr));
    eq_event ev = next_event(cli.eq);
    ASSERT_EQ(ev.type, eq_event::kind::error);
    EXPECT_EQ(ev.err, errc::peer_dead);
    EXPECT_NE(ev.message.find("refused"), std::string::npos) << ev.message;
  }
  // timed out: a listener that never answers the hello
  int l2 = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sb{};
  sb.sin_family = AF_INET;
  sb.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t lb = sizeof sb;
  ASSERT_EQ(::bind(l2, reinterpret_cast<sockaddr*>(&sb), sizeof sb), 0);
  ASSERT_EQ(::listen(l2, 4), 0);
  ASSERT_EQ(::getsockname(l2, reinterpret_cast<sockaddr*>(&sb), &lb), 0);
  ::setenv("WEFT_TCP_TIMEOUT_MS", "300", 1);
  side cli = open_side(msg_info(false, ntohs(sb.sin_port)));
  ::unsetenv("WEFT_TCP_TIMEOUT_MS");
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e);
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr));
  auto t0 = std::chrono::steady_clock::now();
  eq_event ev = next_event(cli.eq, {}, 5000);
  ASSERT_EQ(ev.type, eq_event::kind::error);
  EXPECT_EQ(ev.err, errc::timed_out) << ev.message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  ::close(l2);
}

TEST_F(cm, garbage_to_the_listener_is_dropped) {
  {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    std::memcpy(&sa, pep.name()->bytes.data(), sizeof sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    const char junk[64] = "this is not a weft hello, not at all...";
    ASSERT_EQ(::send(s, junk, sizeof junk, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof junk));
    eq_event ev;
    for (int i = 0; i < 200; ++i) EXPECT_EQ(srv.eq.read(ev), errc::again) << "garbage makes no event";
    ::close(s);
  }
  side cli;
  endpoint cep, sep;
  connect_pair(cli, cep, sep);  // and the listener still works
}

TEST_F(cm, misuse_gets_clear_errors) {
  side cli = open_side(msg_info(false, port));
  auto e = cli.dom.open_endpoint(cli.inf);
  ASSERT_TRUE(e);
  ASSERT_TRUE(e->bind(cli.cq));
  auto en = e->enable();
  ASSERT_FALSE(en) << "a MSG endpoint needs an event queue";
  EXPECT_NE(en.error().message.find("event queue"), std::string::npos);
  ASSERT_TRUE(e->bind(cli.eq));
  ASSERT_TRUE(e->enable());
  EXPECT_EQ(e->send("x", 1, 0, nullptr), errc::bad_state) << "not connected yet";
  std::vector<std::byte> huge(300);
  auto big = e->connect(*cli.inf.dest_addr, huge);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, errc::too_big);
  EXPECT_FALSE(e->accept()) << "accept needs a connreq's info";
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr));
  EXPECT_FALSE(e->connect(*cli.inf.dest_addr)) << "connecting twice";
  // RDM endpoints have no connection management
  hints h;
  h.provider = "tcp";
  h.type = ep_type::rdm;
  h.node = "127.0.0.1";
  h.source = true;
  auto ri = get_info(h);
  ASSERT_TRUE(ri);
  auto rdm = cli.dom.open_endpoint(ri->front());
  ASSERT_TRUE(rdm);
  auto c = rdm->connect(*cli.inf.dest_addr);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::not_supported);
}

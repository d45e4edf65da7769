// tcp: a connection a listener has accepted but epoll cannot watch
// (epoll_ctl ADD failing, as at fs.epoll.max_user_watches; test hook
// fail_epoll_adds) is refused at once with the reason: the connector's
// connect or send fails with errc::busy quoting it, and the listener's
// application gets an error event naming epoll_ctl. A passive endpoint left
// such a connection waiting, unread, until the handshake timeout (the
// connector's connect hung that long, nobody was told); an RDM listener
// closed it without a word (its peer saw a bare close, peer_dead).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "common/cm.hpp"
#include "common/harness.hpp"
#include "prov/tcp/test_hooks.hpp"

using namespace weft;
using namespace weft::test;

namespace {

namespace hooks = prov::tcp::test_hooks;

bool says(const std::string& msg, const char* what) { return msg.find(what) != std::string::npos; }

class tcp_unwatched_accepts : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("WEFT_PROGRESS", "manual", 1); }
  void TearDown() override { hooks::fail_epoll_adds = 0; }
};

TEST_F(tcp_unwatched_accepts, a_passive_endpoint_refuses_at_once_with_the_reason) {
  side srv = open_side(msg_info(true));
  auto p = srv.dom.open_passive_endpoint(srv.inf);
  ASSERT_TRUE(p) << p.error().message;
  passive_endpoint pep = std::move(*p);
  ASSERT_TRUE(pep.bind(srv.eq));
  side cli = open_side(msg_info(false, port_of(*pep.name())));
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e) << e.error().message;
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr, bytes("first")));  // the connector's socket is watched already
  hooks::fail_epoll_adds = 1;  // the accepted socket's epoll_ctl(ADD)
  auto err = poll_event(srv.eq, {&cli});  // 5 s: well below the 10 s handshake timeout
  ASSERT_TRUE(err) << "the listener's application was not told (the connection waits for the handshake timeout)";
  EXPECT_EQ(hooks::fail_epoll_adds.load(), 0) << "the hook was not reached";
  EXPECT_EQ(err->type, eq_event::kind::error);
  EXPECT_EQ(err->err, errc::no_memory) << err->message;
  EXPECT_TRUE(says(err->message, "epoll_ctl")) << err->message;
  EXPECT_TRUE(says(err->message, "1 connection request(s) refused")) << err->message;
  auto ce = poll_event(cli.eq, {&srv});
  ASSERT_TRUE(ce) << "the connecting side got no event";
  EXPECT_EQ(ce->type, eq_event::kind::error);
  EXPECT_EQ(ce->err, errc::busy) << ce->message;
  EXPECT_TRUE(says(ce->message, "epoll_ctl")) << "the listener's reason is quoted: " << ce->message;

  // Watched again: the next request is served.
  auto e2 = make_ep(cli, cli.inf);
  ASSERT_TRUE(e2) << e2.error().message;
  ASSERT_TRUE(e2->connect(*cli.inf.dest_addr, bytes("second")));
  auto req = poll_event(srv.eq, {&cli});
  ASSERT_TRUE(req);
  ASSERT_EQ(req->type, eq_event::kind::connreq) << req->message;
  EXPECT_EQ(text(req->data), "second");
  ASSERT_TRUE(pep.reject(req->req, {}));
}

TEST_F(tcp_unwatched_accepts, an_rdm_listener_refuses_with_the_reason_and_tells_its_application) {
  node srv = open_node("tcp", cap::msg);
  node cli = open_node("tcp", cap::msg);
  const fi_addr_t to = insert(cli, srv);
  ASSERT_EQ(cli.ep.send("lost", 5, to, reinterpret_cast<void*>(1)), errc::ok);  // its socket is watched already
  hooks::fail_epoll_adds = 1;  // the listener's accepted socket
  outcome sent = next(cli, {&srv});
  EXPECT_EQ(hooks::fail_epoll_adds.load(), 0) << "the hook was not reached";
  ASSERT_TRUE(sent.error) << "the send to a listener that cannot watch its connection succeeded";
  EXPECT_EQ(sent.err.err, errc::busy) << sent.err.msg;
  EXPECT_TRUE(says(sent.err.msg, "epoll_ctl")) << "the listener's reason is quoted: " << sent.err.msg;
  EXPECT_EQ(sent.err.context, reinterpret_cast<void*>(1));
  // The listener's application (no EQ bound: its CQ) is told.
  outcome told = next(srv, {&cli});
  ASSERT_TRUE(told.error) << "the listener's application was not told";
  EXPECT_EQ(told.err.err, errc::no_memory) << told.err.msg;
  EXPECT_EQ(told.err.context, nullptr);
  EXPECT_TRUE(says(told.err.msg, "epoll_ctl")) << told.err.msg;

  // Watched again: the next send is delivered.
  char in[8] = {};
  ASSERT_EQ(srv.ep.recv(in, sizeof in), errc::ok);
  ASSERT_EQ(cli.ep.send("found", 6, to, reinterpret_cast<void*>(2)), errc::ok);
  outcome ok = next(cli, {&srv});
  EXPECT_TRUE(ok.ok) << ok.err.msg;
  outcome got = next(srv, {&cli});
  EXPECT_TRUE(got.ok) << got.err.msg;
  EXPECT_STREQ(in, "found");
}

TEST_F(tcp_unwatched_accepts, a_msg_accept_that_cannot_watch_its_socket_tells_the_connector_why) {
  side srv = open_side(msg_info(true));
  auto p = srv.dom.open_passive_endpoint(srv.inf);
  ASSERT_TRUE(p) << p.error().message;
  passive_endpoint pep = std::move(*p);
  ASSERT_TRUE(pep.bind(srv.eq));
  side cli = open_side(msg_info(false, port_of(*pep.name())));
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e) << e.error().message;
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr, bytes("hello")));
  auto req = poll_event(srv.eq, {&cli});
  ASSERT_TRUE(req);
  ASSERT_EQ(req->type, eq_event::kind::connreq) << req->message;
  auto a = make_ep(srv, req->req);
  ASSERT_TRUE(a) << a.error().message;
  hooks::fail_epoll_adds = 1;  // the accepted socket, taken by accept()
  auto r = a->accept({});
  EXPECT_EQ(hooks::fail_epoll_adds.load(), 0) << "the hook was not reached";
  ASSERT_FALSE(r) << "accept() took a connection nobody watches";
  EXPECT_EQ(r.error().code, errc::no_memory) << r.error().message;
  EXPECT_TRUE(says(r.error().message, "epoll_ctl")) << r.error().message;
  auto ce = poll_event(cli.eq, {&srv});
  ASSERT_TRUE(ce) << "the connecting side got no event";
  EXPECT_EQ(ce->type, eq_event::kind::error);
  EXPECT_EQ(ce->err, errc::busy) << "a bare close instead of the reason: " << ce->message;
  EXPECT_TRUE(says(ce->message, "epoll_ctl")) << "the listener's reason is quoted: " << ce->message;
}

TEST_F(tcp_unwatched_accepts, a_passive_endpoint_whose_listening_socket_cannot_be_watched_fails_to_open) {
  side srv = open_side(msg_info(true));
  hooks::fail_epoll_adds = 1;
  auto p = srv.dom.open_passive_endpoint(srv.inf);
  EXPECT_EQ(hooks::fail_epoll_adds.load(), 0) << "the hook was not reached";
  ASSERT_FALSE(p) << "a passive endpoint that can never accept was opened";
  EXPECT_EQ(p.error().code, errc::no_memory) << p.error().message;
  EXPECT_TRUE(says(p.error().message, "epoll_ctl")) << p.error().message;
}

}  // namespace

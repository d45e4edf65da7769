// Out of memory while a tcp listener accepts a connection (the test hook
// prov::tcp::test_hooks::fail_accepts makes the allocation fail): the
// connection was closed silently (the peer saw a reset, the application
// nothing). Now the peer is told why (hello_ack no_resources with the
// reason: its connect or send fails with errc::busy and a message that
// quotes it) and the listener's application gets an error with
// errc::no_memory; the next connection is served.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "../common/cm.hpp"
#include "prov/tcp/test_hooks.hpp"

using namespace weft;
using namespace weft::test;

namespace {

bool says(const std::string& msg, const char* what) { return msg.find(what) != std::string::npos; }

class tcp_accept_oom : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("WEFT_PROGRESS", "manual", 1); }
  void TearDown() override { prov::tcp::test_hooks::fail_accepts = 0; }
};

TEST_F(tcp_accept_oom, a_passive_endpoint_refuses_with_a_reason_and_tells_its_application) {
  side srv = open_side(msg_info(true));
  auto p = srv.dom.open_passive_endpoint(srv.inf);
  ASSERT_TRUE(p) << p.error().message;
  passive_endpoint pep = std::move(*p);
  ASSERT_TRUE(pep.bind(srv.eq));
  const std::uint16_t port = port_of(*pep.name());
  side cli = open_side(msg_info(false, port));
  auto e = make_ep(cli, cli.inf);
  ASSERT_TRUE(e) << e.error().message;

  prov::tcp::test_hooks::fail_accepts = 1;
  ASSERT_TRUE(e->connect(*cli.inf.dest_addr, bytes("first")));
  auto err = poll_event(srv.eq, {&cli});
  ASSERT_TRUE(err) << "the listener's application was not told (the connection was closed silently)";
  EXPECT_EQ(err->type, eq_event::kind::error);
  EXPECT_EQ(err->err, errc::no_memory) << err->message;
  EXPECT_TRUE(says(err->message, "out of memory")) << err->message;
  EXPECT_EQ(prov::tcp::test_hooks::fail_accepts.load(), 0);
  auto ce = poll_event(cli.eq, {&srv});
  ASSERT_TRUE(ce) << "the connecting side got no event";
  EXPECT_EQ(ce->type, eq_event::kind::error);
  EXPECT_EQ(ce->err, errc::busy) << ce->message;
  EXPECT_TRUE(says(ce->message, "out of memory")) << "the peer's reason is quoted: " << ce->message;

  // Memory again: the next request is served.
  auto e2 = make_ep(cli, cli.inf);
  ASSERT_TRUE(e2) << e2.error().message;
  ASSERT_TRUE(e2->connect(*cli.inf.dest_addr, bytes("second")));
  auto req = poll_event(srv.eq, {&cli});
  ASSERT_TRUE(req);
  ASSERT_EQ(req->type, eq_event::kind::connreq) << req->message;
  EXPECT_EQ(text(req->data), "second");
  ASSERT_TRUE(pep.reject(req->req, {}));
}

TEST_F(tcp_accept_oom, an_rdm_listener_refuses_with_a_reason_and_tells_its_application) {
  node srv = open_node("tcp", cap::msg);
  node cli = open_node("tcp", cap::msg);
  const fi_addr_t to = insert(cli, srv);
  prov::tcp::test_hooks::fail_accepts = 1;
  ASSERT_EQ(post([&] { return cli.ep.send("lost", 5, to, reinterpret_cast<void*>(1)); }, {&srv}), errc::ok);
  outcome sent = next(cli, {&srv});
  ASSERT_TRUE(sent.error) << "the send to a listener out of memory succeeded";
  EXPECT_EQ(sent.err.err, errc::busy) << sent.err.msg;
  EXPECT_TRUE(says(sent.err.msg, "out of memory")) << "the peer's reason is quoted: " << sent.err.msg;
  EXPECT_EQ(sent.err.context, reinterpret_cast<void*>(1));
  // The listener's application (no EQ bound: its CQ) is told.
  outcome told = next(srv, {&cli});
  ASSERT_TRUE(told.error) << "the listener's application was not told";
  EXPECT_EQ(told.err.err, errc::no_memory) << told.err.msg;
  EXPECT_EQ(told.err.context, nullptr);
  EXPECT_TRUE(says(told.err.msg, "out of memory")) << told.err.msg;

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

}  // namespace

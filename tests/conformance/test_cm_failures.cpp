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

#include "../common/harness.hpp"
#include "prov/tcp/test_hooks.hpp"
#include "prov/tcp/wire.hpp"

using namespace weft;
using namespace weft::test;
namespace wire = weft::prov::tcp::wire;

namespace {

std::vector<std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size()};
}
std::string text(const std::vector<std::byte>& v) { return {reinterpret_cast<const char*>(v.data()), v.size()}; }

struct side {
  fabric fab;
  domain dom;
  event_queue eq;
  completion_queue cq;
  info inf;
};

info msg_info(bool source, std::uint16_t port = 0, const std::string& node = "127.0.0.1") {
  hints h;
  h.provider = "tcp";
  h.type = ep_type::msg;
  h.node = node;
  h.port = port;
  h.source = source;
  auto r = get_info(h);
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  return r ? r->front() : info{};
}

side open_side(const info& i) {
  side s;
  s.inf = i;
  s.fab = std::move(*fabric::open(i));
  s.dom = std::move(*s.fab.open_domain(i));
  s.eq = std::move(*s.dom.open_eq());
  s.cq = std::move(*s.dom.open_cq(256));
  return s;
}

result<endpoint> make_ep(side& s, const info& i) {
  auto e = s.dom.open_endpoint(i);
  if (!e) return e;
  if (auto r = e->bind(s.cq); !r) return std::unexpected(r.error());
  if (auto r = e->bind(s.eq); !r) return std::unexpected(r.error());
  if (auto r = e->enable(); !r) return std::unexpected(r.error());
  return e;
}

// The next event on q within timeout_ms, driving the others; nullopt if none.
std::optional<eq_event> next_event(event_queue& q, std::vector<side*> others = {}, int timeout_ms = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  eq_event e;
  while (std::chrono::steady_clock::now() < deadline) {
    if (q.read(e) == errc::ok) return e;
    for (auto* o : others) o->cq.progress();
  }
  return std::nullopt;
}

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
  auto req = next_event(srv.eq, {&cli});
  ASSERT_TRUE(req) << "the connection request was dropped when its event could not be allocated";
  ASSERT_EQ(req->type, eq_event::kind::connreq) << req->message;
  EXPECT_EQ(prov::tcp::test_hooks::fail_connreq_events.load(), 0) << "every failed attempt was retried";
  EXPECT_EQ(text(req->data), "knock knock");
  auto s = make_ep(srv, req->req);
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_TRUE(s->accept());
  auto sc = next_event(srv.eq, {&cli});
  ASSERT_TRUE(sc);
  EXPECT_EQ(sc->type, eq_event::kind::connected) << sc->message;
  auto cc = next_event(cli.eq, {&srv});
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->type, eq_event::kind::connected) << cc->message;
}

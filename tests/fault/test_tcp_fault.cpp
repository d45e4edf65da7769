// Fault tests for tcp: a raw socket speaks (or mangles) the wire protocol to
// a real endpoint. Garbage, a wrong version or an absurd length drop that
// connection with a clear error and leave the endpoint working; a message that
// arrives in pieces keeps its place in the order.
#include <algorithm>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/harness.hpp"
#include "prov/tcp/wire.hpp"

using namespace weft;
using namespace weft::test;
namespace wire = weft::prov::tcp::wire;

namespace {

// A raw connection to an endpoint's listening address.
struct raw_peer {
  int fd = -1;
  explicit raw_peer(const address& a) {
    sockaddr_in sa{};
    std::memcpy(&sa, a.bytes.data(), sizeof sa);
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  }
  ~raw_peer() { ::close(fd); }
  void put(const void* p, std::size_t n) { EXPECT_EQ(::send(fd, p, n, MSG_NOSIGNAL), static_cast<ssize_t>(n)); }
  void frame(wire::op op, std::uint8_t flags, std::uint64_t len, std::uint64_t tag = 0, std::uint64_t data = 0) {
    wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(op), flags, 0, len, tag, data};
    put(&h, sizeof h);
  }
  // hello as an RDM peer listening on port 1 (nobody): the endpoint must not need to call back
  void hello() {
    wire::hello_body b{};
    b.magic = wire::hello_magic;
    b.ep_type = 2;
    b.family = AF_INET;
    b.port = htons(1);
    frame(wire::op::hello, 0, sizeof b);
    put(&b, sizeof b);
  }
  // true if the peer closed the connection (reads until EOF or timeout)
  bool closed_by_peer() {
    char buf[256];
    for (int i = 0; i < 100; ++i) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
    return false;
  }
};

class tcp_fault : public ::testing::Test {
 protected:
  void SetUp() override {
    srv = open_node("tcp", cap::msg | cap::tagged);
    good = open_node("tcp", cap::msg | cap::tagged);
    ASSERT_TRUE(srv.ep && good.ep);
    g2s = insert(good, srv);
  }
  // the endpoint still serves a well-behaved peer
  void still_works() {
    char got[5] = {};
    ASSERT_EQ(srv.ep.recv(got, 5), errc::ok);
    ASSERT_EQ(good.ep.inject("alive", 5, g2s), errc::ok);
    outcome o = next(srv, {&good});
    ASSERT_TRUE(o.ok) << o.err.msg;
    EXPECT_EQ(std::string(got, 5), "alive");
  }
  void drive(int ms) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) srv.cq.progress();
  }
  node srv, good;
  fi_addr_t g2s = addr_unspec;
};

}  // namespace

TEST_F(tcp_fault, garbage_instead_of_hello_drops_the_connection) {
  raw_peer p(*srv.ep.name());
  const char junk[] = "GET / HTTP/1.1\r\nHost: weft\r\n\r\n....";
  p.put(junk, sizeof junk);
  drive(100);
  EXPECT_TRUE(p.closed_by_peer());
  still_works();
}

TEST_F(tcp_fault, wrong_version_and_absurd_length_drop_the_connection) {
  {
    raw_peer p(*srv.ep.name());
    wire::frame_header h{wire::magic, 99, static_cast<std::uint8_t>(wire::op::hello), 0, 0, 32, 0, 0};
    p.put(&h, sizeof h);
    drive(100);
    EXPECT_TRUE(p.closed_by_peer()) << "unknown version";
  }
  {
    raw_peer p(*srv.ep.name());
    p.hello();
    drive(50);
    p.frame(wire::op::msg, 0, std::uint64_t{1} << 60);  // 1 EiB
    drive(100);
    EXPECT_TRUE(p.closed_by_peer()) << "absurd length";
  }
  {
    raw_peer p(*srv.ep.name());
    p.frame(wire::op::msg, 0, 4);  // a message before the hello
    p.put("oops", 4);
    drive(100);
    EXPECT_TRUE(p.closed_by_peer()) << "message before hello";
  }
  still_works();
}

TEST_F(tcp_fault, rma_frames_from_a_hostile_peer) {
  std::vector<unsigned char> mem(4096, 0x11);
  auto m = srv.dom.register_memory(mem.data(), mem.size(), access::remote_read | access::remote_write);
  ASSERT_TRUE(m);
  {  // an answer nobody asked for (no RMA was ever sent to this peer)
    raw_peer p(*srv.ep.name());
    p.hello();
    drive(50);
    p.frame(wire::op::rma_resp, 0, 0, 12345, 0);
    drive(100);
    EXPECT_TRUE(p.closed_by_peer()) << "unsolicited answer";
  }
  {  // a request with a malformed body (reserved byte set)
    raw_peer p(*srv.ep.name());
    p.hello();
    drive(50);
    wire::rma_req q{*m->key(), 0, 1, 16, 0, 0, 0, 7};
    p.frame(wire::op::rma_read, 0, sizeof q);
    p.put(&q, sizeof q);
    drive(100);
    EXPECT_TRUE(p.closed_by_peer()) << "bad rma_req";
  }
  {  // a write past the end of the region: refused with an answer, memory untouched, connection kept
    raw_peer p(*srv.ep.name());
    p.hello();
    drive(50);
    wire::rma_req q{*m->key(), 4000, 99, 0, 0, 0, 0, 0};
    std::vector<unsigned char> payload(200, 0xee);
    p.frame(wire::op::rma_write, wire::flag::ack, sizeof q + payload.size());
    p.put(&q, sizeof q);
    p.put(payload.data(), payload.size());
    drive(100);
    wire::frame_header h{};
    ASSERT_EQ(::recv(p.fd, &h, sizeof h, MSG_WAITALL), static_cast<ssize_t>(sizeof h)) << "hello_ack";
    ASSERT_EQ(h.op, static_cast<std::uint8_t>(wire::op::hello_ack));
    ASSERT_EQ(::recv(p.fd, &h, sizeof h, MSG_WAITALL), static_cast<ssize_t>(sizeof h)) << "the answer";
    EXPECT_EQ(h.op, static_cast<std::uint8_t>(wire::op::rma_resp));
    EXPECT_EQ(h.tag, 99u);
    EXPECT_EQ(h.data, static_cast<std::uint64_t>(errc::invalid_argument));
    EXPECT_TRUE(std::all_of(mem.begin(), mem.end(), [](unsigned char c) { return c == 0x11; }));
  }
  still_works();
}

TEST_F(tcp_fault, peer_vanishing_mid_message_fails_only_that_receive) {
  std::vector<char> buf(100000);
  int ctx = 0;
  ASSERT_EQ(srv.ep.recv(buf.data(), buf.size(), addr_unspec, &ctx), errc::ok);
  {
    raw_peer p(*srv.ep.name());
    p.hello();
    p.frame(wire::op::msg, 0, 100000);
    std::vector<char> half(40000, 'h');
    p.put(half.data(), half.size());
    drive(100);
  }  // closed with 60000 bytes missing
  outcome o = next(srv, {}, 3000);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.context, &ctx);
  EXPECT_EQ(o.err.err, errc::peer_dead) << o.err.msg;
  still_works();
}

TEST_F(tcp_fault, message_arriving_in_pieces_keeps_its_place) {
  // Regression: a receive posted while an unexpected message was still
  // arriving went to the next message, overtaking the first.
  raw_peer p(*srv.ep.name());
  p.hello();
  std::vector<char> m1(1000, '1'), m2(10, '2');
  p.frame(wire::op::msg, 0, m1.size());
  p.put(m1.data(), 500);  // half of message 1; no receive posted yet
  drive(100);
  char r1[1000] = {}, r2[10] = {};
  ASSERT_EQ(srv.ep.recv(r1, sizeof r1, addr_unspec, r1), errc::ok);
  ASSERT_EQ(srv.ep.recv(r2, sizeof r2, addr_unspec, r2), errc::ok);
  p.put(m1.data() + 500, 500);
  p.frame(wire::op::msg, 0, m2.size());
  p.put(m2.data(), m2.size());
  outcome a = next(srv, {}, 3000);
  outcome b = next(srv, {}, 3000);
  ASSERT_TRUE(a.ok && b.ok);
  EXPECT_EQ(a.e.context, r1) << "the first message completes the first receive";
  EXPECT_EQ(a.e.len, 1000u);
  EXPECT_EQ(std::string(r1, 3), "111");
  EXPECT_EQ(b.e.context, r2);
  EXPECT_EQ(std::string(r2, 3), "222");
}

TEST_F(tcp_fault, connect_to_nothing_is_a_clear_error) {
  // a port nobody listens on
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t l = sizeof sa;
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::getsockname(s, reinterpret_cast<sockaddr*>(&sa), &l), 0);
  ::close(s);  // now closed: connections are refused
  address dead;
  dead.format = addr_format::inet;
  dead.size = sizeof sa;
  std::memcpy(dead.bytes.data(), &sa, sizeof sa);
  auto d = good.av.insert(dead);
  ASSERT_TRUE(d);
  int ctx = 0;
  ASSERT_EQ(good.ep.send("x", 1, *d, &ctx), errc::ok);
  outcome o = next(good, {}, 5000);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.context, &ctx);
  EXPECT_EQ(o.err.err, errc::peer_dead);
  EXPECT_NE(std::string(o.err.msg).find("refused"), std::string::npos) << o.err.msg;
}

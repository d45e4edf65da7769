// tcp RDM connection handling: two peers connecting to each other at once
// end up with one connection and lose or duplicate nothing; idle connections
// close and reopen transparently, without reordering.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <fstream>
#include <sstream>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

std::uint16_t port_of(const address& a) {
  sockaddr_in sa{};
  std::memcpy(&sa, a.bytes.data(), sizeof sa);
  return ntohs(sa.sin_port);
}

// Established loopback TCP sockets with an end on one of these ports.
int established_with(std::uint16_t p1, std::uint16_t p2) {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);
  int n = 0;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string sl, local, remote, st;
    ss >> sl >> local >> remote >> st;
    if (st != "01") continue;
    auto port = [](const std::string& s) { return static_cast<std::uint16_t>(std::stoul(s.substr(s.find(':') + 1), nullptr, 16)); };
    const std::uint16_t lp = port(local), rp = port(remote);
    if (lp == p1 || lp == p2 || rp == p1 || rp == p2) ++n;
  }
  return n;
}

void drive(std::vector<node*> ns, int ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until)
    for (auto* n : ns) n->cq.progress();
}

// Receives n 8-byte sequence numbers on r and checks them 0..n-1.
void expect_sequence(node& r, std::vector<node*> others, std::uint64_t first, int n) {
  for (int i = 0; i < n; ++i) {
    std::uint64_t v = ~0ull;
    ASSERT_EQ(r.ep.recv(&v, 8), errc::ok);
    outcome o;
    for (;;) {  // skip send completions
      o = next(r, others);
      if (!o.ok || (o.e.flags & flag::recv)) break;
    }
    ASSERT_TRUE(o.ok) << o.err.msg;
    ASSERT_EQ(v, first + static_cast<std::uint64_t>(i)) << "lost, duplicated or reordered";
  }
}

}  // namespace

TEST(tcp_rdm, simultaneous_connect_keeps_one_connection_and_every_message) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  for (int round = 0; round < 5; ++round) {
    node a = open_node("tcp", cap::msg | cap::source);
    node b = open_node("tcp", cap::msg | cap::source);
    fi_addr_t a2b = insert(a, b), b2a = insert(b, a);
    // both send before either side has progressed: both connect at once
    for (std::uint64_t i = 0; i < 100; ++i) {
      ASSERT_EQ(a.ep.inject(&i, 8, a2b), errc::ok);
      ASSERT_EQ(b.ep.inject(&i, 8, b2a), errc::ok);
    }
    expect_sequence(b, {&a}, 0, 100);
    expect_sequence(a, {&b}, 0, 100);
    drive({&a, &b}, 50);
    EXPECT_EQ(established_with(port_of(*a.ep.name()), port_of(*b.ep.name())), 2)
        << "one connection (two sockets) between the pair, round " << round;
    // and it keeps working both ways
    for (std::uint64_t i = 100; i < 110; ++i) {
      ASSERT_EQ(a.ep.inject(&i, 8, a2b), errc::ok);
      ASSERT_EQ(b.ep.inject(&i, 8, b2a), errc::ok);
    }
    expect_sequence(b, {&a}, 100, 10);
    expect_sequence(a, {&b}, 100, 10);
  }
}

TEST(tcp_rdm, idle_connection_closes_and_reopens_transparently) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  ::setenv("WEFT_TCP_IDLE_MS", "100", 1);
  node a = open_node("tcp", cap::msg);
  node b = open_node("tcp", cap::msg);
  ::unsetenv("WEFT_TCP_IDLE_MS");
  fi_addr_t a2b = insert(a, b);
  const auto pa = port_of(*a.ep.name()), pb = port_of(*b.ep.name());
  for (std::uint64_t i = 0; i < 20; ++i) ASSERT_EQ(a.ep.inject(&i, 8, a2b), errc::ok);
  expect_sequence(b, {&a}, 0, 20);
  EXPECT_EQ(established_with(pa, pb), 2);
  drive({&a, &b}, 400);  // idle: the connection is closed by handshake
  EXPECT_EQ(established_with(pa, pb), 0) << "idle connection closed";
  for (std::uint64_t i = 20; i < 40; ++i) ASSERT_EQ(a.ep.inject(&i, 8, a2b), errc::ok);
  expect_sequence(b, {&a}, 20, 20);
  EXPECT_EQ(established_with(pa, pb), 2) << "reopened on demand";
  // messages sent while the close handshake runs are not lost or reordered
  drive({&a, &b}, 300);
  for (int round = 0; round < 20; ++round) {
    std::uint64_t base = 1000 + static_cast<std::uint64_t>(round) * 10;
    for (std::uint64_t i = 0; i < 10; ++i) {
      std::uint64_t v = base + i;
      ASSERT_EQ(a.ep.inject(&v, 8, a2b), errc::ok);
      a.cq.progress();
    }
    expect_sequence(b, {&a}, base, 10);
    drive({&a, &b}, 90 + round % 3 * 10);  // around the idle limit
  }
}

TEST(tcp_rdm, truncated_large_message_then_small_ones_with_two_peers) {
  // Regression: the receive low-water mark stayed high after a large message
  // finished through the buffer path, so small frames no longer woke epoll.
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node r = open_node("tcp", cap::msg);
  node p1 = open_node("tcp", cap::msg);
  node p2 = open_node("tcp", cap::msg);
  fi_addr_t a1 = insert(p1, r), a2 = insert(p2, r);
  char warm[1];
  for (auto* p : {&p1, &p2}) {  // two connections: the single-connection fast path is off
    ASSERT_EQ(r.ep.recv(warm, 1), errc::ok);
    ASSERT_EQ(p->ep.inject("w", 1, p == &p1 ? a1 : a2), errc::ok);
    ASSERT_TRUE(next(r, {&p1, &p2}).ok);
  }
  std::vector<char> big(200000, 'B'), half(100000);
  ASSERT_EQ(r.ep.recv(half.data(), half.size()), errc::ok);
  ASSERT_EQ(p1.ep.send(big.data(), big.size(), a1, nullptr), errc::ok);
  outcome t = next(r, {&p1, &p2});
  ASSERT_TRUE(t.error);
  EXPECT_EQ(t.err.err, errc::truncated);
  for (int i = 0; i < 20; ++i) {
    std::uint32_t v = 0;
    ASSERT_EQ(r.ep.recv(&v, 4), errc::ok);
    std::uint32_t x = static_cast<std::uint32_t>(i);
    ASSERT_EQ(p1.ep.inject(&x, 4, a1), errc::ok);
    outcome o;
    do {
      o = next(r, {&p1, &p2}, 3000);
    } while (o.ok && !(o.e.flags & flag::recv));
    ASSERT_TRUE(o.ok) << "small message " << i << " after a truncated large one";
    EXPECT_EQ(v, x);
  }
}

TEST(tcp_rdm, sending_to_itself_works) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node a = open_node("tcp", cap::msg | cap::source);
  fi_addr_t self = insert(a, a);
  for (std::uint64_t i = 0; i < 50; ++i) ASSERT_EQ(a.ep.inject(&i, 8, self), errc::ok);
  expect_sequence(a, {}, 0, 50);
  auto big = pattern(300000, 3);
  std::vector<unsigned char> got(big.size());
  ASSERT_EQ(a.ep.recv(got.data(), got.size()), errc::ok);
  ASSERT_EQ(a.ep.send(big.data(), big.size(), self, nullptr), errc::ok);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(next(a).ok);
  EXPECT_EQ(got, big);
}

TEST(tcp_rdm, a_restarted_peer_at_the_same_address_is_served) {
  // The receiver still holds the old connection (it has not seen its end);
  // the new process at the same address must still get its messages through.
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node b = open_node("tcp", cap::msg);
  address a_addr;
  {
    node a1 = open_node("tcp", cap::msg);
    a_addr = *a1.ep.name();
    fi_addr_t to_b = insert(a1, b);
    std::uint64_t v = 1;
    ASSERT_EQ(a1.ep.inject(&v, 8, to_b), errc::ok);
    expect_sequence(b, {&a1}, 1, 1);
  }  // a1 is gone; b has not progressed since
  // a new endpoint on the same port
  hints h;
  h.provider = "tcp";
  h.node = "127.0.0.1";
  h.source = true;
  sockaddr_in sa{};
  std::memcpy(&sa, a_addr.bytes.data(), sizeof sa);
  h.port = ntohs(sa.sin_port);
  auto infos = get_info(h);
  ASSERT_TRUE(infos);
  node a2;
  a2.inf = infos->front();
  a2.fab = std::move(*fabric::open(a2.inf));
  a2.dom = std::move(*a2.fab.open_domain(a2.inf));
  a2.cq = std::move(*a2.dom.open_cq(64));
  a2.av = std::move(*a2.dom.open_av());
  auto ep = a2.dom.open_endpoint(a2.inf);
  ASSERT_TRUE(ep) << ep.error().message;
  a2.ep = std::move(*ep);
  ASSERT_TRUE(a2.ep.bind(a2.cq) && a2.ep.bind(a2.av) && a2.ep.enable());
  fi_addr_t to_b = insert(a2, b);
  for (std::uint64_t i = 10; i < 15; ++i) ASSERT_EQ(a2.ep.inject(&i, 8, to_b), errc::ok);
  expect_sequence(b, {&a2}, 10, 5);
}

TEST(tcp_rdm, more_unexpected_messages_than_buffers_then_a_directed_receive) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node r = open_node("tcp", cap::msg | cap::directed_recv);
  node p1 = open_node("tcp", cap::msg);
  node p2 = open_node("tcp", cap::msg);
  fi_addr_t a1 = insert(p1, r), a2 = insert(p2, r);
  fi_addr_t from2 = insert(r, p2);
  // 300 unexpected messages from p1 (more than the 256 buffers)
  for (std::uint32_t i = 0; i < 300; ++i) {
    ASSERT_EQ(post([&] { return p1.ep.inject(&i, 4, a1); }, {&p1, &r}), errc::ok);
    r.cq.progress();
  }
  std::uint32_t mark = 0xabc;
  ASSERT_EQ(p2.ep.inject(&mark, 4, a2), errc::ok);
  drive({&p1, &p2, &r}, 200);
  // a receive directed at p2 must get p2's message although p1 fills the buffers
  std::uint32_t got = 0;
  ASSERT_EQ(r.ep.recv(&got, 4, from2, &got), errc::ok);
  outcome o = next(r, {&p1, &p2}, 5000);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(got, 0xabcu);
  // and p1's 300 arrive in order
  for (std::uint32_t i = 0; i < 300; ++i) {
    std::uint32_t v = ~0u;
    ASSERT_EQ(r.ep.recv(&v, 4), errc::ok);
    outcome x = next(r, {&p1, &p2}, 5000);
    ASSERT_TRUE(x.ok);
    ASSERT_EQ(v, i);
  }
}

// A lone connection polled by the application is read directly, and an
// empty poll that the application follows straight away with another waits
// WEFT_TCP_POLL_PAUSE_NS with cpu_relax() first. Whatever that pause (none,
// the default, far longer than a round trip), every message of a ping-pong
// arrives whole and in order.
TEST(tcp_rdm, busy_polled_lone_connection_delivers_whatever_the_poll_pause) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  for (const char* pause : {"0", "1000", "200000"}) {
    SCOPED_TRACE(std::string("WEFT_TCP_POLL_PAUSE_NS=") + pause);
    ::setenv("WEFT_TCP_POLL_PAUSE_NS", pause, 1);
    node a = open_node("tcp", cap::msg);
    node b = open_node("tcp", cap::msg);
    ::unsetenv("WEFT_TCP_POLL_PAUSE_NS");
    fi_addr_t a2b = insert(a, b), b2a = insert(b, a);
    const std::size_t sizes[] = {1, 64, 4096, 8193, 65536};
    std::vector<std::uint8_t> out(65536), in(65536);
    // Receives into `in` on r, skipping r's send completions. r is polled
    // alone, many times in a row (the application coming straight back: the
    // pause applies), and the peer is driven once in a while (its connection
    // handshake and unsent bytes need it).
    auto receive = [&in](node& r, node& peer, std::size_t len) {
      std::fill(in.begin(), in.end(), 0);
      EXPECT_EQ(r.ep.recv(in.data(), in.size()), errc::ok);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      for (int polls = 1; std::chrono::steady_clock::now() < deadline; ++polls) {
        cq_entry e{};
        const errc rc = r.cq.read(e);
        if (rc == errc::error_available) {
          cq_err_entry ee{};
          (void)r.cq.read_error(ee);
          ADD_FAILURE() << "receive failed: " << ee.msg;
          return;
        }
        if (rc == errc::ok && (e.flags & flag::recv)) {
          EXPECT_EQ(e.len, len);
          return;
        }
        if (polls % 64 == 0) peer.cq.progress();
      }
      ADD_FAILURE() << "no message within 20 s";
    };
    const int rounds = std::strcmp(pause, "200000") == 0 ? 50 : 300;
    for (int i = 0; i < rounds; ++i) {
      const std::size_t len = sizes[static_cast<std::size_t>(i) % std::size(sizes)];
      for (std::size_t k = 0; k < len; ++k) out[k] = static_cast<std::uint8_t>(i * 131 + k * 7 + 1);
      ASSERT_EQ(a.ep.send(out.data(), len, a2b), errc::ok);
      receive(b, a, len);
      ASSERT_EQ(std::memcmp(in.data(), out.data(), len), 0) << "ping " << i << " of " << len << " B";
      for (std::size_t k = 0; k < len; ++k) out[k] = static_cast<std::uint8_t>(~in[k]);
      ASSERT_EQ(b.ep.send(out.data(), len, b2a), errc::ok);
      receive(a, b, len);
      ASSERT_EQ(std::memcmp(in.data(), out.data(), len), 0) << "pong " << i << " of " << len << " B";
      if (HasFatalFailure() || HasFailure()) return;
    }
  }
}

// The failure of a write that reserved no completion (an inject write) needs
// room in the initiator's CQ for its error entry. With the CQ full, the
// error entries wait, in order, until the application reads its CQ: every
// failure is reported, none is dropped. Without a write counter the failures
// come unsolicited (transmit-complete); with one, they answer awaited writes.
TEST(tcp_rdm, failures_of_inject_writes_wait_for_room_in_a_full_cq) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  for (bool counted : {false, true}) {
    SCOPED_TRACE(counted ? "with a write counter" : "without a counter");
    node a = open_node("tcp", cap::msg, 0, false, 2);  // a 2-entry CQ
    node b = open_node("tcp", cap::msg);
    std::vector<unsigned char> mem(4096, 0);
    auto m = b.dom.register_memory(mem.data(), mem.size(), access::remote_write);
    ASSERT_TRUE(m) << m.error().message;
    auto ic = a.dom.open_counter();
    ASSERT_TRUE(ic);
    auto ie = a.dom.open_endpoint(a.inf);
    ASSERT_TRUE(ie);
    ASSERT_TRUE(ie->bind(a.cq) && ie->bind(a.av));
    if (counted) {
      ASSERT_TRUE(ie->bind(*ic, flag::write));
    }
    ASSERT_TRUE(ie->enable());
    fi_addr_t to = insert(a, b);
    constexpr int n = 7;
    unsigned char v = 1;
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(post([&] { return ie->inject_write(&v, 1, to, 8 * static_cast<std::uint64_t>(i), *m->key() ^ 1); },
                     {&a, &b}),
                errc::ok);
    // Let every failure arrive before reading anything: two fit, the rest wait.
    drive({&a, &b}, 200);
    int errors = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (errors < n && std::chrono::steady_clock::now() < deadline) {
      if (take_inject_failure(a, errc::not_found)) ++errors;
      b.cq.progress();
    }
    EXPECT_EQ(errors, n) << "every failed inject write reported, none dropped by the full CQ";
    if (counted) {
      EXPECT_EQ(*ic->read_error(), static_cast<std::uint64_t>(n));
    }
    EXPECT_TRUE(std::all_of(mem.begin(), mem.end(), [](unsigned char x) { return x == 0; }));
    // and the connection still works
    ASSERT_EQ(post([&] { return ie->inject_write(&v, 1, to, 0, *m->key()); }, {&a, &b}), errc::ok);
    ASSERT_EQ(post([&] { return ie->send(&v, 1, to); }, {&a, &b}), errc::ok);
    std::uint64_t r = 0;
    ASSERT_EQ(b.ep.recv(&r, 8), errc::ok);
    outcome o = next(b, {&a});
    ASSERT_TRUE(o.ok) << o.err.msg;
    EXPECT_EQ(mem[0], 1) << "the inject before the message landed";
  }
}

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
    EXPECT_EQ(established_with(port_of(a.ep.name()), port_of(b.ep.name())), 2)
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
  const auto pa = port_of(a.ep.name()), pb = port_of(b.ep.name());
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

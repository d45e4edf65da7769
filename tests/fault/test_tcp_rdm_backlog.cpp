// The RDM endpoint's listener past max_handshakes (256) connections that
// have sent no hello: a new connection waits in the kernel's backlog until
// one of them finishes (closed by its peer, or dropped at the handshake
// timeout) and is then served. It was accepted and closed at once, without
// a reason: a real peer's send failed.
//
// The flood is raw sockets; whether the listener has taken a connection is
// read from /proc/net/tcp (a listening socket's rx_queue is its accept
// queue), never guessed from time.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../common/harness.hpp"
#include "../common/raw_frames.hpp"
#include "../common/raw_socket.hpp"
#include "prov/tcp/wire.hpp"

using namespace weft;
using namespace weft::test;
namespace wire = weft::prov::tcp::wire;

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int silent_n = 256;  // prov/tcp max_handshakes

std::uint16_t port_of(const node& n) {
  sockaddr_in sa{};
  std::memcpy(&sa, n.ep.name()->bytes.data(), sizeof sa);
  return ntohs(sa.sin_port);
}

// silent_n connections to port that never send a hello.
std::vector<int> flood(std::uint16_t port) {
  std::vector<int> silent;
  for (int i = 0; i < silent_n; ++i) {
    const int s = raw_connect(port);
    EXPECT_GE(s, 0) << "connection " << i << ": " << std::strerror(errno);
    if (s < 0) break;
    silent.push_back(s);
  }
  return silent;
}

// Drives the listener until it has taken all it will: one left in its
// accept queue twice in a row with a progress call between (it takes 64 per
// call, so one left once may be the last batch), or none left, or `late`
// closed. True if one waits in the queue.
template <class Drive>
bool one_left_waiting(std::uint16_t port, Drive drive, int late) {
  int ones = 0;
  const auto deadline = clock_type::now() + std::chrono::seconds(10);
  while (clock_type::now() < deadline && !closed_silently(late)) {
    drive();
    const auto q = accept_queue(port);
    EXPECT_TRUE(q) << "listener not found in /proc/net/tcp";
    if (!q || *q == 0) return false;
    ones = *q == 1 ? ones + 1 : 0;
    if (ones == 2) return true;
  }
  return false;
}

class tcp_rdm_backlog : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("WEFT_PROGRESS", "manual", 1); }
  void TearDown() override { ::unsetenv("WEFT_TCP_TIMEOUT_MS"); }
};

// A raw peer past the limit waits in the backlog, and gets its hello_ack
// (ok) as soon as one of the silent connections closes.
TEST_F(tcp_rdm_backlog, past_max_handshakes_a_connection_waits_and_is_served_when_one_goes) {
  node srv = open_node("tcp", cap::msg);
  const std::uint16_t port = port_of(srv);
  ASSERT_NE(port, 0);
  std::vector<int> silent = flood(port);
  ASSERT_EQ(silent.size(), static_cast<std::size_t>(silent_n));
  const int late = raw_hello(port, 2, 40000);
  ASSERT_GE(late, 0) << std::strerror(errno);
  const bool waiting = one_left_waiting(port, [&] { (void)srv.cq.progress(); }, late);
  ASSERT_FALSE(closed_silently(late)) << "the connection past the limit was closed without a reason";
  EXPECT_TRUE(waiting) << "it waits in the kernel's backlog";
  EXPECT_EQ(accept_queue(port), 1u);
  // One silent connection goes: the late one is taken and answered.
  ::close(silent.front());
  silent.erase(silent.begin());
  auto h = read_frame(late, [&] { (void)srv.cq.progress(); }, 10000);
  ASSERT_TRUE(h) << "the waiting connection was never answered";
  EXPECT_EQ(h->op, static_cast<std::uint8_t>(wire::op::hello_ack));
  EXPECT_EQ(h->data, static_cast<std::uint64_t>(wire::hello_status::ok));
  ::close(late);
  for (int s : silent) ::close(s);
}

// A real peer's send while 256 silent connections wait: it is delivered
// once they are dropped at the listener's handshake timeout (500 ms here;
// the sender's own connect timeout stays 10 s). Nothing hangs, nothing fails.
TEST_F(tcp_rdm_backlog, a_send_past_max_handshakes_is_delivered_once_the_silent_ones_time_out) {
  ::setenv("WEFT_TCP_TIMEOUT_MS", "500", 1);
  node srv = open_node("tcp", cap::msg);  // reads the timeout at its domain's opening
  ::unsetenv("WEFT_TCP_TIMEOUT_MS");
  node cli = open_node("tcp", cap::msg);
  const std::uint16_t port = port_of(srv);
  ASSERT_NE(port, 0);
  const fi_addr_t to = insert(cli, srv);
  std::vector<int> silent = flood(port);
  ASSERT_EQ(silent.size(), static_cast<std::size_t>(silent_n));
  // Until the listener has taken the 256 (none left in its queue).
  const auto taken_by = clock_type::now() + std::chrono::seconds(10);
  while (clock_type::now() < taken_by && accept_queue(port) != 0u) (void)srv.cq.progress();
  ASSERT_EQ(accept_queue(port), 0u);
  char in[16] = {};
  ASSERT_EQ(srv.ep.recv(in, sizeof in), errc::ok);
  ASSERT_EQ(post([&] { return cli.ep.send("past limit", 11, to); }, {&srv}), errc::ok);
  // Both sides progress until the send completes (ok once the message is
  // written after hello_ack) and the message is received.
  outcome sent = next(cli, {&srv}, 20000);
  EXPECT_TRUE(sent.ok) << "the send failed: " << sent.err.msg;
  outcome got = next(srv, {&cli}, 20000);
  EXPECT_TRUE(got.ok) << got.err.msg;
  EXPECT_STREQ(in, "past limit");
  for (int s : silent) ::close(s);
}

}  // namespace

// A tcp peer that computes without driving progress is busy, not dead: its
// kernel still answers, so its connections stay up however long it takes
// (docs/design.md, "Peer failure"). Each scenario holds one side still for
// several times WEFT_TCP_TIMEOUT_MS and checks that nothing failed and every
// byte arrives once it moves again.
#include <chrono>
#include <cstdlib>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

struct env_guard {
  env_guard(std::initializer_list<std::pair<const char*, const char*>> kv) {
    for (auto& [k, v] : kv) {
      ::setenv(k, v, 1);
      keys.push_back(k);
    }
  }
  ~env_guard() {
    for (auto* k : keys) ::unsetenv(k);
  }
  std::vector<const char*> keys;
};

// Drives only n for ms milliseconds; returns the first error entry met (an
// entry with err == ok if none). Success entries are counted into *ok.
cq_err_entry drive_alone(node& n, int ms, int* ok) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  cq_err_entry err{};
  while (std::chrono::steady_clock::now() < until) {
    cq_entry e{};
    const errc r = n.cq.read(e);
    if (r == errc::ok) ++*ok;
    if (r == errc::error_available) {
      EXPECT_EQ(n.cq.read_error(err), errc::ok);
      return err;
    }
  }
  return err;
}

// from sends v to `to` (where to_addr names `to` for from); `to` receives it.
void send_one(node& from, node& to, fi_addr_t to_addr, std::uint64_t v) {
  std::uint64_t got = 0;
  ASSERT_EQ(to.ep.recv(&got, sizeof got), errc::ok);
  ASSERT_EQ(post([&] { return from.ep.inject(&v, sizeof v, to_addr); }, {&from, &to}), errc::ok);
  const outcome o = next(to, {&from}, 5000);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(got, v);
}

}  // namespace

TEST(tcp_busy_peer, a_peer_busy_through_the_idle_close_is_not_dead) {
  // The idle close starts after 100 ms; the busy peer never answers it while
  // it is held still for 2 s, well past the 300 ms timeout.
  env_guard env{{"WEFT_PROGRESS", "manual"}, {"WEFT_TCP_IDLE_MS", "100"}, {"WEFT_TCP_TIMEOUT_MS", "300"}};
  node a = open_node("tcp", cap::msg | cap::directed_recv);
  node b = open_node("tcp", cap::msg | cap::directed_recv);
  const fi_addr_t to_b = insert(a, b);
  const fi_addr_t to_a = insert(b, a);
  send_one(a, b, to_b, 7);

  // a waits for b (a receive directed at it), b is busy: a alone moves.
  std::uint64_t back = 0;
  ASSERT_EQ(a.ep.recv(&back, sizeof back, to_b), errc::ok);
  int ok = 0;
  const cq_err_entry err = drive_alone(a, 2000, &ok);
  EXPECT_EQ(err.err, errc::ok) << "a live peer that did not drive progress for 2 s was taken as "
                               << to_string(err.err) << ": " << err.msg;
  EXPECT_EQ(ok, 0);

  // b moves again: both directions work, nothing was lost.
  std::uint64_t v = 8;
  ASSERT_EQ(b.ep.inject(&v, sizeof v, to_a), errc::ok);
  const outcome o = next(a, {&b}, 5000);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(back, 8u);
  send_one(a, b, to_b, 9);
}

TEST(tcp_busy_peer, a_receiver_that_reads_late_gets_every_byte) {
  // 64 MiB fill the socket buffers many times over: the receiver's window
  // closes and stays closed for 4 s, eight times the 500 ms timeout (Linux
  // applies TCP_USER_TIMEOUT to zero-window probing).
  env_guard env{{"WEFT_PROGRESS", "manual"}, {"WEFT_TCP_TIMEOUT_MS", "500"}};
  node a = open_node("tcp", cap::msg);
  node b = open_node("tcp", cap::msg);
  const fi_addr_t to_b = insert(a, b);
  send_one(a, b, to_b, 5);  // the connection is up; from here b reads nothing for 4 s
  const auto big = pattern(std::size_t{64} << 20, 11);
  ASSERT_EQ(a.ep.send(big.data(), big.size(), to_b, nullptr), errc::ok);
  int ok = 0;
  const cq_err_entry err = drive_alone(a, 4000, &ok);
  EXPECT_EQ(err.err, errc::ok) << "a send to a receiver that had not read for 4 s failed with " << to_string(err.err)
                               << ": " << err.msg;
  EXPECT_EQ(ok, 0) << "64 MiB cannot have been sent to a receiver that read nothing";

  std::vector<unsigned char> got(big.size());
  ASSERT_EQ(b.ep.recv(got.data(), got.size()), errc::ok);
  int done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (done < 2 && std::chrono::steady_clock::now() < deadline) {
    for (node* n : {&a, &b}) {
      cq_entry e{};
      const errc r = n->cq.read(e);
      if (r == errc::ok) ++done;
      if (r == errc::error_available) {
        cq_err_entry ee{};
        ASSERT_EQ(n->cq.read_error(ee), errc::ok);
        FAIL() << to_string(ee.err) << ": " << ee.msg;
      }
    }
  }
  ASSERT_EQ(done, 2) << "the send and the receive did not both complete within 30 s";
  EXPECT_TRUE(got == big) << "bytes differ";
}

TEST(tcp_busy_peer, a_first_send_to_a_busy_peer_waits_for_it) {
  // b has not driven progress since it opened: its kernel holds a's
  // connection in the listen backlog, and nobody answers a's hello for 2 s,
  // well past the 300 ms timeout.
  env_guard env{{"WEFT_PROGRESS", "manual"}, {"WEFT_TCP_TIMEOUT_MS", "300"}};
  node a = open_node("tcp", cap::msg);
  node b = open_node("tcp", cap::msg);
  const fi_addr_t to_b = insert(a, b);
  std::uint64_t got = 0, v = 42;
  ASSERT_EQ(a.ep.send(&v, sizeof v, to_b, nullptr), errc::ok);
  int ok = 0;
  const cq_err_entry err = drive_alone(a, 2000, &ok);
  EXPECT_EQ(err.err, errc::ok) << "a send to a live peer that was busy for 2 s failed with " << to_string(err.err)
                               << ": " << err.msg;
  EXPECT_EQ(ok, 0);
  ASSERT_EQ(b.ep.recv(&got, sizeof got), errc::ok);
  outcome o = next(b, {&a}, 5000);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(got, 42u);
  o = next(a, {&b}, 5000);
  ASSERT_TRUE(o.ok) << o.err.msg;
}

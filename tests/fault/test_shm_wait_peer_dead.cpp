// shm: a blocking CQ wait whose only business with a peer is a receive
// directed at it learns of that peer's death, when it dies while the wait
// sleeps (README "Dead peers": within
// about 20 ms while the application waits on its CQ). The endpoint said it
// needed no pulse with only a directed receive posted, so the wait slept on
// its doorbells with no timeout: a killed sender rings none, and the wait
// hung until its deadline. And a post refused because a dead peer's ring is
// full says why in last_error_message().
#include <chrono>
#include <cstring>
#include <optional>

#include "common/waits.hpp"
#include "shm_peer.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// Waits (one long blocking wait after another, until the error arrives or
// 20 s passed) for the error entry of the receive with context ctx; nothing
// if only the wait's last look at its deadline found it.
std::optional<cq_err_entry> wait_for_error(completion_queue& cq, void* ctx) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    cq_entry e{};
    const errc r = cq.wait(e, static_cast<int>(std::max<long long>(1, left.count())));
    // Found by the last look a wait takes at its deadline does not count:
    // the wait slept through the death.
    if (std::chrono::steady_clock::now() >= until) break;
    if (r == errc::error_available) {
      cq_err_entry ee{};
      if (cq.read_error(ee) == errc::ok && ee.context == ctx) return ee;
    } else if (r == errc::timed_out) {
      break;
    }
  }
  return std::nullopt;
}

// A receive directed at a spawned peer, posted by post(ep, buf, len, peer,
// ctx); the peer is killed (and reaped) once a blocking CQ wait sleeps: it
// rings no doorbell of ours. The wait must end with the receive's peer_dead
// error entry, carrying flag `want`.
template <class Post>
void expect_sleeping_wait_learns_death(Post post, op_flags want) {
  node s = open_node("shm");
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  char buf[64];
  int ctx = 0;
  ASSERT_EQ(post(s.ep, buf, sizeof buf, *fa, &ctx), errc::ok);
  bool asleep = false;
  const auto err = act_while_asleep([&] { return wait_for_error(s.cq, &ctx); }, [&] { c.reap(); }, asleep);
  ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
  ASSERT_TRUE(err.has_value()) << "the wait never learned that the peer died (it slept until its deadline)";
  EXPECT_EQ(err->err, errc::peer_dead) << err->msg;
  EXPECT_TRUE(err->flags & want);
}

}  // namespace

TEST(shm_wait_peer_dead, a_wait_with_only_a_directed_receive_posted_learns_that_its_peer_died) {
  expect_sleeping_wait_learns_death(
      [](endpoint& ep, char* buf, std::size_t len, fi_addr_t fa, void* ctx) { return ep.recv(buf, len, fa, ctx); },
      flag::recv);
}

TEST(shm_wait_peer_dead, a_tagged_directed_receive_too) {
  expect_sleeping_wait_learns_death(
      [](endpoint& ep, char* buf, std::size_t len, fi_addr_t fa, void* ctx) {
        return ep.trecv(buf, len, fa, 9, 0, ctx);
      },
      flag::tagged);
}

// A peer that consumes nothing: its ring fills (peer_busy), then it is
// killed. The post that finds it dead behind its full ring says so.
TEST(shm_wait_peer_dead, a_post_refused_by_a_dead_peers_full_ring_says_why) {
  node s = open_node("shm");
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  const char msg[8] = "fill";
  errc r = errc::ok;
  for (int i = 0; i < 1'000'000 && r == errc::ok; ++i) {
    r = s.ep.inject(msg, sizeof msg, *fa);
    cq_entry e{};
    (void)s.cq.read(e);
  }
  ASSERT_EQ(r, errc::again);
  ASSERT_EQ(s.ep.again_reason(), again_reason::peer_busy);
  c.reap();
  // An unrelated error first: the refusal must not leave it standing.
  ASSERT_EQ(s.ep.inject(msg, sizeof msg, 12345), errc::invalid_argument);
  const std::string stale = last_error_message();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do r = s.ep.inject(msg, sizeof msg, *fa);  // no progress meanwhile: the post itself finds the death
  while (r == errc::again && std::chrono::steady_clock::now() < until);
  ASSERT_EQ(r, errc::peer_dead);
  EXPECT_NE(stale, last_error_message()) << "the refusal left an older error's text: " << last_error_message();
  EXPECT_TRUE(last_error_says("gone")) << last_error_message();
}

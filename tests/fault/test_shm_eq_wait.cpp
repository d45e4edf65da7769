// Blocking waits on the EQ of shm endpoints ask for the liveness pulse only
// while a bound endpoint has peers to watch (their deaths are found by
// liveness checks, which no doorbell announces): with no peer, a wait sleeps
// on its words and no timer wakes it; with a peer that dies while the wait
// sleeps, the pulse finds the death and the wait returns peer_dead long
// before its deadline.
#include <chrono>

#include "../common/waits.hpp"
#include "common/node_with_eq.hpp"
#include "fault/shm_peer.hpp"

using namespace weft;
using namespace weft::test;

namespace {

TEST(shm_eq_wait, a_wait_with_no_peer_to_watch_takes_no_pulse) {
  node_with_eq s = open_shm_node_with_eq();
  const auto before = s.eq.wait_stats();
  ASSERT_TRUE(before);
  eq_event e;
  EXPECT_EQ(s.eq.wait(e, 300), errc::timed_out);
  const auto after = s.eq.wait_stats();
  ASSERT_TRUE(after);
  // The pulse (10 ms) would have woken it about 30 times.
  EXPECT_EQ(after->timer_wakes, before->timer_wakes) << "an EQ wait pulsed with nothing to watch";
}

TEST(shm_eq_wait, a_peer_death_during_the_wait_is_found_by_the_pulse) {
  node_with_eq s = open_shm_node_with_eq();
  peer_proc c = peer_proc::spawn();
  ASSERT_GT(c.pid, 0);
  auto fa = s.av.insert(c.addr);
  ASSERT_TRUE(fa) << fa.error().message;
  const auto before = s.eq.wait_stats();
  ASSERT_TRUE(before);
  bool asleep = false;
  eq_event e;
  const auto start = std::chrono::steady_clock::now();
  const errc r = act_while_asleep([&] { return s.eq.wait(e, 15000); }, [&] { c.reap(); }, asleep);
  const auto took = std::chrono::steady_clock::now() - start;
  const auto after = s.eq.wait_stats();
  ASSERT_TRUE(after);
  ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
  ASSERT_EQ(r, errc::ok) << "the peer died while the wait slept: " << to_string(r);
  EXPECT_EQ(e.type, eq_event::kind::peer_dead) << e.message;
  EXPECT_EQ(e.addr, *fa);
  EXPECT_GE(after->timer_wakes - before->timer_wakes, 1u) << "found by the pulse";
  EXPECT_LT(took, std::chrono::seconds(14)) << "the wait ran to its deadline";
}

}  // namespace

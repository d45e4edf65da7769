// Blocking waits on a kernel without futex_waitv (ENOSYS): forced with the
// test hook spi::set_wait_fallback, a wait sleeps on its first word in
// bounded slices. The key wake-ups must still end the wait with what it
// waits for, long before its deadline: a CQ woken by the doorbell, a
// counter, a sender refused for a full ring woken by room, and an endpoint
// closed during the wait. The pulse is off, so only a word or a slice ends
// a sleep; spi::fallback_sleeps() proves the fallback was taken, and the
// wait statistics tell a doorbell's wake-up (a word) from a slice's (the
// doorbell tests: exactly one word wake-up; room and close words are not
// slept on in the fallback, and are seen at a slice).
#include <chrono>
#include <string>

#include "../common/harness.hpp"
#include "../common/waits.hpp"

using namespace weft;
using namespace weft::test;

namespace {

using clk = std::chrono::steady_clock;

// A node whose endpoint counts its receives in ctr (bound before enable()).
struct counted_node {
  node n;
  counter ctr;
};

counted_node open_counted(const std::string& provider) {
  counted_node c;
  hints h;
  h.provider = provider;
  h.type = ep_type::rdm;
  h.caps = cap::msg | cap::tagged;
  auto infos = get_info(h);
  EXPECT_TRUE(infos);
  if (!infos) return c;
  node& b = c.n;
  b.inf = infos->front();
  b.fab = std::move(*fabric::open(b.inf));
  b.dom = std::move(*b.fab.open_domain(b.inf));
  b.cq = std::move(*b.dom.open_cq(1024));
  b.av = std::move(*b.dom.open_av(av_attr{}));
  b.ep = std::move(*b.dom.open_endpoint(b.inf));
  c.ctr = std::move(*b.dom.open_counter());
  EXPECT_TRUE(b.ep.bind(b.cq));
  EXPECT_TRUE(b.ep.bind(b.av));
  EXPECT_TRUE(b.ep.bind(c.ctr, flag::recv));
  EXPECT_TRUE(b.ep.enable());
  return c;
}

TEST(wait_fallback, a_cq_wait_is_woken_by_the_doorbell) {
  node a = open_node("shm");
  node b = open_node("shm");
  const fi_addr_t to = insert(a, b);
  char buf[8] = {};
  ASSERT_EQ(b.ep.recv(buf, sizeof buf), errc::ok);
  no_pulse off;
  forced_fallback fb;
  const std::uint64_t slept = spi::fallback_sleeps();
  const auto before = b.cq.wait_stats();
  ASSERT_TRUE(before);
  errc sent = errc::bad_state;
  bool asleep = false;
  cq_entry e;
  const auto start = clk::now();
  const errc r =
      act_while_asleep([&] { return b.cq.wait(e, 20000); }, [&] { sent = a.ep.send("wake", 4, to, nullptr); }, asleep);
  ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
  ASSERT_EQ(sent, errc::ok);
  EXPECT_EQ(r, errc::ok) << to_string(r);
  EXPECT_EQ(std::string(buf, 4), "wake");
  EXPECT_LT(clk::now() - start, std::chrono::seconds(19)) << "the wait ran to its deadline";
  EXPECT_GT(spi::fallback_sleeps(), slept) << "the fallback was not taken";
  // Woken by the doorbell (a word), not found at the end of a slice.
  const auto after = b.cq.wait_stats();
  ASSERT_TRUE(after);
  // >=: a signal that interrupts the futex wait counts as a word wake too.
  // A slice (10 ms, pulse off) that found the message counts none.
  EXPECT_GE(after->word_wakes, before->word_wakes + 1) << "the doorbell did not wake the sleep";
  EXPECT_TRUE(next(a).ok);
}

TEST(wait_fallback, a_counter_wait_is_woken_by_the_doorbell) {
  node a = open_node("shm");
  counted_node b = open_counted("shm");
  const fi_addr_t to = insert(a, b.n);
  char buf[8] = {};
  ASSERT_EQ(b.n.ep.recv(buf, sizeof buf), errc::ok);
  no_pulse off;
  forced_fallback fb;
  const std::uint64_t slept = spi::fallback_sleeps();
  const auto before = b.ctr.wait_stats();
  ASSERT_TRUE(before);
  errc sent = errc::bad_state;
  bool asleep = false;
  const auto start = clk::now();
  const errc r =
      act_while_asleep([&] { return b.ctr.wait(1, 20000); }, [&] { sent = a.ep.send("ctr!", 4, to, nullptr); }, asleep);
  ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
  ASSERT_EQ(sent, errc::ok);
  EXPECT_EQ(r, errc::ok) << to_string(r);
  EXPECT_EQ(std::string(buf, 4), "ctr!");
  EXPECT_LT(clk::now() - start, std::chrono::seconds(19)) << "the wait ran to its deadline";
  EXPECT_GT(spi::fallback_sleeps(), slept) << "the fallback was not taken";
  const auto after = b.ctr.wait_stats();
  ASSERT_TRUE(after);
  // >=: a signal that interrupts the futex wait counts as a word wake too.
  // A slice (10 ms, pulse off) that found the message counts none.
  EXPECT_GE(after->word_wakes, before->word_wakes + 1) << "the doorbell did not wake the sleep";
}

TEST(wait_fallback, a_sender_refused_for_a_full_ring_is_woken_when_room_appears) {
  node a = open_node("shm");
  node b = open_node("shm");
  const fi_addr_t to = insert(a, b);
  char m[64] = "ring";
  ASSERT_EQ(inject_until_refused(a, m, sizeof m, to), errc::again);
  ASSERT_EQ(a.ep.again_reason(), again_reason::peer_busy);
  no_pulse off;
  forced_fallback fb;
  const std::uint64_t slept = spi::fallback_sleeps();
  bool asleep = false;
  cq_entry e;
  std::size_t got = 7;
  const auto start = clk::now();
  const errc w = act_while_asleep([&] { return a.cq.wait({&e, 1}, got, 20000); }, [&] { b.cq.progress(); }, asleep);
  ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
  EXPECT_EQ(w, errc::again) << "room appeared at the busy peer: " << to_string(w);
  EXPECT_EQ(got, 0u);
  EXPECT_LT(clk::now() - start, std::chrono::seconds(19)) << "the wait ran to its deadline";
  EXPECT_GT(spi::fallback_sleeps(), slept) << "the fallback was not taken";
  EXPECT_EQ(a.ep.inject(m, sizeof m, to), errc::ok) << "the retried post finds room";
}

TEST(wait_fallback, closing_an_endpoint_ends_a_wait_on_its_cq) {
  node w = open_node("shm");
  auto e1 = w.dom.open_endpoint(w.inf);
  ASSERT_TRUE(e1) << e1.error().message;
  ASSERT_TRUE(e1->bind(w.cq));
  ASSERT_TRUE(e1->bind(w.av));
  ASSERT_TRUE(e1->enable());
  no_pulse off;
  forced_fallback fb;
  const std::uint64_t slept = spi::fallback_sleeps();
  bool asleep = false;
  cq_entry e;
  const auto start = clk::now();
  const errc r = act_while_asleep([&] { return w.cq.wait(e, 20000); }, [&] { e1->close(); }, asleep);
  ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
  EXPECT_EQ(r, errc::again) << "an endpoint bound to the CQ was closed during the wait: " << to_string(r);
  EXPECT_LT(clk::now() - start, std::chrono::seconds(19)) << "the wait ran to its deadline";
  EXPECT_GT(spi::fallback_sleeps(), slept) << "the fallback was not taken";
}

}  // namespace

// Wake-ups of blocking CQ and counter waits (docs/design.md, "Blocking waits"):
// - with automatic progress (tcp), the domain's thread drains the descriptor a
//   waiter used to poll too: it could take the event and push the completion
//   between the waiter's check and its poll(), a wake-up lost until the pulse
//   (or the deadline with the pulse off). The waits now sleep on a word that
//   thread bumps as it pushes;
// - a counter's add() and set() wake a wait on it (as fi_cntr_add does);
// - an endpoint closed while a CQ wait spins ends the wait at once, not after
//   the spin.
#include <stdlib.h>

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "../common/harness.hpp"
#include "../common/waits.hpp"

using namespace weft;
using namespace weft::test;

namespace {

using clk = std::chrono::steady_clock;

// Many rounds of: a wait with a 30 s timeout on b, a send from a. Each wait
// must return ok long before its deadline (the pulse off, a lost wake-up
// sleeps to it).
TEST(wait_wakeups, tcp_auto_cq_waits_miss_no_completion_pushed_by_the_progress_thread) {
  ::setenv("WEFT_PROGRESS", "auto", 1);
  ::setenv("WEFT_SPIN_US", "0", 1);  // straight to the sleep: the window is there
  node a = open_node("tcp");
  node b = open_node("tcp");
  const fi_addr_t to = insert(a, b);
  no_pulse off;
  const auto deadline = clk::now() + std::chrono::seconds(90);
  int rounds = 0;
  for (; rounds < 400 && clk::now() < deadline; ++rounds) {
    char in[32] = {};
    ASSERT_EQ(b.ep.recv(in, sizeof in), errc::ok);
    std::atomic<bool> started{false};
    errc got = errc::bad_state;
    clk::duration took{};
    cq_entry e{};
    std::thread waiter([&] {
      started.store(true);
      const auto t0 = clk::now();
      got = b.cq.wait(e, 30000);
      took = clk::now() - t0;
    });
    const auto start_by = clk::now() + std::chrono::seconds(10);
    while (!started.load() && clk::now() < start_by) std::this_thread::yield();
    for (int i = 0; i < rounds % 16; ++i) std::this_thread::yield();  // vary the moment
    const std::string msg = "round " + std::to_string(rounds);
    const errc sent = post([&] { return a.ep.send(msg.data(), msg.size() + 1, to); }, {});
    waiter.join();  // bounded: the wait's own timeout
    ASSERT_EQ(sent, errc::ok);
    ASSERT_EQ(got, errc::ok) << "round " << rounds << ": " << to_string(got);
    // A lost wake-up sleeps to the deadline (30 s), whose last read finds
    // the message: a wait that ran 20 s lost it (one woken runs a few ms).
    ASSERT_LT(took, std::chrono::seconds(20)) << "round " << rounds << ": a lost wake-up (the wait ran to its deadline)";
    EXPECT_STREQ(in, msg.c_str());
    ASSERT_TRUE(next(a).ok);  // the send's completion
  }
  EXPECT_GE(rounds, 50);
}

// The same for a counter bound for receives.
TEST(wait_wakeups, tcp_auto_counter_waits_miss_no_count_made_by_the_progress_thread) {
  ::setenv("WEFT_PROGRESS", "auto", 1);
  node a = open_node("tcp");
  hints h;
  h.provider = "tcp";
  h.type = ep_type::rdm;
  h.caps = cap::msg | cap::tagged;
  auto infos = get_info(h);
  ASSERT_TRUE(infos);
  node b;
  b.inf = infos->front();
  b.fab = std::move(*fabric::open(b.inf));
  b.dom = std::move(*b.fab.open_domain(b.inf));
  b.cq = std::move(*b.dom.open_cq(1024));
  b.av = std::move(*b.dom.open_av(av_attr{}));
  b.ep = std::move(*b.dom.open_endpoint(b.inf));
  counter ctr = std::move(*b.dom.open_counter());
  ASSERT_TRUE(b.ep.bind(b.cq));
  ASSERT_TRUE(b.ep.bind(b.av));
  ASSERT_TRUE(b.ep.bind(ctr, flag::recv));
  ASSERT_TRUE(b.ep.enable());
  const fi_addr_t to = insert(a, b);
  no_pulse off;
  const auto deadline = clk::now() + std::chrono::seconds(90);
  int rounds = 0;
  for (; rounds < 400 && clk::now() < deadline; ++rounds) {
    char in[32] = {};
    ASSERT_EQ(b.ep.recv(in, sizeof in), errc::ok);
    std::atomic<bool> started{false};
    errc got = errc::bad_state;
    clk::duration took{};
    std::thread waiter([&] {
      started.store(true);
      const auto t0 = clk::now();
      got = ctr.wait(static_cast<std::uint64_t>(rounds) + 1, 30000);
      took = clk::now() - t0;
    });
    const auto start_by = clk::now() + std::chrono::seconds(10);
    while (!started.load() && clk::now() < start_by) std::this_thread::yield();
    for (int i = 0; i < rounds % 16; ++i) std::this_thread::yield();
    const std::string msg = "round " + std::to_string(rounds);
    const errc sent = post([&] { return a.ep.send(msg.data(), msg.size() + 1, to); }, {});
    waiter.join();
    ASSERT_EQ(sent, errc::ok);
    ASSERT_EQ(got, errc::ok) << "round " << rounds << ": " << to_string(got);
    // A lost wake-up sleeps to the deadline (30 s), whose last read finds
    // the message: a wait that ran 20 s lost it (one woken runs a few ms).
    ASSERT_LT(took, std::chrono::seconds(20)) << "round " << rounds << ": a lost wake-up (the wait ran to its deadline)";
    EXPECT_STREQ(in, msg.c_str());
    ASSERT_TRUE(next(a).ok);
    ASSERT_TRUE(next(b).ok);  // the receive's completion
  }
  EXPECT_GE(rounds, 50);
}

class counter_add_wakes : public ::testing::TestWithParam<variant> {};

// A wait for 5 on a counter bound to an endpoint (doorbell, descriptor, or
// the automatic progress thread), and another thread's add(5) / set(5): the
// wait returns ok, ended by a word (no pulse: it could only time out else).
TEST_P(counter_add_wakes, add_and_set_wake_a_sleeping_counter_wait) {
  apply(GetParam());
  node b = open_node(GetParam().provider);
  counter ctr = std::move(*b.dom.open_counter());
  // A second endpoint, bound to the counter only: the counter's source.
  auto e2 = b.dom.open_endpoint(b.inf);
  ASSERT_TRUE(e2);
  ASSERT_TRUE(e2->bind(b.cq));
  ASSERT_TRUE(e2->bind(b.av));
  ASSERT_TRUE(e2->bind(ctr, flag::recv));
  ASSERT_TRUE(e2->enable());
  no_pulse off;
  for (int use_set = 0; use_set < 2; ++use_set) {
    const std::uint64_t target = 5 * static_cast<std::uint64_t>(use_set + 1);
    const auto before = ctr.wait_stats();
    ASSERT_TRUE(before);
    bool asleep = false;
    const errc r = act_while_asleep([&] { return ctr.wait(target, 20000); },
                                    [&] { use_set ? (void)ctr.set(target) : (void)ctr.add(5); }, asleep);
    ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
    EXPECT_EQ(r, errc::ok) << to_string(r);
    const auto after = ctr.wait_stats();
    ASSERT_TRUE(after);
    EXPECT_GE(after->word_wakes, before->word_wakes + 1) << (use_set ? "set" : "add") << " did not wake the sleep";
    EXPECT_EQ(ctr.read(), target);
  }
}

// The same for a counter with no endpoint at all.
TEST(wait_wakeups, add_wakes_a_counter_wait_without_sources) {
  node b = open_node("shm");
  counter ctr = std::move(*b.dom.open_counter());
  no_pulse off;
  const auto before = ctr.wait_stats();
  ASSERT_TRUE(before);
  bool asleep = false;
  const errc r = act_while_asleep([&] { return ctr.wait(3, 20000); }, [&] { (void)ctr.add(3); }, asleep);
  ASSERT_TRUE(asleep);
  EXPECT_EQ(r, errc::ok) << to_string(r);
  const auto after = ctr.wait_stats();
  ASSERT_TRUE(after);
  EXPECT_GE(after->word_wakes, before->word_wakes + 1) << "add did not wake the sleep";
}

INSTANTIATE_TEST_SUITE_P(providers, counter_add_wakes, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

// A CQ wait spinning (a 60 s spin) when an endpoint bound to its CQ is
// closed returns again at once: the spin compares the detach count too.
TEST(wait_wakeups, a_close_during_the_spin_ends_a_cq_wait_at_once) {
  ::setenv("WEFT_SPIN_US", "60000000", 1);  // read once per process (ctest: one test each)
  node w = open_node("shm", cap::msg);
  auto e1 = w.dom.open_endpoint(w.inf);
  ASSERT_TRUE(e1);
  ASSERT_TRUE(e1->bind(w.cq));
  ASSERT_TRUE(e1->bind(w.av));
  ASSERT_TRUE(e1->enable());
  std::atomic<bool> started{false}, finished{false};
  errc got = errc::bad_state;
  cq_entry e{};
  std::thread waiter([&] {
    started.store(true);
    got = w.cq.wait(e, 120000);
    finished.store(true);
  });
  // The close must come during the spin, not before the wait began (a
  // close before it is no change to the wait): the waiter has spent 50 ms
  // of CPU time, which only the spin does.
  clockid_t cpu{};
  ASSERT_EQ(::pthread_getcpuclockid(waiter.native_handle(), &cpu), 0);
  auto cpu_ms = [&] {
    timespec ts{};
    ::clock_gettime(cpu, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  };
  const auto start_by = clk::now() + std::chrono::seconds(30);
  while ((!started.load() || cpu_ms() < 50) && clk::now() < start_by)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const bool spinning = cpu_ms() >= 50 && !finished.load();
  e1->close();
  // Far below the spin: without the check the wait spins on for 60 s.
  const auto by = clk::now() + std::chrono::seconds(20);
  while (!finished.load() && clk::now() < by) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const bool ended = finished.load();
  waiter.join();
  ASSERT_TRUE(spinning) << "the wait was never seen spinning";
  EXPECT_TRUE(ended) << "the wait spun on after the close";
  EXPECT_EQ(got, errc::again) << to_string(got);
}

}  // namespace

// An endpoint closed on one thread while another waits on its CQ: the wait
// drove, armed and disarmed the endpoint outside any lock, so the close
// freed it under the waiter (ASan: heap-use-after-free in progress or
// disarm). Now the close takes the CQ's sources lock for its teardown, and
// its detach wakes the waiter, whose wait returns (again, or the completion
// it waited for).
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class cq_wait_close : public ::testing::TestWithParam<variant> {};

TEST_P(cq_wait_close, closing_an_endpoint_while_its_cq_waits_frees_nothing_under_the_waiter) {
  apply(GetParam());
  // A long spin: the waiter drives the endpoints (read, progress) while the
  // close runs, which is where the close freed them under it. (Read once per
  // process: ctest runs each test in its own.)
  ::setenv("WEFT_SPIN_US", "200000", 1);
  node b = open_node(GetParam().provider, cap::msg);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  constexpr int rounds = 40;
  for (int round = 0; round < rounds && std::chrono::steady_clock::now() < deadline; ++round) {
    node w = open_node(GetParam().provider, cap::msg);
    // a second endpoint on the same CQ: the one that is closed under the wait
    auto e1 = w.dom.open_endpoint(w.inf);
    ASSERT_TRUE(e1) << e1.error().message;
    ASSERT_TRUE(e1->bind(w.cq));
    ASSERT_TRUE(e1->bind(w.av));
    ASSERT_TRUE(e1->enable());
    const fi_addr_t b2w = insert(b, w);
    char in[32] = {};
    ASSERT_EQ(w.ep.recv(in, sizeof in), errc::ok);

    // The waiter's wait must end once the close and the send are both done
    // (done): by the close (again) or by the message (ok). A wait that timed
    // out while they were still not done was owed nothing (the closing
    // thread is slow under load: it yields, and is preempted) and is waited
    // again; one that timed out once they were done is a failure. So its own
    // timeout never decides the outcome: the events do.
    std::atomic<bool> started{false}, finished{false}, done{false};
    errc got = errc::ok;
    cq_entry e{};
    std::thread waiter([&] {
      started.store(true);
      for (int tries = 0; tries < 10; ++tries) {
        got = w.cq.wait(e, 30000);
        // Retried only when the close and the send were not done yet as it
        // timed out: one that timed out after them lost their wake-up (read
        // before the wait, done would let a wake lost within it retry).
        if (got != errc::timed_out || done.load()) break;
      }
      finished.store(true);
    });
    const auto start_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!started.load() && std::chrono::steady_clock::now() < start_by) std::this_thread::yield();
    // Vary the moment of the close: spinning, arming, or asleep. (Each yield
    // may cost a whole scheduling round under load: bounded in time too.)
    const auto vary_by = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    for (int i = 0; i < round * 50 && std::chrono::steady_clock::now() < vary_by; ++i) std::this_thread::yield();
    e1->close();
    const std::string msg = "round " + std::to_string(round);
    const errc posted = post([&] { return b.ep.send(msg.data(), msg.size() + 1, b2w); }, {});
    done.store(true);
    // The sender progresses (tcp sends from progress) until the wait returns:
    // it must, once the close and the send are done (else a wake-up was lost).
    const auto wait_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!finished.load() && std::chrono::steady_clock::now() < wait_by) (void)b.cq.progress();
    const bool woken = finished.load();
    waiter.join();  // bounded: a wait begun after done finds the message, or times out (30 s)
    ASSERT_TRUE(started.load());
    ASSERT_EQ(posted, errc::ok);
    EXPECT_TRUE(woken) << "round " << round << ": the wait did not return within 20 s of the close and the send";
    // The wait returned the message, or again (the close woke it): the
    // message is then read here.
    ASSERT_TRUE(got == errc::ok || got == errc::again) << static_cast<int>(got) << " " << last_error_message();
    if (got == errc::again) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      do {
        (void)b.cq.progress();
        got = w.cq.wait(e, 10);
      } while (got != errc::ok && std::chrono::steady_clock::now() < until);
      ASSERT_EQ(got, errc::ok);
    }
    EXPECT_EQ(e.len, msg.size() + 1);
    EXPECT_STREQ(in, msg.c_str());
    cq_entry sent;
    (void)b.cq.read(sent);  // the send's completion
  }
}

INSTANTIATE_TEST_SUITE_P(providers, cq_wait_close, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

}  // namespace

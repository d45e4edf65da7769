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

    std::atomic<bool> started{false}, finished{false};
    errc got = errc::ok;
    cq_entry e{};
    std::thread waiter([&] {
      started.store(true);
      got = w.cq.wait(e, 10000);
      finished.store(true);
    });
    const auto start_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!started.load() && std::chrono::steady_clock::now() < start_by) std::this_thread::yield();
    ASSERT_TRUE(started.load());
    // Vary the moment of the close: spinning, arming, or asleep.
    for (int i = 0; i < round * 50; ++i) std::this_thread::yield();
    e1->close();
    const std::string msg = "round " + std::to_string(round);
    ASSERT_EQ(post([&] { return b.ep.send(msg.data(), msg.size() + 1, b2w); }, {}), errc::ok);
    // the sender progresses (tcp sends from progress) until the wait returns
    const auto wait_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!finished.load() && std::chrono::steady_clock::now() < wait_by) (void)b.cq.progress();
    waiter.join();  // the wait's own timeout (10 s) bounds this
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

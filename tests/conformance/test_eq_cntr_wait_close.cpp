// An endpoint closed on one thread while another waits on its EQ or on its
// counter, with transfers under way: the waits drive their sources under
// their own group's lock, and the close held only its CQs' locks, so a
// wait drove the endpoint while it came apart (ASan: heap-use-after-free).
// Now the close holds the lock of every queue it is a source of (CQs, EQ,
// counters) until it is detached from them. Asserted: every wait returns
// a code a wait may return, and what the waits drove during the close is
// whole (the counter counts exactly the completions on the CQ).
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class eq_cntr_wait_close : public ::testing::TestWithParam<variant> {};

TEST_P(eq_cntr_wait_close, closing_an_endpoint_while_its_eq_and_counter_wait_frees_nothing_under_them) {
  apply(GetParam());
  node b = open_node(GetParam().provider, cap::msg);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  constexpr int rounds = 20;
  std::vector<char> big(std::size_t{256} << 10, 'x');
  for (int round = 0; round < rounds && std::chrono::steady_clock::now() < deadline; ++round) {
    node w = open_node(GetParam().provider, cap::msg);
    auto q = w.dom.open_eq();
    ASSERT_TRUE(q) << q.error().message;
    auto c = w.dom.open_counter();
    ASSERT_TRUE(c) << c.error().message;
    // the endpoint closed under the waits: a source of the EQ and the counter
    auto e1 = w.dom.open_endpoint(w.inf);
    ASSERT_TRUE(e1) << e1.error().message;
    ASSERT_TRUE(e1->bind(w.cq));
    ASSERT_TRUE(e1->bind(w.av));
    ASSERT_TRUE(e1->bind(*q));
    ASSERT_TRUE(e1->bind(*c, flag::send | flag::recv));
    ASSERT_TRUE(e1->enable());
    const fi_addr_t w2b = insert(w, b);
    auto e1name = e1->name();
    ASSERT_TRUE(e1name);
    auto b2e1 = b.av.insert(*e1name);
    ASSERT_TRUE(b2e1) << b2e1.error().message;
    // Transfers under way: receives that b's sends fill, and a large send
    // to b (never received: it stays in flight).
    char in[8][64];
    for (auto& r : in) ASSERT_EQ(e1->recv(r, sizeof r), errc::ok);
    ASSERT_EQ(post([&] { return e1->send(big.data(), big.size(), w2b); }, {}), errc::ok);

    std::atomic<bool> stop{false};
    std::atomic<int> started{0};
    std::atomic<int> bad{0}, bad_code{0};
    // One thread drives w's domain (threading::domain): the EQ's waits in
    // even rounds, the counter's in odd ones.
    const bool on_eq = round % 2 == 0;
    std::thread waiter([&] {
      started.fetch_add(1);
      for (int i = 0; i < 1'000'000 && !stop.load(); ++i) {
        eq_event ev;
        const errc r = on_eq ? q->wait(ev, 1) : c->wait(1'000'000, 1);
        if (r != errc::timed_out && r != errc::ok && r != errc::again && r != errc::error_available) {
          bad.fetch_add(1);
          bad_code.store(static_cast<int>(r));
        }
      }
    });
    const auto start_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (started.load() < 1 && std::chrono::steady_clock::now() < start_by) std::this_thread::yield();
    // b's sends arrive while the waits drive e1; the close comes at a varying moment.
    for (int i = 0; i < 8; ++i) {
      const errc r = b.ep.send("message", 8, *b2e1);
      if (r != errc::ok) break;
      (void)b.cq.progress();
    }
    for (int i = 0; i < round * 100; ++i) {
      (void)b.cq.progress();
      std::this_thread::yield();
    }
    e1->close();
    stop.store(true);
    waiter.join();  // each wait is bounded (1 ms), and so is the loop
    EXPECT_EQ(bad.load(), 0) << "round " << round << ": a wait returned " << to_string(static_cast<errc>(bad_code.load()));
    // What the waits drove while the endpoint went is whole: every
    // completion it counted is on its CQ (which no wait here reads), and no
    // other: the receives b filled, and the large send where it completes
    // without b receiving it (tcp: in the socket). Posted receives that
    // never completed leave no entry.
    std::uint64_t oks = 0, errs = 0;
    for (int i = 0; i < 64; ++i) {
      cq_entry ce;
      const errc r = w.cq.read(ce);
      if (r == errc::ok) {
        ++oks;
        EXPECT_TRUE(ce.flags & (flag::recv | flag::send)) << "round " << round << ": a completion of another kind";
      } else if (r == errc::error_available) {
        cq_err_entry ce2;
        ASSERT_EQ(w.cq.read_error(ce2), errc::ok);
        ++errs;
      } else {
        EXPECT_EQ(r, errc::again) << to_string(r);
        break;
      }
    }
    EXPECT_EQ(c->read().value_or(~0ull), oks) << "round " << round << ": the counter and the CQ disagree";
    EXPECT_EQ(c->read_error().value_or(~0ull), errs) << "round " << round;
    EXPECT_LE(oks + errs, 9u);
    // The counter outlives the endpoint and answers (its errors were read).
    EXPECT_EQ(c->wait(1'000'000, 0), errc::timed_out);
    // b's completions: whatever they are, drained before its next round
    cq_entry e;
    cq_err_entry ee;
    for (int i = 0; i < 64; ++i)
      if (b.cq.read(e) == errc::error_available) (void)b.cq.read_error(ee);
    (void)b.av.remove(*b2e1);
  }
}

INSTANTIATE_TEST_SUITE_P(providers, eq_cntr_wait_close, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

}  // namespace

// Closing never races a user of the object (issue 9): with manual progress a
// tcp domain's epoll set is shared by all its endpoints, so a thread waiting
// on one endpoint's CQ dispatches the socket events of the others. Another
// thread closing one of those others while its peer streams to it must not
// meet that dispatch (a use after free: run under ASan). The engine's
// dispatch lock, held by the closing endpoint, keeps them apart
// (docs/design.md, "Progress model").
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

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

using clock_t_ = std::chrono::steady_clock;

}  // namespace

TEST(tcp_close_dispatch, closing_an_endpoint_while_another_thread_waits_on_a_sibling_cq) {
  env_guard env{{"WEFT_PROGRESS", "manual"}};
  node a = open_node("tcp", cap::msg);  // E1: its CQ is waited on by thread A
  node p = open_node("tcp", cap::msg);  // the peer that streams to E2 (driven by thread B only)
  ASSERT_TRUE(a.ep);
  ASSERT_TRUE(p.ep);

  // Thread A waits on E1's CQ without pause, except while thread B opens the
  // next E2 (only a close may meet a wait on another thread).
  std::atomic<bool> stop{false}, pause{false}, paused{false};
  std::atomic<std::uint64_t> waits{0};
  std::thread ta([&] {
    const auto deadline = clock_t_::now() + std::chrono::seconds(120);
    while (!stop.load() && clock_t_::now() < deadline) {
      if (pause.load()) {
        paused.store(true);
        while (pause.load() && !stop.load() && clock_t_::now() < deadline) std::this_thread::yield();
        paused.store(false);
        continue;
      }
      cq_entry e{};
      (void)a.cq.wait(e, 0);  // drives E1 (and so dispatches the domain's events) once
      waits.fetch_add(1, std::memory_order_relaxed);
    }
  });
  struct joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~joiner() {
      stop.store(true);
      if (t.joinable()) t.join();
    }
  } join_a{stop, ta};

  const auto big = pattern(std::size_t{4} << 20, 3);
  int tag = 0;  // the send's context
  std::vector<unsigned char> sink(big.size());  // E2's receive: the bytes keep flowing into it
  const int rounds = 200;
  int done = 0, sends_ok = 0, sends_failed = 0;
  const auto deadline = clock_t_::now() + std::chrono::seconds(90);
  for (int r = 0; r < rounds && clock_t_::now() < deadline; ++r) {
    // E2 is opened while thread A stands aside.
    pause.store(true);
    while (!paused.load() && clock_t_::now() < deadline) std::this_thread::yield();
    ASSERT_TRUE(paused.load()) << "thread A did not stand aside";
    completion_queue cq2;
    address_vector av2;
    endpoint e2;
    {
      auto q = a.dom.open_cq(64);
      ASSERT_TRUE(q.has_value());
      cq2 = std::move(*q);
      auto v = a.dom.open_av(av_attr{});
      ASSERT_TRUE(v.has_value());
      av2 = std::move(*v);
      auto e = a.dom.open_endpoint(a.inf);
      ASSERT_TRUE(e.has_value()) << e.error().message;
      e2 = std::move(*e);
      ASSERT_TRUE(e2.bind(cq2).has_value());
      ASSERT_TRUE(e2.bind(av2).has_value());
      ASSERT_TRUE(e2.enable().has_value());
      ASSERT_EQ(e2.recv(sink.data(), sink.size()), errc::ok);
    }
    auto to_e2 = p.av.insert(*e2.name());
    ASSERT_TRUE(to_e2.has_value());
    pause.store(false);

    // p streams 4 MiB to E2, into its receive (thread A's waits take E2's
    // socket events: the accept, the hello, the bytes); E2 is closed in the
    // middle of it.
    ASSERT_EQ(post([&] { return p.ep.send(big.data(), big.size(), *to_e2, &tag); }, {&p}), errc::ok);
    const auto moved_until = clock_t_::now() + std::chrono::milliseconds(1 + r % 3);
    while (clock_t_::now() < moved_until) (void)p.cq.progress();
    e2.close();

    // p's send ends: taken whole before the close, or failed by it (a
    // report of the peer's death, no context, may come first).
    outcome o;
    const auto until = clock_t_::now() + std::chrono::seconds(20);
    while (!o.ok && !o.error && clock_t_::now() < until) {
      o = poll_next_until(p, clock_t_::now());
      if (o.error && o.err.context == nullptr && o.err.err == errc::peer_dead) o = outcome{};
    }
    ASSERT_TRUE(o.ok || o.error) << "round " << r << ": p's send never completed";
    if (o.ok) {
      EXPECT_EQ(o.e.context, &tag);
      ++sends_ok;
    } else {
      EXPECT_EQ(o.err.context, &tag) << o.err.msg;
      ++sends_failed;
    }
    ++done;
  }
  stop.store(true);
  ta.join();
  EXPECT_EQ(done, rounds) << "only " << done << " rounds within the time bound";
  EXPECT_GT(waits.load(), 0u);
  // E1 still works after all this.
  node q = open_node("tcp", cap::msg);
  const fi_addr_t to_a = insert(q, a);
  std::uint64_t v = 77, got = 0;
  ASSERT_EQ(a.ep.recv(&got, sizeof got), errc::ok);
  ASSERT_EQ(post([&] { return q.ep.inject(&v, sizeof v, to_a); }, {&q, &a}), errc::ok);
  const outcome last = next(a, {&q}, 5000);
  ASSERT_TRUE(last.ok) << last.err.msg;
  EXPECT_EQ(got, 77u);
  std::printf("%d rounds: %d sends whole before the close, %d failed by it; thread A waited %llu times\n", done,
              sends_ok, sends_failed, static_cast<unsigned long long>(waits.load()));
}

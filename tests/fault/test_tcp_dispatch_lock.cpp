// The tcp engine's dispatch lock (docs/design.md, "Progress model") with
// manual progress, where any thread waiting on a CQ of the domain dispatches
// for all its endpoints:
//  - a forked child inherits the lock as it was at fork(); held by a parent
//    thread inside a dispatch, it has no owner in the child, whose close of
//    an inherited endpoint must still finish (the child dispatches nothing);
//  - a waiter that finds the lock held (a closing endpoint holds it for its
//    whole teardown) sleeps in bounded waits for it instead of spinning.
// A test hook parks a thread inside engine::poll, holding the lock.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "../common/child.hpp"
#include "../common/harness.hpp"
#include "prov/tcp/test_hooks.hpp"

using namespace weft;
using namespace weft::test;
namespace hooks = weft::prov::tcp::test_hooks;

namespace {

using clock_t_ = std::chrono::steady_clock;

std::atomic<bool> parked{false}, release{false};

// Inside engine::poll, under the dispatch lock: stays until released (or 30 s).
void park() {
  hooks::dispatch_hook.store(nullptr);  // once
  parked.store(true);
  const auto deadline = clock_t_::now() + std::chrono::seconds(30);
  while (!release.load() && clock_t_::now() < deadline) std::this_thread::sleep_for(std::chrono::microseconds(200));
}

struct manual_progress {
  manual_progress() { ::setenv("WEFT_PROGRESS", "manual", 1); }
  ~manual_progress() { ::unsetenv("WEFT_PROGRESS"); }
};

// Thread A: one wait on n's CQ, parked inside its dispatch. Released and
// joined on destruction.
struct parked_waiter {
  explicit parked_waiter(node& n) {
    parked.store(false);
    release.store(false);
    hooks::dispatch_hook.store(&park);
    t = std::thread([&n] {
      cq_entry e{};
      (void)n.cq.wait(e, 0);
    });
    const auto deadline = clock_t_::now() + std::chrono::seconds(10);
    while (!parked.load() && clock_t_::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~parked_waiter() {
    hooks::dispatch_hook.store(nullptr);
    release.store(true);
    t.join();
  }
  std::thread t;
};

}  // namespace

TEST(tcp_dispatch_lock, a_forked_child_closes_an_endpoint_while_a_parent_thread_held_the_dispatch_lock) {
  manual_progress mp;
  node a = open_node("tcp", cap::msg);
  ASSERT_TRUE(a.ep);
  {
    parked_waiter w(a);
    ASSERT_TRUE(parked.load()) << "the waiter never reached a dispatch";
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      forked_child();
      a.ep.close();  // takes the dispatch lock in the parent's process
      a.av.close();
      a.cq.close();
      a.dom.close();
      a.fab.close();
      ::_exit(42);
    }
    child_guard g(pid);
    const child_status s = g(wait_child(pid, std::chrono::seconds(10)));
    EXPECT_EQ(s.exit_code(), 42) << "the child closing its inherited endpoint " << s.describe();
  }
  // The parent's endpoint still works.
  node q = open_node("tcp", cap::msg);
  const fi_addr_t to_a = insert(q, a);
  std::uint64_t v = 77, got = 0;
  ASSERT_EQ(a.ep.recv(&got, sizeof got), errc::ok);
  ASSERT_EQ(post([&] { return q.ep.inject(&v, sizeof v, to_a); }, {&q, &a}), errc::ok);
  const outcome last = next(a, {&q}, 5000);
  ASSERT_TRUE(last.ok) << last.err.msg;
  EXPECT_EQ(got, 77u);
}

TEST(tcp_dispatch_lock, a_waiter_that_finds_the_lock_held_sleeps_instead_of_spinning) {
  manual_progress mp;
  node a = open_node("tcp", cap::msg);
  ASSERT_TRUE(a.ep);
  // A second endpoint of the same domain (same engine), with its own CQ.
  auto q2 = a.dom.open_cq(64);
  ASSERT_TRUE(q2.has_value());
  completion_queue cq2 = std::move(*q2);
  auto v2 = a.dom.open_av(av_attr{});
  ASSERT_TRUE(v2.has_value());
  auto e2 = a.dom.open_endpoint(a.inf);
  ASSERT_TRUE(e2.has_value()) << e2.error().message;
  ASSERT_TRUE(e2->bind(cq2).has_value());
  ASSERT_TRUE(e2->bind(*v2).has_value());
  ASSERT_TRUE(e2->enable().has_value());
  std::uint64_t calls = 0;
  {
    parked_waiter w(a);
    ASSERT_TRUE(parked.load()) << "the waiter never reached a dispatch";
    // For 100 ms, waits on the other CQ (each finds the lock held): each
    // sleeps up to engine::dispatch_wait_ns (1 ms) for it. Spinning, they
    // were tens of thousands.
    const auto until = clock_t_::now() + std::chrono::milliseconds(100);
    while (clock_t_::now() < until) {
      cq_entry e{};
      (void)cq2.wait(e, 0);
      ++calls;
    }
  }
  std::printf("%llu waits in 100 ms while the dispatch lock was held\n", static_cast<unsigned long long>(calls));
  EXPECT_LE(calls, 1000u) << "waits spun while another thread held the dispatch lock";
}

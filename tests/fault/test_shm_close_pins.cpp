// shm: a region's close pins every endpoint of the domain (the registry's
// observers) while it waits, without the registry's lock, for the peers
// inside an access to its key; an endpoint's close waits until no close
// drains through it. Two ways that wait went wrong:
//  - a forked child inherited the pins of its parent's draining close (a
//    thread that does not exist in the child): its close of the endpoint it
//    inherited waited for them forever. Pins now count in the process (fork
//    generation) that took them, as holds do.
//  - the close kept every endpoint pinned until it had drained through all
//    of them: closing endpoint E1 (which holds E1's queues meanwhile) waited
//    for a stopped peer's access through E2. Each endpoint is now unpinned
//    as soon as its own drain returned.
// And the monitor's report of memory that went away waits for the accesses
// under way without the registry's lock too.
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/child.hpp"
#include "common/harness.hpp"
#include "common/shm_view.hpp"
#include "common/waits.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int child_closed = 42;

// The holder word of this process, as access slots hold it: pid and the low
// bits of its start time (field 22 of /proc/self/stat).
std::uint64_t own_holder_word() {
  FILE* f = std::fopen("/proc/self/stat", "r");
  if (!f) return 0;
  char buf[1024] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* q = std::strrchr(buf, ')');
  if (!q) return 0;
  q += 2;
  for (int field = 3; field < 22 && *q; ++q)
    if (*q == ' ') ++field;
  const std::uint64_t start = std::strtoull(q, nullptr, 10);
  return (std::uint64_t{static_cast<std::uint32_t>(::getpid())} << 32) | (start & 0xffffffffu);
}

// A peer (this live process's word) that claimed slot 0 of the endpoint's
// region and is inside an access to key: a close of the key's region waits
// until the slot is given back (the returned pointer; store 0 in holder).
prov::shm::access_slot* plant_access(hostile_view& v, std::uint64_t key) {
  if (!v.ok() || v.h->access_count == 0) return nullptr;
  const std::uint64_t word = own_holder_word();
  if (word == 0) return nullptr;
  auto* slots = reinterpret_cast<prov::shm::access_slot*>(static_cast<std::byte*>(v.base) + v.h->access_offset);
  slots[0].holder.store(word);
  slots[0].key.store(key);
  std::uint32_t used = v.h->access_used.load();
  while (used < 1 && !v.h->access_used.compare_exchange_weak(used, 1)) {
  }
  return &slots[0];
}

// Whether the thread that set about (and its tid) was seen asleep.
bool thread_seen_asleep(const std::atomic<bool>& about, const std::atomic<pid_t>& tid) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!about.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  return about.load() && seen_asleep(about, tid.load());
}

}  // namespace

TEST(shm_close_pins, a_forked_child_closes_an_endpoint_its_parent_was_draining) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  ::setenv("WEFT_PROGRESS", "manual", 1);  // no progress thread holding a lock at the fork
  node t = open_node("shm", cap::msg);
  ::unsetenv("WEFT_PROGRESS");
  if (!(t.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  static std::uint64_t mem[8];
  auto m = t.dom.register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  ASSERT_TRUE(m) << m.error().message;
  auto key = m->key();
  ASSERT_TRUE(key);
  hostile_view v(*t.ep.name());
  auto* slot = plant_access(v, *key);
  ASSERT_NE(slot, nullptr);

  std::atomic<bool> closed{false}, about{false};
  std::atomic<pid_t> tid{0};
  std::thread closer([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    about = true;
    m->close();  // drains through t.ep (pinned) without the registry's lock
    closed = true;
  });
  const bool asleep = thread_seen_asleep(about, tid);
  EXPECT_TRUE(asleep) << "the close was never seen waiting";

  pid_t pid = -1;
  if (asleep) pid = ::fork();
  if (pid == 0) {
    // The child: its copy of the endpoint is pinned by its parent's close,
    // whose thread is not here. Its close must not wait for it.
    t.ep.close();
    ::_exit(child_closed);
  }
  if (pid > 0) {
    child_guard guard(pid);
    const child_status st = guard(wait_child(pid, std::chrono::seconds(20)));
    EXPECT_EQ(st.exit_code(), child_closed)
        << "the child's close of its endpoint waited for its parent's pins: " << st.describe();
  }
  EXPECT_FALSE(closed.load()) << "the close returned while a peer was inside an access to its key";
  slot->holder.store(0);  // the peer ends its access
  closer.join();
  EXPECT_TRUE(closed.load());
  t.ep.close();  // the parent's own close still works
}

TEST(shm_close_pins, closing_an_endpoint_does_not_wait_for_a_drain_through_another) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  node t = open_node("shm", cap::msg);  // E1: t.ep, the domain's first observer
  if (!(t.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  auto e2 = t.dom.open_endpoint(t.inf);  // E2, drained after E1
  ASSERT_TRUE(e2) << e2.error().message;
  auto q2 = t.dom.open_cq(64);
  ASSERT_TRUE(q2);
  ASSERT_TRUE(e2->bind(*q2));
  ASSERT_TRUE(e2->bind(t.av));
  ASSERT_TRUE(e2->enable());
  static std::uint64_t mem[8];
  auto m = t.dom.register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  ASSERT_TRUE(m) << m.error().message;
  auto key = m->key();
  ASSERT_TRUE(key);
  hostile_view v(*e2->name());
  auto* slot = plant_access(v, *key);  // a stopped peer inside an access through E2
  ASSERT_NE(slot, nullptr);

  std::atomic<bool> closed{false}, about{false};
  std::atomic<pid_t> tid{0};
  std::thread closer([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    about = true;
    m->close();  // drains E1 (nothing under way), then waits in E2's drain
    closed = true;
  });
  EXPECT_TRUE(thread_seen_asleep(about, tid)) << "the close was never seen waiting";

  // E1's close (another thread) must not wait for the drain through E2.
  std::mutex mu;
  std::condition_variable cv;
  bool ep_closed = false;
  std::thread ep_closer([&] {
    t.ep.close();
    std::lock_guard lk(mu);
    ep_closed = true;
    cv.notify_all();
  });
  bool in_time = false;
  {
    std::unique_lock lk(mu);
    in_time = cv.wait_for(lk, std::chrono::seconds(20), [&] { return ep_closed; });
  }
  EXPECT_TRUE(in_time) << "closing E1 waited for a close draining another endpoint (E2)";
  EXPECT_FALSE(closed.load()) << "the close returned while a peer was inside an access to its key";

  slot->holder.store(0);  // the peer ends its access
  ep_closer.join();
  closer.join();
  EXPECT_TRUE(closed.load());
}

namespace {

// A monitor whose reports the test makes (notify from a thread of its own).
class manual_monitor final : public memory_monitor {
 public:
  result<void> start(notify_fn n) override {
    std::lock_guard lk(mu);
    notify = std::move(n);
    return {};
  }
  void stop() noexcept override {}
  result<watch_mode> subscribe(const void*, std::size_t) override { return watch_mode::notified; }
  void unsubscribe(const void*, std::size_t) noexcept override {}
  bool valid(const void*, std::size_t) noexcept override { return true; }
  const char* name() const noexcept override { return "manual"; }
  std::mutex mu;
  notify_fn notify;
};

}  // namespace

// The monitor's report that a region's memory went away revokes its key and
// waits for the accesses under way, like a close: that wait ran under the
// registry's lock, so a peer stopped inside an access held up every
// registration of the process. It runs without the lock now.
TEST(shm_close_pins, a_report_waiting_for_a_slow_access_does_not_block_a_registration) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  node t = open_node("shm", cap::msg);
  if (!(t.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  auto mon = std::make_shared<manual_monitor>();
  ASSERT_TRUE(t.dom.import_monitor(mon));
  static std::uint64_t mem[8];
  auto m = t.dom.register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  ASSERT_TRUE(m) << m.error().message;
  auto key = m->key();
  ASSERT_TRUE(key);
  hostile_view v(*t.ep.name());
  auto* slot = plant_access(v, *key);
  ASSERT_NE(slot, nullptr);
  memory_monitor::notify_fn report;
  {
    std::lock_guard lk(mon->mu);
    report = mon->notify;
  }
  ASSERT_TRUE(report);

  std::atomic<bool> reported{false}, about{false};
  std::atomic<pid_t> tid{0};
  std::thread reporter([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    about = true;
    report(mem, sizeof mem);  // "that memory went away": waits for the access
    reported = true;
  });
  EXPECT_TRUE(thread_seen_asleep(about, tid)) << "the report was never seen waiting";

  std::mutex mu;
  std::condition_variable cv;
  bool registered = false;
  static std::uint64_t other[8];
  result<memory_region> r2 = make_error(errc::bad_state, "not yet");
  std::thread registrar([&] {
    auto r = t.dom.register_memory(other, sizeof other, access::remote_write | access::remote_read);
    std::lock_guard lk(mu);
    r2 = std::move(r);
    registered = true;
    cv.notify_all();
  });
  bool in_time = false;
  {
    std::unique_lock lk(mu);
    in_time = cv.wait_for(lk, std::chrono::seconds(20), [&] { return registered; });
  }
  EXPECT_TRUE(in_time) << "a registration waited for a monitor report that waits for a slow access";
  EXPECT_FALSE(reported.load()) << "the report returned while a peer was inside an access to the key";

  slot->holder.store(0);  // the peer ends its access
  registrar.join();
  reporter.join();
  EXPECT_TRUE(reported.load());
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_NE(r2->key().value_or(0), 0u);
}

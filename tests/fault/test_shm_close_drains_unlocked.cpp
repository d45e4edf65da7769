// shm: closing a memory region waits for the peers inside an access to its
// key (access slots, docs/wire/shm.md). That wait ran under the domain's
// registry lock, so one slow access (a peer stopped inside a copy) held up
// every registration, lookup and close of the process. Now the key leaves
// the table under the lock and the wait runs without it: a registration on
// another thread completes while the close still waits, and the close
// returns only once the access ended.
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/harness.hpp"
#include "common/shm_view.hpp"
#include "common/waits.hpp"

using namespace weft;
using namespace weft::test;

namespace {

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

}  // namespace

TEST(shm_close_drains_unlocked, a_close_waiting_for_a_slow_access_does_not_block_a_registration) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  node t = open_node("shm", cap::msg);
  if (!(t.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  static std::uint64_t mem[8];
  auto m = t.dom.register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  ASSERT_TRUE(m) << m.error().message;
  auto key = m->key();
  ASSERT_TRUE(key);
  hostile_view v(*t.ep.name());
  ASSERT_TRUE(v.ok());
  ASSERT_GT(v.h->access_count, 0u);
  // A peer (this live process's word) that claimed slot 0 and is inside an
  // access to the key: the close waits until it gives the slot back.
  const std::uint64_t word = own_holder_word();
  ASSERT_NE(word, 0u);
  auto* slots = reinterpret_cast<prov::shm::access_slot*>(static_cast<std::byte*>(v.base) + v.h->access_offset);
  slots[0].holder.store(word);
  slots[0].key.store(*key);
  std::uint32_t used = v.h->access_used.load();
  while (used < 1 && !v.h->access_used.compare_exchange_weak(used, 1)) {
  }

  std::atomic<bool> closed{false}, about{false};
  std::atomic<pid_t> tid{0};
  std::thread closer([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    about = true;
    m->close();
    closed = true;
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!about.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  // Asleep between two looks at the slot (after its spin rounds).
  EXPECT_TRUE(seen_asleep(about, tid.load())) << "the close was never seen waiting";

  // Another thread registers memory meanwhile: it must not wait for the close.
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
  EXPECT_TRUE(in_time) << "a registration waited for a close that waits for a slow access";
  EXPECT_FALSE(closed.load()) << "the close returned while a peer was inside an access to its key";

  slots[0].holder.store(0);  // the peer ends its access
  registrar.join();
  closer.join();
  EXPECT_TRUE(closed.load());
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_NE(r2->key().value_or(0), 0u);
}

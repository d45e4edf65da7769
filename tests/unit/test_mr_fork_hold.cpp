// A region's close waits for the copies that found it before (find() with a
// hold): the memory is the application's again only after them. After
// fork(), the child's registry still counts the holds its parent's threads
// took, but those threads do not exist in the child and its copy of the
// memory is its own: a child closing the region must not wait for them (it
// waited for ever). The parent's close still waits for its own holds.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/child.hpp"
#include "common/waits.hpp"
#include "weft/spi/mr.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int child_closed = 42;  // the child's exit code once its close returned

// A thread inside a copy: it found the region with a hold and keeps it until let go.
struct holder {
  std::mutex mu;
  std::condition_variable cv;
  bool held = false, let_go = false;
  errc found = errc::bad_state;
  std::thread t;

  holder(spi::mr_registry& reg, std::uint64_t key) {
    t = std::thread([this, &reg, key] {
      spi::mr_hold h;
      std::byte* where = nullptr;
      const errc r = reg.find(key, 0, 64, access::remote_write, where, h);
      std::unique_lock lk(mu);
      found = r;
      held = true;
      cv.notify_all();
      cv.wait(lk, [&] { return let_go; });
    });  // the hold goes with the thread's frame
  }
  bool wait_held() {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(10), [&] { return held; });
  }
  void release() {
    {
      std::lock_guard lk(mu);
      let_go = true;
    }
    cv.notify_all();
    t.join();
  }
};

}  // namespace

TEST(mr_fork_hold, a_child_closing_a_region_does_not_wait_for_a_hold_of_its_parents_thread) {
  auto reg = std::make_shared<spi::mr_registry>();
  static unsigned char mem[4096];
  auto m = reg->register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  ASSERT_TRUE(m) << m.error().message;
  const std::uint64_t key = (*m)->key();
  holder h(*reg, key);
  ASSERT_TRUE(h.wait_held());
  ASSERT_EQ(h.found, errc::ok);

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    m->reset();  // the last handle: the region closes (before the fix: waited for ever)
    ::_exit(child_closed);
  }
  child_guard guard(pid);
  const child_status st = guard(wait_child(pid, std::chrono::seconds(20)));
  EXPECT_EQ(st.exit_code(), child_closed) << "the child closing its copy of the region " << st.describe();

  h.release();
  m->reset();  // the parent's close: its hold is gone
  EXPECT_EQ(reg->stats().active, 0u);
}

TEST(mr_fork_hold, the_parents_close_still_waits_for_its_own_hold) {
  auto reg = std::make_shared<spi::mr_registry>();
  static unsigned char mem[4096];
  auto m = reg->register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  ASSERT_TRUE(m) << m.error().message;
  holder h(*reg, (*m)->key());
  ASSERT_TRUE(h.wait_held());
  ASSERT_EQ(h.found, errc::ok);

  // A child forked (and gone) meanwhile changes nothing for the parent.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  EXPECT_TRUE(wait_child(pid, std::chrono::seconds(20)).exited_ok());

  std::atomic<bool> closed{false}, about{false};
  std::atomic<pid_t> tid{0};
  std::thread closer([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    about = true;
    m->reset();
    closed = true;
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!about.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  const bool asleep = seen_asleep(about, tid.load());
  EXPECT_TRUE(asleep) << "the close was never seen waiting";
  EXPECT_FALSE(closed.load()) << "the close returned while a copy held the region";
  h.release();
  closer.join();
  EXPECT_TRUE(closed.load());
}

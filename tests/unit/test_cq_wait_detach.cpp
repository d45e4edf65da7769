// A CQ wait returns again when a source bound to it is detached (an
// endpoint closed) during the wait. Its sleep ends on the detach word, whose
// value arm_all() takes: a detach after the wait began but before it armed
// (while it spun) was in that value already, so it did not end the sleep,
// which lasted until the deadline (forever for timeout -1). Here the detach
// lands in the wait's first read, before it arms, every time.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <utility>

#include "common/waits.hpp"
#include "util/futex.hpp"
#include "weft/spi/cq.hpp"

using namespace weft;

namespace {

// A source with a doorbell that nothing rings, and no pulse: a wait on it
// sleeps until a word changes. On its first progress (the wait's first
// read) it detaches `goes` from the queue, as a close on another thread
// between the start of the wait and its arming would.
struct quiet_source : spi::progressable {
  spi::cq* q = nullptr;
  spi::progressable* goes = nullptr;
  std::atomic<std::uint32_t> doorbell{0};
  std::atomic<int> arms{0};
  void progress() noexcept override {
    if (goes) {
      q->detach(std::exchange(goes, nullptr));
    }
  }
  std::atomic<std::uint32_t>* arm() noexcept override {
    arms.fetch_add(1);
    return &doorbell;
  }
  [[nodiscard]] bool needs_pulse() const noexcept override { return false; }
};

struct other_source : spi::progressable {
  std::atomic<std::uint32_t> doorbell{0};
  void progress() noexcept override {}
  std::atomic<std::uint32_t>* arm() noexcept override { return &doorbell; }
  [[nodiscard]] bool needs_pulse() const noexcept override { return false; }
};

}  // namespace

TEST(cq_wait_detach, a_detach_before_the_wait_armed_ends_it_without_a_sleep) {
  spi::cq q(8);
  quiet_source stays;
  other_source closed;
  q.attach(&stays);  // driven first: it detaches `closed`, next in the list
  q.attach(&closed);
  stays.q = &q;
  stays.goes = &closed;

  std::atomic<bool> finished{false};
  std::atomic<pid_t> tid{0};
  errc got = errc::ok;
  std::thread waiter([&] {
    tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
    cq_entry e{};
    std::size_t n = 0;
    got = q.wait({&e, 1}, n, -1);  // no deadline: only a wake-up ends a sleep
    finished.store(true);
  });
  // The wait returns again without sleeping. Seen asleep (after it armed,
  // state S: nothing else blocks it) while not returned: the detach was lost
  // to the sleep; ring its doorbell so that it returns, and fail.
  bool slept = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!finished.load() && std::chrono::steady_clock::now() < until) {
    if (stays.arms.load() > 0 && tid.load() && test::thread_sleeping(tid.load()) && !finished.load()) {
      slept = true;
      break;
    }
    std::this_thread::yield();
  }
  const bool returned_alone = finished.load();
  if (!returned_alone) {
    // The rescue: the doorbell changes, the sleep ends, the detach is seen.
    const auto rescue_until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!finished.load() && std::chrono::steady_clock::now() < rescue_until) {
      stays.doorbell.fetch_add(1);
      util::futex_wake_all(&stays.doorbell);
      std::this_thread::yield();
    }
  }
  waiter.join();
  EXPECT_FALSE(slept) << "the wait slept although a source was detached before it armed";
  EXPECT_TRUE(returned_alone) << "the wait did not return by itself";
  EXPECT_EQ(got, errc::again);
  EXPECT_EQ(stays.goes, nullptr) << "the detach happened in the wait's first read";
}

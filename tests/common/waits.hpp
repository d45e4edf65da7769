#pragma once
// Helpers of blocking-wait tests: run a wait on this thread and act on
// another once the waiter is seen asleep; turn the liveness pulse off (or
// force the fallback of kernels without futex_waitv) for one test.
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "weft/spi/progress.hpp"
#include "weft/error.hpp"
#include "weft/types.hpp"

namespace weft::test {

// Whether thread tid of this process is asleep (state S in its stat line).
inline bool thread_sleeping(pid_t tid) {
  std::ifstream f("/proc/" + std::to_string(::getpid()) + "/task/" + std::to_string(tid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'S';
}

// Waits (bounded) until thread tid is seen asleep after `about` was set by it.
inline bool seen_asleep(const std::atomic<bool>& about, pid_t tid) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!about.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  while (std::chrono::steady_clock::now() < until) {
    if (thread_sleeping(tid)) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return false;
}

// Runs wait() on this thread, and act() on another once this thread is
// seen asleep in it; asleep says whether it was. Returns wait()'s result.
template <class Wait, class Act>
auto act_while_asleep(Wait wait, Act act, bool& asleep) {
  std::atomic<bool> about{false};
  const pid_t waiter = static_cast<pid_t>(::syscall(SYS_gettid));
  std::thread other([&] {
    asleep = seen_asleep(about, waiter);
    act();
  });
  about.store(true);
  auto r = wait();
  other.join();
  return r;
}

// The pulse off for one test: a wait then wakes only by a word or its deadline.
struct no_pulse {
  no_pulse() { spi::set_wait_pulse(false); }
  ~no_pulse() { spi::set_wait_pulse(true); }
};

// The fallback of kernels without futex_waitv (ENOSYS) for one test.
struct forced_fallback {
  forced_fallback() { spi::set_wait_fallback(true); }
  ~forced_fallback() { spi::set_wait_fallback(false); }
};

}  // namespace weft::test

#pragma once
// Helpers of the tcp fault tests that run peers in child processes: pipes
// to synchronise on (addresses go through them as bytes), bounded waits for
// a byte or a child's exit, and a child that is always reaped.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <type_traits>

#include "../common/child.hpp"
#include "../common/harness.hpp"

namespace weft::test {

struct pipe_pair {
  int rd = -1, wr = -1;
  pipe_pair() {
    int p[2];
    if (::pipe(p) == 0) {
      rd = p[0];
      wr = p[1];
    }
  }
  ~pipe_pair() {
    if (rd >= 0) ::close(rd);
    if (wr >= 0) ::close(wr);
  }
  pipe_pair(const pipe_pair&) = delete;
  pipe_pair& operator=(const pipe_pair&) = delete;
  bool put(const void* p, std::size_t n) const { return ::write(wr, p, n) == static_cast<ssize_t>(n); }
  bool put_byte(char c) const { return put(&c, 1); }
  // Reads exactly n bytes within timeout_ms; false on timeout, EOF or error.
  bool get(void* p, std::size_t n, int timeout_ms) const {
    auto* b = static_cast<char*>(p);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::size_t got = 0;
    while (got < n) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd f{rd, POLLIN, 0};
      if (::poll(&f, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t r = ::read(rd, b + got, n - got);
      if (r <= 0) return false;
      got += static_cast<std::size_t>(r);
    }
    return true;
  }
  // A byte without waiting: true if one was there (c gets it).
  bool poll_byte(char& c) const {
    pollfd f{rd, POLLIN, 0};
    return ::poll(&f, 1, 0) == 1 && ::read(rd, &c, 1) == 1;
  }
};

static_assert(std::is_trivially_copyable_v<address>, "addresses go through pipes as bytes");

// A forked child the test always reaps: killed (SIGKILL) if still running.
struct child {
  pid_t pid = -1;
  int status = 0;
  bool reaped = false;
  ~child() { kill_and_reap(); }
  // Waits up to timeout_ms for the child to exit by itself.
  bool wait_exit(int timeout_ms) {
    if (pid <= 0 || reaped) return reaped;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid, &status, WNOHANG) == pid) return reaped = true;
      ::usleep(1000);
    }
    return false;
  }
  void kill_and_reap() {  // bounded (common/child.hpp): a child that cannot go does not hang the test
    if (pid <= 0 || reaped) return;
    const child_status s = weft::test::kill_and_reap(pid);
    if (s.reaped) {
      status = s.raw;
      reaped = true;
    }
  }
  [[nodiscard]] bool exited_ok() const { return reaped && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};

}  // namespace weft::test

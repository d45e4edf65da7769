#pragma once
// Child processes of a test, always waited for with a deadline: a child that
// does not exit (or stop, when that is what the test waits for) in time is
// killed with SIGKILL and reaped, so a hung child fails its test instead of
// hanging the suite or outliving it. No gtest here: usable in forked children.
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <string>

namespace weft::test {

struct child_status {
  bool reaped = false;     // waitpid answered (exited, killed by a signal, or stopped)
  bool timed_out = false;  // it did not in time: it was killed (and reaped if possible)
  int raw = 0;             // the waitpid status when reaped
  [[nodiscard]] bool exited() const { return reaped && !timed_out && WIFEXITED(raw); }
  [[nodiscard]] int exit_code() const { return exited() ? WEXITSTATUS(raw) : -1; }
  [[nodiscard]] bool exited_ok() const { return exit_code() == 0; }
  [[nodiscard]] bool stopped() const { return reaped && !timed_out && WIFSTOPPED(raw); }
  [[nodiscard]] bool signaled(int sig) const { return reaped && WIFSIGNALED(raw) && WTERMSIG(raw) == sig; }
  // no longer a child of ours to wait for (reaped, or killed after the deadline)
  [[nodiscard]] bool gone() const { return timed_out || (reaped && !WIFSTOPPED(raw)); }
  [[nodiscard]] std::string describe() const {
    if (timed_out) return "did not finish in time (killed)";
    if (!reaped) return "could not be waited for";
    if (WIFEXITED(raw)) return "exited with " + std::to_string(WEXITSTATUS(raw));
    if (WIFSIGNALED(raw)) return "killed by signal " + std::to_string(WTERMSIG(raw));
    if (WIFSTOPPED(raw)) return "stopped by signal " + std::to_string(WSTOPSIG(raw));
    return "status " + std::to_string(raw);
  }
};

namespace detail {
inline void pause_briefly() {
  timespec ts{0, 1000000};  // between two polls of a child's state: 1 ms
  ::nanosleep(&ts, nullptr);
}
}  // namespace detail

// Kills pid (SIGKILL) and reaps it, waiting at most `timeout` for it to go.
inline child_status kill_and_reap(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  child_status s;
  ::kill(pid, SIGKILL);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const pid_t r = ::waitpid(pid, &s.raw, WNOHANG);
    if (r == pid) {
      s.reaped = true;
      return s;
    }
    if ((r < 0 && errno != EINTR) || std::chrono::steady_clock::now() >= deadline) return s;
    detail::pause_briefly();
  }
}

// Waits until pid exits (or, with until_stopped, also stops), calling drive()
// between two looks at it (or pausing 1 ms when there is nothing to drive).
// After `timeout` it is killed and reaped, and timed_out is set.
inline child_status wait_child(pid_t pid, std::chrono::milliseconds timeout, const std::function<void()>& drive = {},
                               bool until_stopped = false) {
  child_status s;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const int flags = WNOHANG | (until_stopped ? WUNTRACED : 0);
  for (;;) {
    const pid_t r = ::waitpid(pid, &s.raw, flags);
    if (r == pid) {
      s.reaped = true;
      return s;
    }
    if (r < 0 && errno != EINTR) return s;  // not our child (any more)
    if (std::chrono::steady_clock::now() >= deadline) {
      child_status k = kill_and_reap(pid);
      k.timed_out = true;
      return k;
    }
    if (drive) drive();
    else detail::pause_briefly();
  }
}

// Kills and reaps a child the test did not wait for itself, e.g. when a
// failed ASSERT left the test early: a stopped or hung child never outlives
// its test. Hand it every status the test got for the child.
class child_guard {
 public:
  explicit child_guard(pid_t pid) noexcept : pid_(pid) {}
  child_guard(const child_guard&) = delete;
  child_guard& operator=(const child_guard&) = delete;
  ~child_guard() {
    if (pid_ > 0) (void)kill_and_reap(pid_);
  }
  const child_status& operator()(const child_status& s) noexcept {
    if (s.gone()) pid_ = -1;
    return s;
  }

 private:
  pid_t pid_;
};

// Reads exactly n bytes from fd within timeout; false on EOF, error or time out.
inline bool read_within(int fd, void* buf, std::size_t n, std::chrono::milliseconds timeout) {
  auto* p = static_cast<char*>(buf);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (n > 0) {
    // at least one look, even when the time is up
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd pf{fd, POLLIN, 0};
    const int pr = ::poll(&pf, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) return false;
    const ssize_t got = ::read(fd, p, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= static_cast<std::size_t>(got);
  }
  return true;
}

}  // namespace weft::test

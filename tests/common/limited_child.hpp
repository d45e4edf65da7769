#pragma once
// Scenarios that change process-wide limits (RLIMIT_NOFILE, allocation
// failure) run in a forked child: its verdict comes back as text through a
// pipe ("ok", "skip", or what failed), read with a deadline; the child is
// waited for with a deadline and killed if it overruns (child.hpp). And the
// pieces those scenarios share: lowering the descriptor limit, using up
// every descriptor, and warming UBSan before that.
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "child.hpp"
#include "harness.hpp"

namespace weft::test {

struct child_verdict {
  std::string text;    // what the scenario returned ("ok" when all held)
  child_status status;  // how the child ended
};

// Runs scenario() in a forked child (with manual progress, forked_child())
// and returns its text and how it ended; `timeout` bounds the whole run.
inline child_verdict run_in_child(const std::function<std::string()>& scenario,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  child_verdict v;
  int pfd[2];
  if (::pipe(pfd) != 0) {
    v.text = "pipe failed";
    return v;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pfd[0]);
    ::close(pfd[1]);
    v.text = "fork failed";
    return v;
  }
  if (pid == 0) {
    forked_child();
    ::close(pfd[0]);
    std::string r = scenario();
    if (r.empty()) r = "ok";
    (void)!::write(pfd[1], r.data(), r.size());
    ::_exit(0);
  }
  ::close(pfd[1]);
  child_guard guard(pid);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char b[4096];
  for (;;) {  // until the child closes its end (exit), or the deadline
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd pf{pfd[0], POLLIN, 0};
    const int pr = ::poll(&pf, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) break;
    const ssize_t n = ::read(pfd[0], b, sizeof b);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    v.text.append(b, static_cast<std::size_t>(n));
  }
  ::close(pfd[0]);
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  v.status = guard(wait_child(pid, std::max(left, std::chrono::milliseconds(1000))));
  return v;
}

// Lowers this process's descriptor limit (soft and hard) to n: false if it cannot.
inline bool limit_descriptors(rlim_t n) {
  rlimit rl{n, n};
  return ::setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

// Opens /dev/null until no descriptor is left; `exhausted` says whether that
// ended with EMFILE. Close them with give_back().
inline std::vector<int> use_up_descriptors(bool& exhausted) {
  std::vector<int> filler;
  for (;;) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    filler.push_back(fd);
  }
  exhausted = errno == EMFILE;
  return filler;
}

inline void give_back(std::vector<int>& filler) {
  for (int fd : filler) ::close(fd);
  filler.clear();
}

// UBSan's vptr check proves an object's memory readable with a pipe the
// first time it meets a (class, static type) pair, which it cannot make
// with no descriptor (or no memory) left: a false "invalid vptr". Meets the
// pairs such scenarios use (endpoint and CQ data-path interfaces, progress
// sources) while it still can. False if a cancel of nothing was not not_found.
inline bool warm_up(std::initializer_list<node*> nodes) {
  int nothing = 0;
  for (node* n : nodes) {
    if (n->ep.cancel(&nothing) != errc::not_found) return false;
    n->cq.progress();
  }
  return true;
}

}  // namespace weft::test

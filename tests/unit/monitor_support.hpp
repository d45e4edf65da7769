#pragma once
// Shared by the memory monitor unit tests (test_monitor*.cpp): a notify
// recorder, mappings and files to watch, a bounded child runner and the
// default-monitor fixture.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/child.hpp"
#include "util/uffd_monitor.hpp"
#include "weft/monitor.hpp"

using namespace std::chrono_literals;
using weft::watch_mode;

namespace {

const std::size_t k_page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

// Collects notify calls.
class recorder {
 public:
  weft::memory_monitor::notify_fn fn() {
    return [this](const void* addr, std::size_t len) {
      std::lock_guard lk(mu_);
      const auto a = reinterpret_cast<std::uintptr_t>(addr);
      seen_.emplace_back(a, a + len);
      cv_.notify_all();
    };
  }
  // Whether a notification overlapping [p, p + len) arrives within timeout.
  bool wait_overlap(const void* p, std::size_t len, std::chrono::milliseconds timeout = 1000ms) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return overlaps_locked(p, len); });
  }
  bool overlaps(const void* p, std::size_t len) {
    std::lock_guard lk(mu_);
    return overlaps_locked(p, len);
  }

 private:
  bool overlaps_locked(const void* p, std::size_t len) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    for (const auto& [lo, hi] : seen_) {
      if (lo < a + len && a < hi) return true;
    }
    return false;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> seen_;
};

inline char* map_anon(std::size_t pages, int flags = MAP_PRIVATE) {
  void* p = ::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

// An unlinked temporary file of `pages` pages in dir; -1 on failure.
inline int temp_file(const char* dir, std::size_t pages) {
  std::string path = std::string(dir) + "/weft-monitor-XXXXXX";
  const int fd = ::mkstemp(path.data());
  if (fd < 0) return -1;
  ::unlink(path.c_str());
  if (::ftruncate(fd, static_cast<off_t>(pages * k_page)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline bool is_uffd(const weft::memory_monitor& m) { return std::strcmp(m.name(), "userfaultfd") == 0; }

// Runs fn in a forked child and returns its exit code; -1 if it did not end
// within timeout (it is killed), 128 + signal if a signal ended it. Things
// that could hang run here so that a bug fails the test instead of hanging.
struct child_result {
  int code = -2;
  std::string output;
};
inline child_result run_bounded(const std::function<int(std::string&)>& fn, std::chrono::milliseconds timeout = 10s) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return {};
  std::fflush(nullptr);  // nothing buffered is written twice
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string out;
    int rc = 99;
    try {
      rc = fn(out);
    } catch (...) {
      out += " (exception)";
    }
    if (!out.empty()) (void)!::write(pipefd[1], out.data(), out.size());
    ::_exit(rc);
  }
  ::close(pipefd[1]);
  child_result res;
  if (pid < 0) {
    ::close(pipefd[0]);
    return res;
  }
  ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[512];
  for (;;) {
    for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) res.output.append(buf, static_cast<std::size_t>(n));
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) res.output.append(buf, static_cast<std::size_t>(n));
      res.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      res.code = -1;
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  ::close(pipefd[0]);
  return res;
}

inline std::shared_ptr<weft::memory_monitor> started_default(recorder& rec) {
  auto m = weft::make_default_monitor();
  if (!m || !(*m)->start(rec.fn())) return nullptr;
  return std::move(*m);
}

class default_monitor : public ::testing::Test {
 protected:
  void SetUp() override {
    mon_ = started_default(rec_);
    ASSERT_NE(mon_, nullptr);
  }
  void TearDown() override {
    if (mon_) mon_->stop();
    mon_.reset();
  }

  recorder rec_;  // outlives the monitor
  std::shared_ptr<weft::memory_monitor> mon_;
};

#define REQUIRE_UFFD()                                                            \
  do {                                                                            \
    if (!is_uffd(*mon_)) GTEST_SKIP() << "default monitor is " << mon_->name(); \
  } while (0)

}  // namespace

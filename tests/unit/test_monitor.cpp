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

char* map_anon(std::size_t pages, int flags = MAP_PRIVATE) {
  void* p = ::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

// An unlinked temporary file of `pages` pages in dir; -1 on failure.
int temp_file(const char* dir, std::size_t pages) {
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

bool is_uffd(const weft::memory_monitor& m) { return std::strcmp(m.name(), "userfaultfd") == 0; }

// Runs fn in a forked child and returns its exit code; -1 if it did not end
// within timeout (it is killed), 128 + signal if a signal ended it. Things
// that could hang run here so that a bug fails the test instead of hanging.
struct child_result {
  int code = -2;
  std::string output;
};
child_result run_bounded(const std::function<int(std::string&)>& fn, std::chrono::milliseconds timeout = 10s) {
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

std::shared_ptr<weft::memory_monitor> started_default(recorder& rec) {
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

TEST_F(default_monitor, is_userfaultfd_when_the_kernel_allows_it) {
  const auto s = weft::util::probe_userfaultfd();
  std::printf("[ info ] default monitor: %s; userfaultfd available=%d user_mode_only=%d errno=%d offered=%#llx enabled=%#llx\n",
              mon_->name(), s.available, s.user_mode_only, s.open_errno, static_cast<unsigned long long>(s.offered),
              static_cast<unsigned long long>(s.enabled));
  EXPECT_STREQ(mon_->name(), s.available ? "userfaultfd" : "maps");
}

TEST_F(default_monitor, munmap_of_part_notifies_and_invalidates) {
  REQUIRE_UFFD();
  char* p = map_anon(16);
  ASSERT_NE(p, nullptr);
  auto mode = mon_->subscribe(p, 16 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::notified);
  EXPECT_TRUE(mon_->valid(p, 16 * k_page));
  EXPECT_TRUE(mon_->valid(p + 100, 10)) << "a part of a subscribed range";
  ASSERT_EQ(::munmap(p + 4 * k_page, 4 * k_page), 0);
  EXPECT_FALSE(mon_->valid(p, 16 * k_page)) << "false as soon as munmap returned";
  EXPECT_TRUE(rec_.wait_overlap(p + 4 * k_page, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(p, 4 * k_page)) << "notify reports what went away, not the whole subscription";
  mon_->unsubscribe(p, 16 * k_page);
  ::munmap(p, 4 * k_page);  // not the hole: it may belong to someone else by now
  ::munmap(p + 8 * k_page, 8 * k_page);
}

TEST_F(default_monitor, madvise_dontneed_and_free_notify) {
  REQUIRE_UFFD();
  char* p = map_anon(8);
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, 8 * k_page);
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(p + 4 * k_page, 4 * k_page));
  ASSERT_EQ(::madvise(p + k_page, k_page, MADV_DONTNEED), 0);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + k_page, k_page));
  ASSERT_EQ(::madvise(p + 5 * k_page, k_page, MADV_FREE), 0);
  EXPECT_FALSE(mon_->valid(p + 4 * k_page, 4 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + 5 * k_page, k_page));
  mon_->unsubscribe(p, 4 * k_page);
  mon_->unsubscribe(p + 4 * k_page, 4 * k_page);
  ::munmap(p, 8 * k_page);
}

TEST_F(default_monitor, mremap_move_notifies) {
  REQUIRE_UFFD();
  char* p = map_anon(8);
  char* dst = map_anon(8);  // a place to move to
  ASSERT_NE(p, nullptr);
  ASSERT_NE(dst, nullptr);
  std::memset(p, 1, 8 * k_page);
  ASSERT_TRUE(mon_->subscribe(p, 8 * k_page));
  void* q = ::mremap(p, 8 * k_page, 8 * k_page, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  ASSERT_EQ(q, static_cast<void*>(dst));
  EXPECT_FALSE(mon_->valid(p, 8 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p, 8 * k_page));
  EXPECT_EQ(dst[0], 1);
  ASSERT_EQ(::munmap(dst, 8 * k_page), 0) << "the moved area is no one's subscription";
  EXPECT_FALSE(rec_.wait_overlap(dst, 8 * k_page, 200ms));
  mon_->unsubscribe(p, 8 * k_page);
}

TEST_F(default_monitor, mremap_shrink_and_map_fixed_over_notify) {
  REQUIRE_UFFD();
  char* p = map_anon(16);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(mon_->subscribe(p, 8 * k_page));
  ASSERT_TRUE(mon_->subscribe(p + 8 * k_page, 8 * k_page));
  ASSERT_EQ(::mremap(p + 8 * k_page, 8 * k_page, 4 * k_page, 0), static_cast<void*>(p + 8 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + 12 * k_page, 4 * k_page));
  void* f = ::mmap(p + 2 * k_page, k_page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(f, static_cast<void*>(p + 2 * k_page));
  EXPECT_FALSE(mon_->valid(p, 8 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + 2 * k_page, k_page));
  mon_->unsubscribe(p, 8 * k_page);
  mon_->unsubscribe(p + 8 * k_page, 8 * k_page);
  ::munmap(p, 12 * k_page);
}

#if defined(__SANITIZE_ADDRESS__)
// ASan's allocator keeps freed blocks in quarantine: use glibc's own.
extern "C" void* __libc_malloc(std::size_t);
extern "C" void __libc_free(void*);
#define GLIBC_MALLOC __libc_malloc
#define GLIBC_FREE __libc_free
#else
#define GLIBC_MALLOC std::malloc
#define GLIBC_FREE std::free
#endif

TEST_F(default_monitor, free_of_a_16_mib_malloc_block_notifies) {
  REQUIRE_UFFD();
  constexpr std::size_t len = 16u << 20;  // above glibc's mmap threshold: its own mapping
  auto* b = static_cast<char*>(GLIBC_MALLOC(len));
  ASSERT_NE(b, nullptr);
  b[0] = 1;
  b[len - 1] = 1;
  ASSERT_TRUE(mon_->subscribe(b, len));
  EXPECT_TRUE(mon_->valid(b, len));
  volatile std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(b);  // only the address is used after free
  GLIBC_FREE(b);
  const auto* gone = reinterpret_cast<const void*>(addr);
  EXPECT_TRUE(rec_.wait_overlap(gone, len));
  EXPECT_FALSE(mon_->valid(gone, len));
  mon_->unsubscribe(gone, len);
}

TEST_F(default_monitor, unsubscribed_ranges_are_not_notified) {
  REQUIRE_UFFD();
  char* a = map_anon(4);
  char* b = map_anon(4);
  char* c = map_anon(4);
  ASSERT_TRUE(a && b && c);
  ASSERT_TRUE(mon_->subscribe(a, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(b, 4 * k_page));
  mon_->unsubscribe(b, 4 * k_page);
  EXPECT_FALSE(mon_->valid(b, 4 * k_page)) << "not subscribed any more";
  EXPECT_FALSE(mon_->valid(c, 4 * k_page)) << "never subscribed";
  ::munmap(b, 4 * k_page);
  ::munmap(c, 4 * k_page);
  ::munmap(a, 4 * k_page);  // events are applied in order: once a is reported, b and c were seen
  EXPECT_TRUE(rec_.wait_overlap(a, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(b, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(c, 4 * k_page));
  mon_->unsubscribe(a, 4 * k_page);
}

TEST_F(default_monitor, subscriptions_are_reference_counted) {
  REQUIRE_UFFD();
  char* p = map_anon(4);
  char* q = map_anon(4);
  char* s = map_anon(4);
  ASSERT_TRUE(p && q && s);
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  mon_->unsubscribe(p, 4 * k_page);
  EXPECT_TRUE(mon_->valid(p, 4 * k_page)) << "one reference left";
  ASSERT_TRUE(mon_->subscribe(q, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(q, 4 * k_page));
  mon_->unsubscribe(q, 4 * k_page);
  mon_->unsubscribe(q, 4 * k_page);
  EXPECT_FALSE(mon_->valid(q, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(s, 4 * k_page));
  ::munmap(p, 4 * k_page);
  ::munmap(q, 4 * k_page);
  ::munmap(s, 4 * k_page);
  EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(s, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(q, 4 * k_page));
  mon_->unsubscribe(p, 4 * k_page);
  mon_->unsubscribe(s, 4 * k_page);
}

TEST_F(default_monitor, overlapping_ranges) {
  REQUIRE_UFFD();
  char* p = map_anon(12);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(mon_->subscribe(p, 8 * k_page));
  ASSERT_TRUE(mon_->subscribe(p + 4 * k_page, 8 * k_page));
  EXPECT_TRUE(mon_->valid(p, 12 * k_page)) << "covered by the union";
  mon_->unsubscribe(p, 8 * k_page);
  EXPECT_FALSE(mon_->valid(p, 12 * k_page));
  EXPECT_TRUE(mon_->valid(p + 4 * k_page, 8 * k_page));
  ::munmap(p, 2 * k_page);  // only the dropped subscription covered it
  ::munmap(p + 6 * k_page, k_page);
  EXPECT_TRUE(rec_.wait_overlap(p + 6 * k_page, k_page));
  EXPECT_FALSE(rec_.overlaps(p, 2 * k_page));
  EXPECT_FALSE(mon_->valid(p + 4 * k_page, 8 * k_page));
  mon_->unsubscribe(p + 4 * k_page, 8 * k_page);
  // only what is still ours: another thread (e.g. the sanitizer's TLS) may
  // have been given the holes made above
  ::munmap(p + 2 * k_page, 4 * k_page);
  ::munmap(p + 7 * k_page, 5 * k_page);
}

TEST_F(default_monitor, subscribing_again_after_invalidation_starts_afresh) {
  REQUIRE_UFFD();
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  auto replace = [&] {  // an implicit munmap that keeps the address ours
    return ::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p;
  };
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  ASSERT_TRUE(replace());
  EXPECT_FALSE(mon_->valid(p, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ASSERT_TRUE(replace());
  EXPECT_FALSE(mon_->valid(p, 4 * k_page)) << "registered again: the new mapping is watched";
  EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  mon_->unsubscribe(p, 4 * k_page);
  mon_->unsubscribe(p, 4 * k_page);
  ::munmap(p, 4 * k_page);
}

TEST_F(default_monitor, unmapped_range_cannot_be_subscribed) {
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  ::munmap(p + k_page, k_page);
  auto r = mon_->subscribe(p, 4 * k_page);
  EXPECT_FALSE(r);
  if (!r) {
    EXPECT_TRUE(r.error().code == weft::errc::invalid_argument || r.error().code == weft::errc::not_found);
  }
  EXPECT_FALSE(mon_->subscribe(p, 0));
  ::munmap(p, 4 * k_page);
}

TEST_F(default_monitor, two_monitors_watch_the_same_range) {
  REQUIRE_UFFD();
  recorder rec2;
  auto second = started_default(rec2);
  ASSERT_NE(second, nullptr);
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  auto m1 = mon_->subscribe(p, 4 * k_page);
  auto m2 = second->subscribe(p, 4 * k_page);
  ASSERT_TRUE(m1 && m2);
  EXPECT_EQ(*m1, watch_mode::notified);
  EXPECT_EQ(*m2, watch_mode::notified) << "all monitors share one userfaultfd";
  second->unsubscribe(p, 4 * k_page);
  ASSERT_TRUE(second->subscribe(p, 4 * k_page));
  ::munmap(p, 4 * k_page);
  EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  EXPECT_TRUE(rec2.wait_overlap(p, 4 * k_page));
  second->stop();
}

TEST_F(default_monitor, range_owned_by_another_userfaultfd_is_checked) {
  REQUIRE_UFFD();
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  const int other = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  ASSERT_GE(other, 0);
  uffdio_api api{};
  api.api = UFFD_API;
  ASSERT_EQ(::ioctl(other, UFFDIO_API, &api), 0);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<std::uintptr_t>(p);
  reg.range.len = 4 * k_page;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  ASSERT_EQ(::ioctl(other, UFFDIO_REGISTER, &reg), 0);
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::checked);
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ::close(other);
  ::munmap(p + k_page, k_page);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page)) << "checked against /proc/self/maps";
  mon_->unsubscribe(p, 4 * k_page);
  ::munmap(p, 4 * k_page);
}

TEST_F(default_monitor, system_v_segment_is_checked) {
  REQUIRE_UFFD();
  const int id = ::shmget(IPC_PRIVATE, 4 * k_page, IPC_CREAT | 0600);
  ASSERT_GE(id, 0);
  void* p = ::shmat(id, nullptr, 0);
  ::shmctl(id, IPC_RMID, nullptr);
  ASSERT_NE(p, reinterpret_cast<void*>(-1));
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  // what /proc/self/maps answered, should it ever go wrong again
  const auto d = weft::util::proc_maps_diagnostics();
  const std::string why = " (/proc/self/maps: " + std::to_string(d.failed_calls) + " failed calls, last errno " +
                          std::to_string(d.last_errno) + ", " + std::to_string(d.retried_calls) +
                          " retried, PROCMAP_QUERY " + (d.procmap_query ? "on)" : "off)");
  EXPECT_EQ(*mode, watch_mode::checked) << "userfaultfd does not report shmdt" << why;
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ASSERT_EQ(::shmdt(p), 0);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page)) << why;
  mon_->unsubscribe(p, 4 * k_page);
}

TEST_F(default_monitor, shared_file_mapping) {
  REQUIRE_UFFD();
  const int fd = temp_file("/tmp", 4);
  ASSERT_GE(fd, 0);
  auto* p = static_cast<char*>(::mmap(nullptr, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(p, MAP_FAILED);
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  std::printf("[ info ] MAP_SHARED file on /tmp: %s\n", weft::to_string(*mode));
  const bool wp_async = (weft::util::probe_userfaultfd().enabled & (1ull << 15)) != 0;
  EXPECT_EQ(*mode, wp_async ? watch_mode::notified : watch_mode::checked);
  std::memset(p, 7, 4 * k_page);
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ::munmap(p, 4 * k_page);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page));
  if (*mode == watch_mode::notified) {
    EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  }
  mon_->unsubscribe(p, 4 * k_page);
  ::close(fd);
}

TEST_F(default_monitor, concurrent_subscribe_unmap_valid) {
  REQUIRE_UFFD();
  // Each thread works inside its own reservation and unmaps by mapping
  // PROT_NONE over (an implicit munmap): no thread can map an address
  // another one just unmapped. (With plain munmap, another thread may map
  // and subscribe the address before the kernel queues the first thread's
  // event, which then invalidates the new subscription too: spurious, safe.)
  constexpr std::size_t slots = 16;
  std::atomic<int> failures{0};
  auto worker = [&] {
    char* region = static_cast<char*>(
        ::mmap(nullptr, slots * 4 * k_page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (region == MAP_FAILED) {
      ++failures;
      return;
    }
    for (std::size_t i = 0; i < 200; ++i) {
      char* p = region + (i % slots) * 4 * k_page;
      if (::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p ||
          !mon_->subscribe(p, 4 * k_page) || !mon_->valid(p, 4 * k_page)) {
        ++failures;
        continue;
      }
      p[0] = 1;
      ::mmap(p, 4 * k_page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      if (mon_->valid(p, 4 * k_page)) ++failures;
      if (!rec_.wait_overlap(p, 4 * k_page)) ++failures;
      mon_->unsubscribe(p, 4 * k_page);
    }
    ::munmap(region, slots * 4 * k_page);
  };
  std::thread t1(worker), t2(worker), t3(worker);
  t1.join();
  t2.join();
  t3.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(default_monitor, munmap_cost) {
  REQUIRE_UFFD();
  constexpr int n = 2000;
  std::vector<char*> areas;
  auto time_munmap = [&](bool subscribe) {
    areas.clear();
    for (int i = 0; i < n; ++i) areas.push_back(map_anon(1));
    for (char* p : areas) {
      if (subscribe) (void)mon_->subscribe(p, k_page);
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (char* p : areas) ::munmap(p, k_page);
    const auto t1 = std::chrono::steady_clock::now();
    for (char* p : areas) {
      if (subscribe) mon_->unsubscribe(p, k_page);
    }
    return std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
  };
  const double plain = time_munmap(false);
  const double watched = time_munmap(true);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    char* p = map_anon(1);
    (void)mon_->subscribe(p, k_page);
    mon_->unsubscribe(p, k_page);
    ::munmap(p, k_page);
  }
  const double sub = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / n;
  std::printf("[ info ] munmap of 1 page: %.1f us plain, %.1f us subscribed; mmap+subscribe+unsubscribe+munmap: %.1f us\n",
              plain, watched, sub);
  SUCCEED();
}

// --- things that could hang: run in a child with a deadline ------------------

TEST(monitor_no_hang, touching_never_populated_pages_of_subscribed_ranges) {
  auto r = run_bounded([](std::string& out) {
    recorder rec;
    auto mon = started_default(rec);
    if (!mon) return 2;
    out = mon->name();
    constexpr std::size_t pages = 64;
    std::vector<std::pair<char*, std::size_t>> areas;
    areas.emplace_back(map_anon(pages), pages);
    areas.emplace_back(map_anon(pages, MAP_SHARED), pages);
    const int mfd = ::memfd_create("weft-monitor", MFD_CLOEXEC);
    if (mfd < 0 || ::ftruncate(mfd, static_cast<off_t>(pages * k_page)) != 0) return 3;
    areas.emplace_back(static_cast<char*>(::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)), pages);
    const int tfd = temp_file("/tmp", pages);
    if (tfd < 0) return 4;
    areas.emplace_back(static_cast<char*>(::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, tfd, 0)), pages);
    areas.emplace_back(static_cast<char*>(::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE, tfd, 0)), pages);
    for (auto& [p, n] : areas) {
      if (p == nullptr || p == MAP_FAILED) return 5;
      auto mode = mon->subscribe(p, n * k_page);
      if (!mode) return 6;
      out += std::string(" ") + weft::to_string(*mode);
    }
    volatile char sink = 0;
    for (auto& [p, n] : areas) {
      for (std::size_t i = 0; i < n / 2; ++i) sink = sink + p[i * k_page];  // read fault (zero page)
      for (std::size_t i = 0; i < n; ++i) p[i * k_page] = 1;               // write faults
    }
    for (auto& [p, n] : areas) {
      if (!mon->valid(p, n * k_page)) return 7;
      mon->unsubscribe(p, n * k_page);
      ::munmap(p, n * k_page);
    }
    mon->stop();
    return 0;
  });
  std::printf("[ info ] child: %s\n", r.output.c_str());
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

TEST(monitor_no_hang, munmap_after_stop_or_destruction) {
  auto r = run_bounded([](std::string&) {
    for (int round = 0; round < 2; ++round) {
      recorder rec;
      auto mon = started_default(rec);
      if (!mon) return 2;
      char* p = map_anon(8);
      if (!mon->subscribe(p, 8 * k_page)) return 3;
      if (round == 0) {
        mon->stop();
        ::munmap(p, 4 * k_page);
        mon.reset();
      } else {
        mon.reset();  // destroyed without stop()
      }
      ::munmap(p, 8 * k_page);
    }
    return 0;
  });
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

TEST(monitor_no_hang, notify_may_unsubscribe_free_and_munmap) {
  auto r = run_bounded([](std::string&) {
    std::mutex mu;
    std::condition_variable cv;
    int calls = 0;
    std::shared_ptr<weft::memory_monitor> mon;
    char* a = map_anon(4);
    char* b = map_anon(4);
    auto notify = [&](const void* addr, std::size_t) {
      if (addr == a) {
        mon->unsubscribe(a, 4 * k_page);
        std::free(std::malloc(1 << 20));
        ::munmap(b, 4 * k_page);  // subscribed: its event is read by the other thread
        (void)mon->valid(b, 4 * k_page);
      }
      std::lock_guard lk(mu);
      ++calls;
      cv.notify_all();
    };
    auto m = weft::make_default_monitor();
    if (!m) return 2;
    mon = *m;
    if (!mon->start(notify) || !is_uffd(*mon)) return 3;
    if (!mon->subscribe(a, 4 * k_page) || !mon->subscribe(b, 4 * k_page)) return 4;
    ::munmap(a, 4 * k_page);
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, 2s, [&] { return calls >= 2; })) return 5;
    lk.unlock();
    mon->stop();
    return 0;
  });
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

TEST(monitor_no_hang, stop_or_destroy_from_inside_notify) {
  for (int variant = 0; variant < 2; ++variant) {
    auto r = run_bounded([variant](std::string&) {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      std::shared_ptr<weft::memory_monitor> mon;
      auto notify = [&](const void*, std::size_t) {
        if (variant == 0) {
          mon->stop();
        } else {
          mon.reset();  // the last reference: the monitor dies on its own thread
        }
        std::lock_guard lk(mu);
        done = true;
        cv.notify_all();
      };
      auto m = weft::make_default_monitor();
      if (!m) return 2;
      mon = *m;
      if (!mon->start(notify) || !is_uffd(*mon)) return 3;
      char* p = map_anon(4);
      if (!mon->subscribe(p, 4 * k_page)) return 4;
      ::munmap(p, 4 * k_page);
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, 2s, [&] { return done; })) return 5;
      lk.unlock();
      std::this_thread::sleep_for(50ms);
      // a new monitor works after the old one went away
      recorder rec;
      auto again = started_default(rec);
      char* q = map_anon(4);
      if (!again || !again->subscribe(q, 4 * k_page)) return 6;
      ::munmap(q, 4 * k_page);
      if (!rec.wait_overlap(q, 4 * k_page)) return 7;
      again->stop();
      return 0;
    });
    EXPECT_EQ(r.code, 0) << "variant " << variant << ": -1 means it hung";
  }
}

TEST(monitor_no_hang, fork_while_subscribed) {
  auto r = run_bounded([](std::string&) {
    recorder rec;
    auto mon = started_default(rec);
    if (!mon || !is_uffd(*mon)) return 2;
    char* p = map_anon(4);
    char* q = map_anon(4);
    if (!mon->subscribe(p, 4 * k_page) || !mon->subscribe(q, 4 * k_page)) return 3;
    const pid_t child = ::fork();
    if (child == 0) {
      // the child's copy is not watched and must not wait for anyone
      ::munmap(p, 4 * k_page);
#if defined(__SANITIZE_ADDRESS__)
      // GCC 12's sanitizer runtime is not fork-safe: a lock of its allocator
      // or thread registry that one of the parent's monitor threads held at
      // the fork stays held here, and a new thread blocks on it forever (and
      // with it this munmap of watched memory: an unkillable process). The
      // release build checks the rest (100 runs under load, no hang).
      ::_exit(0);
#endif
      recorder rec2;
      auto own = started_default(rec2);  // a fresh monitor works in the child
      char* c = map_anon(4);
      if (!own || !own->subscribe(c, 4 * k_page)) ::_exit(10);
      ::munmap(c, 4 * k_page);
      ::_exit(rec2.wait_overlap(c, 4 * k_page) ? 0 : 11);
    }
    if (!weft::test::wait_child(child, 10s).exited_ok()) return 4;  // a hung grandchild is killed too
    if (!mon->valid(p, 4 * k_page)) return 5;  // the parent's mapping is untouched
    mon->stop();
    mon.reset();
    ::munmap(q, 4 * k_page);  // after the parent dropped its monitor
    ::munmap(p, 4 * k_page);
    return 0;
  });
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

// --- the fallback -------------------------------------------------------------

TEST(maps_monitor, valid_while_mapped_false_after_munmap_and_never_notifies) {
  recorder rec;
  weft::util::maps_monitor m;
  ASSERT_TRUE(m.start(rec.fn()));
  EXPECT_STREQ(m.name(), "maps");
  char* p = map_anon(8);
  ASSERT_NE(p, nullptr);
  auto mode = m.subscribe(p, 8 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::checked);
  EXPECT_TRUE(m.valid(p, 8 * k_page));
  EXPECT_TRUE(m.valid(p + 5, 100));
  ASSERT_EQ(::mprotect(p + k_page, k_page, PROT_READ), 0);
  EXPECT_TRUE(m.valid(p, 8 * k_page)) << "mprotect splits the VMA but keeps the memory";
  ASSERT_EQ(::munmap(p + 2 * k_page, k_page), 0);
  EXPECT_FALSE(m.valid(p, 8 * k_page));
  ::munmap(p, 8 * k_page);
  EXPECT_FALSE(m.valid(p, 8 * k_page));
  EXPECT_FALSE(rec.wait_overlap(p, 8 * k_page, 200ms));
  m.unsubscribe(p, 8 * k_page);
  m.stop();
}

TEST(maps_monitor, another_file_at_the_same_address_is_invalid) {
  recorder rec;
  weft::util::maps_monitor m;
  ASSERT_TRUE(m.start(rec.fn()));
  const int fa = temp_file("/tmp", 8);
  const int fb = temp_file("/tmp", 8);
  ASSERT_GE(fa, 0);
  ASSERT_GE(fb, 0);
  auto* p = static_cast<char*>(::mmap(nullptr, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0));
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  // munmap, then a different file at the same address
  ASSERT_EQ(::munmap(p, 4 * k_page), 0);
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fb, 0), static_cast<void*>(p));
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  // subscribing again answers for the new mapping
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  // the same file at another offset
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fb, static_cast<off_t>(4 * k_page)),
            static_cast<void*>(p));
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  // anonymous shared memory is a new shmem inode each time
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            static_cast<void*>(p));
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            static_cast<void*>(p));
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  m.unsubscribe(p, 4 * k_page);
  m.unsubscribe(p, 4 * k_page);
  m.unsubscribe(p, 4 * k_page);
  ::munmap(p, 4 * k_page);
  ::close(fa);
  ::close(fb);
  m.stop();
}

TEST(maps_monitor, reference_counts_and_unknown_ranges) {
  recorder rec;
  weft::util::maps_monitor m;
  ASSERT_TRUE(m.start(rec.fn()));
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(m.valid(p, 4 * k_page)) << "never subscribed";
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  m.unsubscribe(p, 4 * k_page);
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  m.unsubscribe(p, 4 * k_page);
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  ::munmap(p + k_page, k_page);
  EXPECT_FALSE(m.subscribe(p, 4 * k_page)) << "not mapped";
  ::munmap(p, 4 * k_page);
  m.stop();
  EXPECT_FALSE(m.subscribe(p, k_page)) << "stopped";
}

// --- who gets what -----------------------------------------------------------

namespace {

// Exercises the default monitor; returns whether it behaved and describes it.
bool exercise_default(std::string& out) {
  const auto s = weft::util::probe_userfaultfd();
  char info[160];
  std::snprintf(info, sizeof info, "uid=%d userfaultfd: available=%d user_mode_only=%d errno=%d", static_cast<int>(::getuid()),
                s.available, s.user_mode_only, s.open_errno);
  out = info;
  recorder rec;
  auto mon = started_default(rec);
  if (!mon) {
    out += "; no monitor";
    return false;
  }
  out += std::string("; monitor=") + mon->name();
  char* p = map_anon(4);
  auto mode = mon->subscribe(p, 4 * k_page);
  if (!mode) {
    out += "; subscribe failed: " + mode.error().message;
    return false;
  }
  out += std::string(" mode=") + weft::to_string(*mode);
  ::munmap(p, 4 * k_page);
  const bool invalid = !mon->valid(p, 4 * k_page);
  const bool notified = rec.wait_overlap(p, 4 * k_page, *mode == watch_mode::notified ? 1000ms : 100ms);
  out += std::string(" notified=") + (notified ? "yes" : "no") + " invalid_after_munmap=" + (invalid ? "yes" : "no");
  mon->stop();
  return invalid && (notified || *mode == watch_mode::checked);
}

}  // namespace

TEST(monitor_identity, current_user_and_unprivileged_child) {
  std::string me;
  EXPECT_TRUE(exercise_default(me)) << me;
  std::printf("[ info ] current user: %s\n", me.c_str());
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to an unprivileged user";
  auto r = run_bounded([](std::string& out) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
      out = "cannot become nobody";
      return 2;
    }
    return exercise_default(out) ? 0 : 3;
  });
  std::printf("[ info ] setuid(65534) child: %s\n", r.output.c_str());
  EXPECT_EQ(r.code, 0) << r.output;
  if (weft::util::probe_userfaultfd().user_mode_only) {
    EXPECT_NE(r.output.find("monitor=userfaultfd"), std::string::npos)
        << "UFFD_USER_MODE_ONLY works for root here, so it must for nobody";
  }
}

namespace {

// Makes the userfaultfd system call fail with EPERM, as container runtimes'
// default seccomp profiles do.
bool forbid_userfaultfd_syscall() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

}  // namespace

TEST(monitor_identity, userfaultfd_system_call_forbidden) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to compare with and without /dev/userfaultfd";
  // as root: /dev/userfaultfd (Linux 6.1, root-only here) still gives one
  auto root = run_bounded([](std::string& out) {
    if (!forbid_userfaultfd_syscall()) return 2;
    const bool ok = exercise_default(out);
    out += weft::util::probe_userfaultfd().dev_userfaultfd ? " via /dev/userfaultfd" : "";
    return ok ? 0 : 3;
  });
  std::printf("[ info ] root, syscall forbidden: %s\n", root.output.c_str());
  EXPECT_EQ(root.code, 0) << root.output;
  // as nobody: the fallback
  auto nobody = run_bounded([](std::string& out) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    if (!forbid_userfaultfd_syscall()) return 3;
    return exercise_default(out) ? 0 : 4;
  });
  std::printf("[ info ] nobody, syscall forbidden: %s\n", nobody.output.c_str());
  EXPECT_EQ(nobody.code, 0) << nobody.output;
  EXPECT_NE(nobody.output.find("monitor=maps mode=checked"), std::string::npos) << nobody.output;
}

// The memory monitor when /proc/self/maps answers badly: failures of the
// PROCMAP_QUERY ioctl or of opening /proc/self/maps are injected through
// util/proc_maps.hpp's hooks. Whatever fails, a System V segment (whose
// shmdt userfaultfd does not report) is never watched in notified mode, a
// range nobody can classify is checked, interrupted calls are retried, and
// only a kernel without the ioctl turns PROCMAP_QUERY off.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>

#include "util/proc_maps.hpp"
#include "util/uffd_monitor.hpp"
#include "weft/monitor.hpp"
#include "weft/weft.hpp"

using weft::watch_mode;
namespace util = weft::util;

namespace {

const std::size_t k_page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

// What the injected calls do; reset by every fixture.
std::atomic<int> g_query_errno{0};       // errno every PROCMAP_QUERY fails with (0: real call)
std::atomic<bool> g_only_name_query{false};  // fail only queries that ask for the name
std::atomic<int> g_query_failures_left{0};   // how many more calls fail (<0: all)
std::atomic<int> g_open_errno{0};        // errno opening /proc/self/maps fails with (0: real call)
std::atomic<int> g_queries{0};           // PROCMAP_QUERY calls seen

// struct procmap_query's vma_name_size field (offset 88 in the kernel's layout).
std::uint32_t name_size_of(const void* arg) {
  std::uint32_t v = 0;
  std::memcpy(&v, static_cast<const char*>(arg) + 88, sizeof v);
  return v;
}

int fake_query(int fd, void* arg) noexcept {
  g_queries.fetch_add(1);
  const int e = g_query_errno.load();
  const bool applies = e != 0 && (!g_only_name_query.load() || name_size_of(arg) != 0);
  if (applies) {
    int left = g_query_failures_left.load();
    while (left != 0 && !g_query_failures_left.compare_exchange_weak(left, left > 0 ? left - 1 : left)) {
    }
    if (left != 0) {
      errno = e;
      return -1;
    }
  }
  constexpr unsigned long procmap_query = _IOWR('f', 17, char[104]);
  return ::ioctl(fd, procmap_query, arg);
}

int fake_open() noexcept {
  if (const int e = g_open_errno.load(); e != 0) {
    errno = e;
    return -1;
  }
  return ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
}

bool is_uffd(const weft::memory_monitor& m) { return std::strcmp(m.name(), "userfaultfd") == 0; }

// A System V segment of `pages` pages, attached and already marked for removal.
struct sysv_segment {
  void* p = reinterpret_cast<void*>(-1);
  std::size_t len = 0;
  explicit sysv_segment(std::size_t pages, const void* at = nullptr) : len(pages * k_page) {
    const int id = ::shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
    if (id < 0) return;
    p = ::shmat(id, at, 0);
    ::shmctl(id, IPC_RMID, nullptr);
  }
  [[nodiscard]] bool ok() const { return p != reinterpret_cast<void*>(-1); }
  void detach() {
    if (ok()) ::shmdt(p);
    p = reinterpret_cast<void*>(-1);
  }
  ~sysv_segment() { detach(); }
};

class proc_maps_faults : public ::testing::Test {
 protected:
  void SetUp() override {
    reset();
    util::set_proc_maps_hooks({fake_open, fake_query});
    auto m = weft::make_default_monitor();
    ASSERT_TRUE(m);
    mon_ = std::move(*m);
    ASSERT_TRUE(mon_->start([](const void*, std::size_t) {}));
    if (!is_uffd(*mon_)) GTEST_SKIP() << "default monitor is " << mon_->name() << ": every range is checked";
  }
  void TearDown() override {
    if (mon_) mon_->stop();
    util::set_proc_maps_hooks({});
    reset();
    util::reset_procmap_query_support();
  }
  static void reset() {
    g_query_errno = 0;
    g_only_name_query = false;
    g_query_failures_left = -1;
    g_open_errno = 0;
    g_queries = 0;
  }
  static std::string diag() {
    const auto d = util::proc_maps_diagnostics();
    return "failed calls " + std::to_string(d.failed_calls) + ", retried " + std::to_string(d.retried_calls) +
           ", last errno " + std::to_string(d.last_errno) + ", PROCMAP_QUERY " + (d.procmap_query ? "on" : "off");
  }
  // Subscribes a fresh segment, expects checked, and sees shmdt through valid().
  void expect_segment_checked_and_shmdt_seen() {
    sysv_segment seg(4);
    ASSERT_TRUE(seg.ok());
    auto mode = mon_->subscribe(seg.p, seg.len);
    ASSERT_TRUE(mode) << mode.error().message;
    EXPECT_EQ(*mode, watch_mode::checked) << "a System V segment is never notified (" << diag() << ")";
    void* at = seg.p;
    seg.detach();
    EXPECT_FALSE(mon_->valid(at, seg.len)) << "shmdt must be seen (" << diag() << ")";
    mon_->unsubscribe(at, seg.len);
  }

  std::shared_ptr<weft::memory_monitor> mon_;
};

}  // namespace

TEST_F(proc_maps_faults, failing_vma_query_still_recognizes_the_segment) {
  g_query_errno = ENOMEM;
  expect_segment_checked_and_shmdt_seen();
  EXPECT_GT(g_queries.load(), 0) << "the ioctl was tried";
  EXPECT_TRUE(util::proc_maps_diagnostics().procmap_query) << "a transient failure keeps PROCMAP_QUERY";
}

TEST_F(proc_maps_faults, failing_name_query_still_recognizes_the_segment) {
  g_query_errno = ENOMEM;
  g_only_name_query = true;
  expect_segment_checked_and_shmdt_seen();
  EXPECT_TRUE(util::proc_maps_diagnostics().procmap_query);
}

TEST_F(proc_maps_faults, unreadable_maps_choose_checked_and_never_valid) {
  g_open_errno = EMFILE;
  expect_segment_checked_and_shmdt_seen();
  // nobody can tell what anonymous memory is either: checked, and not vouched for
  char* p = static_cast<char*>(::mmap(nullptr, 4 * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::checked);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page)) << "no identity was recorded: never reused";
  // readable again: the next subscription starts afresh and is notified
  g_open_errno = 0;
  auto again = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(*again, watch_mode::notified);
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ASSERT_EQ(::munmap(p, 4 * k_page), 0);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page));
  mon_->unsubscribe(p, 4 * k_page);
  mon_->unsubscribe(p, 4 * k_page);
}

TEST_F(proc_maps_faults, interrupted_queries_are_retried) {
  const auto before = util::proc_maps_diagnostics();
  g_query_errno = EINTR;
  g_query_failures_left = 3;
  expect_segment_checked_and_shmdt_seen();
  const auto after = util::proc_maps_diagnostics();
  EXPECT_EQ(after.retried_calls, before.retried_calls + 3);
  EXPECT_EQ(after.failed_calls, before.failed_calls) << "retried, not failed";
  EXPECT_TRUE(after.procmap_query);
  // interrupted without end: bounded retries, then the text answers
  g_query_errno = EINTR;
  g_query_failures_left = -1;
  g_queries = 0;
  expect_segment_checked_and_shmdt_seen();
  EXPECT_LE(g_queries.load(), 4 * (util::k_proc_retries + 1)) << "retries are bounded";
  EXPECT_TRUE(util::proc_maps_diagnostics().procmap_query) << "interruptions keep PROCMAP_QUERY";
}

TEST_F(proc_maps_faults, only_a_kernel_without_the_ioctl_turns_it_off) {
  g_query_errno = ENOTTY;
  expect_segment_checked_and_shmdt_seen();
  EXPECT_FALSE(util::proc_maps_diagnostics().procmap_query) << "ENOTTY: this kernel has no PROCMAP_QUERY";
  g_queries = 0;
  expect_segment_checked_and_shmdt_seen();
  EXPECT_EQ(g_queries.load(), 0) << "not asked again";
}

TEST_F(proc_maps_faults, anonymous_memory_is_still_notified_when_the_ioctl_fails) {
  // the text of /proc/self/maps answers instead: no needless checked mode
  g_query_errno = ENOMEM;
  char* p = static_cast<char*>(::mmap(nullptr, 4 * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::notified);
  mon_->unsubscribe(p, 4 * k_page);
  ::munmap(p, 4 * k_page);
}

// End to end: a domain's registration cache must not hand out the old
// registration for a new segment attached where a detached one was.
TEST_F(proc_maps_faults, cached_registration_of_a_segment_is_not_reused_after_shmdt) {
  weft::hints h;
  h.provider = "shm";
  h.caps = weft::cap::msg | weft::cap::rma;
  auto infos = weft::get_info(h);
  if (!infos) GTEST_SKIP() << infos.error().message;
  auto fab = weft::fabric::open(infos->front());
  ASSERT_TRUE(fab);
  auto dom = fab->open_domain(infos->front());
  ASSERT_TRUE(dom);
  for (const int e : {0, ENOMEM}) {  // as it is, and with every PROCMAP_QUERY failing
    SCOPED_TRACE(e);
    g_query_errno = e;
    sysv_segment first(16);
    ASSERT_TRUE(first.ok());
    std::memset(first.p, 1, first.len);
    auto r1 = dom->register_memory(first.p, first.len, weft::access::remote_read);
    ASSERT_TRUE(r1) << r1.error().message;
    if (*dom->monitor_name() != "userfaultfd") GTEST_SKIP() << "domain monitor is " << *dom->monitor_name();
    r1->close();  // idle in the cache
    void* at = first.p;
    first.detach();
    sysv_segment second(16, at);
    ASSERT_TRUE(second.ok());
    ASSERT_EQ(second.p, at) << "the new segment is where the old one was";
    auto r2 = dom->register_memory(second.p, second.len, weft::access::remote_read);
    ASSERT_TRUE(r2) << r2.error().message;
    EXPECT_FALSE(*r2->cache_hit()) << "the detached segment's registration was reused (" << diag() << ")";
    r2->close();
  }
}

// tcp with automatic progress: closing a region, or the endpoint, from the
// application's thread while the progress thread is using the region's
// memory. docs/rma.md: once a region's close returns, no access reads or
// writes its memory any more, even one already under way.
//
// The interleavings are made, not hoped for: the target's memory is a
// userfaultfd range in missing mode, so the progress thread's first touch of
// it waits until the test lets it go; or the progress thread is held inside
// the domain's commit handler.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

// Anonymous pages whose first touch (by any thread, in user mode) waits for
// the test: userfaultfd in missing mode.
struct held_pages {
  int uffd = -1;
  std::byte* mem = nullptr;
  std::size_t len = 0;
  held_pages(const held_pages&) = delete;
  held_pages& operator=(const held_pages&) = delete;
  held_pages() = default;
  ~held_pages() {
    if (uffd >= 0) ::close(uffd);  // wakes anything still waiting (it gets a fault, not a hang)
    if (mem) ::munmap(mem, len);
  }
  // false: no userfaultfd here (the caller skips)
  bool open(std::size_t n) {
    len = n;
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    mem = static_cast<std::byte*>(p);
    uffd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
    if (uffd < 0) uffd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (uffd < 0) return false;
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(uffd, UFFDIO_API, &api) != 0) return false;
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<std::uintptr_t>(mem);
    reg.range.len = n;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    return ::ioctl(uffd, UFFDIO_REGISTER, &reg) == 0;
  }
  // Waits (bounded) until a thread touches one of the pages, driving drive
  // meanwhile; the page's address, or 0.
  std::uintptr_t wait_touch(int timeout_ms, completion_queue& drive) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
      drive.progress();
      pollfd f{uffd, POLLIN, 0};
      if (::poll(&f, 1, 1) != 1) continue;
      uffd_msg m{};
      if (::read(uffd, &m, sizeof m) != static_cast<ssize_t>(sizeof m)) continue;
      if (m.event == UFFD_EVENT_PAGEFAULT) return m.arg.pagefault.address & ~(page - 1);
    }
    return 0;
  }
  // The touched page appears with content (page bytes); its toucher goes on.
  bool release(std::uintptr_t at, const void* content) {
    uffdio_copy c{};
    c.dst = at;
    c.src = reinterpret_cast<std::uintptr_t>(content);
    c.len = page;
    return ::ioctl(uffd, UFFDIO_COPY, &c) == 0;
  }
};

// A thread that closes something and says so on an eventfd.
struct closer {
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::atomic<pid_t> tid{0};
  std::thread thr;
  template <class F>
  void start(F f) {
    thr = std::thread([this, f]() mutable {
      tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
      f();
      const std::uint64_t one = 1;
      (void)!::write(efd, &one, sizeof one);
    });
  }
  // true if it finished within timeout_ms
  bool done_within(int timeout_ms) const {
    pollfd f{efd, POLLIN, 0};
    return ::poll(&f, 1, timeout_ms) == 1;
  }
  // Joins when it finished within timeout_ms; otherwise leaves it (reported).
  bool finish(int timeout_ms) {
    if (!thr.joinable()) return true;
    if (!done_within(timeout_ms)) {
      thr.detach();  // stuck: the test fails, and must not hang on it
      return false;
    }
    thr.join();
    return true;
  }
  ~closer() {
    if (thr.joinable()) thr.detach();
    ::close(efd);
  }
};

// The scheduler state of one of our threads ('S': asleep, here on a lock).
char thread_state(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string s;
  std::getline(f, s);
  const auto p = s.rfind(')');
  return p != std::string::npos && p + 2 < s.size() ? s[p + 2] : '?';
}

node open_auto_target() {
  ::setenv("WEFT_PROGRESS", "auto", 1);
  node t = open_node("tcp", cap::msg);
  ::setenv("WEFT_PROGRESS", "manual", 1);
  return t;
}

enum class access_kind { atomic, small_write, small_read };

}  // namespace

class tcp_region_close_race : public ::testing::TestWithParam<access_kind> {};

// The progress thread has found the region and is about to touch its memory
// (held at that touch); the application closes the region: the close waits
// until the access is done, so that nothing touches the memory after it.
TEST_P(tcp_region_close_race, close_waits_for_an_access_under_way) {
  const access_kind kind = GetParam();
  node t = open_auto_target();
  node i = open_node("tcp", cap::msg);
  held_pages pg;  // after the nodes: closed first, so that a failed test never leaves a thread waiting
  if (!pg.open(page)) GTEST_SKIP() << "no userfaultfd here: " << std::strerror(errno);
  auto mr = t.dom.register_memory(pg.mem, pg.len, access::remote_read | access::remote_write);
  ASSERT_TRUE(mr) << mr.error().message;
  const fi_addr_t to = insert(i, t);

  std::vector<unsigned char> content(page, 0);
  const std::uint64_t before = 41;
  std::memcpy(content.data(), &before, sizeof before);
  for (std::size_t k = 8; k < 64; ++k) content[k] = static_cast<unsigned char>(k);
  std::vector<unsigned char> src(64), dst(64, 0xee);
  for (std::size_t k = 0; k < src.size(); ++k) src[k] = static_cast<unsigned char>(200 + k);
  const std::uint64_t one = 1;
  std::uint64_t old = 0;
  int ctx = 0;
  switch (kind) {
    case access_kind::atomic:
      ASSERT_EQ(i.ep.fetch_atomic(atomic_op::sum, atomic_type::u64, &one, &old, 1, to, 0, *mr->key(), &ctx), errc::ok);
      break;
    case access_kind::small_write:
      ASSERT_EQ(i.ep.write(src.data(), src.size(), to, 0, *mr->key(), &ctx), errc::ok);
      break;
    case access_kind::small_read:
      ASSERT_EQ(i.ep.read(dst.data(), dst.size(), to, 0, *mr->key(), &ctx), errc::ok);
      break;
  }
  const std::uintptr_t at = pg.wait_touch(20000, i.cq);
  ASSERT_EQ(at, reinterpret_cast<std::uintptr_t>(pg.mem)) << "the target never touched the region";

  // The progress thread waits at its touch. Close the region meanwhile.
  closer cl;
  cl.start([&] { mr->close(); });
  // Nothing may let it return before the access is done. (A close that
  // returns at once is seen within microseconds; this wait only gives it
  // the chance.)
  const bool returned_early = cl.done_within(300);
  ASSERT_TRUE(pg.release(at, content.data())) << std::strerror(errno);
  ASSERT_TRUE(cl.finish(20000)) << "the region's close never returned";
  EXPECT_FALSE(returned_early) << "the region's close returned while the target was still to touch its memory";

  // The access began before the close: it completes, and did what it says.
  outcome o = next(i, {}, 20000);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(o.e.context, &ctx);
  switch (kind) {
    case access_kind::atomic: {
      EXPECT_EQ(old, before);
      std::uint64_t now = 0;
      std::memcpy(&now, pg.mem, sizeof now);
      EXPECT_EQ(now, before + 1);
      break;
    }
    case access_kind::small_write:
      EXPECT_EQ(std::memcmp(pg.mem, src.data(), src.size()), 0);
      break;
    case access_kind::small_read:
      EXPECT_EQ(std::memcmp(dst.data(), content.data(), dst.size()), 0);
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(accesses, tcp_region_close_race,
                         ::testing::Values(access_kind::atomic, access_kind::small_write, access_kind::small_read),
                         [](const ::testing::TestParamInfo<access_kind>& p) {
                           return p.param == access_kind::atomic        ? std::string("atomic")
                                  : p.param == access_kind::small_write ? std::string("small_write")
                                                                        : std::string("small_read");
                         });

// The endpoint is closed while the progress thread is inside its progress
// (held in the commit handler of a SAVE that follows a 24 MiB read, whose
// answer is partly on the wire); the application closes the region while
// the endpoint's close waits for the progress thread, then overwrites it.
// The answer's remaining bytes must still be the region's old contents:
// the endpoint observes the registry until the progress thread is out.
TEST(tcp_close_race, endpoint_closed_during_progress_still_revokes_its_answers) {
  constexpr std::size_t big = 24u << 20;  // far more than loopback socket buffers hold
  node t = open_auto_target();
  node i = open_node("tcp", cap::msg);
  const std::vector<unsigned char> old_bytes = pattern(big, 1);
  std::vector<unsigned char> mem = old_bytes;
  auto r = t.dom.register_memory(mem.data(), big, access::remote_read);
  ASSERT_TRUE(r) << r.error().message;
  std::vector<unsigned char> wmem(page, 0);
  auto w = t.dom.register_memory(wmem.data(), wmem.size(), access::remote_write);
  ASSERT_TRUE(w) << w.error().message;

  std::mutex mu;
  std::condition_variable cv;
  bool in_handler = false, go_on = false;
  ASSERT_TRUE(t.dom.set_commit_handler([&](const commit_event&) {
    std::unique_lock lk(mu);
    in_handler = true;
    cv.notify_all();
    cv.wait_for(lk, std::chrono::seconds(30), [&] { return go_on; });
    return errc::ok;
  }));
  auto let_go = [&] {
    std::lock_guard lk(mu);
    go_on = true;
    cv.notify_all();
  };
  const fi_addr_t to = insert(i, t);
  std::vector<unsigned char> got(big, 0);
  // The answer fills got in order: the part received ends at the first run
  // of 64 zero bytes.
  std::size_t received = 0;
  auto advance = [&] {
    for (;;) {
      const std::size_t n = std::min<std::size_t>(64, big - received);
      if (n == 0 || std::all_of(got.begin() + static_cast<std::ptrdiff_t>(received),
                                got.begin() + static_cast<std::ptrdiff_t>(received + n),
                                [](unsigned char b) { return b == 0; }))
        return;
      received += n;
    }
  };
  int read_ctx = 0, save_ctx = 0;
  ASSERT_EQ(i.ep.read(got.data(), big, to, 0, *r->key(), &read_ctx), errc::ok);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (received == 0 && std::chrono::steady_clock::now() < until) {
    i.cq.progress();
    advance();
  }
  ASSERT_GT(received, 0u) << "the read's answer never started";
  // The answer is on the wire, and cannot finish while we do not read: the
  // SAVE behind it holds the progress thread in the commit handler.
  ASSERT_EQ(i.ep.save(to, *w->key(), flag::commit_complete, &save_ctx), errc::ok);
  auto held = [&] {
    std::lock_guard lk(mu);
    return in_handler;
  };
  until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!held() && std::chrono::steady_clock::now() < until) {
    std::unique_lock lk(mu);
    cv.wait_for(lk, std::chrono::milliseconds(10), [&] { return in_handler; });
  }
  if (!held()) {
    let_go();
    FAIL() << "the SAVE never reached the commit handler";
  }

  // The endpoint's close, on another thread, waits for the progress thread.
  closer cl;
  cl.start([&] { t.ep.close(); });
  until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool asleep = false;
  while (!asleep && std::chrono::steady_clock::now() < until) {
    i.cq.progress();  // the answer's bytes on the wire so far arrive here: the target's socket has room again
    const pid_t tid = cl.tid.load();
    asleep = tid != 0 && thread_state(tid) == 'S';
  }
  if (!asleep) {
    let_go();
    (void)cl.finish(20000);
    FAIL() << "the endpoint's close did not wait for the progress thread";
  }
  // Take in what the target has sent, so that its socket has room for more
  // when the progress thread goes on (this only makes a wrong byte likelier
  // to show).
  until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto quiet_since = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < until &&
         std::chrono::steady_clock::now() - quiet_since < std::chrono::milliseconds(20)) {
    const std::size_t was = received;
    i.cq.progress();
    advance();
    if (received != was) quiet_since = std::chrono::steady_clock::now();
  }

  // The region closes, and its memory is reused.
  r->close();
  const std::vector<unsigned char> new_bytes = pattern(big, 2);
  std::memcpy(mem.data(), new_bytes.data(), big);
  let_go();  // the progress thread answers the SAVE and sends what it can of the read's answer

  // The read ends (the endpoint closes under it: an error), with every byte
  // that arrived one of the old contents.
  outcome o = next(i, {}, 20000);
  ASSERT_TRUE(o.ok || o.error);
  outcome o2 = next(i, {}, 20000);
  ASSERT_TRUE(o2.ok || o2.error);
  EXPECT_TRUE(cl.finish(20000)) << "the endpoint's close never returned";
  std::size_t foreign = 0, first = big;
  for (std::size_t k = 0; k < big; ++k)
    if (got[k] != 0 && got[k] != old_bytes[k]) {
      ++foreign;
      first = std::min(first, k);
    }
  EXPECT_EQ(foreign, 0u) << "bytes read from the region after its close returned (first at " << first << ")";
}

// Lock order: a commit handler runs inside the progress thread's progress
// (the domain's lock held); closing a region from it revokes the region's
// key there and then, which takes the endpoint's answer lock (never held
// while the handler runs): no deadlock, and the region is gone for the
// next request.
TEST(tcp_close_race, commit_handler_closes_the_region_inside_progress) {
  node t = open_auto_target();
  node i = open_node("tcp", cap::msg);
  std::vector<unsigned char> mem(page, 0);
  auto r = t.dom.register_memory(mem.data(), mem.size(), access::remote_read | access::remote_write);
  ASSERT_TRUE(r) << r.error().message;
  const std::uint64_t key = *r->key();
  std::atomic<int> calls{0};
  ASSERT_TRUE(t.dom.set_commit_handler([&](const commit_event& ev) {
    if (ev.key == key && calls.fetch_add(1) == 0) r->close();  // the region goes, from inside progress
    return errc::ok;
  }));
  const fi_addr_t to = insert(i, t);
  const unsigned char v = 7;
  rma_desc d{};
  ::iovec io{const_cast<unsigned char*>(&v), 1};
  d.iov = &io;
  d.iov_count = 1;
  d.addr = to;
  d.key = key;
  int wctx = 0;
  d.context = &wctx;
  ASSERT_EQ(i.ep.writemsg(d, flag::commit_complete), errc::ok);
  outcome o = next(i, {}, 10000);
  ASSERT_TRUE(o.ok) << "the write was placed before the handler closed its region: " << o.err.msg;
  EXPECT_EQ(o.e.context, &wctx);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(mem[0], 7);
  // The progress thread goes on; the key is dead.
  unsigned char back = 0;
  int rctx = 0;
  ASSERT_EQ(i.ep.read(&back, 1, to, 0, key, &rctx), errc::ok);
  outcome o2 = next(i, {}, 10000);
  ASSERT_TRUE(o2.error) << "a read of a closed region";
  EXPECT_EQ(o2.err.context, &rctx);
  EXPECT_EQ(o2.err.err, errc::not_found) << o2.err.msg;
}

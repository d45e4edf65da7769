// tcp with automatic progress: closing a region, or the endpoint, from the
// application's thread while the progress thread is using the region's
// memory. docs/rma.md: once a region's close returns, no access reads or
// writes its memory any more, even one already under way.
//
// The interleavings are made, not hoped for: the progress thread is held
// inside the domain's commit handler.
#include <poll.h>
#include <sys/eventfd.h>
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

}  // namespace

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
  ASSERT_EQ(i.ep.read(got.data(), big, to, 0, r->key(), &read_ctx), errc::ok);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (received == 0 && std::chrono::steady_clock::now() < until) {
    i.cq.progress();
    advance();
  }
  ASSERT_GT(received, 0u) << "the read's answer never started";
  // The answer is on the wire, and cannot finish while we do not read: the
  // SAVE behind it holds the progress thread in the commit handler.
  ASSERT_EQ(i.ep.save(to, w->key(), flag::commit_complete, &save_ctx), errc::ok);
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

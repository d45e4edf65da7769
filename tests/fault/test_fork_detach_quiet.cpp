// A forked child that closes the endpoint it inherited detaches it from its
// copy of the CQ. On tcp that detach wrote the CQ's eventfd (the one a wait
// asleep in poll() wakes on when an endpoint closes), which the child shares
// with its parent: the parent's wait woke for nothing (a word wake-up; a
// state change of the parent caused by the child). The child must signal
// nothing of the parent's: here the parent waits on its CQ (pulse off, so
// only a word or the deadline ends a sleep) while a child closes its copies;
// once the child says it is done (a pipe), no eventfd of the parent is
// readable and the wait's statistics did not move. Then the parent closes
// the endpoint itself, which ends the wait (again), as documented.
#include <dirent.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/child.hpp"
#include "common/harness.hpp"
#include "common/waits.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int child_closed = 42;

// The eventfd descriptors of this process.
std::vector<int> eventfds() {
  std::vector<int> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    char link[64] = {};
    const ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
    if (n > 0 && std::string(link, static_cast<std::size_t>(n)) == "anon_inode:[eventfd]")
      out.push_back(std::stoi(e->d_name));
  }
  ::closedir(d);
  return out;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

class fork_detach_quiet : public ::testing::TestWithParam<variant> {};

}  // namespace

TEST_P(fork_detach_quiet, a_child_closing_its_copies_does_not_wake_the_parents_wait) {
  apply(GetParam());
  node a = open_node(GetParam().provider);
  no_pulse off;
  auto before = a.cq.wait_stats();
  ASSERT_TRUE(before);
  int done[2];
  ASSERT_EQ(::pipe(done), 0);

  std::atomic<bool> about{false};
  std::atomic<pid_t> tid{0};
  errc waited = errc::bad_state;
  std::thread waiter([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    about = true;
    cq_entry e;
    waited = a.cq.wait(e, 60'000);
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!about.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  const bool asleep = seen_asleep(about, tid.load());
  EXPECT_TRUE(asleep) << "the wait was never seen asleep";
  std::vector<int> efds;
  for (int fd : eventfds())
    if (!readable(fd)) efds.push_back(fd);  // quiet ones: none may become readable

  pid_t pid = -1;
  if (asleep) pid = ::fork();
  if (pid == 0) {
    ::close(done[0]);
    a.ep.close();  // detaches from the CQ (before the fix: wrote the shared eventfd)
    a.av.close();
    a.cq.close();
    a.dom.close();
    a.fab.close();
    const char c = 1;
    if (::write(done[1], &c, 1) != 1) ::_exit(3);
    ::_exit(child_closed);
  }
  ::close(done[1]);
  if (pid > 0) {
    child_guard guard(pid);
    char c = 0;
    EXPECT_TRUE(read_within(done[0], &c, 1, std::chrono::seconds(20))) << "the child did not close its copies";
    const child_status st = guard(wait_child(pid, std::chrono::seconds(20)));
    EXPECT_EQ(st.exit_code(), child_closed) << "the child " << st.describe();
    // First the descriptors, then the counts: a wake-up either left the
    // eventfd readable or was already counted.
    for (int fd : efds) EXPECT_FALSE(readable(fd)) << "the child wrote eventfd " << fd << " of the parent";
    auto after = a.cq.wait_stats();
    ASSERT_TRUE(after);
    EXPECT_EQ(after->word_wakes, before->word_wakes) << "the parent's wait woke for the child's close";
    EXPECT_EQ(after->timer_wakes, before->timer_wakes);
  }
  ::close(done[0]);
  a.ep.close();  // the parent's own close ends its wait
  waiter.join();
  EXPECT_EQ(waited, errc::again) << to_string(waited);
}

INSTANTIATE_TEST_SUITE_P(variants, fork_detach_quiet, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

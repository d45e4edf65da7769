// shm one-sided RMA against a region being closed: when
// memory_region::close() returns, no peer access into or out of the region is
// under way or can start (docs/rma.md, docs/wire/shm.md "Access slots").
//
// The test process is the target. A forked peer streams writes (or atomics)
// into one of its regions; once the peer reports a first success, the target
// closes the region, tells the peer, fills the memory with another byte and
// watches it: no byte may change afterwards, every operation the peer posts
// after it heard of the close must fail with not_found, and none may succeed
// after one failed.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "../common/child.hpp"
#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr unsigned char fill_byte = 0x11;  // the target's bytes once the region is closed
constexpr unsigned char peer_byte = 0xa5;  // what the peer writes
constexpr std::size_t big = std::size_t{8} << 20;
constexpr std::uint32_t after_close_ops = 16;  // operations the peer posts once it heard of the close

// atomic: 8 u64 sums (64 bytes); fetch_add: one u64 fetching sum (8 bytes, the
// shape of weft_rma_perf's fetch_add latency test).
enum class what : std::uint32_t { stop = 0, write = 1, atomic = 2, fetch_add = 3 };

struct command {
  std::uint64_t key = 0;
  std::uint64_t size = 0;  // bytes per write
  what op = what::stop;
  std::uint32_t pad = 0;
};

struct report {
  std::uint32_t ok = 0;
  std::uint32_t not_found = 0;
  std::uint32_t other = 0;           // any other outcome (or a post refused with an error)
  std::uint32_t ok_after_nf = 0;     // a success after a not_found
  std::uint32_t ok_after_close = 0;  // a success of an operation posted after the close notice
  std::uint32_t after_close = 0;     // operations posted after the close notice
};

bool write_full(int fd, const void* p, std::size_t n) {
  return ::write(fd, p, n) == static_cast<ssize_t>(n);
}

// The peer: serves commands until told to stop. 0 when every command ran.
int peer_main(const address& target, int cmd_fd, int closed_fd, int rep_fd) {
  forked_child();
  node c = open_node("shm", cap::msg);
  auto d = c.av.insert(target);
  if (!d) return 1;
  std::vector<unsigned char> src(big, peer_byte);
  std::uint64_t ones[8], olds[8];
  std::fill(std::begin(ones), std::end(ones), 1);
  for (;;) {
    command cmd;
    if (!read_within(cmd_fd, &cmd, sizeof cmd, 60s)) return 2;
    if (cmd.op == what::stop) return 0;
    report r;
    bool closed = false, started = false, failed = false;
    const auto until = clk::now() + std::chrono::seconds(20);
    while (r.after_close < after_close_ops && clk::now() < until) {
      char ch;
      if (!closed && ::read(closed_fd, &ch, 1) == 1) closed = true;
      const errc e = cmd.op == what::write    ? c.ep.write(src.data(), cmd.size, *d, 0, cmd.key)
                     : cmd.op == what::atomic ? c.ep.atomic(atomic_op::sum, atomic_type::u64, ones, 8, *d, 0, cmd.key)
                                              : c.ep.fetch_atomic(atomic_op::sum, atomic_type::u64, ones, olds, 1, *d,
                                                                  0, cmd.key);
      if (e == errc::again) {
        c.cq.progress();
        continue;
      }
      if (e != errc::ok) {
        ++r.other;
        break;
      }
      r.after_close += closed;
      const outcome o = poll_next_until(c, until);
      if (o.ok) {
        ++r.ok;
        r.ok_after_nf += failed;
        r.ok_after_close += closed;
        if (!started) {
          started = true;
          if (!write_full(rep_fd, "s", 1)) return 3;
        }
      } else if (o.error && o.err.err == errc::not_found) {
        ++r.not_found;
        failed = true;
      } else {
        ++r.other;
        break;
      }
    }
    if (!write_full(rep_fd, "r", 1) || !write_full(rep_fd, &r, sizeof r)) return 4;
  }
}

// The newest alloc_memory segment of this process in /dev/shm (its name holds a sequence number).
std::string newest_segment() {
  const std::string prefix = "weft." + std::to_string(::getuid()) + "." + std::to_string(::getpid()) + ".mem.";
  std::string best;
  unsigned long long best_seq = 0;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind(prefix, 0) != 0) continue;
      const auto dot = n.rfind('.');
      const unsigned long long seq = std::strtoull(n.c_str() + dot + 1, nullptr, 10);
      if (best.empty() || seq > best_seq) {
        best = n;
        best_seq = seq;
      }
    }
    ::closedir(d);
  }
  return best;
}

class shm_rma_revoke : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("WEFT_SHM_CMA", "1", 1);
    t = open_node("shm", cap::msg);
    if (!(t.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
    int c[2], cl[2], r[2];
    ASSERT_EQ(::pipe(c), 0);
    ASSERT_EQ(::pipe(cl), 0);
    ASSERT_EQ(::pipe(r), 0);
    const address me = *t.ep.name();
    kid = ::fork();
    ASSERT_GE(kid, 0);
    if (kid == 0) {
      ::close(c[1]);
      ::close(cl[1]);
      ::close(r[0]);
      ::fcntl(cl[0], F_SETFL, O_NONBLOCK);
      ::_exit(peer_main(me, c[0], cl[0], r[1]));
    }
    ::close(c[0]);
    ::close(cl[0]);
    ::close(r[1]);
    cmd_fd = c[1];
    closed_fd = cl[1];
    rep_fd = r[0];
  }
  void TearDown() override {
    if (kid > 0) {
      command stop;
      (void)write_full(cmd_fd, &stop, sizeof stop);
      int st = 0;
      const auto until = clk::now() + std::chrono::seconds(10);
      while (::waitpid(kid, &st, WNOHANG) == 0 && clk::now() < until) t.cq.progress();
      if (::waitpid(kid, &st, WNOHANG) == 0) {
        ::kill(kid, SIGKILL);
        ::waitpid(kid, &st, 0);
        ADD_FAILURE() << "the peer did not stop";
      } else {
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "peer status " << st;
      }
    }
    for (int fd : {cmd_fd, closed_fd, rep_fd})
      if (fd >= 0) ::close(fd);
  }

  // One trial: the peer streams into region mr (whose bytes the target sees
  // at view), the target closes it mid-stream and watches view.
  void trial(memory_region& mr, unsigned char* view, std::size_t len, what op, std::size_t size, int n) {
    command cmd{*mr.key(), size, op, 0};
    ASSERT_TRUE(write_full(cmd_fd, &cmd, sizeof cmd));
    char ch = 0;
    // the peer says it has started (a first success), or reports at once
    bool got = false;
    const auto until = clk::now() + std::chrono::seconds(20);
    while (!got && clk::now() < until) {
      t.cq.progress();  // two-sided fallbacks need the target
      pollfd pf{rep_fd, POLLIN, 0};
      if (::poll(&pf, 1, 0) == 1) got = read_within(rep_fd, &ch, 1, 1s);
    }
    ASSERT_TRUE(got && ch == 's') << "trial " << n << ": the peer did not start";
    mr.close();  // from here on, no peer access may touch the memory
    ASSERT_TRUE(write_full(closed_fd, "c", 1));
    std::memset(view, fill_byte, len);
    // Watch for 20 ms, and until the peer reports (it posts more operations after the notice).
    const auto watch = clk::now() + std::chrono::milliseconds(20);
    report r;
    bool reported = false;
    std::size_t bad = len;
    while ((clk::now() < watch || !reported) && clk::now() < until && bad == len) {
      bad = first_not(view, len, fill_byte);
      t.cq.progress();
      pollfd pf{rep_fd, POLLIN, 0};
      if (!reported && ::poll(&pf, 1, 0) == 1) {
        ASSERT_TRUE(read_within(rep_fd, &ch, 1, 1s) && ch == 'r');
        ASSERT_TRUE(read_within(rep_fd, &r, sizeof r, 5s));
        reported = true;
      }
    }
    if (bad == len) bad = first_not(view, len, fill_byte);
    while (!reported && clk::now() < until) {  // the memory changed: still collect the report
      t.cq.progress();  // operations that went two-sided need the target's answer
      pollfd pf{rep_fd, POLLIN, 0};
      if (::poll(&pf, 1, 0) == 1) {
        ASSERT_TRUE(read_within(rep_fd, &ch, 1, 1s) && ch == 'r');
        ASSERT_TRUE(read_within(rep_fd, &r, sizeof r, 5s));
        reported = true;
      }
    }
    ASSERT_TRUE(reported) << "trial " << n << ": no report from the peer";
    EXPECT_EQ(bad, len) << "trial " << n << ": byte " << bad << " of the closed region was written (0x" << std::hex
                        << int(view[bad < len ? bad : 0]) << ") after close() returned";
    EXPECT_GE(r.ok, 1u);
    EXPECT_EQ(r.other, 0u) << "trial " << n << ": outcomes other than ok and not_found";
    EXPECT_EQ(r.after_close, after_close_ops) << "trial " << n;
    EXPECT_EQ(r.ok_after_close, 0u) << "trial " << n << ": operations posted after close() returned succeeded";
    EXPECT_EQ(r.ok_after_nf, 0u) << "trial " << n << ": a success after a not_found";
    EXPECT_GE(r.not_found, after_close_ops);
  }

  node t;
  pid_t kid = -1;
  int cmd_fd = -1, closed_fd = -1, rep_fd = -1;
};

}  // namespace

// Cross-memory attach into the application's own (malloc'd) memory.
TEST_F(shm_rma_revoke, registered_memory_is_never_written_after_close_returns) {
  auto* buf = static_cast<unsigned char*>(std::malloc(big));
  ASSERT_NE(buf, nullptr);
  std::memset(buf, 0, big);
  struct sizes {
    std::size_t size;
    int trials;
  };
  for (auto [size, trials] : {sizes{big, 8}, sizes{4096, 20}}) {
    for (int n = 0; n < trials && !HasFailure(); ++n) {
      auto m = t.dom.register_memory(buf, big, access::remote_write | access::remote_read);
      ASSERT_TRUE(m) << m.error().message;
      trial(*m, buf, big, what::write, size, n);
    }
  }
  std::free(buf);
}

// Memory from alloc_memory: the peer maps it and stores into it. The target
// watches the same shared-memory object through a mapping of its own, which
// outlives the region.
TEST_F(shm_rma_revoke, allocated_memory_is_never_written_after_close_returns) {
  struct sizes {
    std::size_t size;
    what op;
    int trials;
  };
  for (auto [size, op, trials] :
       {sizes{big, what::write, 8}, sizes{4096, what::write, 20}, sizes{64, what::atomic, 20},
        sizes{8, what::fetch_add, 20}}) {
    for (int n = 0; n < trials && !HasFailure(); ++n) {
      auto m = t.dom.alloc_memory(big, access::remote_write | access::remote_read);
      ASSERT_TRUE(m) << m.error().message;
      const std::string seg = newest_segment();
      ASSERT_FALSE(seg.empty()) << "alloc_memory made no shared-memory object";
      const int fd = ::shm_open(("/" + seg).c_str(), O_RDWR, 0);
      ASSERT_GE(fd, 0) << seg;
      void* v = ::mmap(nullptr, big, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      ::close(fd);
      ASSERT_NE(v, MAP_FAILED);
      trial(*m, static_cast<unsigned char*>(v), big, op, size, n);
      ::munmap(v, big);
    }
  }
}

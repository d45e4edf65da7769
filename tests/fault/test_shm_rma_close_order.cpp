// shm one-sided RMA when the target closes its endpoint before the region:
// the endpoint's table of regions lives in its shared region, which peers
// keep mapped. Closing the endpoint left the keys in that table, and the
// region's close (no endpoint left to tell) returned at once: a peer's
// write under way went on, piece after piece, into memory the application
// had taken back (docs/rma.md, docs/wire/shm.md "Access slots"). Now the
// endpoint's close revokes every key it published and waits for the
// accesses under way, as a region's close does.
//
// The test process is the target: a forked peer streams 64 MiB writes into
// a malloc'd region; once its second write is seen landing, the target
// closes its endpoint, then the region, and fills the memory (from its end, where a write under
// way lands last). No byte may change afterwards; the write under way ends
// with not_found, and the peer's later posts fail with peer_dead.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "../common/child.hpp"
#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr unsigned char fill_byte = 0x22;
// what the peer's write number k (from 1) writes: never fill_byte, never 0
constexpr unsigned char byte_of(std::uint32_t k) { return static_cast<unsigned char>(0x40 + k % 64); }
constexpr std::size_t big = std::size_t{64} << 20;

struct report {
  std::uint32_t ok = 0;              // writes completed
  std::uint32_t not_found = 0;       // writes failed with not_found (revoked under way)
  std::uint32_t peer_dead = 0;       // completions or posts with peer_dead
  std::uint32_t other = 0;           // anything else
  std::uint32_t ok_after_close = 0;  // writes posted after the close notice that succeeded
};

// The peer: writes until a post fails (the target's endpoint is gone).
int peer_main(const address& target, std::uint64_t key, int closed_fd, int rep_fd) {
  forked_child();
  node c = open_node("shm", cap::msg);
  auto d = c.av.insert(target);
  if (!d) return 1;
  std::vector<unsigned char> src(big);
  report r;
  bool closed = false;
  const auto until = clk::now() + std::chrono::seconds(20);
  for (std::uint32_t k = 1; clk::now() < until; ++k) {
    char ch;
    if (!closed && ::read(closed_fd, &ch, 1) == 1) closed = true;
    std::memset(src.data(), byte_of(k), big);
    const errc e = c.ep.write(src.data(), big, *d, 0, key);
    if (e == errc::again) {
      c.cq.progress();
      continue;
    }
    if (e != errc::ok) {
      if (e == errc::peer_dead) ++r.peer_dead;
      else ++r.other;
      break;
    }
    const outcome o = poll_next_until(c, until);
    if (o.ok) {
      ++r.ok;
      r.ok_after_close += closed;
      if (r.ok == 1 && ::write(rep_fd, "s", 1) != 1) return 2;
    } else if (o.error && o.err.err == errc::not_found) {
      ++r.not_found;
    } else if (o.error && o.err.err == errc::peer_dead) {
      ++r.peer_dead;
    } else {
      ++r.other;
      break;
    }
  }
  if (::write(rep_fd, "r", 1) != 1 || ::write(rep_fd, &r, sizeof r) != static_cast<ssize_t>(sizeof r)) return 3;
  return 0;
}

}  // namespace

TEST(shm_rma_close_order, closing_the_endpoint_first_still_ends_peer_writes_before_the_region_close_returns) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  auto* buf = static_cast<unsigned char*>(std::malloc(big));
  ASSERT_NE(buf, nullptr);
  constexpr int trials = 6;
  for (int n = 0; n < trials && !HasFailure(); ++n) {
    node t = open_node("shm", cap::msg);
    if (!(t.inf.caps & cap::rma)) {
      std::free(buf);
      GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
    }
    std::memset(buf, 0, big);
    auto mr = t.dom.register_memory(buf, big, access::remote_write);
    ASSERT_TRUE(mr) << mr.error().message;
    int cl[2], rp[2];
    ASSERT_EQ(::pipe(cl), 0);
    ASSERT_EQ(::pipe(rp), 0);
    const address me = *t.ep.name();
    const pid_t kid = ::fork();
    ASSERT_GE(kid, 0);
    if (kid == 0) {
      ::close(cl[1]);
      ::close(rp[0]);
      ::fcntl(cl[0], F_SETFL, O_NONBLOCK);
      ::_exit(peer_main(me, *mr->key(), cl[0], rp[1]));
    }
    ::close(cl[0]);
    ::close(rp[1]);
    char ch = 0;
    const bool started = read_within(rp[0], &ch, 1, 20s) && ch == 's';
    std::size_t bad = big;
    report r;
    bool reported = false;
    // Its second write under way: its first bytes landed (a write moves 1 MiB
    // pieces from the start), most of it is still to come.
    bool under_way = false;
    const auto land_by = clk::now() + std::chrono::seconds(20);
    while (started && !under_way && clk::now() < land_by)
      under_way = __atomic_load_n(&buf[0], __ATOMIC_RELAXED) == byte_of(2);
    if (started && under_way) {
      // The endpoint goes, then the region.
      t.ep.close();
      mr->close();
      (void)::write(cl[1], "c", 1);
      for (std::size_t end = big; end > 0; end -= std::size_t{1} << 20)
        std::memset(buf + end - (std::size_t{1} << 20), fill_byte, std::size_t{1} << 20);
      const auto watch = clk::now() + std::chrono::milliseconds(20);
      const auto until = clk::now() + std::chrono::seconds(20);
      while ((clk::now() < watch || !reported) && clk::now() < until && bad == big) {
        bad = first_not(buf, big, fill_byte);
        pollfd pf{rp[0], POLLIN, 0};
        if (!reported && ::poll(&pf, 1, 0) == 1) {
          reported = read_within(rp[0], &ch, 1, 1s) && ch == 'r' && read_within(rp[0], &r, sizeof r, 5s);
          if (!reported) break;
        }
      }
      if (bad == big) bad = first_not(buf, big, fill_byte);
      if (!reported) reported = read_within(rp[0], &ch, 1, 20s) && ch == 'r' && read_within(rp[0], &r, sizeof r, 5s);
    }
    int st = 0;
    const auto reap_by = clk::now() + std::chrono::seconds(20);
    while (::waitpid(kid, &st, WNOHANG) == 0 && clk::now() < reap_by) {
      pollfd none{-1, 0, 0};
      (void)::poll(&none, 0, 5);
    }
    if (::waitpid(kid, &st, WNOHANG) == 0) {
      ::kill(kid, SIGKILL);
      ::waitpid(kid, &st, 0);
      ADD_FAILURE() << "trial " << n << ": the peer did not end";
    }
    ::close(cl[1]);
    ::close(rp[0]);
    ASSERT_TRUE(started) << "trial " << n << ": the peer did not start";
    ASSERT_TRUE(under_way) << "trial " << n << ": the peer's second write did not land";
    ASSERT_TRUE(reported) << "trial " << n << ": no report from the peer";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "peer status " << st;
    EXPECT_EQ(bad, big) << "trial " << n << ": byte " << bad << " of the closed region was written (0x" << std::hex
                        << int(buf[bad < big ? bad : 0]) << ") after the endpoint and the region were closed";
    EXPECT_GE(r.ok, 1u);
    EXPECT_EQ(r.ok_after_close, 0u) << "trial " << n << ": a write posted after the close succeeded";
    EXPECT_GE(r.peer_dead, 1u) << "trial " << n << ": the peer's posts did not fail with peer_dead";
    EXPECT_EQ(r.other, 0u) << "trial " << n << ": outcomes other than ok, not_found and peer_dead";
  }
  std::free(buf);
}

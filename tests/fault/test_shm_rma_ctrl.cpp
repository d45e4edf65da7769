// shm two-sided RMA under load: a target owes more answers than it can hold
// at once. Every request is answered (back-pressure, never a lost
// completion): exact counts at the initiators and at the target.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

#include "../common/harness.hpp"
#include "../common/shm_view.hpp"

using namespace weft;
using namespace weft::test;
using clk = std::chrono::steady_clock;

namespace {

constexpr int peers = 4;
constexpr int writes_per_peer = 256;
constexpr std::size_t piece = 64;  // bytes per write; each peer writes its own stretch

// Control slots a stalled peer fills its own control ring with (nop slots,
// as if other peers' answers were waiting there): the target's answers find
// little room and must wait at the target.
constexpr int stall_fill = 500;

// A peer: posts every write (commit level: the target must answer each),
// retrying `again` while progressing, and waits for every completion.
// stall: it first fills its control ring, on `again` it spins up to 5 ms
// before it progresses, and once everything is posted it does not progress
// for 100 ms (an application busy elsewhere).
// Exit status 0 when each write completed ok, exactly once.
int commit_writer(const address& target, std::uint64_t key, int index, bool stall) {
  forked_child();
  node c = open_node("shm", cap::msg);
  auto d = c.av.insert(target);
  if (!d) return 1;
  if (stall) {
    hostile_view self(*c.ep.name());
    if (!self.ok()) return 7;
    for (int i = 0; i < stall_fill; ++i) {
      std::uint64_t pos;
      auto* h = reinterpret_cast<weft::prov::shm::slot_header*>(self.ctl.claim(pos));
      if (!h) return 8;
      h->src_pid = static_cast<std::uint32_t>(::getpid());
      h->code = weft::prov::shm::op::nop;
      if (!self.ctl.publish(pos)) return 9;
    }
  }
  std::vector<unsigned char> src(piece * writes_per_peer);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(index * 31 + i);
  std::vector<int> seen(writes_per_peer, 0);
  int done = 0, failed = 0;
  auto take = [&] {
    cq_entry e;
    const errc r = c.cq.read(e);
    if (r == errc::ok) {
      const auto i = reinterpret_cast<std::uintptr_t>(e.context) - 1;
      if (i < seen.size()) ++seen[i];
      ++done;
    } else if (r == errc::error_available) {
      cq_err_entry ee;
      (void)c.cq.read_error(ee);
      ++failed;
      ++done;
    }
  };
  const auto until = clk::now() + std::chrono::seconds(30);
  for (int i = 0; i < writes_per_peer; ++i) {
    ::iovec v{src.data() + piece * i, piece};
    rma_desc desc{&v, 1, *d, (static_cast<std::uint64_t>(index) * writes_per_peer + i) * piece, key,
                  reinterpret_cast<void*>(static_cast<std::uintptr_t>(i) + 1)};
    errc r;
    auto spin_until = clk::now() + std::chrono::milliseconds(5);
    while ((r = c.ep.writemsg(desc, flag::commit_complete)) == errc::again && clk::now() < until) {
      if (stall && clk::now() < spin_until) continue;
      take();
      spin_until = clk::now() + std::chrono::milliseconds(5);
    }
    if (r != errc::ok) return 2;
  }
  if (stall) {  // busy elsewhere for a while: the target answers meanwhile (not a synchronisation)
    const auto busy = clk::now() + std::chrono::milliseconds(100);
    while (clk::now() < busy) {
    }
  }
  while (done < writes_per_peer && clk::now() < until) take();
  if (failed) return 3;
  if (done != writes_per_peer) return 4;
  for (int s : seen)
    if (s != 1) return 5;
  cq_entry e;
  if (c.cq.read(e) != errc::again) return 6;  // nothing more
  return 0;
}

void run(bool stall) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  node t = open_node("shm", cap::msg);
  if (!(t.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  std::vector<unsigned char> mem(piece * writes_per_peer * peers, 0);
  auto m = t.dom.register_memory(mem.data(), mem.size(), access::remote_write);
  ASSERT_TRUE(m) << m.error().message;
  std::atomic<int> commits{0};
  ASSERT_TRUE(t.dom.set_commit_handler([&](const commit_event&) {
    commits.fetch_add(1);
    return errc::ok;
  }));
  const address me = *t.ep.name();
  std::vector<pid_t> kids;
  for (int k = 0; k < peers; ++k) {
    pid_t p = ::fork();
    ASSERT_GE(p, 0);
    if (p == 0) ::_exit(commit_writer(me, *m->key(), k, stall));
    kids.push_back(p);
  }
  const auto until = clk::now() + std::chrono::seconds(90);
  for (pid_t p : kids) {
    int st = 0;
    while (::waitpid(p, &st, WNOHANG) == 0 && clk::now() < until) t.cq.progress();
    if (::waitpid(p, &st, WNOHANG) == 0) {
      ::kill(p, SIGKILL);
      ::waitpid(p, &st, 0);
      ADD_FAILURE() << "a writer did not finish in time";
      continue;
    }
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "writer status " << st;
  }
  EXPECT_EQ(commits.load(), peers * writes_per_peer) << "the commit handler ran once per write";
  for (int k = 0; k < peers; ++k)
    for (std::size_t i = 0; i < piece * writes_per_peer; ++i)
      ASSERT_EQ(mem[(k * writes_per_peer) * piece + i], static_cast<unsigned char>(k * 31 + i))
          << "peer " << k << " byte " << i;
}

}  // namespace

TEST(shm_rma_ctrl, four_peers_with_256_commit_writes_each_all_complete) { run(false); }

// The same while the writers' control rings are nearly full and they take
// their time to progress: the answers pile up at the target (more than it can
// hold), which must stop taking requests until they drain.
TEST(shm_rma_ctrl, four_stalled_peers_with_256_commit_writes_each_all_complete) { run(true); }

// shm rendezvous while the receiver is out of file descriptors: a large
// message matched while its sender cannot be mapped (EMFILE) would need a
// cts or an ack the receiver cannot send. It is not failed (its live sender
// would wait for an answer forever): an announcement matching a posted
// receive waits in the ring, and a receive posted for an arrived one returns
// again; once descriptors are back both complete, at both ends.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include "fault/shm_peer.hpp"

using namespace weft;
using namespace weft::test;
using clk = std::chrono::steady_clock;

namespace {

constexpr std::size_t len = 64 * 1024;

// Reads one completion of n, if any: true when one was read.
bool take(node& n, std::string& out, const char* who, int& got) {
  cq_entry e{};
  const errc x = n.cq.read(e);
  if (x == errc::ok) {
    ++got;
    return true;
  }
  if (x == errc::error_available) {
    cq_err_entry ee{};
    (void)n.cq.read_error(ee);
    out += std::string(who) + " error: " + ee.msg + "\n";
    ++got;
    return true;
  }
  return false;
}

// Runs in a forked child (the limit is per process); failures come back as text.
std::string rndv_scenario() {
  ::setenv("WEFT_SHM_SLOTS", "16", 1);
  rlimit rl{64, 64};
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return "setrlimit failed";
  // the receiver and two senders, each in a domain of its own
  node r = open_node("shm");
  node s1 = open_node("shm");
  node s2 = open_node("shm");
  auto d1 = s1.av.insert(*r.ep.name());
  auto d2 = s2.av.insert(*r.ep.name());
  if (!d1 || !d2) return "insert failed";
  // UBSan's vptr check proves an object's memory readable with a pipe the
  // first time it meets a (class, static type) pair, which it cannot make
  // with no descriptor left (a false "invalid vptr"): meet the pairs the
  // scenario uses (progress sources, the endpoint and CQ interfaces) before.
  int warm = 0;
  for (node* n : {&r, &s1, &s2}) {
    if (n->ep.cancel(&warm) != errc::not_found) return "cancel of nothing";
    n->cq.progress();
  }
  std::vector<char> src1(len, '1'), src2(len, '2'), dst1(len, 0), dst2(len, 0);
  std::string out;
  // 1: a receive posted before the announcement arrives
  if (r.ep.trecv(dst1.data(), len, addr_unspec, 1, 0, &dst1) != errc::ok) return "trecv 1";
  // 2: an announcement that arrives unexpected
  if (s2.ep.tsend(src2.data(), len, *d2, 2, &src2) != errc::ok) return "tsend 2";
  std::vector<int> filler;
  for (;;) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    filler.push_back(fd);
  }
  if (errno != EMFILE) return "descriptors not exhausted with EMFILE";
  if (s1.ep.tsend(src1.data(), len, *d1, 1, &src1) != errc::ok) out += "tsend 1\n";
  r.cq.progress();  // takes in 2 (unexpected), then 1 matches the posted receive
  const errc post2 = r.ep.trecv(dst2.data(), len, addr_unspec, 2, 0, &dst2);
  if (post2 != errc::again)
    out += std::string("receive for an arrived message from an unmappable sender: ") +
           std::string(to_string(post2)) + " (expected again)\n";
  else if (r.ep.again_reason() != again_reason::no_resources)
    out += std::string("again_reason: ") + to_string(r.ep.again_reason()) + " (expected no_resources)\n";
  for (int fd : filler) ::close(fd);
  if (post2 == errc::again && r.ep.trecv(dst2.data(), len, addr_unspec, 2, 0, &dst2) != errc::ok)
    out += "receive 2 with descriptors back\n";
  int rgot = 0, g1 = 0, g2 = 0;
  for (auto until = clk::now() + std::chrono::seconds(10); (rgot < 2 || g1 < 1 || g2 < 1) && clk::now() < until;) {
    (void)take(r, out, "receiver", rgot);
    (void)take(s1, out, "sender 1", g1);
    (void)take(s2, out, "sender 2", g2);
  }
  if (rgot != 2) out += "receiver completions: " + std::to_string(rgot) + " of 2\n";
  if (g1 != 1 || g2 != 1) out += "sender completions: " + std::to_string(g1) + ", " + std::to_string(g2) + "\n";
  if (dst1 != src1) out += "message 1 not received intact\n";
  if (dst2 != src2) out += "message 2 not received intact\n";
  return out.empty() ? "ok" : out;
}

}  // namespace

TEST(shm_rndv_emfile, a_message_whose_sender_cannot_be_mapped_waits_instead_of_failing) {
  int pfd[2];
  ASSERT_EQ(::pipe(pfd), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    forked_child();
    ::close(pfd[0]);
    const std::string res = rndv_scenario();
    (void)!::write(pfd[1], res.data(), res.size());
    ::_exit(0);
  }
  ::close(pfd[1]);
  std::string out;
  char b[4096];
  // bounded: the child's waits are all bounded (about 10 s at worst)
  for (ssize_t n; (n = ::read(pfd[0], b, sizeof b)) > 0;) out.append(b, static_cast<std::size_t>(n));
  ::close(pfd[0]);
  int st = 0;
  ASSERT_EQ(::waitpid(child, &st, 0), child);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child status " << st;
  EXPECT_EQ(out, "ok");
}

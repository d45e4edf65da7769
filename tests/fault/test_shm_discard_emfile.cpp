// shm peek|discard of a rendezvous message while the receiver is out of file
// descriptors: discarding acknowledges the sender, which the receiver cannot
// map now (EMFILE). The discard is refused with again (back-pressure) rather
// than dropping the ack its live sender would wait for forever; once
// descriptors are back it works and the send completes.
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

// Runs in a forked child (the limit is per process); failures come back as text.
std::string discard_scenario() {
  ::setenv("WEFT_SHM_SLOTS", "16", 1);
  rlimit rl{64, 64};
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return "setrlimit failed";
  // receiver and sender in domains of their own: the receiver has not mapped the sender
  node r = open_node("shm");
  node s = open_node("shm");
  auto d = s.av.insert(*r.ep.name());
  if (!d) return "insert: " + d.error().message;
  // UBSan's vptr check proves an object's memory readable with a pipe the
  // first time it meets a (class, static type) pair, which it cannot make
  // with no descriptor left (a false "invalid vptr"): meet the pairs the
  // scenario uses (endpoint and CQ data-path interfaces) before.
  int warm = 0;
  if (r.ep.cancel(&warm) != errc::not_found) return "cancel of nothing posted";
  r.cq.progress();
  s.cq.progress();
  std::vector<int> filler;
  for (;;) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    filler.push_back(fd);
  }
  if (errno != EMFILE) return "descriptors not exhausted with EMFILE";
  std::vector<char> big(64 * 1024, 'x');
  int sctx = 0, dctx = 0;
  if (errc e = s.ep.tsend(big.data(), big.size(), *d, 0x77, &sctx); e != errc::ok)
    return std::string("tsend: ") + std::string(to_string(e));
  char one = 0;
  ::iovec v{&one, 1};
  msg_desc m{&v, 1, addr_unspec, 0x77, 0, 0, &dctx};
  // peek takes the announcement in; the sender cannot be acknowledged yet
  const errc first = r.ep.trecvmsg(m, flag::peek | flag::discard);
  std::string out;
  if (first != errc::again)
    out += std::string("discard while the sender cannot be mapped: ") + std::string(to_string(first)) +
           " (expected again)\n";
  else if (r.ep.again_reason() != again_reason::no_resources)
    out += std::string("again_reason: ") + to_string(r.ep.again_reason()) + " (expected no_resources)\n";
  for (int fd : filler) ::close(fd);
  if (first == errc::again) {
    const errc again = r.ep.trecvmsg(m, flag::peek | flag::discard);
    if (again != errc::ok) out += std::string("discard with descriptors back: ") + std::string(to_string(again)) + "\n";
  }
  int rgot = 0, sgot = 0;
  for (auto until = clk::now() + std::chrono::seconds(10); (rgot < 1 || sgot < 1) && clk::now() < until;) {
    cq_entry e{};
    errc x = r.cq.read(e);
    if (x == errc::ok) {
      if (e.context != &dctx) out += "receiver: unexpected completion\n";
      ++rgot;
    } else if (x == errc::error_available) {
      cq_err_entry ee{};
      (void)r.cq.read_error(ee);
      out += std::string("receiver error: ") + ee.msg + "\n";
      ++rgot;
    }
    x = s.cq.read(e);
    if (x == errc::ok) {
      if (e.context != &sctx) out += "sender: unexpected completion\n";
      ++sgot;
    } else if (x == errc::error_available) {
      cq_err_entry ee{};
      (void)s.cq.read_error(ee);
      out += std::string("sender error: ") + ee.msg + "\n";
      ++sgot;
    }
  }
  if (rgot != 1) out += "receiver completions: " + std::to_string(rgot) + " (expected the discard's one)\n";
  if (sgot != 1) out += "sender completions: " + std::to_string(sgot) + " (its ack was dropped)\n";
  return out.empty() ? "ok" : out;
}

}  // namespace

TEST(shm_discard_emfile, discarding_a_message_whose_sender_cannot_be_mapped_is_again_not_a_lost_ack) {
  int pfd[2];
  ASSERT_EQ(::pipe(pfd), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    forked_child();
    ::close(pfd[0]);
    const std::string res = discard_scenario();
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

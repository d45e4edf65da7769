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

#include "common/limited_child.hpp"
#include "fault/shm_peer.hpp"

using namespace weft;
using namespace weft::test;
using clk = std::chrono::steady_clock;

namespace {

// Runs in a forked child (the limit is per process); failures come back as text.
std::string discard_scenario() {
  ::setenv("WEFT_SHM_SLOTS", "16", 1);
  if (!limit_descriptors(64)) return "setrlimit failed";
  // receiver and sender in domains of their own: the receiver has not mapped the sender
  node r = open_node("shm");
  node s = open_node("shm");
  auto d = s.av.insert(*r.ep.name());
  if (!d) return "insert: " + d.error().message;
  if (!warm_up({&r, &s})) return "cancel of nothing posted";
  bool exhausted = false;
  std::vector<int> filler = use_up_descriptors(exhausted);
  if (!exhausted) return "descriptors not exhausted with EMFILE";
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
  give_back(filler);
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
  const child_verdict v = run_in_child(discard_scenario);
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

// shm two-sided RMA while the target is out of file descriptors: a request
// whose initiator the target cannot map yet (EMFILE) is not dropped (its
// initiator, alive, would wait for the answer forever); it stays in the
// request ring and is answered once descriptors are back.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "common/limited_child.hpp"
#include "fault/shm_peer.hpp"

using namespace weft;
using namespace weft::test;
using clk = std::chrono::steady_clock;

namespace {

// Runs in a forked child (the limit is per process); failures come back as text.
std::string emfile_scenario() {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  ::setenv("WEFT_SHM_SLOTS", "16", 1);
  if (!limit_descriptors(64)) return "setrlimit failed";
  // target and initiator in domains of their own: the target has not mapped the initiator
  node t = open_node("shm", cap::msg);
  if (!(t.inf.caps & cap::rma)) return "skip";
  node c = open_node("shm", cap::msg);
  std::uint64_t mem[2] = {0, 0};
  auto m = t.dom.register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  if (!m) return "register: " + m.error().message;
  auto d = c.av.insert(*t.ep.name());
  if (!d) return "insert: " + d.error().message;
  if (!warm_up({&c, &t})) return "cancel of nothing";

  bool exhausted = false;
  std::vector<int> filler = use_up_descriptors(exhausted);
  if (!exhausted) return "descriptors not exhausted with EMFILE";

  // A commit-level write and an atomic on malloc'd memory: both answered by the target.
  const std::uint64_t val = 0x1122334455667788ull, one = 1;
  ::iovec v{const_cast<std::uint64_t*>(&val), sizeof val};
  int wctx = 0, actx = 0;
  rma_desc w{&v, 1, *d, 0, *m->key(), &wctx};
  if (errc r = c.ep.writemsg(w, flag::commit_complete); r != errc::ok)
    return std::string("write posted: ") + std::string(to_string(r));
  if (errc r = c.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, *d, sizeof(std::uint64_t), *m->key(), &actx);
      r != errc::ok)
    return std::string("atomic posted: ") + std::string(to_string(r));
  // Both requests are in the target's request ring: one progress call of the
  // target takes them in while it cannot map the initiator.
  t.cq.progress();
  give_back(filler);

  cq_log cl;
  for (auto until = clk::now() + std::chrono::seconds(10); cl.ok.size() + cl.err.size() < 2 && clk::now() < until;) {
    t.cq.progress();
    cq_entry e{};
    const errc r = c.cq.read(e);
    if (r == errc::ok) cl.ok.push_back(e);
    if (r == errc::error_available) {
      cq_err_entry ee{};
      if (c.cq.read_error(ee) == errc::ok) cl.err.push_back(ee);
    }
  }
  std::string out;
  for (auto& e : cl.err) out += std::string("error completion: ") + e.msg + "\n";
  if (cl.ok.size() != 2) out += "completions: " + std::to_string(cl.ok.size()) + " of 2 (a request was dropped)\n";
  if (mem[0] != val) out += "the write did not land\n";
  if (mem[1] != 1) out += "the atomic did not land\n";
  return out.empty() ? "ok" : out;
}

}  // namespace

TEST(shm_rma_emfile, a_request_the_target_cannot_map_its_initiator_for_is_answered_later) {
  const child_verdict v = run_in_child(emfile_scenario);
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  if (v.text == "skip") GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  EXPECT_EQ(v.text, "ok");
}

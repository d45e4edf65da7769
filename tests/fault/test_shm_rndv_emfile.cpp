// shm rendezvous while the receiver is out of file descriptors: a large
// message matched while its sender cannot be mapped (EMFILE) would need a
// cts or an ack the receiver cannot send. It is not failed (its live sender
// would wait for an answer forever): an announcement matching a posted
// receive waits in the ring, and a receive posted for an arrived one returns
// again; once descriptors are back both complete, at both ends
// (fault/shm_unmappable.hpp).
#include <cstdlib>
#include <string>
#include <vector>

#include "fault/shm_unmappable.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// Runs in a forked child (the limit is per process); failures come back as text.
std::string rndv_scenario() {
  ::setenv("WEFT_SHM_SLOTS", "16", 1);
  if (!limit_descriptors(64)) return "setrlimit failed";
  std::vector<int> filler;
  return unmappable_sender_scenario(
      [&]() -> std::string {
        bool exhausted = false;
        filler = use_up_descriptors(exhausted);
        return exhausted ? "" : "descriptors not exhausted with EMFILE";
      },
      [&] { give_back(filler); });
}

}  // namespace

TEST(shm_rndv_emfile, a_message_whose_sender_cannot_be_mapped_waits_instead_of_failing) {
  const child_verdict v = run_in_child(rndv_scenario);
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

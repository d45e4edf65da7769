// shm: an initiator maps a peer's alloc_memory segments for one-sided RMA
// and keeps the mappings (the 64 most recent per peer). A segment the peer
// freed stayed mapped here until evicted, so its shared memory was not
// returned to the system. Now the owner says in its region that it revoked
// a segment's key (segs_freed) and the initiator unmaps such segments at its
// next lookup of another one: a peer that allocates, is written and frees
// segments over and over leaves at most the live one mapped here.
#include <sys/mman.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// Mappings of weft memory segments (domain::alloc_memory) in this process.
int segment_mappings() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(f, line))
    if (line.find("/dev/shm/weft.") != std::string::npos && line.find(".mem.") != std::string::npos) ++n;
  return n;
}

}  // namespace

TEST(shm_peer_segs_freed, an_initiator_keeps_no_mapping_of_segments_its_peer_freed) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  node a = open_node("shm", cap::msg);
  if (!(a.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  node b = open_node("shm", cap::msg);  // the peer (here, in this process: its own mapping counts too)
  const fi_addr_t to = insert(a, b);
  ASSERT_EQ(segment_mappings(), 0);
  constexpr int rounds = 100;  // more than the 64 the cache keeps
  // A freed segment's address is kept taken (a placeholder mapping): the
  // memory monitor reports the segment's munmap a little later, and would
  // invalidate a new segment registered at the same address meanwhile
  // (a registry matter this test is not about).
  std::vector<void*> taken;
  for (int i = 0; i < rounds; ++i) {
    auto m = b.dom.alloc_memory(4096, access::remote_write | access::remote_read);
    ASSERT_TRUE(m) << m.error().message;
    auto key = m->key();
    ASSERT_TRUE(key);
    auto base = m->addr();
    ASSERT_TRUE(base);
    const auto out = pattern(512, static_cast<unsigned>(i));
    ASSERT_EQ(post([&] { return a.ep.write(out.data(), out.size(), to, 64, *key, nullptr); }, {&a, &b}), errc::ok);
    const outcome o = next(a, {&b});
    ASSERT_TRUE(o.ok) << "round " << i << ": " << (o.error ? o.err.msg : "no completion");
    ASSERT_EQ(std::memcmp(static_cast<unsigned char*>(*base) + 64, out.data(), out.size()), 0) << "round " << i;
    // The live segment only: the peer's own mapping and ours.
    ASSERT_LE(segment_mappings(), 2) << "round " << i << ": segments the peer freed are still mapped here";
    m->close();  // the peer frees it
    void* hole = ::mmap(*base, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (hole != MAP_FAILED) taken.push_back(hole);
  }
  EXPECT_LE(segment_mappings(), 1) << "only our mapping of the last segment may remain";
  for (void* h : taken) ::munmap(h, 4096);
}

// shm: a region of memory the domain allocated (domain::alloc_memory) is
// unmapped once its close returns, and the memory monitor reports that
// unmap a little later. The registry kept the closed region's entry cached
// and subscribed, so the late report met the subscription and revoked the
// new region the next allocation registered at the same address: a peer's
// one-sided write into it then failed (not_found). Entries that own their
// memory are no longer cached: their subscription goes with the close.
// Allocate, be written, free, over and over at the same address: every
// write lands.
#include <cstring>

#include "common/harness.hpp"

using namespace weft;
using namespace weft::test;

TEST(shm_segs_reused, a_segment_allocated_where_a_freed_one_was_stays_writable) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  node a = open_node("shm", cap::msg);
  if (!(a.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  node b = open_node("shm", cap::msg);  // the peer that allocates
  const fi_addr_t to = insert(a, b);
  constexpr int rounds = 100;
  void* last = nullptr;
  int reused = 0;  // rounds whose segment came at the freed one's address
  for (int i = 0; i < rounds; ++i) {
    auto m = b.dom.alloc_memory(4096, access::remote_write | access::remote_read);
    ASSERT_TRUE(m) << m.error().message;
    auto key = m->key();
    ASSERT_TRUE(key);
    auto base = m->addr();
    ASSERT_TRUE(base);
    reused += *base == last;
    last = *base;
    const auto out = pattern(512, static_cast<unsigned>(i));
    ASSERT_EQ(post([&] { return a.ep.write(out.data(), out.size(), to, 64, *key, nullptr); }, {&a, &b}), errc::ok);
    const outcome o = next(a, {&b});
    ASSERT_TRUE(o.ok) << "round " << i << " (" << reused << " at a freed segment's address so far): "
                      << (o.error ? o.err.msg : "no completion");
    ASSERT_EQ(std::memcmp(static_cast<unsigned char*>(*base) + 64, out.data(), out.size()), 0) << "round " << i;
    m->close();  // the peer frees it: its address is free for the next round
  }
  EXPECT_GT(reused, 0) << "no segment came at a freed one's address: the case was not exercised";
}

// tcp: two peers reading from each other at once. A target stops reading a
// connection while it owes 32 answers on it; when both did so, each waiting
// for the other to read its answers, both stalled for good (then the user
// timeout declared each peer dead). The initiator now keeps at most 32
// requests awaiting answers per connection (credits): the others wait in its
// queue, and a target never has to stop reading.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "common/harness.hpp"

namespace weft::test {
namespace {

using clock_type = std::chrono::steady_clock;

constexpr std::size_t mib = std::size_t{1} << 20;
constexpr std::size_t region_len = 4 * mib;
constexpr int reads = 64;

struct reader {
  node n;
  std::vector<unsigned char> region;
  memory_region mr;
  std::vector<unsigned char> local;
  fi_addr_t peer = addr_unspec;
  int posted = 0, done = 0, failed = 0;
  std::string why;
};

void fill(std::vector<unsigned char>& v, unsigned seed) {
  for (std::size_t k = 0; k < v.size(); ++k) v[k] = static_cast<unsigned char>((k * 131 + seed) ^ (k >> 12));
}

TEST(tcp_read_credits, two_peers_reading_from_each_other_do_not_deadlock) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  reader a, b;
  a.n = open_node("tcp", cap::msg | cap::rma);
  b.n = open_node("tcp", cap::msg | cap::rma);
  ASSERT_TRUE(a.n.ep && b.n.ep);
  a.peer = insert(a.n, b.n);
  b.peer = insert(b.n, a.n);
  for (auto* r : {&a, &b}) {
    r->region.resize(region_len);
    fill(r->region, r == &a ? 1 : 2);
    auto m = r->n.dom.register_memory(r->region.data(), r->region.size(), access::remote_read);
    ASSERT_TRUE(m) << m.error().message;
    r->mr = std::move(*m);
    r->local.assign(reads * mib, 0);
  }
  const std::uint64_t a_key = *a.mr.key(), b_key = *b.mr.key();
  auto drive = [&](reader& r) {
    cq_entry e;
    errc st;
    while ((st = r.n.cq.read(e)) == errc::ok) ++r.done;
    if (st == errc::error_available) {
      cq_err_entry ee;
      if (r.n.cq.read_error(ee) == errc::ok) {
        ++r.failed;
        r.why = ee.msg;
      }
    }
  };
  // Both post all their reads (posting again after again), then both are driven.
  const auto deadline = clock_type::now() + std::chrono::seconds(60);
  while (clock_type::now() < deadline && (a.done + a.failed < reads || b.done + b.failed < reads)) {
    for (auto* r : {&a, &b}) {
      reader& peer = r == &a ? b : a;
      const std::uint64_t key = r == &a ? b_key : a_key;
      (void)peer;
      while (r->posted < reads) {
        const std::size_t k = static_cast<std::size_t>(r->posted);
        const errc st = r->n.ep.read(r->local.data() + k * mib, mib, r->peer, (k % 4) * mib, key);
        if (st == errc::again) break;
        ASSERT_EQ(st, errc::ok);
        ++r->posted;
      }
      drive(*r);
    }
    if (a.failed || b.failed) break;
  }
  EXPECT_EQ(a.failed, 0) << a.why;
  EXPECT_EQ(b.failed, 0) << b.why;
  ASSERT_EQ(a.done, reads) << "A's reads of B did not all complete (posted " << a.posted << ")";
  ASSERT_EQ(b.done, reads) << "B's reads of A did not all complete (posted " << b.posted << ")";
  for (int k = 0; k < reads; ++k) {
    const std::size_t off = (static_cast<std::size_t>(k) % 4) * mib;
    EXPECT_EQ(std::memcmp(a.local.data() + k * mib, b.region.data() + off, mib), 0) << "A's read " << k;
    EXPECT_EQ(std::memcmp(b.local.data() + k * mib, a.region.data() + off, mib), 0) << "B's read " << k;
  }
}

}  // namespace
}  // namespace weft::test

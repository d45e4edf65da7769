// shm: a large receive copies in bounded steps driven by progress (CQ reads),
// never all at once inside the call that posts the receive or inside one
// progress call (docs/wire/shm.md, "Copy steps"). Counts and bytes decide,
// not timings.
#include <algorithm>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

std::vector<variant> shm_variants() {
  std::vector<variant> v;
  for (auto& x : all_variants())
    if (x.provider == "shm") v.push_back(x);
  return v;
}

constexpr std::size_t big = std::size_t{64} << 20;
constexpr unsigned char untouched = 0xee;

class shm_large_recv : public ::testing::TestWithParam<variant> {
 protected:
  void SetUp() override {
    apply(GetParam());
    a = open_node("shm", cap::msg | cap::tagged);
    b = open_node("shm", cap::msg | cap::tagged);
    a2b = insert(a, b);
    insert(b, a);
    src = pattern(big, 41);
    dst.assign(big, untouched);
  }
  // Reads b's CQ (each read drives b's progress; a is driven in between)
  // until the receive completes; returns how many reads that took.
  int reads_until_received(outcome& o) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (int reads = 1; std::chrono::steady_clock::now() < until; ++reads) {
      const errc r = b.cq.read(o.e);
      if (r == errc::ok) {
        o.ok = true;
        return reads;
      }
      if (r == errc::error_available) {
        (void)b.cq.read_error(o.err);
        o.error = true;
        return reads;
      }
      a.cq.progress();
    }
    ADD_FAILURE() << "the receive did not complete within 30 s";
    return 0;
  }
  void finish_sender() {
    outcome t = next(a, {&b});
    EXPECT_TRUE(t.ok) << t.err.msg;
  }
  node a, b;
  fi_addr_t a2b = addr_unspec;
  std::vector<unsigned char> src, dst;
};

}  // namespace

TEST_P(shm_large_recv, receive_of_an_arrived_message_only_starts_the_transfer) {
  int sctx = 0, rctx = 0;
  ASSERT_EQ(a.ep.tsend(src.data(), big, a2b, 0x64, &sctx), errc::ok);
  b.cq.progress();  // the announcement is in b's ring once tsend returned: b takes it as unexpected
  ASSERT_EQ(b.ep.trecv(dst.data(), big, addr_unspec, 0x64, 0, &rctx), errc::ok);
  EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](unsigned char c) { return c == untouched; }))
      << "trecv copied message bytes itself instead of leaving the copy to progress";
  outcome o;
  const int reads = reads_until_received(o);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(o.e.context, &rctx);
  EXPECT_EQ(o.e.len, big);
  EXPECT_GT(reads, 1) << "the whole message was copied in one progress call";
  EXPECT_TRUE(dst == src) << "the received bytes differ";
  finish_sender();
}

TEST_P(shm_large_recv, message_arriving_for_a_posted_receive_is_copied_in_steps) {
  int rctx = 0;
  ASSERT_EQ(b.ep.recv(dst.data(), big, addr_unspec, &rctx), errc::ok);
  ASSERT_EQ(a.ep.send(src.data(), big, a2b, nullptr), errc::ok);
  b.cq.progress();  // matches the announcement and starts the transfer
  EXPECT_FALSE(dst == src) << "one progress call copied the whole message";
  outcome o;
  const int reads = reads_until_received(o);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(o.e.context, &rctx);
  EXPECT_GT(reads, 1);
  EXPECT_TRUE(dst == src) << "the received bytes differ";
  finish_sender();
}

TEST_P(shm_large_recv, claimed_message_is_copied_from_progress) {
  ASSERT_EQ(a.ep.tsend(src.data(), big, a2b, 0x65, nullptr), errc::ok);
  b.cq.progress();
  int pctx = 0;
  ::iovec none{nullptr, 0};
  msg_desc peek{&none, 0, addr_unspec, 0x65, 0, 0, &pctx};
  ASSERT_EQ(b.ep.trecvmsg(peek, flag::peek | flag::claim), errc::ok);
  outcome p = next(b, {&a});
  ASSERT_TRUE(p.ok) << p.err.msg;
  EXPECT_EQ(p.e.len, big);
  ::iovec v{dst.data(), big};
  msg_desc claim{&v, 1, addr_unspec, 0x65, 0, 0, &pctx};
  ASSERT_EQ(b.ep.trecvmsg(claim, flag::claim), errc::ok);
  EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](unsigned char c) { return c == untouched; }))
      << "the claim copied message bytes itself instead of leaving the copy to progress";
  outcome o;
  ASSERT_GT(reads_until_received(o), 1);
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_TRUE(dst == src) << "the received bytes differ";
  finish_sender();
}

INSTANTIATE_TEST_SUITE_P(providers, shm_large_recv, ::testing::ValuesIn(shm_variants()),
                         [](const auto& i) { return i.param.name; });

#pragma once
// The fixture of the message conformance suite (test_msg.cpp,
// test_msg_waits_and_misuse.cpp): two nodes of one provider variant that
// know each other. Instantiated once, in test_msg.cpp.
#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

class conformance : public ::testing::TestWithParam<variant> {
 protected:
  void SetUp() override {
    apply(GetParam());
    a = open_node(GetParam().provider, cap::msg | cap::tagged | cap::source | cap::directed_recv);
    b = open_node(GetParam().provider, cap::msg | cap::tagged | cap::source | cap::directed_recv);
    ASSERT_TRUE(a.ep && b.ep);
    a2b = insert(a, b);
    b2a = insert(b, a);
  }
  // Sends from a to b and checks the received bytes.
  void round_trip(std::size_t size, bool tagged) {
    auto src = pattern(size, static_cast<unsigned>(size));
    std::vector<unsigned char> dst(size + 16, 0xee);
    int rctx = 0, sctx = 0;
    if (tagged) ASSERT_EQ(b.ep.trecv(dst.data(), size, addr_unspec, 0x77, 0, &rctx), errc::ok);
    else ASSERT_EQ(b.ep.recv(dst.data(), size, addr_unspec, &rctx), errc::ok);
    errc s = post([&] { return tagged ? a.ep.tsend(src.data(), size, a2b, 0x77, &sctx)
                                      : a.ep.send(src.data(), size, a2b, &sctx); },
                  {&b});
    ASSERT_EQ(s, errc::ok);
    outcome r = next(b, {&a});
    ASSERT_TRUE(r.ok) << r.err.msg;
    EXPECT_EQ(r.e.context, &rctx);
    EXPECT_EQ(r.e.len, size);
    EXPECT_TRUE(r.e.flags & flag::recv);
    EXPECT_TRUE(r.e.flags & (tagged ? flag::tagged : flag::msg));
    if (tagged) {
      EXPECT_EQ(r.e.tag, 0x77u);
    }
    EXPECT_EQ(r.e.src, b2a) << "cap::source reports the sender";
    EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin())) << "payload differs at size " << size;
    EXPECT_EQ(dst[size], 0xee) << "wrote past the message";
    outcome t = next(a, {&b});
    ASSERT_TRUE(t.ok) << t.err.msg;
    EXPECT_EQ(t.e.context, &sctx);
    EXPECT_TRUE(t.e.flags & flag::send);
  }
  node a, b;
  fi_addr_t a2b = addr_unspec, b2a = addr_unspec;
};


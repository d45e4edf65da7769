#pragma once
// Two nodes of one provider variant, b's memory registered for a's RMA: the
// fixture of the RMA conformance tests. Skips variants without cap::rma.
#include <vector>

#include "harness.hpp"

namespace weft::test {

class rma_pair : public ::testing::TestWithParam<variant> {
 protected:
  void open_pair(std::size_t target_len) {
    apply(GetParam());
    a = open_node(GetParam().provider, cap::msg);
    b = open_node(GetParam().provider, cap::msg);
    if (!(a.inf.caps & cap::rma)) GTEST_SKIP() << GetParam().name << " has no RMA in this mode";
    a2b = insert(a, b);
    insert(b, a);
    target.assign(target_len, 0x5a);
    auto m = b.dom.register_memory(target.data(), target.size(), access::remote_read | access::remote_write);
    ASSERT_TRUE(m) << m.error().message;
    mr = std::move(*m);
  }
  // next completion at the initiator, driving the target
  outcome done() { return next(a, {&b}); }
  node a, b;
  fi_addr_t a2b = addr_unspec;
  std::vector<unsigned char> target;
  memory_region mr;
};

}  // namespace weft::test

// The commit handler on every provider with cap::rma: a handler that throws
// fails the initiator's commit with io_error, the process goes on, and the
// next commit is answered by the handler again.
#include <stdexcept>

#include "../common/rma_pair.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class commit_handler_test : public rma_pair {
 protected:
  void SetUp() override { open_pair(4096); }
};

TEST_P(commit_handler_test, a_throwing_handler_fails_the_commit_with_io_error) {
  bool throw_now = true;
  int calls = 0;
  ASSERT_TRUE(b.dom.set_commit_handler([&](const commit_event&) -> errc {
    ++calls;
    if (throw_now) throw std::runtime_error("the application's handler failed");
    return errc::ok;
  }));
  unsigned char x = 7;
  ::iovec v{&x, 1};
  rma_desc d{&v, 1, a2b, 10, *mr.key(), nullptr};
  ASSERT_EQ(a.ep.writemsg(d, flag::commit_complete), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.error) << "a commit whose handler threw cannot succeed";
  EXPECT_EQ(o.err.err, errc::io_error) << o.err.msg;
  EXPECT_EQ(calls, 1);
  throw_now = false;
  ASSERT_EQ(a.ep.save(a2b, *mr.key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(target[10], 7);
}

INSTANTIATE_TEST_SUITE_P(providers, commit_handler_test, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

}  // namespace

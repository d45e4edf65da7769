// last_error_message(): data-path errors the application causes carry text
// that says what is wrong and what to do, on every provider.
#include <thread>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class last_error : public ::testing::TestWithParam<variant> {
 protected:
  void SetUp() override {
    apply(GetParam());
    a = open_node(GetParam().provider);
    b = open_node(GetParam().provider);
    a2b = insert(a, b);
  }
  static bool says(const std::string& what) {
    return std::string(last_error_message()).find(what) != std::string::npos;
  }
  node a, b;
  fi_addr_t a2b = addr_unspec;
};

TEST_P(last_error, send_to_an_address_not_in_the_av) {
  char buf[8] = {};
  ASSERT_EQ(a.ep.send(buf, sizeof buf, 12345), errc::invalid_argument);
  EXPECT_TRUE(says("send: fi_addr 12345 is not in the address vector")) << last_error_message();
  EXPECT_TRUE(says("insert the peer's address first")) << last_error_message();
  ASSERT_EQ(a.ep.tsend(buf, sizeof buf, 777, 1), errc::invalid_argument);
  EXPECT_TRUE(says("send: fi_addr 777 is not in the address vector")) << last_error_message();
  // a removed entry no longer works, and says so
  ASSERT_TRUE(a.av.remove(a2b));
  ASSERT_EQ(a.ep.inject(buf, sizeof buf, a2b), errc::invalid_argument);
  EXPECT_TRUE(says("is not in the address vector")) << last_error_message();
  // a directed receive from an unknown source
  ASSERT_EQ(b.ep.recv(buf, sizeof buf, 4242), errc::invalid_argument);
  EXPECT_TRUE(says("receive: fi_addr 4242 is not in the address vector")) << last_error_message();
  if (a.inf.caps & cap::rma) {
    ASSERT_EQ(a.ep.write(buf, sizeof buf, 999, 0, 1), errc::invalid_argument);
    EXPECT_TRUE(says("RMA: fi_addr 999 is not in the address vector")) << last_error_message();
  }
}

TEST_P(last_error, bad_iov_closed_endpoint_and_misuse_say_what_is_wrong) {
  char buf[8] = {};
  std::vector<::iovec> many(a.inf.tx.iov_limit + 1, ::iovec{buf, 1});
  ASSERT_EQ(a.ep.sendv(many, a2b), errc::invalid_argument);
  EXPECT_TRUE(says("iov entries: at most")) << last_error_message();
  ::iovec v{buf, 8};
  ASSERT_EQ(b.ep.recvmsg(msg_desc{&v, 1, addr_unspec, 0, 0, 0, nullptr}, flag::peek), errc::invalid_argument);
  EXPECT_TRUE(says("peek and claim are tagged operations")) << last_error_message();
  ASSERT_EQ(b.ep.cancel(&v), errc::not_found);
  EXPECT_TRUE(says("no posted receive has this context")) << last_error_message();
  std::vector<char> big(a.inf.tx.inject_size + 1);
  ASSERT_EQ(a.ep.inject(big.data(), big.size(), a2b), errc::too_big);
  EXPECT_TRUE(says("tx.inject_size")) << last_error_message();
  const double d = 1;
  ASSERT_EQ(a.ep.atomic(atomic_op::bxor, atomic_type::f64, &d, 1, a2b, 0, 1), errc::invalid_argument);
  EXPECT_TRUE(says("not defined on f32 and f64")) << last_error_message();
  ASSERT_EQ(a.ep.save(a2b, 1, flag::send), errc::invalid_argument);
  EXPECT_TRUE(says("save: the level")) << last_error_message();
  // an endpoint that is not enabled, then a closed one
  auto e = a.dom.open_endpoint(a.inf);
  ASSERT_TRUE(e);
  ASSERT_EQ(e->send(buf, sizeof buf, a2b), errc::bad_state);
  EXPECT_TRUE(says("not enabled")) << last_error_message();
  e->close();
  ASSERT_EQ(e->send(buf, sizeof buf, a2b), errc::bad_state);
  EXPECT_TRUE(says("the endpoint is closed")) << last_error_message();
  completion_queue closed_cq;
  cq_entry ce;
  ASSERT_EQ(closed_cq.read(ce), errc::bad_state);
  EXPECT_TRUE(says("the completion queue is closed")) << last_error_message();
}

TEST(last_error_thread, each_thread_has_its_own) {
  endpoint closed;
  char buf[1];
  ASSERT_EQ(closed.send(buf, 1, 0), errc::bad_state);
  const std::string mine = last_error_message();
  EXPECT_NE(mine.find("the endpoint is closed"), std::string::npos);
  std::string theirs = "unset";
  std::thread t([&] { theirs = last_error_message(); });
  t.join();
  EXPECT_EQ(theirs, "") << "another thread has not failed yet";
  EXPECT_EQ(mine, last_error_message()) << "a success elsewhere does not clear it";
}

INSTANTIATE_TEST_SUITE_P(providers, last_error, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

}  // namespace

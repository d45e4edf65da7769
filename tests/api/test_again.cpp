// errc::again says what to do: endpoint::again_reason() tells the causes
// apart (a full CQ, a full transmit or receive queue, a peer that has not
// consumed yet), and the retry each one documents works.
#include <stdlib.h>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// Sets an environment variable for one test, and puts the old value back.
struct env_guard {
  std::string name;
  std::optional<std::string> old;
  env_guard(const char* n, const char* v) : name(n) {
    if (const char* o = ::getenv(n)) old = o;
    ::setenv(n, v, 1);
  }
  ~env_guard() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

class again_test : public ::testing::TestWithParam<variant> {
 protected:
  void SetUp() override { apply(GetParam()); }
  bool shm() const { return GetParam().provider == "shm"; }
};

TEST(again_text, to_string_says_to_read_the_completion_queue) {
  const std::string s = to_string(errc::again);
  EXPECT_NE(s.find("read the completion queue"), std::string::npos) << s;
  EXPECT_EQ(s.find("drive progress and retry"), std::string::npos) << "progress() takes no completions: " << s;
  EXPECT_NE(std::string(to_string(again_reason::peer_busy)).find("wait on the completion queue"), std::string::npos);
  EXPECT_EQ(endpoint{}.again_reason(), again_reason::none);
}

TEST_P(again_test, full_cq_is_cq_full_and_reading_the_cq_makes_room) {
  node a = open_node(GetParam().provider, cap::msg | cap::tagged, 0, false, 2);
  node b = open_node(GetParam().provider);
  const fi_addr_t to = insert(a, b);
  char m[8] = "x";
  EXPECT_EQ(a.ep.again_reason(), again_reason::none);
  ASSERT_EQ(a.ep.send(m, sizeof m, to), errc::ok);
  ASSERT_EQ(a.ep.send(m, sizeof m, to), errc::ok);
  ASSERT_EQ(a.ep.send(m, sizeof m, to), errc::again) << "a CQ of 2 holds room for 2 completions";
  EXPECT_EQ(a.ep.again_reason(), again_reason::cq_full) << to_string(a.ep.again_reason());
  // read the CQ: that frees room (and drives progress); then the retry works
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(next(a, {&b}).ok);
  ASSERT_EQ(a.ep.send(m, sizeof m, to), errc::ok);
  ASSERT_TRUE(next(a, {&b}).ok);
}

TEST_P(again_test, full_receive_queue_is_rx_full_and_a_completion_makes_room) {
  std::vector<char> buf(16);  // first: it outlives the receives still posted when b closes
  int ctx[1024];
  node b = open_node(GetParam().provider);
  std::size_t posted = 0;
  errc r = errc::ok;
  for (; posted < 1024; ++posted)
    if ((r = b.ep.recv(buf.data(), buf.size(), addr_unspec, &ctx[posted])) != errc::ok) break;
  ASSERT_EQ(r, errc::again);
  EXPECT_EQ(posted, b.inf.rx.size) << "rx.size receives may be posted";
  EXPECT_EQ(b.ep.again_reason(), again_reason::rx_full) << to_string(b.ep.again_reason());
  // a receive that completes (here: canceled) frees its place
  ASSERT_EQ(b.ep.cancel(&ctx[0]), errc::ok);
  outcome o = next(b);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::canceled);
  EXPECT_EQ(b.ep.recv(buf.data(), buf.size(), addr_unspec, &ctx[0]), errc::ok);
}

TEST_P(again_test, operations_in_flight_fill_the_transmit_queue_tx_full) {
  // shm: more ring slots than operations, so the transmit queue fills first
  env_guard slots("WEFT_SHM_SLOTS", "512");
  // large messages the receiver has not taken: each one stays in flight
  // (declared first: the buffers outlive the endpoints that still send them)
  std::vector<char> big(shm() ? 65536 : (1 << 20), 'q'), in(big.size());
  node a = open_node(GetParam().provider);
  node b = open_node(GetParam().provider);
  const fi_addr_t to = insert(a, b);
  insert(b, a);
  std::size_t n = 0;
  errc r = errc::ok;
  for (; n < 1000; ++n)
    if ((r = a.ep.send(big.data(), big.size(), to)) != errc::ok) break;
  ASSERT_EQ(r, errc::again) << "after " << n << " sends";
  EXPECT_EQ(a.ep.again_reason(), again_reason::tx_full) << to_string(a.ep.again_reason()) << " after " << n;
  // the documented retry: read the CQ, then retry. Once the receiver takes
  // one message, a send completes and its completion frees its place (sends
  // that completed before the again only free CQ room: keep reading)
  ASSERT_EQ(b.ep.recv(in.data(), in.size()), errc::ok);
  for (std::size_t i = 0; i <= n && r == errc::again; ++i) {
    ASSERT_TRUE(next(a, {&b}).ok);
    r = a.ep.send(big.data(), big.size(), to);
  }
  EXPECT_EQ(r, errc::ok);
}

TEST_P(again_test, a_peer_that_has_not_consumed_is_peer_busy) {
  if (!shm()) GTEST_SKIP() << "tcp queues what the socket cannot take yet: its sends never wait for the peer";
  node a = open_node(GetParam().provider);
  node b = open_node(GetParam().provider);
  const fi_addr_t to = insert(a, b);
  char m[64] = "ring";
  std::size_t n = 0;
  errc r = errc::ok;
  for (; n < 10000; ++n)
    if ((r = a.ep.inject(m, sizeof m, to)) != errc::ok) break;
  ASSERT_EQ(r, errc::again) << "the peer's ring is full after " << n << " messages";
  EXPECT_EQ(a.ep.again_reason(), again_reason::peer_busy) << to_string(a.ep.again_reason());
  // the peer progresses (its CQ read moves the messages out of its ring): room again
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    b.cq.progress();
    r = a.ep.inject(m, sizeof m, to);
  } while (r == errc::again && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(r, errc::ok);
}

INSTANTIATE_TEST_SUITE_P(providers, again_test, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

}  // namespace

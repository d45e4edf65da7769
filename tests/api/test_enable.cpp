// enable() of an RDM endpoint without an address vector is refused with
// bad_state and says what to do; binding one then makes enable() and sends
// work. (It used to succeed, after which bind(av) failed and every send
// returned invalid_argument.)
#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class enable_test : public ::testing::TestWithParam<variant> {};

TEST_P(enable_test, rdm_endpoint_without_an_address_vector_is_refused_until_one_is_bound) {
  apply(GetParam());
  node peer = open_node(GetParam().provider);
  hints h;
  h.provider = GetParam().provider;
  h.type = ep_type::rdm;
  h.caps = cap::msg;
  if (GetParam().provider == "tcp") {
    h.node = "127.0.0.1";
    h.port = 0;
    h.source = true;
  }
  auto infos = get_info(h);
  ASSERT_TRUE(infos) << infos.error().message;
  const info& i = infos->front();
  auto fab = fabric::open(i);
  ASSERT_TRUE(fab);
  auto dom = fab->open_domain(i);
  ASSERT_TRUE(dom);
  auto cq = dom->open_cq(64);
  auto av = dom->open_av();
  auto ep = dom->open_endpoint(i);
  ASSERT_TRUE(cq && av && ep);
  ASSERT_TRUE(ep->bind(*cq));

  auto r = ep->enable();
  ASSERT_FALSE(r) << "an RDM endpoint without an address vector cannot name its peers";
  EXPECT_EQ(r.error().code, errc::bad_state);
  EXPECT_NE(r.error().message.find("bind an address vector before enable()"), std::string::npos)
      << r.error().message;

  auto b = ep->bind(*av);
  ASSERT_TRUE(b) << b.error().message;
  auto e = ep->enable();
  ASSERT_TRUE(e) << e.error().message;
  auto to = av->insert(*peer.ep.name());
  ASSERT_TRUE(to);
  char msg[16] = "after the AV", got[16] = {};
  ASSERT_EQ(peer.ep.recv(got, sizeof got), errc::ok);
  ASSERT_EQ(ep->send(msg, sizeof msg, *to), errc::ok);
  // the receiver's completion, driving the sender's progress too (tcp, manual)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  cq_entry ce;
  errc got_one = errc::again;
  while (got_one == errc::again && std::chrono::steady_clock::now() < deadline) {
    cq->progress();
    got_one = peer.cq.read(ce);
  }
  ASSERT_EQ(got_one, errc::ok);
  EXPECT_STREQ(got, "after the AV");
}

TEST(enable_msg, msg_endpoint_needs_no_address_vector) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  hints h;
  h.provider = "tcp";
  h.type = ep_type::msg;
  h.node = "127.0.0.1";
  h.port = 0;
  h.source = true;
  auto infos = get_info(h);
  ASSERT_TRUE(infos) << infos.error().message;
  auto fab = fabric::open(infos->front());
  ASSERT_TRUE(fab);
  auto dom = fab->open_domain(infos->front());
  ASSERT_TRUE(dom);
  auto cq = dom->open_cq(16);
  auto eq = dom->open_eq();
  auto ep = dom->open_endpoint(infos->front());
  ASSERT_TRUE(cq && eq && ep);
  ASSERT_TRUE(ep->bind(*cq));
  ASSERT_TRUE(ep->bind(*eq));
  auto e = ep->enable();
  EXPECT_TRUE(e) << e.error().message;
}

INSTANTIATE_TEST_SUITE_P(providers, enable_test, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

}  // namespace

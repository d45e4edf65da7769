// Local memory descriptors (mr_desc): what memory_region::desc() gives, and
// that every form taking descs moves the same bytes on shm and tcp, which
// need no registered local memory and ignore them.
#include <algorithm>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class mr_desc_test : public ::testing::TestWithParam<variant> {};

TEST(mr_desc, regions_have_distinct_descs_and_a_closed_one_has_none) {
  apply(all_variants().front());  // shm with cross-memory attach: it registers memory
  node n = open_node("shm");
  std::vector<char> a(4096), b(4096);
  auto ma = n.dom.register_memory(a.data(), a.size(), access::send | access::recv);
  auto mb = n.dom.register_memory(b.data(), b.size(), access::send);
  ASSERT_TRUE(ma && mb);
  EXPECT_NE(ma->desc(), mr_desc::none);
  EXPECT_NE(mb->desc(), mr_desc::none);
  EXPECT_NE(ma->desc(), mb->desc());
  ma->close();
  EXPECT_EQ(ma->desc(), mr_desc::none);
  EXPECT_EQ(memory_region{}.desc(), mr_desc::none);
  // the descriptor arrays are the last fields: older aggregate initialisations compile and leave them null
  ::iovec v{a.data(), 1};
  msg_desc m{&v, 1, 0, 0, 0, 0, nullptr};
  rma_desc r{&v, 1, 0, 0, 1, nullptr};
  EXPECT_EQ(m.desc, nullptr);
  EXPECT_EQ(r.desc, nullptr);
}

TEST_P(mr_desc_test, operations_with_descs_move_the_same_bytes) {
  apply(GetParam());
  node a = open_node(GetParam().provider);
  node b = open_node(GetParam().provider);
  const fi_addr_t a2b = insert(a, b);
  insert(b, a);
  auto src = pattern(20000, 3);
  std::vector<unsigned char> dst(src.size());
  auto ms = a.dom.register_memory(src.data(), src.size(), access::send | access::write);
  auto md = b.dom.register_memory(dst.data(), dst.size(), access::recv);
  if (a.inf.caps & cap::rma) {
    ASSERT_TRUE(ms && md);
  }
  // shm's segmented mode registers nothing: its operations get no descs
  const mr_desc sdesc = ms ? ms->desc() : mr_desc::none, ddesc = md ? md->desc() : mr_desc::none;

  // send / recv with one desc
  ASSERT_EQ(b.ep.recv(dst.data(), dst.size(), addr_unspec, nullptr, ddesc), errc::ok);
  ASSERT_EQ(post([&] { return a.ep.send(src.data(), src.size(), a2b, nullptr, sdesc); }, {&b}), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin()));

  // tagged, iov forms: one desc per iov entry
  std::fill(dst.begin(), dst.end(), 0);
  ::iovec sv[2] = {{src.data(), 100}, {src.data() + 100, src.size() - 100}};
  ::iovec rv[2] = {{dst.data(), 5000}, {dst.data() + 5000, dst.size() - 5000}};
  const mr_desc sd[2] = {sdesc, sdesc};
  const mr_desc rd[2] = {ddesc, ddesc};
  ASSERT_EQ(b.ep.trecvv(rv, addr_unspec, 7, 0, nullptr, rd), errc::ok);
  ASSERT_EQ(post([&] { return a.ep.tsendv(sv, a2b, 7, nullptr, sd); }, {&b}), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin()));

  // the *msg() form with desc set
  std::fill(dst.begin(), dst.end(), 0);
  ::iovec one{dst.data(), dst.size()};
  const mr_desc d1 = ddesc;
  msg_desc rm{&one, 1, addr_unspec, 0, 0, 0, nullptr, &d1};
  ASSERT_EQ(b.ep.recvmsg(rm, {}), errc::ok);
  ::iovec sone{src.data(), src.size()};
  const mr_desc s1 = sdesc;
  msg_desc sm{&sone, 1, a2b, 0, 0, 0, nullptr, &s1};
  ASSERT_EQ(post([&] { return a.ep.sendmsg(sm, {}); }, {&b}), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin()));

  if (!(a.inf.caps & cap::rma)) return;  // shm segmented: no RMA
  auto mt = b.dom.register_memory(dst.data(), dst.size(), access::remote_read | access::remote_write);
  ASSERT_TRUE(mt);
  std::fill(dst.begin(), dst.end(), 0);
  ASSERT_EQ(a.ep.write(src.data(), src.size(), a2b, 0, *mt->key(), nullptr, sdesc), errc::ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin()));
  std::vector<unsigned char> back(src.size());
  auto mback = a.dom.register_memory(back.data(), back.size(), access::read);
  ASSERT_TRUE(mback);
  ASSERT_EQ(a.ep.read(back.data(), back.size(), a2b, 0, *mt->key(), nullptr, mback->desc()), errc::ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  EXPECT_EQ(back, src);
  rma_desc wd{sv, 2, a2b, 0, *mt->key(), nullptr};
  wd.desc = sd;
  std::fill(dst.begin(), dst.end(), 0);
  ASSERT_EQ(a.ep.writemsg(wd, {}), errc::ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin()));
}

INSTANTIATE_TEST_SUITE_P(providers, mr_desc_test, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

}  // namespace

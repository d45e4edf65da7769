// RMA write and read against registered memory: data compared, every access
// checked against the target region's key, bounds and rights; violations
// complete with an error at the initiator and leave target memory untouched.
#include <random>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

class rma : public ::testing::TestWithParam<variant> {
 protected:
  void SetUp() override {
    apply(GetParam());
    a = open_node(GetParam().provider, cap::msg);
    b = open_node(GetParam().provider, cap::msg);
    if (!(a.inf.caps & cap::rma)) GTEST_SKIP() << GetParam().name << " has no RMA yet";
    a2b = insert(a, b);
    insert(b, a);
    target.assign(1 << 20, 0x5a);
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

TEST_P(rma, write_then_read_back) {
  for (std::size_t size : {std::size_t{1}, std::size_t{64}, std::size_t{8192}, std::size_t{300000}}) {
    SCOPED_TRACE(size);
    auto src = pattern(size, static_cast<unsigned>(size));
    const std::uint64_t off = 12345;
    int wctx = 0;
    ASSERT_EQ(a.ep.write(src.data(), size, a2b, off, mr.key(), &wctx), errc::ok);
    outcome w = done();
    ASSERT_TRUE(w.ok) << w.err.msg;
    EXPECT_EQ(w.e.context, &wctx);
    EXPECT_TRUE((w.e.flags & flag::rma) && (w.e.flags & flag::write));
    EXPECT_TRUE(std::equal(src.begin(), src.end(), target.begin() + off)) << "written into the target";
    EXPECT_EQ(target[off - 1], 0x5a);
    EXPECT_EQ(target[off + size], 0x5a) << "nothing beyond the range";
    std::vector<unsigned char> back(size);
    ASSERT_EQ(a.ep.read(back.data(), size, a2b, off, mr.key()), errc::ok);
    outcome r = done();
    ASSERT_TRUE(r.ok) << r.err.msg;
    EXPECT_TRUE(r.e.flags & flag::read);
    EXPECT_EQ(back, src);
  }
}

TEST_P(rma, iov_on_the_initiator) {
  auto src = pattern(100000, 7);
  ::iovec v[3] = {{src.data(), 10}, {src.data() + 10, 50000}, {src.data() + 50010, 49990}};
  ASSERT_EQ(a.ep.writev(v, a2b, 0, mr.key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), target.begin()));
  std::vector<unsigned char> x(30000), y(70000);
  ::iovec r[2] = {{x.data(), x.size()}, {y.data(), y.size()}};
  ASSERT_EQ(a.ep.readv(r, a2b, 0, mr.key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_TRUE(std::equal(x.begin(), x.end(), src.begin()));
  EXPECT_TRUE(std::equal(y.begin(), y.end(), src.begin() + 30000));
}

TEST_P(rma, violations_fail_at_the_initiator_and_leave_the_target_untouched) {
  const auto before = target;
  std::vector<unsigned char> buf(4096, 0xee);
  struct bad {
    std::uint64_t offset, key;
    std::size_t len;
    errc expect;
    const char* what;
  } cases[] = {
      {target.size() - 100, mr.key(), 4096, errc::invalid_argument, "runs past the end"},
      {~0ull - 10, mr.key(), 64, errc::invalid_argument, "offset overflow"},
      {0, mr.key() ^ 1, 64, errc::not_found, "wrong key"},
      {0, 0, 64, errc::not_found, "zero key"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_EQ(a.ep.write(buf.data(), c.len, a2b, c.offset, c.key), errc::ok);
    outcome o = done();
    ASSERT_TRUE(o.error);
    EXPECT_EQ(o.err.err, c.expect) << o.err.msg;
    EXPECT_NE(std::string(o.err.msg), "");
    ASSERT_EQ(a.ep.read(buf.data(), c.len, a2b, c.offset, c.key), errc::ok);
    o = done();
    ASSERT_TRUE(o.error);
    EXPECT_EQ(o.err.err, c.expect);
  }
  EXPECT_EQ(target, before) << "target memory untouched";
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](unsigned char x) { return x == 0xee; }))
      << "failed reads deliver nothing";
}

TEST_P(rma, permissions_and_closed_regions) {
  std::vector<unsigned char> ro(4096, 1), wo(4096, 2);
  auto rom = b.dom.register_memory(ro.data(), ro.size(), access::remote_read);
  auto wom = b.dom.register_memory(wo.data(), wo.size(), access::remote_write);
  ASSERT_TRUE(rom && wom);
  EXPECT_NE(rom->key(), wom->key());
  EXPECT_GT(rom->key() > wom->key() ? rom->key() - wom->key() : wom->key() - rom->key(), 1000u)
      << "keys are not sequential";
  std::vector<unsigned char> buf(64, 9);
  ASSERT_EQ(a.ep.write(buf.data(), 64, a2b, 0, rom->key()), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  EXPECT_EQ(ro[0], 1) << "read-only region not written";
  ASSERT_EQ(a.ep.read(buf.data(), 64, a2b, 0, wom->key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  ASSERT_EQ(a.ep.read(buf.data(), 64, a2b, 0, rom->key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(buf[0], 1);
  // closing invalidates at once
  const std::uint64_t k = wom->key();
  wom->close();
  ASSERT_EQ(a.ep.write(buf.data(), 64, a2b, 0, k), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::not_found);
  EXPECT_EQ(wo[0], 2);
}

TEST_P(rma, randomized_keys_and_offsets_match_a_model) {
  std::mt19937_64 rng(2024);
  std::vector<unsigned char> model = target;
  std::vector<unsigned char> buf(2048);
  int ok = 0, bad = 0;
  for (int i = 0; i < 300; ++i) {
    const std::size_t len = 1 + rng() % 2048;
    std::uint64_t off = rng() % (target.size() + 4096);  // sometimes past the end
    const bool good_key = rng() % 4 != 0;
    const std::uint64_t key = good_key ? mr.key() : rng();
    for (auto& c : buf) c = static_cast<unsigned char>(rng());
    ASSERT_EQ(post([&] { return a.ep.write(buf.data(), len, a2b, off, key); }, {&a, &b}), errc::ok);
    outcome o = done();
    const bool valid = key == mr.key() && off <= target.size() && len <= target.size() - off;
    ASSERT_EQ(o.ok, valid) << "op " << i << (o.error ? std::string(": ") + o.err.msg : "");
    if (valid) {
      std::copy(buf.begin(), buf.begin() + static_cast<long>(len), model.begin() + static_cast<long>(off));
      ++ok;
    } else {
      ++bad;
    }
  }
  EXPECT_EQ(target, model);
  EXPECT_GT(ok, 50);
  EXPECT_GT(bad, 50);
}

TEST_P(rma, misuse) {
  EXPECT_FALSE(b.dom.register_memory(nullptr, 10, access::remote_read));
  EXPECT_FALSE(b.dom.register_memory(target.data(), 0, access::remote_read));
  EXPECT_FALSE(b.dom.register_memory(target.data(), 10, 0));
  char x[8];
  EXPECT_EQ(a.ep.write(x, 8, 12345, 0, mr.key()), errc::invalid_argument) << "unknown peer";
}

INSTANTIATE_TEST_SUITE_P(providers, rma, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

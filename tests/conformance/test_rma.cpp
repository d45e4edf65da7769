// RMA write and read against registered memory: data compared, every access
// checked against the target region's key, bounds and rights; violations
// complete with an error at the initiator and leave target memory untouched.
#include <sys/wait.h>

#include <random>

#include "../common/rma_pair.hpp"

using namespace weft;
using namespace weft::test;

class rma : public rma_pair {
 protected:
  void SetUp() override { open_pair(1 << 20); }
};

TEST_P(rma, write_then_read_back) {
  for (std::size_t size : {std::size_t{1}, std::size_t{64}, std::size_t{8192}, std::size_t{300000}}) {
    SCOPED_TRACE(size);
    auto src = pattern(size, static_cast<unsigned>(size));
    const std::uint64_t off = 12345;
    int wctx = 0;
    ASSERT_EQ(a.ep.write(src.data(), size, a2b, off, *mr.key(), &wctx), errc::ok);
    outcome w = done();
    ASSERT_TRUE(w.ok) << w.err.msg;
    EXPECT_EQ(w.e.context, &wctx);
    EXPECT_TRUE((w.e.flags & flag::rma) && (w.e.flags & flag::write));
    EXPECT_TRUE(std::equal(src.begin(), src.end(), target.begin() + off)) << "written into the target";
    EXPECT_EQ(target[off - 1], 0x5a);
    EXPECT_EQ(target[off + size], 0x5a) << "nothing beyond the range";
    std::vector<unsigned char> back(size);
    ASSERT_EQ(a.ep.read(back.data(), size, a2b, off, *mr.key()), errc::ok);
    outcome r = done();
    ASSERT_TRUE(r.ok) << r.err.msg;
    EXPECT_TRUE(r.e.flags & flag::read);
    EXPECT_EQ(back, src);
  }
}

TEST_P(rma, iov_on_the_initiator) {
  auto src = pattern(100000, 7);
  ::iovec v[3] = {{src.data(), 10}, {src.data() + 10, 50000}, {src.data() + 50010, 49990}};
  ASSERT_EQ(a.ep.writev(v, a2b, 0, *mr.key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), target.begin()));
  std::vector<unsigned char> x(30000), y(70000);
  ::iovec r[2] = {{x.data(), x.size()}, {y.data(), y.size()}};
  ASSERT_EQ(a.ep.readv(r, a2b, 0, *mr.key()), errc::ok);
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
      {target.size() - 100, *mr.key(), 4096, errc::invalid_argument, "runs past the end"},
      {~0ull - 10, *mr.key(), 64, errc::invalid_argument, "offset overflow"},
      {0, *mr.key() ^ 1, 64, errc::not_found, "wrong key"},
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
  EXPECT_NE(*rom->key(), *wom->key());
  EXPECT_GT(*rom->key() > *wom->key() ? *rom->key() - *wom->key() : *wom->key() - *rom->key(), 1000u)
      << "keys are not sequential";
  std::vector<unsigned char> buf(64, 9);
  ASSERT_EQ(a.ep.write(buf.data(), 64, a2b, 0, *rom->key()), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  EXPECT_EQ(ro[0], 1) << "read-only region not written";
  ASSERT_EQ(a.ep.read(buf.data(), 64, a2b, 0, *wom->key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  ASSERT_EQ(a.ep.read(buf.data(), 64, a2b, 0, *rom->key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(buf[0], 1);
  // closing invalidates at once
  const std::uint64_t k = *wom->key();
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
    const std::uint64_t key = good_key ? *mr.key() : rng();
    for (auto& c : buf) c = static_cast<unsigned char>(rng());
    ASSERT_EQ(post([&] { return a.ep.write(buf.data(), len, a2b, off, key); }, {&a, &b}), errc::ok);
    outcome o = done();
    const bool valid = key == *mr.key() && off <= target.size() && len <= target.size() - off;
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

TEST_P(rma, counters_for_rma_events) {
  // fresh endpoints with RMA counters on both sides
  auto ic = a.dom.open_counter();
  auto tc = b.dom.open_counter();
  ASSERT_TRUE(ic && tc);
  auto ie = a.dom.open_endpoint(a.inf);
  auto te = b.dom.open_endpoint(b.inf);
  ASSERT_TRUE(ie && te);
  ASSERT_TRUE(ie->bind(a.cq) && ie->bind(a.av) && ie->bind(*ic, flag::read | flag::write) && ie->enable());
  ASSERT_TRUE(te->bind(b.cq) && te->bind(b.av) && te->bind(*tc, flag::remote_read | flag::remote_write) &&
              te->enable());
  auto to = a.av.insert(*te->name());
  ASSERT_TRUE(to);
  std::vector<unsigned char> buf(1000, 3);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(ie->write(buf.data(), buf.size(), *to, 0, *mr.key()), errc::ok);
  for (int i = 0; i < 2; ++i) ASSERT_EQ(ie->read(buf.data(), buf.size(), *to, 0, *mr.key()), errc::ok);
  ASSERT_EQ(ie->write(buf.data(), buf.size(), *to, 0, *mr.key() + 1), errc::ok);  // fails
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*ic->read() + *ic->read_error() < 6) && std::chrono::steady_clock::now() < deadline) b.cq.progress();
  EXPECT_EQ(*ic->read(), 5u) << "3 writes and 2 reads issued";
  EXPECT_EQ(*ic->read_error(), 1u);
  EXPECT_EQ(*tc->read(), 5u) << "5 accesses served";
  EXPECT_EQ(*tc->read_error(), 1u);
  cq_entry e;
  cq_err_entry ee;
  for (int i = 0; i < 20; ++i)
    if (a.cq.read(e) == errc::error_available) (void)a.cq.read_error(ee);
}

TEST_P(rma, write_with_remote_cq_data_completes_at_the_target) {
  auto src = pattern(5000, 11);
  ASSERT_EQ(a.ep.writedata(src.data(), src.size(), 0xfeedull, a2b, 100, *mr.key()), errc::ok);
  outcome w = done();
  ASSERT_TRUE(w.ok) << w.err.msg;
  cq_entry e;
  errc r = errc::again;
  for (int i = 0; i < 1000 && r == errc::again; ++i) r = b.cq.read(e);
  ASSERT_EQ(r, errc::ok);
  EXPECT_TRUE((e.flags & flag::remote_write) && (e.flags & flag::remote_cq_data));
  EXPECT_EQ(e.data, 0xfeedu);
  EXPECT_EQ(e.len, src.size());
  EXPECT_EQ(e.buf, static_cast<void*>(target.data() + 100));
  EXPECT_TRUE(std::equal(src.begin(), src.end(), target.begin() + 100));
  // a plain write makes no target completion
  ASSERT_EQ(a.ep.write(src.data(), 10, a2b, 0, *mr.key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(b.cq.read(e), errc::again);
}

TEST_P(rma, writedata_to_a_full_target_cq_is_a_clear_retry) {
  node t = open_node(GetParam().provider, cap::msg, 0, false, 2);  // a 2-entry CQ
  std::vector<unsigned char> mem(64);
  auto m = t.dom.register_memory(mem.data(), mem.size(), access::remote_write);
  ASSERT_TRUE(m);
  fi_addr_t to = insert(a, t);
  char x = 'x';
  int busy = 0;
  for (int i = 0; i < 3; ++i) {  // the third finds no room
    ASSERT_EQ(a.ep.writedata(&x, 1, static_cast<std::uint64_t>(i), to, 0, *m->key()), errc::ok);
    outcome o = next(a, {&t});
    if (o.error) {
      EXPECT_EQ(o.err.err, errc::busy) << o.err.msg;
      EXPECT_NE(std::string(o.err.msg).find("retry"), std::string::npos);
      ++busy;
    }
  }
  EXPECT_EQ(busy, 1);
  cq_entry e;
  ASSERT_EQ(t.cq.read(e), errc::ok);  // reading frees room
  ASSERT_EQ(a.ep.writedata(&x, 1, 9, to, 0, *m->key()), errc::ok);
  EXPECT_TRUE(next(a, {&t}).ok);
}

TEST_P(rma, misuse) {
  EXPECT_FALSE(b.dom.register_memory(nullptr, 10, access::remote_read));
  EXPECT_FALSE(b.dom.register_memory(target.data(), 0, access::remote_read));
  EXPECT_FALSE(b.dom.register_memory(target.data(), 10, access_flags{}));
  char x[8];
  EXPECT_EQ(a.ep.write(x, 8, 12345, 0, *mr.key()), errc::invalid_argument) << "unknown peer";
}

INSTANTIATE_TEST_SUITE_P(providers, rma, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

namespace {
template <class T>
T model(atomic_op op, T old, T v, T cmp) {
  switch (op) {
    case atomic_op::sum: return static_cast<T>(old + v);
    case atomic_op::min: return v < old ? v : old;
    case atomic_op::max: return v > old ? v : old;
    case atomic_op::swap: return v;
    case atomic_op::cswap: return old == cmp ? v : old;
    default:
      if constexpr (std::is_integral_v<T>) {
        if (op == atomic_op::band) return static_cast<T>(old & v);
        if (op == atomic_op::bor) return static_cast<T>(old | v);
        return static_cast<T>(old ^ v);
      }
      return old;
  }
}
}  // namespace

class atomics : public rma {};

template <class T>
void check_type(rma* t, node& a, node& b, fi_addr_t a2b, memory_region& mr, std::vector<unsigned char>& target,
                atomic_type type) {
  const atomic_op ops[] = {atomic_op::sum, atomic_op::min, atomic_op::max, atomic_op::band,
                           atomic_op::bor, atomic_op::bxor, atomic_op::swap};
  std::mt19937_64 rng(static_cast<unsigned>(type) * 77 + 1);
  for (atomic_op op : ops) {
    if (!atomic_valid(op, type)) continue;
    SCOPED_TRACE(static_cast<int>(op));
    constexpr std::size_t n = atomic_max_bytes / sizeof(T) < 4 ? atomic_max_bytes / sizeof(T) : 4;
    T init[n], opnd[n], result[n], expect[n];
    for (std::size_t i = 0; i < n; ++i) {
      init[i] = static_cast<T>(static_cast<std::int64_t>(rng() % 200) - 100);
      opnd[i] = static_cast<T>(static_cast<std::int64_t>(rng() % 200) - 100);
      expect[i] = model<T>(op, init[i], opnd[i], T{});
    }
    const std::uint64_t off = 64 * (1 + static_cast<unsigned>(op));
    std::memcpy(target.data() + off, init, sizeof init);
    ASSERT_EQ(a.ep.fetch_atomic(op, type, opnd, result, n, a2b, off, *mr.key()), errc::ok);
    outcome o = next(a, {&b});
    ASSERT_TRUE(o.ok) << o.err.msg;
    EXPECT_TRUE(o.e.flags & flag::atomic);
    T now[n];
    std::memcpy(now, target.data() + off, sizeof now);
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_EQ(result[i], init[i]) << "fetch returns the old value";
      EXPECT_EQ(now[i], expect[i]) << "element " << i;
    }
    // the non-fetching form too
    std::memcpy(target.data() + off, init, sizeof init);
    ASSERT_EQ(a.ep.atomic(op, type, opnd, n, a2b, off, *mr.key()), errc::ok);
    ASSERT_TRUE(next(a, {&b}).ok);
    std::memcpy(now, target.data() + off, sizeof now);
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(now[i], expect[i]);
  }
  // compare-and-swap: a hit and a miss
  T cur = static_cast<T>(5), cmp_hit = static_cast<T>(5), cmp_miss = static_cast<T>(6), val = static_cast<T>(9), old{};
  std::memcpy(target.data() + 8, &cur, sizeof cur);
  ASSERT_EQ(a.ep.compare_atomic(type, &val, &cmp_miss, &old, 1, a2b, 8, *mr.key()), errc::ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  T now;
  std::memcpy(&now, target.data() + 8, sizeof now);
  EXPECT_EQ(now, cur) << "no swap on a miss";
  EXPECT_EQ(old, cur);
  ASSERT_EQ(a.ep.compare_atomic(type, &val, &cmp_hit, &old, 1, a2b, 8, *mr.key()), errc::ok);
  ASSERT_TRUE(next(a, {&b}).ok);
  std::memcpy(&now, target.data() + 8, sizeof now);
  EXPECT_EQ(now, val) << "swapped on a hit";
  EXPECT_EQ(old, cur);
  (void)t;
}

TEST_P(atomics, every_op_on_every_type_matches_a_model) {
  check_type<std::int8_t>(this, a, b, a2b, mr, target, atomic_type::i8);
  check_type<std::uint8_t>(this, a, b, a2b, mr, target, atomic_type::u8);
  check_type<std::int16_t>(this, a, b, a2b, mr, target, atomic_type::i16);
  check_type<std::uint16_t>(this, a, b, a2b, mr, target, atomic_type::u16);
  check_type<std::int32_t>(this, a, b, a2b, mr, target, atomic_type::i32);
  check_type<std::uint32_t>(this, a, b, a2b, mr, target, atomic_type::u32);
  check_type<std::int64_t>(this, a, b, a2b, mr, target, atomic_type::i64);
  check_type<std::uint64_t>(this, a, b, a2b, mr, target, atomic_type::u64);
  check_type<float>(this, a, b, a2b, mr, target, atomic_type::f32);
  check_type<double>(this, a, b, a2b, mr, target, atomic_type::f64);
}

TEST_P(atomics, four_processes_add_concurrently) {
  std::uint64_t zero = 0;
  std::memcpy(target.data(), &zero, 8);
  const address baddr = *b.ep.name();
  const std::uint64_t key = *mr.key();
  constexpr int procs = 4, per = 500;
  std::vector<pid_t> kids;
  fork_adders(GetParam().provider, baddr, key, procs, per, false, kids);
  ASSERT_FALSE(HasFatalFailure()) << "fork failed";
  // the target progresses until every addition arrived (bounded)
  std::uint64_t v = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    b.cq.progress();
    std::memcpy(&v, target.data(), 8);
    if (v == procs * per) break;
  }
  reap_adders(b, kids);
  EXPECT_EQ(v, static_cast<std::uint64_t>(procs * per)) << "no addition lost";
}

TEST_P(atomics, invalid_pairs_alignment_rights_and_bounds) {
  double d = 1;
  EXPECT_EQ(a.ep.atomic(atomic_op::band, atomic_type::f64, &d, 1, a2b, 0, *mr.key()), errc::invalid_argument)
      << "bitwise on floating point";
  EXPECT_FALSE(atomic_valid(atomic_op::bxor, atomic_type::f32));
  EXPECT_TRUE(atomic_valid(atomic_op::sum, atomic_type::f32));
  EXPECT_TRUE(atomic_valid(atomic_op::bor, atomic_type::u8));
  std::uint64_t big[16] = {};
  EXPECT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, big, 16, a2b, 0, *mr.key()), errc::invalid_argument)
      << "more than 64 bytes";
  const auto before = target;
  std::uint64_t one = 1;
  ASSERT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, a2b, 3, *mr.key()), errc::ok);  // misaligned
  outcome o = next(a, {&b});
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::invalid_argument) << o.err.msg;
  ASSERT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, a2b, target.size(), *mr.key()), errc::ok);
  o = next(a, {&b});
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::invalid_argument);
  std::vector<unsigned char> ro(64, 0);
  auto rom = b.dom.register_memory(ro.data(), ro.size(), access::remote_read);
  ASSERT_TRUE(rom);
  ASSERT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, a2b, 0, *rom->key()), errc::ok);
  o = next(a, {&b});
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  EXPECT_EQ(target, before);
  EXPECT_TRUE(std::all_of(ro.begin(), ro.end(), [](unsigned char c) { return c == 0; }));
}

INSTANTIATE_TEST_SUITE_P(providers, atomics, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

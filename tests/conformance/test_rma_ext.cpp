// RMA beyond plain write/read, on every provider with cap::rma: lists of
// remote ranges, inject writes, the registration cache, an imported memory
// monitor and allocated memory. Completion levels, SAVE, persistent regions
// and the commit handler: test_rma_ext_commit.cpp (the same suite, rma_ext,
// instantiated here).
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>

#include "../common/rma_ext.hpp"

using namespace weft;
using namespace weft::test;

TEST_P(rma_ext, lists_of_remote_ranges_over_two_regions) {
  std::vector<unsigned char> other(4096, 0x11);
  auto m2 = b.dom.register_memory(other.data(), other.size(), access::remote_read | access::remote_write);
  ASSERT_TRUE(m2);
  auto src = pattern(3000, 3);
  // 1000 bytes at 100 of the first region, 1500 at 0 of the second, 500 at 9000 of the first
  rma_iov ranges[3] = {{100, 1000, *mr.key()}, {0, 1500, *m2->key()}, {9000, 500, *mr.key()}};
  ::iovec v[2] = {{src.data(), 1200}, {src.data() + 1200, 1800}};
  rma_desc d{v, 2, a2b, 0, 0, nullptr};
  d.rma = ranges;
  d.rma_count = 3;
  int ctx = 0;
  d.context = &ctx;
  ASSERT_EQ(a.ep.writemsg(d, {}), errc::ok);
  outcome w = done();
  ASSERT_TRUE(w.ok) << w.err.msg;
  EXPECT_EQ(w.e.context, &ctx) << "one completion for the whole list";
  EXPECT_TRUE(std::equal(src.begin(), src.begin() + 1000, target.begin() + 100));
  EXPECT_TRUE(std::equal(src.begin() + 1000, src.begin() + 2500, other.begin()));
  EXPECT_TRUE(std::equal(src.begin() + 2500, src.end(), target.begin() + 9000));
  EXPECT_EQ(target[99], 0x5a);
  EXPECT_EQ(target[1100], 0x5a);
  EXPECT_TRUE(quiet(50)) << "exactly one completion";
  // read the same ranges back into one buffer
  std::vector<unsigned char> back(3000, 0);
  ::iovec r{back.data(), back.size()};
  rma_desc rd{&r, 1, a2b, 0, 0, nullptr};
  rd.rma = ranges;
  rd.rma_count = 3;
  ASSERT_EQ(a.ep.readmsg(rd, {}), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(back, src);
  // ranges that do not add up to the local bytes, and a bad range in a list
  rma_iov bad[2] = {{0, 10, *mr.key()}, {0, 10, *mr.key()}};
  rd.rma = bad;
  rd.rma_count = 2;
  EXPECT_EQ(a.ep.readmsg(rd, {}), errc::invalid_argument);
  rma_iov partly[2] = {{0, 1500, *mr.key()}, {0, 1500, *mr.key() ^ 7}};
  d.rma = partly;
  d.rma_count = 2;
  ASSERT_EQ(a.ep.writemsg(d, {}), errc::ok);
  o = done();
  ASSERT_TRUE(o.error) << "one bad range fails the operation";
  EXPECT_EQ(o.err.err, errc::not_found) << o.err.msg;
  EXPECT_TRUE(quiet(50));
}

TEST_P(rma_ext, inject_write_returns_at_once_and_reports_only_failures) {
  std::vector<unsigned char> buf(256);
  for (int i = 0; i < 100; ++i) {
    std::fill(buf.begin(), buf.end(), static_cast<unsigned char>(i));
    ASSERT_EQ(post([&] { return a.ep.inject_write(buf.data(), buf.size(), a2b, 256 * i, *mr.key()); }, {&a, &b}),
              errc::ok);
    std::fill(buf.begin(), buf.end(), 0xff);  // reusable at once
  }
  // a delivery-complete write after them completes after them (same path, in order)
  unsigned char last = 7;
  ASSERT_EQ(a.ep.write(&last, 1, a2b, 60000, *mr.key()), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.ok) << "injects give no completion: the next one is the write's: " << o.err.msg;
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(target[256 * i + 17], static_cast<unsigned char>(i)) << "inject " << i << " landed";
  EXPECT_EQ(a.ep.inject_write(buf.data(), 1 << 20, a2b, 0, *mr.key()), errc::too_big);
  // up to tx.inject_size, as inject()
  const std::size_t lim = a.inf.tx.inject_size;
  ASSERT_GE(lim, 256u);
  ASSERT_LE(lim, 32768u) << "the target region is 64 KiB";
  std::vector<unsigned char> big(lim + 1, 0xc3);
  EXPECT_EQ(a.ep.inject_write(big.data(), lim + 1, a2b, 0, *mr.key()), errc::too_big);
  ASSERT_EQ(post([&] { return a.ep.inject_write(big.data(), lim, a2b, 1, *mr.key()); }, {&a, &b}), errc::ok);
  std::fill(big.begin(), big.end(), 0);
  ASSERT_EQ(a.ep.write(&last, 1, a2b, 60000, *mr.key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.ok) << o.err.msg;
  for (std::size_t k = 1; k <= lim; ++k) ASSERT_EQ(target[k], 0xc3) << "byte " << k << " of a " << lim << "-byte inject";
  EXPECT_EQ(target[lim + 1], static_cast<unsigned char>(lim + 1 < 256 * 100 ? (lim + 1) / 256 : 0x5a));
  // a failed inject is not lost
  ASSERT_EQ(a.ep.inject_write(buf.data(), 16, a2b, 0, *mr.key() ^ 5), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::not_found) << o.err.msg;
  EXPECT_EQ(o.err.context, nullptr);
}

// An inject write gives no completion, but a write counter counts it at the
// endpoint's completion level (delivery by default): whenever the counter
// says k, the first k writes are in the target's memory, even while the
// target is driven only now and then.
TEST_P(rma_ext, inject_writes_counted_by_a_write_counter_count_their_delivery) {
  auto ic = a.dom.open_counter();
  ASSERT_TRUE(ic);
  auto ie = a.dom.open_endpoint(a.inf);
  ASSERT_TRUE(ie);
  ASSERT_TRUE(ie->bind(a.cq) && ie->bind(a.av) && ie->bind(*ic, flag::write) && ie->enable());
  constexpr int n = 50;
  std::vector<unsigned char> buf(64);
  for (int i = 0; i < n; ++i) {
    std::fill(buf.begin(), buf.end(), static_cast<unsigned char>(i + 1));
    ASSERT_EQ(post([&] { return ie->inject_write(buf.data(), buf.size(), a2b, 64 * static_cast<std::uint64_t>(i), *mr.key()); }, {&a}),
              errc::ok);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::uint64_t c = 0;
  for (int it = 0; c < n && std::chrono::steady_clock::now() < deadline; ++it) {
    a.cq.progress();
    if (it % 16 == 15) b.cq.progress();
    c = *ic->read();
    ASSERT_EQ(*ic->read_error(), 0u);
    for (std::uint64_t i = 0; i < c; ++i)
      ASSERT_EQ(target[64 * i + 63], static_cast<unsigned char>(i + 1))
          << "the counter says " << c << " writes were delivered, write " << i << " is not in the target";
  }
  EXPECT_EQ(c, static_cast<std::uint64_t>(n));
}

// Failed inject writes reserved no completion, but their failures are not
// dropped, however small the initiator's CQ: shm reserves room when the
// write is posted (a full CQ is `again`), on tcp the error entries wait for
// room. Seven failures through a 2-entry CQ.
TEST_P(rma_ext, inject_write_failures_are_not_lost_in_a_small_cq) {
  node x = open_node(GetParam().provider, cap::msg, 0, false, 2);
  fi_addr_t to = insert(x, b);
  constexpr int n = 7;
  int posted = 0, errors = 0;
  unsigned char v = 1;
  auto read_errors = [&] {
    if (take_inject_failure(x, errc::not_found)) ++errors;
    b.cq.progress();
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (posted < n && std::chrono::steady_clock::now() < deadline) {
    const errc r = x.ep.inject_write(&v, 1, to, 8 * static_cast<std::uint64_t>(posted), *mr.key() ^ 1);
    if (r == errc::ok) ++posted;
    else ASSERT_EQ(r, errc::again);
    if (posted > 2 || r == errc::again) read_errors();  // first let the CQ fill up
  }
  ASSERT_EQ(posted, n);
  while (errors < n && std::chrono::steady_clock::now() < deadline) read_errors();
  EXPECT_EQ(errors, n) << "every failed inject write is reported";
  EXPECT_EQ(target[0], 0x5a) << "nothing landed";
  // the path still works
  ASSERT_EQ(post([&] { return x.ep.write(&v, 1, to, 0, *mr.key()); }, {&x, &b}), errc::ok);
  outcome o = next(x, {&b});
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(target[0], 1);
}

// A failure waiting for CQ room must not hold back the completions that
// would free it: an inject write fails, then two delivery-complete writes take
// the whole 2-entry CQ; their completions, then the failure, all arrive.
TEST_P(rma_ext, a_waiting_failure_does_not_block_the_completions_behind_it) {
  node x = open_node(GetParam().provider, cap::msg, 0, false, 2);
  fi_addr_t to = insert(x, b);
  unsigned char v[2] = {7, 8};
  int oks = 0, errors = 0;
  auto read_one = [&] {
    cq_entry e{};
    const errc r = x.cq.read(e);
    if (r == errc::ok) ++oks;
    if (r == errc::error_available) {
      cq_err_entry ee{};
      ASSERT_EQ(x.cq.read_error(ee), errc::ok);
      EXPECT_EQ(ee.err, errc::not_found) << ee.msg;
      ++errors;
    }
    b.cq.progress();
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto post_reading = [&](auto&& f) {
    errc r = errc::again;
    while (r == errc::again && std::chrono::steady_clock::now() < deadline) {
      r = f();
      if (r == errc::again) read_one();
    }
    return r;
  };
  ASSERT_EQ(post_reading([&] { return x.ep.inject_write(&v[0], 1, to, 0, *mr.key() ^ 1); }), errc::ok);
  ::iovec io{&v[1], 1};
  for (std::uint64_t i = 0; i < 2; ++i)
    ASSERT_EQ(post_reading([&] {
                return x.ep.writemsg(rma_desc{&io, 1, to, 100 + i, *mr.key(), nullptr}, flag::delivery_complete);
              }),
              errc::ok);
  while ((oks < 2 || errors < 1) && std::chrono::steady_clock::now() < deadline) read_one();
  EXPECT_EQ(oks, 2) << "the writes' completions arrived";
  EXPECT_EQ(errors, 1) << "and the failure too";
  EXPECT_EQ(target[100], 8);
  EXPECT_EQ(target[101], 8);
}

// shm: with a target that counts peers' writes, inject writes go two-sided
// and each holds one of 64 inject buffers until the target answers. Posts
// beyond that are `again` and must give back the CQ room they reserved: after
// thousands of such retries the initiator still posts and completes.
TEST_P(rma_ext, inject_writes_out_of_buffers_give_back_their_cq_room) {
  if (GetParam().provider != "shm") GTEST_SKIP() << "inject buffers are shm's";
  auto tc = b.dom.open_counter();
  ASSERT_TRUE(tc);
  auto te = b.dom.open_endpoint(b.inf);
  ASSERT_TRUE(te);
  ASSERT_TRUE(te->bind(b.cq) && te->bind(b.av) && te->bind(*tc, flag::remote_write) && te->enable());
  auto to = a.av.insert(*te->name());
  ASSERT_TRUE(to);
  unsigned char v = 3;
  int posted = 0;
  for (int i = 0; i < 100; ++i)  // the target does not progress: buffers run out
    if (a.ep.inject_write(&v, 1, *to, static_cast<std::uint64_t>(i), *mr.key()) == errc::ok) ++posted;
  ASSERT_GE(posted, 1);
  ASSERT_LT(posted, 100) << "inject buffers are bounded";
  for (int i = 0; i < 3000; ++i) ASSERT_EQ(a.ep.inject_write(&v, 1, *to, 0, *mr.key()), errc::again);
  // the target catches up; every inject lands
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (*tc->read() < static_cast<std::uint64_t>(posted) && std::chrono::steady_clock::now() < deadline) {
    b.cq.progress();
    a.cq.progress();
  }
  ASSERT_EQ(*tc->read(), static_cast<std::uint64_t>(posted));
  // and the initiator's CQ still has all its room: 200 writes in flight at once
  for (int i = 0; i < 200; ++i) {
    errc r = errc::again;
    for (int tries = 0; tries < 1000 && r == errc::again; ++tries) {
      r = a.ep.write(&v, 1, *to, 200, *mr.key());
      if (r == errc::again) {
        b.cq.progress();
        a.cq.progress();  // acks free the operations; the CQ keeps its entries
      }
    }
    ASSERT_EQ(r, errc::ok) << "write " << i << ": CQ room lost to the refused injects";
  }
  for (int i = 0; i < 200; ++i) {
    outcome o = done();
    ASSERT_TRUE(o.ok) << o.err.msg;
  }
}

TEST_P(rma_ext, registration_cache_hits_and_keys_die_with_the_last_region) {
  std::vector<unsigned char> buf(8192, 3);
  const auto before = *b.dom.cache_stats();
  auto r1 = b.dom.register_memory(buf.data(), buf.size(), access::remote_read);
  ASSERT_TRUE(r1);
  EXPECT_FALSE(r1->cache_hit().value());
  auto r2 = b.dom.register_memory(buf.data(), buf.size(), access::remote_read);
  ASSERT_TRUE(r2);
  EXPECT_TRUE(r2->cache_hit().value()) << "the same memory again hits the cache";
  EXPECT_EQ(*r2->key(), *r1->key()) << "a live registration is shared";
  auto s = *b.dom.cache_stats();
  EXPECT_EQ(s.hits, before.hits + 1);
  EXPECT_EQ(s.misses, before.misses + 1);
  const std::uint64_t k = *r1->key();
  r1->close();
  unsigned char x[16];
  ASSERT_EQ(a.ep.read(x, 16, a2b, 0, k), errc::ok);
  ASSERT_TRUE(done().ok) << "still registered through the second handle";
  r2->close();
  ASSERT_EQ(a.ep.read(x, 16, a2b, 0, k), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.error) << "closing the last region revokes the key at once";
  EXPECT_EQ(o.err.err, errc::not_found);
  auto r3 = b.dom.register_memory(buf.data(), buf.size(), access::remote_read);
  ASSERT_TRUE(r3);
  EXPECT_TRUE(r3->cache_hit().value()) << "the entry outlived its regions";
  EXPECT_NE(*r3->key(), k) << "with a new key";
  EXPECT_GE(b.dom.cache_stats()->cached + b.dom.cache_stats()->active, 1u);
  // different access: a different entry
  auto r4 = b.dom.register_memory(buf.data(), buf.size(), access::remote_write);
  ASSERT_TRUE(r4);
  EXPECT_FALSE(r4->cache_hit().value());
}

TEST_P(rma_ext, unmapped_memory_invalidates_the_cache_and_the_key) {
  const std::size_t len = 1 << 20;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::memset(p, 1, len);
  auto r = b.dom.register_memory(p, len, access::remote_read | access::remote_write);
  ASSERT_TRUE(r);
  const auto inv = b.dom.cache_stats()->invalidations;
  const std::uint64_t k = *r->key();
  SCOPED_TRACE(*b.dom.monitor_name());
  ASSERT_EQ(::munmap(p, len), 0);
  // the monitor (a thread) notices; bounded wait
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (b.dom.cache_stats()->invalidations == inv && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (*b.dom.monitor_name() != "userfaultfd")
    GTEST_SKIP() << "the monitor here cannot notify (" << *b.dom.monitor_name() << ")";
  EXPECT_EQ(b.dom.cache_stats()->invalidations, inv + 1);
  // a remote write to the region now fails instead of touching unmapped memory
  unsigned char x[64] = {};
  ASSERT_EQ(a.ep.write(x, 64, a2b, 0, k), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::not_found) << o.err.msg;
  // new memory at the same place is a miss
  void* q = ::mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (q == p) {
    auto r2 = b.dom.register_memory(q, len, access::remote_read | access::remote_write);
    ASSERT_TRUE(r2);
    EXPECT_FALSE(r2->cache_hit().value());
    r2->close();
    ::munmap(q, len);
  } else if (q != MAP_FAILED) {
    ::munmap(q, len);
  }
}

namespace {
// A monitor the application brings: it records calls; the test plays the
// memory manager and calls notify itself.
class recording_monitor final : public memory_monitor {
 public:
  result<void> start(notify_fn n) override {
    std::lock_guard lk(mu);
    notify = std::move(n);
    ++starts;
    return {};
  }
  void stop() noexcept override {
    std::lock_guard lk(mu);
    ++stops;
  }
  result<watch_mode> subscribe(const void* a, std::size_t l) override {
    std::lock_guard lk(mu);
    subs.emplace_back(a, l);
    return watch_mode::notified;
  }
  void unsubscribe(const void* a, std::size_t l) noexcept override {
    std::lock_guard lk(mu);
    auto it = std::find(subs.begin(), subs.end(), std::pair<const void*, std::size_t>(a, l));
    if (it != subs.end()) subs.erase(it);  // one reference
  }
  bool valid(const void*, std::size_t) noexcept override { return true; }
  const char* name() const noexcept override { return "recording"; }
  std::mutex mu;
  notify_fn notify;
  int starts = 0, stops = 0;
  std::vector<std::pair<const void*, std::size_t>> subs;
};
}  // namespace

TEST_P(rma_ext, imported_monitor_replaces_the_default_for_its_domain) {
  auto mon = std::make_shared<recording_monitor>();
  ASSERT_TRUE(b.dom.import_monitor(mon));
  EXPECT_EQ(*b.dom.monitor_name(), "recording");
  EXPECT_EQ(mon->starts, 1);
  std::vector<unsigned char> buf(4096, 8);
  auto r = b.dom.register_memory(buf.data(), buf.size(), access::remote_read);
  ASSERT_TRUE(r);
  {
    std::lock_guard lk(mon->mu);
    EXPECT_NE(std::find(mon->subs.begin(), mon->subs.end(),
                        std::pair<const void*, std::size_t>(buf.data(), buf.size())),
              mon->subs.end())
        << "the region's memory is subscribed";
  }
  // the other domain keeps its own (default) monitor
  EXPECT_NE(*a.dom.monitor_name(), "recording");
  const std::uint64_t k = *r->key();
  mon->notify(buf.data() + 100, 10);  // "that memory went away"
  unsigned char x[8];
  ASSERT_EQ(a.ep.read(x, 8, a2b, 0, k), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.error) << "an invalidated region answers not_found";
  EXPECT_EQ(o.err.err, errc::not_found);
  auto r2 = b.dom.register_memory(buf.data(), buf.size(), access::remote_read);
  ASSERT_TRUE(r2);
  EXPECT_FALSE(r2->cache_hit().value()) << "the invalidated entry is not reused";
  r.value().close();
  r2->close();
  {
    std::lock_guard lk(mon->mu);
    EXPECT_EQ(std::count(mon->subs.begin(), mon->subs.end(),
                         std::pair<const void*, std::size_t>(buf.data(), buf.size())),
              1)
        << "the invalidated entry left the monitor with its last region; the new one stays cached";
    EXPECT_NE(std::find(mon->subs.begin(), mon->subs.end(),
                        std::pair<const void*, std::size_t>(target.data(), target.size())),
              mon->subs.end())
        << "entries cached before the import were subscribed to the new monitor";
  }
  EXPECT_FALSE(b.dom.import_monitor(nullptr));
}

TEST_P(rma_ext, sixteen_local_pieces_and_level_misuse) {
  auto src = pattern(16 * 1024, 12);
  ::iovec v[16];
  for (int i = 0; i < 16; ++i) v[i] = {src.data() + i * 1024, 1024};
  ASSERT_EQ(a.ep.writev(v, a2b, 100, *mr.key()), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_TRUE(std::equal(src.begin(), src.end(), target.begin() + 100));
  ::iovec one{src.data(), 8};
  rma_desc d{&one, 1, a2b, 0, *mr.key(), nullptr};
  EXPECT_EQ(a.ep.writemsg(d, flag::transmit_complete | flag::commit_complete), errc::invalid_argument)
      << "one completion level, not two";
  info i = a.inf;
  i.tx.op_flags = flag::delivery_complete | flag::commit_complete;
  auto ep = a.dom.open_endpoint(i);
  ASSERT_FALSE(ep);
  EXPECT_EQ(ep.error().code, errc::invalid_argument);
  // SAVE needs the right to write the region
  std::vector<unsigned char> ro(64);
  auto rom = b.dom.register_memory(ro.data(), ro.size(), access::remote_read);
  ASSERT_TRUE(rom);
  ASSERT_EQ(a.ep.save(a2b, *rom->key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied) << o.err.msg;
}

TEST_P(rma_ext, many_reads_outstanding_while_the_initiator_does_not_read) {
  // The target owes more answers than it queues at once: it must pause, not
  // fail, until the initiator reads them.
  std::vector<std::vector<unsigned char>> dst(200, std::vector<unsigned char>(32768));
  int posted = 0;
  for (auto& d : dst) {
    errc r = a.ep.read(d.data(), d.size(), a2b, 0, *mr.key());
    if (r == errc::again) break;
    ASSERT_EQ(r, errc::ok);
    ++posted;
    for (int k = 0; k < 20; ++k) b.cq.progress();  // only the target runs
  }
  ASSERT_GT(posted, 40);
  for (int k = 0; k < 20000; ++k) b.cq.progress();
  int ok = 0;
  for (int n = 0; n < posted; ++n) {
    outcome o = done();
    ASSERT_TRUE(o.ok) << o.err.msg;
    ++ok;
  }
  EXPECT_EQ(ok, posted);
  for (int n = 0; n < posted; ++n) ASSERT_TRUE(std::equal(dst[n].begin(), dst[n].end(), target.begin())) << n;
}

TEST_P(rma_ext, region_closed_while_a_large_write_streams_in) {
  if (GetParam().provider != "tcp" || GetParam().auto_progress)
    GTEST_SKIP() << "tcp with manual progress: the write arrives over many progress calls";
  std::vector<unsigned char> big(8 << 20, 0);
  auto bm = b.dom.register_memory(big.data(), big.size(), access::remote_write);
  ASSERT_TRUE(bm);
  auto src = pattern(big.size(), 21);
  ASSERT_EQ(a.ep.write(src.data(), src.size(), a2b, 0, *bm->key()), errc::ok);
  // drive both until the first bytes have landed, but not all
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (big[0] == 0 && std::chrono::steady_clock::now() < until) {
    a.cq.progress();
    b.cq.progress();
  }
  ASSERT_NE(big[0], 0) << "the write started";
  if (big[big.size() - 1] != 0) GTEST_SKIP() << "the whole write landed at once";
  bm->close();                                  // the application takes its memory back...
  std::fill(big.begin(), big.end(), 0xee);       // ...and reuses it
  outcome o = done();
  ASSERT_TRUE(o.error) << "the rest of the write is refused";
  EXPECT_EQ(o.err.err, errc::not_found) << o.err.msg;
  EXPECT_TRUE(std::all_of(big.begin(), big.end(), [](unsigned char c) { return c == 0xee; }))
      << "nothing was written after the region closed";
}

namespace {
std::size_t mem_segments() {  // this process's alloc_memory segments in /dev/shm
  const std::string prefix = "weft." + std::to_string(::getuid()) + "." + std::to_string(::getpid()) + ".mem.";
  std::size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator("/dev/shm"))
    if (e.path().filename().string().rfind(prefix, 0) == 0) ++n;
  return n;
}
}  // namespace

TEST_P(rma_ext, allocated_memory_works_like_registered_memory) {
  const std::size_t before = mem_segments();
  auto m = b.dom.alloc_memory(1 << 20, access::remote_read | access::remote_write);
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_EQ(m->len().value_or(0), std::size_t{1} << 20);
  auto* t = static_cast<unsigned char*>(*m->addr());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t) % 4096, 0u) << "page aligned";
  if (GetParam().provider == "shm") {
    EXPECT_EQ(mem_segments(), before + 1) << "a shared segment peers can map";
  }
  auto src = pattern(100000, 41);
  ASSERT_EQ(a.ep.write(src.data(), src.size(), a2b, 4096, *m->key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), t + 4096));
  std::vector<unsigned char> back(src.size());
  ASSERT_EQ(a.ep.read(back.data(), back.size(), a2b, 4096, *m->key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(back, src);
  // atomics, from this process and a second one at once: none lost
  std::memset(t, 0, 8);
  std::uint64_t one = 1, old = 0;
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(a.ep.fetch_atomic(atomic_op::sum, atomic_type::u64, &one, &old, 1, a2b, 0, *m->key()), errc::ok);
    outcome o = done();
    ASSERT_TRUE(o.ok) << o.err.msg;
    ASSERT_EQ(old, static_cast<std::uint64_t>(i));
  }
  std::uint64_t v = 0;
  std::memcpy(&v, t, 8);
  EXPECT_EQ(v, 100u);
  std::uint64_t swap_in = 7, expect = 100, got = 0;
  ASSERT_EQ(a.ep.compare_atomic(atomic_type::u64, &swap_in, &expect, &got, 1, a2b, 0, *m->key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(got, 100u);
  std::memcpy(&v, t, 8);
  EXPECT_EQ(v, 7u);
  // violations
  ASSERT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, a2b, 3, *m->key()), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::invalid_argument) << "misaligned";
  ASSERT_EQ(a.ep.write(src.data(), 100, a2b, (1 << 20) - 50, *m->key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::invalid_argument) << "past the end";
  auto ro = b.dom.alloc_memory(4096, access::remote_read);
  ASSERT_TRUE(ro);
  ASSERT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, a2b, 0, *ro->key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  ASSERT_EQ(a.ep.write(src.data(), 8, a2b, 0, *ro->key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  // closing frees the memory and revokes the key
  const std::uint64_t k = *m->key();
  m->close();
  ro->close();
  if (GetParam().provider == "shm") {
    EXPECT_EQ(mem_segments(), before) << "segments removed with their regions";
  }
  ASSERT_EQ(a.ep.write(src.data(), 8, a2b, 0, k), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::not_found);
  EXPECT_FALSE(b.dom.alloc_memory(0, access::remote_read));
  EXPECT_FALSE(b.dom.alloc_memory(64, access::persistent));
}

TEST_P(rma_ext, allocated_memory_atomics_from_four_processes) {
  auto m = b.dom.alloc_memory(4096, access::remote_read | access::remote_write);
  ASSERT_TRUE(m);
  std::memset(*m->addr(), 0, 8);
  const address baddr = *b.ep.name();
  const std::uint64_t key = *m->key();
  std::vector<pid_t> kids;
  fork_adders(GetParam().provider, baddr, key, 4, 500, true, kids);
  ASSERT_FALSE(HasFatalFailure()) << "fork failed";
  // the target adds too, with its own CPU atomics, while it serves the others
  std::atomic_ref<std::uint64_t> mine(*static_cast<std::uint64_t*>(*m->addr()));
  for (int i = 0; i < 500; ++i) {
    mine.fetch_add(1);
    b.cq.progress();
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (mine.load() < 2500 && std::chrono::steady_clock::now() < deadline) b.cq.progress();
  reap_adders(b, kids);
  EXPECT_EQ(mine.load(), 2500u) << "no addition lost";
}

INSTANTIATE_TEST_SUITE_P(providers, rma_ext, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

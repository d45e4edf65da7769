// tcp: a failed inject write is never dropped. Its failure can only be
// reported after the fact (the target answers only failures), so room for
// it is reserved when it is posted; a post that could not report its
// failure is back-pressure (again), never a lost error.
#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

struct pair_with_counter {
  node a;  // initiator, CQ of 4 entries
  node b;  // target
  endpoint tep;
  counter tctr;  // the target's remote-write count (failures in read_err)
  fi_addr_t to = addr_unspec;
  std::vector<unsigned char> mem = std::vector<unsigned char>(4096, 0x5a);
  memory_region mr;
};

// n inject writes to a wrong key, into a CQ of 4 entries: exactly n error
// entries, read while the application goes on posting; returns how many
// posts were told again.
int failing_inject_writes(int n) {
  pair_with_counter p;
  p.a = open_node("tcp", cap::msg, 0, false, 4);
  p.b = open_node("tcp", cap::msg);
  auto ctr = p.b.dom.open_counter();
  EXPECT_TRUE(ctr);
  if (!ctr) return -1;
  p.tctr = std::move(*ctr);
  auto ep = p.b.dom.open_endpoint(p.b.inf);
  EXPECT_TRUE(ep);
  if (!ep) return -1;
  p.tep = std::move(*ep);
  EXPECT_TRUE(p.tep.bind(p.b.cq) && p.tep.bind(p.b.av) && p.tep.bind(p.tctr, flag::remote_write) && p.tep.enable());
  auto to = p.a.av.insert(*p.tep.name());
  EXPECT_TRUE(to);
  if (!to) return -1;
  p.to = *to;
  auto m = p.b.dom.register_memory(p.mem.data(), p.mem.size(), access::remote_write);
  EXPECT_TRUE(m);
  if (!m) return -1;
  p.mr = std::move(*m);
  const std::uint64_t bad_key = *p.mr.key() ^ 1;

  int posted = 0, errors = 0, agains = 0;
  unsigned char v = 1;
  // A first write opens the connection: the inject writes then leave as
  // soon as they are posted.
  EXPECT_EQ(p.a.ep.write(&v, 1, p.to, 8, *p.mr.key()), errc::ok);
  outcome first = next(p.a, {&p.b});
  EXPECT_TRUE(first.ok) << first.err.msg;
  if (!first.ok) return -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  // The target serves everything posted so far (its failure count says so)
  // before the initiator reads: all the failures arrive at once.
  auto serve_then_read = [&] {
    // (The initiator progresses too, without reading its CQ: writes that ask
    // for an answer wait in its queue while 32 are unanswered.)
    while (*p.tctr.read_error() < static_cast<std::uint64_t>(posted) && std::chrono::steady_clock::now() < deadline) {
      p.b.cq.progress();
      p.a.cq.progress();
    }
    for (int i = 0; i < 8; ++i) {  // the CQ holds 4; each read makes room for one more
      cq_entry e{};
      const errc r = p.a.cq.read(e);
      if (r == errc::again) break;
      EXPECT_EQ(r, errc::error_available) << "only failures are reported";
      cq_err_entry ee{};
      EXPECT_EQ(p.a.cq.read_error(ee), errc::ok);
      EXPECT_EQ(ee.err, errc::not_found) << ee.msg;
      EXPECT_EQ(ee.context, nullptr);
      EXPECT_TRUE(ee.flags & flag::inject) << ee.msg;
      ++errors;
    }
  };
  while (posted < n && std::chrono::steady_clock::now() < deadline) {
    const errc r = p.a.ep.inject_write(&v, 1, p.to, 0, bad_key);
    if (r == errc::ok) {
      ++posted;
      continue;
    }
    EXPECT_EQ(r, errc::again);
    if (r != errc::again) return -1;
    ++agains;
    serve_then_read();
  }
  EXPECT_EQ(posted, n);
  while (errors < n && std::chrono::steady_clock::now() < deadline) serve_then_read();
  EXPECT_EQ(errors, n) << "every failed inject write is reported (" << agains << " posts were told again)";
  // Nothing more: a delivery-complete write after them completes after every
  // earlier answer was handled (one connection, in order).
  EXPECT_EQ(post([&] { return p.a.ep.write(&v, 1, p.to, 0, *p.mr.key()); }, {&p.a, &p.b}), errc::ok);
  outcome o = next(p.a, {&p.b});
  EXPECT_TRUE(o.ok) << "an extra error entry: " << o.err.msg;
  EXPECT_EQ(p.mem[0], 1);
  cq_entry e{};
  EXPECT_EQ(p.a.cq.read(e), errc::again) << "exactly " << n << " failures";
  EXPECT_EQ(*p.tctr.read_error(), static_cast<std::uint64_t>(n));
  return agains;
}

}  // namespace

TEST(tcp_inject_errors, hundred_failing_inject_writes_into_a_four_entry_cq) {
  EXPECT_GE(failing_inject_writes(100), 0);
}

// More failures than the endpoint can hold waiting: posts are told again
// until the application reads its CQ, and still every failure is reported.
TEST(tcp_inject_errors, more_failing_inject_writes_than_failure_slots_meet_back_pressure) {
  EXPECT_GT(failing_inject_writes(5000), 0) << "a post beyond the 4096 failure slots is again";
}

// Inject writes that work give their failure slots back (a write asks for
// an answer when slots run low): a long stream never ends in again.
TEST(tcp_inject_errors, working_inject_writes_never_run_out_of_failure_slots) {
  node a = open_node("tcp", cap::msg, 0, false, 4);
  node b = open_node("tcp", cap::msg);
  fi_addr_t to = insert(a, b);
  std::vector<unsigned char> mem(4096, 0);
  auto m = b.dom.register_memory(mem.data(), mem.size(), access::remote_write);
  ASSERT_TRUE(m);
  constexpr int n = 20000;
  for (int i = 0; i < n; ++i) {
    const unsigned char v = static_cast<unsigned char>(i);
    ASSERT_EQ(post([&] { return a.ep.inject_write(&v, 1, to, static_cast<std::uint64_t>(i % 4096), *m->key()); },
                   {&a, &b}),
              errc::ok)
        << "write " << i;
  }
  unsigned char last = 0xee;
  ASSERT_EQ(post([&] { return a.ep.write(&last, 1, to, 4095, *m->key()); }, {&a, &b}), errc::ok);
  outcome o = next(a, {&b});
  ASSERT_TRUE(o.ok) << "no failure: " << o.err.msg;
  EXPECT_EQ(mem[4095], 0xee);
  int wrong = 0;
  for (int off = 0; off < 4095; ++off) {
    int i = off + (n - 1 - off) / 4096 * 4096;  // the last write to this byte
    wrong += mem[static_cast<std::size_t>(off)] != static_cast<unsigned char>(i);
  }
  EXPECT_EQ(wrong, 0) << "every byte holds the last write to it";
}

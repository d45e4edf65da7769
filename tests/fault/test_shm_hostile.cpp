// shm: every length a peer gives (message lengths, iov counts and lists,
// RMA lengths, atomic counts, reply statuses) is checked against its limits
// before use. Slots are written into an endpoint's rings directly, as a
// misbehaving same-user process would: the operation they touch fails with
// an error completion, nothing is read past a buffer, nothing crashes.
#include <cstdint>
#include <cstdio>

#include "../common/harness.hpp"
#include "../common/shm_view.hpp"

using namespace weft;
using namespace weft::test;
using namespace weft::prov::shm;

namespace {

constexpr std::uint64_t tib = std::uint64_t{1} << 40;

struct endpoint_id {
  std::uint32_t pid = 0, epid = 0;
};

endpoint_id id_of(const address& a) {
  endpoint_id id;
  unsigned uid = 0;
  std::string s(a.view());
  EXPECT_EQ(std::sscanf(s.c_str(), "weft.%u.%u.%u", &uid, &id.pid, &id.epid), 3) << s;
  return id;
}

// Claims a slot of ring and fills its header in the name of src.
slot_header* claim(util::mpsc_ring& ring, endpoint_id src, op code, std::uint64_t& pos) {
  auto* h = reinterpret_cast<slot_header*>(ring.claim(pos));
  if (!h) return nullptr;
  h->src_pid = src.pid;
  h->src_epid = src.epid;
  h->code = code;
  h->flags = 0;
  h->len = 0;
  h->tag = 0;
  h->data = 0;
  h->cookie = 0;
  h->aux = 0;
  h->seg = 0;
  h->iov_count = 0;
  return h;
}

remote_iov* iovs(slot_header* h) { return reinterpret_cast<remote_iov*>(reinterpret_cast<std::byte*>(h) + 64); }

// An rts announcing len bytes in n buffers, of which the first `given` are
// written from list (and at most the 16 a slot holds).
void post_rts(hostile_view& v, endpoint_id src, std::uint64_t tag, std::uint64_t len, std::uint32_t n,
              const remote_iov* list, std::uint32_t given) {
  std::uint64_t pos;
  slot_header* h = claim(v.ring, src, op::rts, pos);
  ASSERT_NE(h, nullptr);
  h->flags = slot_flag::tagged;
  h->tag = tag;
  h->aux = len;
  h->cookie = 0x7777;
  h->iov_count = n;
  std::copy_n(list, std::min<std::uint32_t>({n, given, 16}), iovs(h));
  ASSERT_TRUE(v.ring.publish(pos));
}

class shm_hostile : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("WEFT_SHM_CMA", "1", 1);
    ::setenv("WEFT_SHM_SPLIT_MIN", "0", 1);
    victim = open_node("shm", cap::msg | cap::tagged);
    good = open_node("shm", cap::msg | cap::tagged);
    g2v = insert(good, victim);
    insert(victim, good);
    me = id_of(*good.ep.name());
  }
  // The next completion at the victim (its error entry), driving good.
  outcome victim_next() { return next(victim, {&good}, 3000); }
  node victim, good;
  fi_addr_t g2v = addr_unspec;
  endpoint_id me;
};

}  // namespace

TEST_F(shm_hostile, sends_larger_than_max_msg_size_are_too_big) {
  EXPECT_EQ(good.inf.ep.max_msg_size, tib);
  std::vector<char> buf(8192, 'x');
  ::iovec huge{buf.data(), tib + 1};  // a buffer whose stated length is larger than the limit
  EXPECT_EQ(good.ep.tsendmsg(msg_desc{&huge, 1, g2v, 0x1, 0, 0, nullptr}, {}), errc::too_big);
  EXPECT_EQ(good.ep.sendmsg(msg_desc{&huge, 1, g2v, 0, 0, 0, nullptr}, {}), errc::too_big);
  ::iovec wraps[2] = {{buf.data(), SIZE_MAX - 10}, {buf.data(), 100}};  // lengths that overflow 64 bits
  EXPECT_EQ(good.ep.sendv(wraps, g2v), errc::too_big);
  if (good.inf.caps & cap::rma) {  // a range longer than a request can state
    EXPECT_EQ(good.ep.write(buf.data(), std::size_t{1} << 32, g2v, 0, 1), errc::too_big);
  }
  // nothing of those reached the victim: the next message is the first it sees
  char got[3] = {};
  ASSERT_EQ(victim.ep.trecv(got, sizeof got, addr_unspec, 0, ~std::uint64_t{0}), errc::ok);
  ASSERT_EQ(good.ep.tsend("ok", 2, g2v, 0x2), errc::ok);
  outcome o = victim_next();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(o.e.tag, 0x2u);
  EXPECT_EQ(std::string(got, 2), "ok");
}

TEST_F(shm_hostile, rendezvous_announcements_with_bad_lengths_fail_their_receive) {
  hostile_view v(*victim.ep.name());
  ASSERT_TRUE(v.ok());
  // What a lying sender points at: 8 KiB of message, then memory it never offered.
  std::vector<unsigned char> mem(64 * 1024, 's');
  std::fill_n(mem.begin(), 8192, 'm');
  const auto at = reinterpret_cast<std::uint64_t>(mem.data());
  struct bad_case {
    const char* what;
    std::uint64_t len;
    std::uint32_t n;
    remote_iov list[2];
  };
  const bad_case cases[] = {
      {"longer than max_msg_size", tib + 1, 1, {{at, tib + 1}, {}}},
      {"17 buffers", 8192, 17, {{at, 8192}, {}}},
      {"buffer lengths that overflow", 8192, 2, {{at, std::uint64_t{1} << 63}, {at, (std::uint64_t{1} << 63) + 8192}}},
      {"buffers that do not add up", 16384, 1, {{at, 8192}, {}}},
  };
  std::vector<unsigned char> dst(64 * 1024, 0);
  std::uint64_t tag = 100;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    ++tag;
    int ctx = 0;
    ASSERT_EQ(victim.ep.trecv(dst.data(), dst.size(), addr_unspec, tag, 0, &ctx), errc::ok);
    post_rts(v, me, tag, c.len, c.n, c.list, 2);
    outcome o = victim_next();
    ASSERT_TRUE(o.error) << "a malformed announcement must fail the receive it matches";
    EXPECT_EQ(o.err.err, errc::io_error) << o.err.msg;
    EXPECT_EQ(o.err.context, &ctx);
    EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](unsigned char b) { return b == 0; }))
        << "nothing may be read from the sender";
  }
  // The same when it arrives before its receive (unexpected), then is received.
  ++tag;
  post_rts(v, me, tag, cases[0].len, cases[0].n, cases[0].list, 2);
  victim.cq.progress();
  ASSERT_EQ(victim.ep.trecv(dst.data(), dst.size(), addr_unspec, tag, 0), errc::ok);
  outcome o = victim_next();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::io_error) << o.err.msg;
  EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](unsigned char b) { return b == 0; }));
  // An inline message longer than a slot can hold.
  ++tag;
  ASSERT_EQ(victim.ep.trecv(dst.data(), dst.size(), addr_unspec, tag, 0), errc::ok);
  std::uint64_t pos;
  slot_header* h = claim(v.ring, me, op::inline_msg, pos);
  ASSERT_NE(h, nullptr);
  h->flags = slot_flag::tagged;
  h->tag = tag;
  h->len = v.h->slot_size;  // 64 bytes more than the payload room
  ASSERT_TRUE(v.ring.publish(pos));
  o = victim_next();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::io_error) << o.err.msg;
  // The victim still works.
  auto payload = pattern(100000, 9);
  ASSERT_EQ(victim.ep.trecv(dst.data(), dst.size(), addr_unspec, 0x55, 0), errc::ok);
  ASSERT_EQ(good.ep.tsend(payload.data(), payload.size() / 2, g2v, 0x55), errc::ok);
  o = victim_next();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_TRUE(std::equal(payload.begin(), payload.begin() + payload.size() / 2, dst.begin()));
}

TEST_F(shm_hostile, requests_with_bad_lengths_are_refused) {
  if (!(victim.inf.caps & cap::rma)) GTEST_SKIP() << "no RMA on shm here";
  std::vector<unsigned char> mem(4096, 0);
  auto m = victim.dom.register_memory(mem.data(), mem.size(), access::remote_read | access::remote_write);
  ASSERT_TRUE(m) << m.error().message;
  std::vector<unsigned char> src(8192, 'w');
  const auto at = reinterpret_cast<std::uint64_t>(src.data());
  hostile_view v(*victim.ep.name());
  ASSERT_TRUE(v.ok());
  auto request = [&](op code, std::uint64_t cookie) {
    std::uint64_t pos;
    slot_header* h = claim(v.req, me, code, pos);
    EXPECT_NE(h, nullptr);
    h->cookie = cookie;
    h->aux = *m->key();
    return std::pair{h, pos};
  };
  constexpr int cases = 6;
  {
    auto [h, pos] = request(op::rma_write, 1);  // 17 buffers
    h->len = 100;
    h->iov_count = 17;
    for (int i = 0; i < 16; ++i) iovs(h)[i] = {at, 100};
    ASSERT_TRUE(v.req.publish(pos));
  }
  {
    auto [h, pos] = request(op::rma_write, 2);  // buffer lengths that overflow to the length
    h->len = 100;
    h->iov_count = 2;
    iovs(h)[0] = {at, std::uint64_t{1} << 63};
    iovs(h)[1] = {at, (std::uint64_t{1} << 63) + 100};
    ASSERT_TRUE(v.req.publish(pos));
  }
  {
    auto [h, pos] = request(op::rma_write, 3);  // buffers that do not add up
    h->len = 100;
    h->iov_count = 1;
    iovs(h)[0] = {at, 50};
    ASSERT_TRUE(v.req.publish(pos));
  }
  {
    auto [h, pos] = request(op::rma_write, 4);  // past the end of the region
    h->len = 4097;
    h->iov_count = 1;
    iovs(h)[0] = {at, 4097};
    ASSERT_TRUE(v.req.publish(pos));
  }
  {
    auto [h, pos] = request(op::rma_read, 5);  // an offset past the end
    h->len = 8;
    h->tag = ~std::uint64_t{0} - 3;
    h->iov_count = 1;
    iovs(h)[0] = {at, 8};
    ASSERT_TRUE(v.req.publish(pos));
  }
  {
    auto [h, pos] = request(op::atomic, 6);  // 100 u64 elements (at most 64 bytes)
    h->flags = static_cast<std::uint16_t>(static_cast<unsigned>(atomic_op::sum) |
                                          static_cast<unsigned>(atomic_type::u64) << 8);
    h->len = 100;
    ASSERT_TRUE(v.req.publish(pos));
  }
  for (int i = 0; i < 10; ++i) victim.cq.progress();
  // The answers wait in good's control ring (good has not progressed): read them in place.
  hostile_view g(*good.ep.name());
  ASSERT_TRUE(g.ok());
  auto* base = static_cast<std::byte*>(g.base) + g.h->ctl_offset;
  int answered = 0;
  for (std::uint64_t i = 0; i < g.h->ctl_count && answered < cases; ++i) {
    auto* h = reinterpret_cast<slot_header*>(base + i * g.h->ctl_slot_size);
    if (h->seq.load() != i + 1) break;  // not published
    if (h->code != op::ack) continue;
    ++answered;
    EXPECT_GE(h->cookie, 1u);
    EXPECT_LE(h->cookie, static_cast<std::uint64_t>(cases));
    EXPECT_EQ(static_cast<errc>(h->aux), errc::invalid_argument) << "request " << h->cookie;
  }
  EXPECT_EQ(answered, cases) << "every request is answered";
  EXPECT_TRUE(std::all_of(mem.begin(), mem.end(), [](unsigned char b) { return b == 0; })) << "nothing written";
  // good takes the (stale) answers and goes on working with the victim
  for (int i = 0; i < 10; ++i) good.cq.progress();
  ASSERT_EQ(good.ep.write(src.data(), 64, g2v, 0, *m->key()), errc::ok);
  outcome o = next(good, {&victim});
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(mem[63], 'w');
}

TEST_F(shm_hostile, a_reply_status_that_is_no_error_code_is_an_io_error) {
  // good announces a message; before the victim answers, a hostile ack with
  // a status no weft::errc has completes it.
  std::vector<unsigned char> big(100000, 'b');
  int sctx = 0;
  ASSERT_EQ(good.ep.send(big.data(), big.size(), g2v, &sctx), errc::ok);
  hostile_view v(*victim.ep.name());
  ASSERT_TRUE(v.ok());
  auto* rts = reinterpret_cast<slot_header*>(static_cast<std::byte*>(v.base) + v.h->ring_offset);
  ASSERT_EQ(rts->code, op::rts);
  hostile_view g(*good.ep.name());
  ASSERT_TRUE(g.ok());
  std::uint64_t pos;
  slot_header* h = claim(g.ctl, id_of(*victim.ep.name()), op::ack, pos);
  ASSERT_NE(h, nullptr);
  h->cookie = rts->cookie;
  h->aux = 999;
  ASSERT_TRUE(g.ctl.publish(pos));
  outcome o = next(good, {}, 3000);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.context, &sctx);
  EXPECT_EQ(o.err.err, errc::io_error) << o.err.msg;
}

// Conformance: messages, tagged messages, inject, CQ data, cancel, truncation,
// peek/claim, directed receive, ordering. Every test runs on every provider
// variant (all_variants()); blocking waits and API misuse are in
// test_msg_waits_and_misuse.cpp (same suite).
#include <sys/wait.h>
#include <unistd.h>

#include <numeric>
#include <set>

#include "../common/child.hpp"
#include "conformance.hpp"

TEST_P(conformance, send_recv_all_sizes) {
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{4096},
                           std::size_t{8191}, std::size_t{8192}, std::size_t{8193}, std::size_t{65536}, std::size_t{65537},
                           std::size_t{1 << 20} + 3, std::size_t{4 << 20}}) {
    SCOPED_TRACE(size);
    round_trip(size, false);
  }
}

TEST_P(conformance, tagged_all_sizes) {
  for (std::size_t size : {std::size_t{0}, std::size_t{8}, std::size_t{4096}, std::size_t{9000}, std::size_t{300000}}) {
    SCOPED_TRACE(size);
    round_trip(size, true);
  }
}

TEST_P(conformance, large_receive_completes_while_sender_does_not_progress) {
  // Only the receiver progresses: whatever the protocol, a single-copy or
  // cooperative receive must finish on its own (segmented needs the sender).
  if (!GetParam().receiver_completes_alone) GTEST_SKIP() << GetParam().name << " needs the sender to stream";
  auto src = pattern(3 << 20, 5);
  std::vector<unsigned char> dst(src.size());
  ASSERT_EQ(b.ep.recv(dst.data(), dst.size()), errc::ok);
  ASSERT_EQ(a.ep.send(src.data(), src.size(), a2b, nullptr), errc::ok);
  outcome r = next(b, {});
  ASSERT_TRUE(r.ok) << r.err.msg;
  EXPECT_EQ(dst, src);
  outcome t = next(a, {&b});
  EXPECT_TRUE(t.ok) << t.err.msg;
}

TEST_P(conformance, automatic_progress_moves_data_while_the_application_sleeps) {
  if (!GetParam().auto_progress) GTEST_SKIP() << "needs the automatic progress thread";
  // 8 MiB exceeds the kernel's socket buffers: it can only finish if the
  // receiving side's thread reads while its application does nothing.
  auto src = pattern(8 << 20, 12);
  std::vector<unsigned char> dst(src.size());
  ASSERT_EQ(b.ep.recv(dst.data(), dst.size()), errc::ok);
  ASSERT_EQ(a.ep.send(src.data(), src.size(), a2b, nullptr), errc::ok);
  outcome t = next(a, {}, 20000);  // b is never driven by this thread
  ASSERT_TRUE(t.ok) << t.err.msg;
  outcome r = next(b, {}, 20000);
  ASSERT_TRUE(r.ok) << r.err.msg;
  EXPECT_EQ(dst, src);
}

TEST_P(conformance, large_iov_lists_both_sides) {
  // 16 pieces each side, sizes that straddle chunk boundaries.
  const std::size_t total = (2 << 20) + 12345;
  auto src = pattern(total, 6);
  std::vector<unsigned char> dst(total);
  std::vector<::iovec> siov, riov;
  std::size_t off = 0;
  for (int i = 0; i < 16; ++i) {
    std::size_t n = i == 15 ? total - off : total / 16 + (i % 3) * 1000 - 1000;
    siov.push_back({src.data() + off, n});
    off += n;
  }
  off = 0;
  for (int i = 0; i < 16; ++i) {
    std::size_t n = i == 15 ? total - off : total / 17;
    riov.push_back({dst.data() + off, n});
    off += n;
  }
  ASSERT_EQ(b.ep.recvv(riov, addr_unspec, nullptr), errc::ok);
  ASSERT_EQ(a.ep.sendv(siov, a2b, nullptr), errc::ok);
  outcome r = next(b, {&a});
  ASSERT_TRUE(r.ok) << r.err.msg;
  EXPECT_EQ(r.e.len, total);
  EXPECT_EQ(dst, src);
  ASSERT_TRUE(next(a, {&b}).ok);
}

TEST_P(conformance, iov_scatter_gather) {
  for (std::size_t total : {std::size_t{100}, std::size_t{200000}}) {
    SCOPED_TRACE(total);
    auto src = pattern(total, 9);
    // three send pieces and four receive pieces, split at different points
    std::size_t s1 = total / 3, s2 = total / 2;
    ::iovec siov[3] = {{src.data(), s1}, {src.data() + s1, s2 - s1}, {src.data() + s2, total - s2}};
    std::vector<unsigned char> r1(total / 5), r2(total / 7), r3(1), r4(total - total / 5 - total / 7 - 1);
    ::iovec riov[4] = {{r1.data(), r1.size()}, {r2.data(), r2.size()}, {r3.data(), 1}, {r4.data(), r4.size()}};
    ASSERT_EQ(b.ep.recvv(riov, addr_unspec, nullptr), errc::ok);
    ASSERT_EQ(post([&] { return a.ep.sendv(siov, a2b, nullptr); }, {&b}), errc::ok);
    outcome r = next(b, {&a});
    ASSERT_TRUE(r.ok) << r.err.msg;
    EXPECT_EQ(r.e.len, total);
    std::vector<unsigned char> got;
    for (auto* v : {&r1, &r2, &r3, &r4}) got.insert(got.end(), v->begin(), v->end());
    EXPECT_EQ(got, src);
    ASSERT_TRUE(next(a, {&b}).ok);
  }
}

TEST_P(conformance, tag_matching_with_ignore_bits_and_order) {
  std::uint64_t r1 = 0, r2 = 0, r3 = 0;
  // posted out of order relative to the sends
  ASSERT_EQ(b.ep.trecv(&r1, 8, addr_unspec, 0x200, 0, &r1), errc::ok);
  ASSERT_EQ(b.ep.trecv(&r2, 8, addr_unspec, 0x100, 0x0ff, &r2), errc::ok);  // 0x1xx
  ASSERT_EQ(b.ep.trecv(&r3, 8, addr_unspec, 0x100, 0x0ff, &r3), errc::ok);
  std::uint64_t v1 = 11, v2 = 22, v3 = 33;
  ASSERT_EQ(a.ep.tinject(&v1, 8, a2b, 0x1ab), errc::ok);
  ASSERT_EQ(a.ep.tinject(&v2, 8, a2b, 0x200), errc::ok);
  ASSERT_EQ(a.ep.tinject(&v3, 8, a2b, 0x1cd), errc::ok);
  std::vector<cq_entry> got;
  for (int i = 0; i < 3; ++i) {
    outcome o = next(b, {&a});
    ASSERT_TRUE(o.ok);
    got.push_back(o.e);
  }
  EXPECT_EQ(r2, 11u) << "first 0x1xx message to the first 0x1xx receive";
  EXPECT_EQ(r1, 22u);
  EXPECT_EQ(r3, 33u);
  for (auto& e : got) {
    if (e.context == &r2) {
      EXPECT_EQ(e.tag, 0x1abu);
    }
    if (e.context == &r3) {
      EXPECT_EQ(e.tag, 0x1cdu);
    }
  }
}

TEST_P(conformance, unexpected_messages_are_buffered) {
  // Sent before any receive is posted: a small message, a large tagged one,
  // a large untagged one. The receives are posted only once the receiver
  // knows the large tagged message (a peek finds it), so the small one, sent
  // before it, has certainly arrived with no receive to take it. (tcp leaves
  // a large unexpected message's payload in the socket until a receive
  // matches it, so nothing behind it is read before that.)
  auto small = pattern(100, 1), big = pattern(500000, 2), big2 = pattern(300000, 3);
  ASSERT_EQ(a.ep.send(small.data(), small.size(), a2b, nullptr), errc::ok);
  ASSERT_EQ(a.ep.tsend(big.data(), big.size(), a2b, 7, nullptr), errc::ok);
  ASSERT_EQ(a.ep.send(big2.data(), big2.size(), a2b, nullptr), errc::ok);
  int pctx = 0;
  msg_desc m{nullptr, 0, addr_unspec, 7, 0, 0, &pctx};
  outcome p;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!p.ok && std::chrono::steady_clock::now() < deadline) {
    a.cq.progress();  // the sender connects and sends meanwhile
    ASSERT_EQ(b.ep.trecvmsg(m, flag::peek), errc::ok);
    p = next(b, {&a});
    if (p.error) {
      ASSERT_EQ(p.err.err, errc::no_message) << p.err.msg;
    }
  }
  ASSERT_TRUE(p.ok) << "the large message never reached the receiver";
  EXPECT_EQ(p.e.context, &pctx);
  EXPECT_EQ(p.e.len, big.size());
  std::vector<unsigned char> d1(100), d2(500000), d3(300000);
  int c1 = 0, c2 = 0, c3 = 0;
  ASSERT_EQ(b.ep.recv(d1.data(), d1.size(), addr_unspec, &c1), errc::ok);
  ASSERT_EQ(b.ep.trecv(d2.data(), d2.size(), addr_unspec, 7, 0, &c2), errc::ok);
  ASSERT_EQ(b.ep.recv(d3.data(), d3.size(), addr_unspec, &c3), errc::ok);
  std::set<void*> done;
  for (int i = 0; i < 3; ++i) {
    outcome r = next(b, {&a});
    ASSERT_TRUE(r.ok) << r.err.msg;
    done.insert(r.e.context);
    if (r.e.context == &c1) {
      EXPECT_EQ(i, 0) << "the small message, buffered, completes first";
      EXPECT_EQ(r.e.len, small.size());
    }
  }
  EXPECT_EQ(done, (std::set<void*>{&c1, &c2, &c3}));
  EXPECT_EQ(d1, small);
  EXPECT_EQ(d2, big);
  EXPECT_EQ(d3, big2);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(next(a, {&b}).ok);
}

TEST_P(conformance, inject_buffer_reusable_and_no_completion) {
  char buf[64];
  std::memset(buf, 'x', sizeof buf);
  ASSERT_EQ(a.ep.inject(buf, sizeof buf, a2b), errc::ok);
  std::memset(buf, 'y', sizeof buf);  // reuse at once
  char got[64] = {};
  ASSERT_EQ(b.ep.recv(got, sizeof got), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  EXPECT_EQ(std::string(got, 64), std::string(64, 'x'));
  cq_entry e;
  EXPECT_EQ(a.cq.read(e), errc::again) << "inject generates no completion";
  std::vector<char> huge(a.inf.tx.inject_size + 1);
  EXPECT_EQ(a.ep.inject(huge.data(), huge.size(), a2b), errc::too_big);
}

TEST_P(conformance, remote_cq_data) {
  char got[16];
  ASSERT_EQ(b.ep.recv(got, sizeof got), errc::ok);
  ASSERT_EQ(a.ep.senddata("hello", 5, 0xabcdef0123ull, a2b, nullptr), errc::ok);
  outcome r = next(b, {&a});
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.e.flags & flag::remote_cq_data);
  EXPECT_EQ(r.e.data, 0xabcdef0123ull);
  EXPECT_EQ(r.e.len, 5u);
  ASSERT_TRUE(next(a, {&b}).ok);
  // tagged, rendezvous-sized, and injected forms
  std::vector<char> big(100000, 'q'), bigdst(100000);
  ASSERT_EQ(b.ep.trecv(bigdst.data(), bigdst.size(), addr_unspec, 5, 0), errc::ok);
  ASSERT_EQ(a.ep.tsenddata(big.data(), big.size(), 77, a2b, 5), errc::ok);
  r = next(b, {&a});
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.e.data, 77u);
  EXPECT_EQ(bigdst, big);
  ASSERT_TRUE(next(a, {&b}).ok);
  ASSERT_EQ(b.ep.trecv(got, sizeof got, addr_unspec, 6, 0), errc::ok);
  ASSERT_EQ(a.ep.tinjectdata("x", 1, 99, a2b, 6), errc::ok);
  r = next(b, {&a});
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.e.data, 99u);
  EXPECT_TRUE(r.e.flags & flag::remote_cq_data);
}

TEST_P(conformance, cancel_posted_receive) {
  char buf[8] = {};
  int ctx = 0;
  ASSERT_EQ(b.ep.recv(buf, sizeof buf, addr_unspec, &ctx), errc::ok);
  EXPECT_EQ(b.ep.cancel(&ctx), errc::ok);
  outcome o = next(b);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::canceled);
  EXPECT_EQ(o.err.context, &ctx);
  EXPECT_EQ(b.ep.cancel(&ctx), errc::not_found) << "nothing left to cancel";
  // A message sent now is not delivered into the canceled buffer: the next
  // receive gets it (waited for, whatever the provider's latency).
  ASSERT_EQ(a.ep.inject("z", 1, a2b), errc::ok);
  char fresh[8] = {};
  int fctx = 0;
  ASSERT_EQ(b.ep.recv(fresh, sizeof fresh, addr_unspec, &fctx), errc::ok);
  outcome r = next(b, {&a});
  ASSERT_TRUE(r.ok) << r.err.msg;
  EXPECT_EQ(r.e.context, &fctx) << "the message went to the receive posted after the cancel";
  EXPECT_EQ(r.e.len, 1u);
  EXPECT_EQ(fresh[0], 'z');
  EXPECT_EQ(buf[0], 0) << "the canceled buffer is untouched";
  cq_entry e;
  EXPECT_EQ(b.cq.read(e), errc::again) << "one message, one completion";
}

TEST_P(conformance, truncation_reports_error_with_lengths) {
  for (std::size_t size : {std::size_t{100}, std::size_t{200000}}) {
    SCOPED_TRACE(size);
    auto src = pattern(size, 3);
    std::vector<unsigned char> dst(size / 2 + 1, 0);
    ASSERT_EQ(b.ep.recv(dst.data(), size / 2), errc::ok);
    ASSERT_EQ(post([&] { return a.ep.send(src.data(), size, a2b, nullptr); }, {&b}), errc::ok);
    outcome o = next(b, {&a});
    ASSERT_TRUE(o.error);
    EXPECT_EQ(o.err.err, errc::truncated);
    EXPECT_EQ(o.err.len, size / 2);
    EXPECT_EQ(o.err.olen, size - size / 2);
    EXPECT_TRUE(std::equal(dst.begin(), dst.begin() + static_cast<long>(size / 2), src.begin()));
    EXPECT_EQ(dst[size / 2], 0) << "nothing written past the buffer";
    outcome t = next(a, {&b});
    EXPECT_TRUE(t.ok) << "truncation is the receiver's error; the send succeeds";
  }
}

TEST_P(conformance, peek_claim_discard) {
  std::uint64_t miss_ctx = 0;
  std::uint64_t buf = 0;
  ::iovec v{&buf, 8};
  msg_desc m{&v, 1, addr_unspec, 0x42, 0, 0, &miss_ctx};
  ASSERT_EQ(b.ep.trecvmsg(m, flag::peek), errc::ok);
  outcome o = next(b);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::no_message);

  std::uint64_t v1 = 1111, v2 = 2222;
  ASSERT_EQ(a.ep.tinjectdata(&v1, 8, 5, a2b, 0x42), errc::ok);
  ASSERT_EQ(a.ep.tinject(&v2, 8, a2b, 0x43), errc::ok);
  // peek: sees the message, leaves it
  int pctx = 0;
  m.context = &pctx;
  outcome p;
  for (int tries = 0; tries < 2000; ++tries) {
    a.cq.progress();  // the sender may still be connecting
    ASSERT_EQ(b.ep.trecvmsg(m, flag::peek), errc::ok);
    p = next(b, {&a});
    if (p.ok) break;
  }
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.e.context, &pctx);
  EXPECT_EQ(p.e.len, 8u);
  EXPECT_EQ(p.e.tag, 0x42u);
  EXPECT_EQ(p.e.data, 5u);
  EXPECT_EQ(p.e.src, b2a);
  // peek|claim reserves it for this context; a normal receive no longer sees it
  int cctx = 0;
  m.context = &cctx;
  ASSERT_EQ(b.ep.trecvmsg(m, flag::peek | flag::claim), errc::ok);
  ASSERT_TRUE(next(b).ok);
  std::uint64_t other = 0;
  ASSERT_EQ(b.ep.trecv(&other, 8, addr_unspec, 0x42, 0, &other), errc::ok);
  for (int i = 0; i < 5; ++i) b.cq.progress();
  cq_entry e;
  EXPECT_EQ(b.cq.read(e), errc::again) << "claimed message must not match a plain receive";
  EXPECT_EQ(b.ep.cancel(&other), errc::ok);
  EXPECT_TRUE(next(b).error);
  // claim: receive the claimed message
  ASSERT_EQ(b.ep.trecvmsg(m, flag::claim), errc::ok);
  o = next(b);
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(buf, 1111u);
  EXPECT_EQ(o.e.context, &cctx);
  EXPECT_EQ(b.ep.trecvmsg(m, flag::claim), errc::not_found) << "already received";
  // peek|discard drops 0x43
  int dctx = 0;
  msg_desc d{&v, 1, addr_unspec, 0x43, 0, 0, &dctx};
  ASSERT_EQ(b.ep.trecvmsg(d, flag::peek | flag::discard), errc::ok);
  ASSERT_TRUE(next(b).ok);
  ASSERT_EQ(b.ep.trecvmsg(d, flag::peek), errc::ok);
  o = next(b);
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::no_message) << "discarded message is gone";
}

TEST_P(conformance, peek_claim_rendezvous_message) {
  auto big = pattern(300000, 4);
  ASSERT_EQ(a.ep.tsend(big.data(), big.size(), a2b, 9, nullptr), errc::ok);
  int c = 0;
  msg_desc m{nullptr, 0, addr_unspec, 9, 0, 0, &c};
  outcome p;
  for (int tries = 0; tries < 2000 && !p.ok; ++tries) {
    a.cq.progress();
    ASSERT_EQ(b.ep.trecvmsg(m, flag::peek | flag::claim), errc::ok);
    p = next(b, {&a});
  }
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.e.len, big.size());
  std::vector<unsigned char> dst(big.size());
  ::iovec v{dst.data(), dst.size()};
  m.iov = &v;
  m.iov_count = 1;
  ASSERT_EQ(b.ep.trecvmsg(m, flag::claim), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  EXPECT_EQ(dst, big);
  ASSERT_TRUE(next(a, {&b}).ok);
}

TEST_P(conformance, discarding_a_large_message_completes_its_sender) {
  auto big = pattern(300000, 8);
  int s1 = 0, s2 = 0;
  ASSERT_EQ(a.ep.tsend(big.data(), big.size(), a2b, 21, &s1), errc::ok);
  ASSERT_EQ(a.ep.tsend(big.data(), big.size(), a2b, 22, &s2), errc::ok);
  // peek|discard the first
  int p1 = 0;
  msg_desc m{nullptr, 0, addr_unspec, 21, 0, 0, &p1};
  outcome o;
  for (int tries = 0; tries < 2000 && !o.ok; ++tries) {
    a.cq.progress();
    ASSERT_EQ(b.ep.trecvmsg(m, flag::peek | flag::discard), errc::ok);
    o = next(b, {&a});
  }
  ASSERT_TRUE(o.ok);
  // peek|claim then claim|discard the second
  int p2 = 0;
  msg_desc m2{nullptr, 0, addr_unspec, 22, 0, 0, &p2};
  o = outcome{};
  for (int tries = 0; tries < 2000 && !o.ok; ++tries) {
    a.cq.progress();
    ASSERT_EQ(b.ep.trecvmsg(m2, flag::peek | flag::claim), errc::ok);
    o = next(b, {&a});
  }
  ASSERT_TRUE(o.ok);
  ASSERT_EQ(b.ep.trecvmsg(m2, flag::claim | flag::discard), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  // both sends complete successfully: discarding is the receiver's choice
  for (int i = 0; i < 2; ++i) {
    outcome t = next(a, {&b});
    ASSERT_TRUE(t.ok) << t.err.msg;
  }
  // and the stream goes on
  char got[3] = {};
  ASSERT_EQ(b.ep.trecv(got, 3, addr_unspec, 23, 0), errc::ok);
  ASSERT_EQ(a.ep.tinject("yes", 3, a2b, 23), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  EXPECT_EQ(std::string(got, 3), "yes");
}

TEST_P(conformance, closing_an_endpoint_returns_its_cq_room) {
  // Two endpoints share a 4-entry CQ; the first posts 4 receives and closes.
  hints h;
  h.provider = GetParam().provider;
  h.type = ep_type::rdm;
  if (GetParam().provider == "tcp") {
    h.node = "127.0.0.1";
    h.source = true;
  }
  auto infos = get_info(h);
  ASSERT_TRUE(infos);
  auto cq = a.dom.open_cq(4);
  ASSERT_TRUE(cq);
  auto e1 = a.dom.open_endpoint(infos->front());
  auto e2 = a.dom.open_endpoint(infos->front());
  ASSERT_TRUE(e1 && e2);
  for (auto* e : {&*e1, &*e2}) {
    ASSERT_TRUE(e->bind(*cq));
    ASSERT_TRUE(e->bind(a.av));
    ASSERT_TRUE(e->enable());
  }
  char buf[4][8];
  for (auto& x : buf) ASSERT_EQ(e1->recv(x, 8), errc::ok);
  EXPECT_EQ(e2->recv(buf[0], 8), errc::again) << "the CQ is fully reserved";
  e1->close();
  EXPECT_EQ(e2->recv(buf[0], 8), errc::ok) << "closing returned the room";
}

TEST_P(conformance, counters_count_sends_receives_and_errors) {
  node s = open_node(GetParam().provider, cap::msg | cap::tagged);
  node r = open_node(GetParam().provider, cap::msg | cap::tagged);
  // fresh endpoints with counters bound before enable
  auto sc = s.dom.open_counter();
  auto rc = r.dom.open_counter();
  ASSERT_TRUE(sc && rc);
  auto se = s.dom.open_endpoint(s.inf);
  auto re = r.dom.open_endpoint(r.inf);
  ASSERT_TRUE(se && re);
  ASSERT_TRUE(se->bind(s.cq) && se->bind(s.av) && se->bind(*sc, flag::send) && se->enable());
  ASSERT_TRUE(re->bind(r.cq) && re->bind(r.av) && re->bind(*rc, flag::recv) && re->enable());
  EXPECT_FALSE(se->bind(*sc, flag::send)) << "bind after enable";
  auto dst = s.av.insert(*re->name());
  ASSERT_TRUE(dst);
  std::vector<char> bufs(10 * 70000);
  std::vector<char> big(70000, 'b');
  for (int i = 0; i < 10; ++i) ASSERT_EQ(re->recv(bufs.data() + i * 70000, 70000), errc::ok);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(se->inject("x", 1, *dst), errc::ok);  // injects count too
  for (int i = 0; i < 5; ++i) ASSERT_EQ(se->send(big.data(), big.size(), *dst, nullptr), errc::ok);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((*sc->read() < 10 || *rc->read() < 10) && std::chrono::steady_clock::now() < deadline) {
    s.cq.progress();
    r.cq.progress();
  }
  EXPECT_EQ(*sc->read(), 10u);
  EXPECT_EQ(*rc->read(), 10u);
  EXPECT_EQ(*sc->read_error(), 0u);
  // wait: reached at once; a higher threshold times out
  EXPECT_EQ(rc->wait(10, 1000), errc::ok);
  EXPECT_EQ(rc->wait(11, 50), errc::timed_out);
  // a truncated receive is an error
  char small[4];
  ASSERT_EQ(re->recv(small, sizeof small), errc::ok);
  ASSERT_EQ(se->inject("too long", 8, *dst), errc::ok);
  errc w = errc::timed_out;
  for (int i = 0; i < 2000 && w != errc::error_available; ++i) {
    s.cq.progress();
    w = rc->wait(11, 1);
  }
  EXPECT_EQ(w, errc::error_available);
  EXPECT_EQ(*rc->read_error(), 1u);
  EXPECT_EQ(rc->wait(11, 20), errc::timed_out) << "the error was seen: no longer reported";
  // add, set
  EXPECT_EQ(rc->add(5), errc::ok);
  EXPECT_EQ(*rc->read(), 15u);
  EXPECT_EQ(rc->set(2), errc::ok);
  EXPECT_EQ(rc->set_error(0), errc::ok);
  EXPECT_EQ(*rc->read(), 2u);
  EXPECT_EQ(*rc->read_error(), 0u);
  // drain completion queues
  cq_entry e;
  cq_err_entry ee;
  for (int i = 0; i < 100; ++i) {
    if (r.cq.read(e) == errc::error_available) (void)r.cq.read_error(ee);
    (void)s.cq.read(e);
  }
}

TEST_P(conformance, directed_receive_and_any_source) {
  node c = open_node(GetParam().provider, cap::msg | cap::tagged | cap::source | cap::directed_recv);
  fi_addr_t c2b = insert(c, b);
  fi_addr_t b2c = insert(b, c);
  std::uint32_t from_c = 0, any = 0;
  ASSERT_EQ(b.ep.recv(&from_c, 4, b2c, &from_c), errc::ok);  // only from c
  ASSERT_EQ(b.ep.recv(&any, 4, addr_unspec, &any), errc::ok);
  std::uint32_t va = 0xA, vc = 0xC;
  ASSERT_EQ(a.ep.inject(&va, 4, a2b), errc::ok);  // a first: must skip the directed receive
  ASSERT_EQ(c.ep.inject(&vc, 4, c2b), errc::ok);
  ASSERT_TRUE(next(b, {&a, &c}).ok);
  ASSERT_TRUE(next(b, {&a, &c}).ok);
  EXPECT_EQ(from_c, 0xCu);
  EXPECT_EQ(any, 0xAu);
  // directed tagged receive from c with a message from a waiting in the
  // unexpected list (waited for: a peek finds it)
  ASSERT_EQ(a.ep.tinject(&va, 4, a2b, 1), errc::ok);
  int pctx = 0;
  msg_desc m{nullptr, 0, b2a, 1, 0, 0, &pctx};
  outcome p;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!p.ok && std::chrono::steady_clock::now() < deadline) {
    a.cq.progress();
    ASSERT_EQ(b.ep.trecvmsg(m, flag::peek), errc::ok);
    p = next(b, {&a, &c});
    if (p.error) {
      ASSERT_EQ(p.err.err, errc::no_message) << p.err.msg;
    }
  }
  ASSERT_TRUE(p.ok) << "a's message never reached b";
  ASSERT_EQ(b.ep.trecv(&from_c, 4, b2c, 1, 0, &from_c), errc::ok);
  ASSERT_EQ(c.ep.tinject(&vc, 4, c2b, 1), errc::ok);
  outcome o = next(b, {&a, &c});
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(o.e.src, b2c);
  ASSERT_EQ(b.ep.trecv(&any, 4, addr_unspec, 1, 0, &any), errc::ok);
  o = next(b, {&a, &c});
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(o.e.src, b2a);
}

TEST_P(conformance, ordering_from_one_sender_mixed_sizes) {
  constexpr int n = 600;
  std::vector<std::vector<std::uint32_t>> bufs(n);
  std::vector<std::size_t> sizes(n);
  for (int i = 0; i < n; ++i) sizes[i] = (i % 7 == 0) ? 50000 : (i % 3 == 0 ? 3000 : 16);
  int posted = 0, received = 0, sent = 0, send_done = 0;
  std::vector<std::vector<std::uint32_t>> src(n);
  for (int i = 0; i < n; ++i) src[i].assign(sizes[i] / 4, static_cast<std::uint32_t>(i));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((received < n || send_done < n) && std::chrono::steady_clock::now() < deadline) {
    while (posted < n && posted - received < 200) {
      bufs[posted].assign(50000 / 4, 0xffffffff);  // as large as what is posted
      if (b.ep.recv(bufs[posted].data(), 50000, addr_unspec, reinterpret_cast<void*>(std::intptr_t{posted})) !=
          errc::ok)
        break;
      ++posted;
    }
    if (sent < n && a.ep.send(src[sent].data(), sizes[sent], a2b, nullptr) == errc::ok) ++sent;
    cq_entry e;
    if (b.cq.read(e) == errc::ok) {
      int idx = static_cast<int>(reinterpret_cast<std::intptr_t>(e.context));
      ASSERT_EQ(idx, received) << "receives complete in posting order";
      ASSERT_EQ(e.len, sizes[idx]) << "message " << idx << " went to the wrong receive";
      ASSERT_TRUE(std::all_of(bufs[idx].begin(), bufs[idx].begin() + static_cast<long>(sizes[idx] / 4),
                              [&](std::uint32_t x) { return x == static_cast<std::uint32_t>(idx); }));
      if (sizes[idx] < 50000) {
        ASSERT_EQ(bufs[idx][sizes[idx] / 4], 0xffffffffu) << "nothing written past the message";
      }
      ++received;
    }
    if (a.cq.read(e) == errc::ok) ++send_done;
  }
  EXPECT_EQ(received, n);
  EXPECT_EQ(send_done, n);
}

TEST_P(conformance, back_pressure_not_loss) {
  // The receiver posts nothing and does not progress: sends must eventually
  // say again (never drop), and everything arrives once it drains.
  constexpr int limit = 2'000'000;  // tcp: the kernel's socket buffers fill first
  int sent = 0;
  errc r = errc::ok;
  for (; sent < limit; ++sent) {
    std::uint32_t v = static_cast<std::uint32_t>(sent);
    r = a.ep.inject(&v, 4, a2b);
    if (r != errc::ok) break;
    if ((sent & 1023) == 0) a.cq.progress();  // the sender's own progress only
  }
  EXPECT_EQ(r, errc::again) << "a full queue is back-pressure";
  const int n = sent + 100;  // a few more once it drains
  int got = 0;
  std::uint32_t v = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (got < n && std::chrono::steady_clock::now() < deadline) {
    if (sent < n) {
      std::uint32_t s = static_cast<std::uint32_t>(sent);
      if (a.ep.inject(&s, 4, a2b) == errc::ok) ++sent;
    }
    if (b.ep.recv(&v, 4, addr_unspec, nullptr) != errc::ok) continue;
    outcome o = next(b, {&a});
    ASSERT_TRUE(o.ok);
    ASSERT_EQ(v, static_cast<std::uint32_t>(got)) << "lost or reordered";
    ++got;
  }
  EXPECT_EQ(got, n);
}

TEST_P(conformance, cq_full_is_back_pressure) {
  node small = open_node(GetParam().provider, cap::msg, 0, false, 4);
  fi_addr_t s2b = insert(small, b);
  char buf[8] = {};
  int ok = 0;
  errc r = errc::ok;
  for (int i = 0; i < 10 && (r = small.ep.send(buf, 8, s2b, nullptr)) == errc::ok; ++i) ++ok;
  EXPECT_EQ(ok, 4) << "one CQ slot per operation in flight";
  EXPECT_EQ(r, errc::again);
  std::size_t total = 0;
  cq_entry es[8];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (total < 4 && std::chrono::steady_clock::now() < deadline) {
    std::size_t n = 0;
    if (small.cq.read(es, n) == errc::ok) total += n;
    b.cq.progress();
  }
  EXPECT_EQ(total, 4u);
  EXPECT_EQ(small.ep.send(buf, 8, s2b, nullptr), errc::ok) << "reading frees room";
}

TEST_P(conformance, many_senders_one_receiver_checksums) {
  // 4 sender processes, 100k messages in all, checksummed per sender.
  constexpr int senders = 4, per = 25000;
  node srv = open_node(GetParam().provider, cap::msg | cap::tagged | cap::source, 0, true, 4096);
  address srv_addr = *srv.ep.name();
  std::vector<pid_t> kids;
  for (int s = 0; s < senders; ++s) {
    pid_t p = ::fork();
    ASSERT_GE(p, 0);
    if (p == 0) {
      forked_child();
      int rc = 1;
      {
        node c = open_node(GetParam().provider, cap::msg | cap::tagged);
        auto dst = c.av.insert(srv_addr);
        std::vector<unsigned char> big(100000);
        if (dst) {
          rc = 0;
          std::uint64_t sum = 0;
          for (int i = 0; i < per && rc == 0; ++i) {
            std::uint64_t msg[4] = {static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i),
                                    static_cast<std::uint64_t>(i) * 2654435761u + s, 0};
            sum += msg[2];
            msg[3] = (i == per - 1) ? sum : 0;
            // every 500th message is large (rendezvous), its tail a pattern
            std::memcpy(big.data(), msg, sizeof msg);
            const bool large = i % 500 == 0;
            // The last one goes with a completion: queues are FIFO, so when it
            // completes every earlier inject has left this process too.
            const bool last = i == per - 1;
            if (large)
              for (std::size_t k = sizeof msg; k < big.size(); ++k) big[k] = static_cast<unsigned char>(k + i);
            auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            errc r;
            int ctx = 0;
            while ((r = large  ? c.ep.tsend(big.data(), big.size(), *dst, static_cast<std::uint64_t>(s), &ctx)
                        : last ? c.ep.tsend(msg, sizeof msg, *dst, static_cast<std::uint64_t>(s), &ctx)
                               : c.ep.tinject(msg, sizeof msg, *dst, static_cast<std::uint64_t>(s))) == errc::again &&
                   std::chrono::steady_clock::now() < deadline)
              c.cq.progress();
            if ((large || last) && r == errc::ok) {  // buffer reuse / the end: wait for this send
              cq_entry done;
              r = c.cq.wait(done, 30000);
            }
            if (r != errc::ok) rc = 2;
          }
        }
      }
      ::_exit(rc);
    }
    kids.push_back(p);
  }
  std::vector<std::uint64_t> next_i(senders, 0), sums(senders, 0), final_sum(senders, 0);
  int total = 0;
  // Receive slots go back to the free list when they complete: large messages
  // may complete after smaller ones posted later.
  std::vector<std::vector<unsigned char>> bufs(64, std::vector<unsigned char>(100000));
  std::vector<int> free_slots;
  for (int i = 63; i >= 0; --i) free_slots.push_back(i);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (total < senders * per && std::chrono::steady_clock::now() < deadline) {
    while (!free_slots.empty()) {
      const int k = free_slots.back();
      if (srv.ep.trecv(bufs[k].data(), 100000, addr_unspec, 0, ~0ull, reinterpret_cast<void*>(std::intptr_t{k})) !=
          errc::ok)
        break;
      free_slots.pop_back();
    }
    cq_entry e;
    errc r = srv.cq.read(e);
    if (r == errc::error_available) {
      cq_err_entry ee;
      (void)srv.cq.read_error(ee);
      FAIL() << ee.msg;
    }
    if (r != errc::ok) continue;
    const int k = static_cast<int>(reinterpret_cast<std::intptr_t>(e.context));
    auto* m = reinterpret_cast<std::uint64_t*>(bufs[k].data());
    ASSERT_LT(m[0], static_cast<std::uint64_t>(senders));
    if (m[1] % 500 == 0) {
      ASSERT_EQ(e.len, 100000u);
      auto* bytes = bufs[k].data();
      for (std::size_t k = 32; k < 100000; k += 997)
        ASSERT_EQ(bytes[k], static_cast<unsigned char>(k + m[1])) << "large message corrupted";
    } else {
      ASSERT_EQ(e.len, 32u);
    }
    ASSERT_EQ(e.tag, m[0]);
    ASSERT_EQ(m[1], next_i[m[0]]) << "per-sender order";
    ASSERT_EQ(m[2], m[1] * 2654435761u + m[0]) << "payload corrupted";
    sums[m[0]] += m[2];
    if (m[1] == per - 1) final_sum[m[0]] = m[3];
    ++next_i[m[0]];
    ++total;
    free_slots.push_back(k);
  }
  EXPECT_EQ(total, senders * per);
  for (int s = 0; s < senders; ++s) EXPECT_EQ(sums[s], final_sum[s]) << "checksum of sender " << s;
  for (pid_t p : kids) {
    const child_status st = wait_child(p, std::chrono::seconds(60), [&] { srv.cq.progress(); });
    EXPECT_TRUE(st.exited_ok()) << "sender " << st.describe();
  }
}

TEST_P(conformance, close_in_any_order) {
  node c = open_node(GetParam().provider, cap::msg);
  fi_addr_t c2b = insert(c, b);
  // drop the parents first: the endpoint keeps them alive
  c.fab.close();
  c.dom.close();
  c.av.close();
  ASSERT_EQ(c.ep.inject("ok", 2, c2b), errc::ok);
  char got[2];
  ASSERT_EQ(b.ep.recv(got, 2), errc::ok);
  ASSERT_TRUE(next(b, {&c}).ok);
  EXPECT_EQ(std::string(got, 2), "ok");
  c.cq.close();
  c.ep.close();
}

TEST_P(conformance, peer_close_is_reported) {
  node c = open_node(GetParam().provider, cap::msg);
  fi_addr_t b2c = insert(b, c);
  c.ep.close();
  // the closed endpoint's ring still has room: rendezvous sends detect it
  std::vector<char> big(100000);
  errc r = b.ep.send(big.data(), big.size(), b2c, nullptr);
  if (r == errc::ok) {
    outcome o = next(b, {}, 3000);
    ASSERT_TRUE(o.error);
    EXPECT_EQ(o.err.err, errc::peer_dead);
  } else {
    EXPECT_EQ(r, errc::peer_dead);
  }
}

INSTANTIATE_TEST_SUITE_P(providers, conformance, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

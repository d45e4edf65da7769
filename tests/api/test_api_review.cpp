// Findings of the review of the public API (issue 9, section 2): lengths a
// caller gives that overflow 64 bits, and atomics whose element count
// overflows the byte limit.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class api_review : public pair_test {};

// An element count whose byte size wraps around 2^64 to 8 bytes: the check
// `count * size <= 64` passed it, and shm's one-sided path then applied the
// operation to 2^61 + 1 elements of the target's memory (far past the
// region, and past the 64-byte buffer of old values).
TEST_P(api_review, atomic_count_whose_byte_size_wraps_is_refused) {
  if (!(a.inf.caps & cap::atomic)) GTEST_SKIP() << GetParam().name << " has no atomics";
  constexpr std::size_t huge = std::numeric_limits<std::size_t>::max() / 8 + 2;  // * 8 == 8 (mod 2^64)
  static_assert(huge * 8 == 8);
  auto m = b.dom.alloc_memory(4096, access::remote_read | access::remote_write);
  ASSERT_TRUE(m) << m.error().message;
  auto where = m->addr();
  ASSERT_TRUE(where);
  auto* t = static_cast<std::uint64_t*>(*where);
  for (int i = 0; i < 512; ++i) t[i] = 1000 + i;
  const std::uint64_t key = *m->key();
  std::uint64_t operand[8] = {7, 7, 7, 7, 7, 7, 7, 7}, compare[8] = {}, result[8] = {};

  EXPECT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, operand, huge, a2b, 0, key), errc::invalid_argument);
  EXPECT_TRUE(last_error_says("at most 64 bytes")) << last_error_message();
  EXPECT_EQ(a.ep.fetch_atomic(atomic_op::sum, atomic_type::u64, operand, result, huge, a2b, 0, key),
            errc::invalid_argument);
  EXPECT_EQ(a.ep.compare_atomic(atomic_type::u64, operand, compare, result, huge, a2b, 0, key),
            errc::invalid_argument);
  // every other size wraps too: i16 with 2^63 + 1 elements is 2 bytes
  const std::size_t huge16 = (std::size_t{1} << 63) + 1;
  EXPECT_EQ(a.ep.atomic(atomic_op::bor, atomic_type::u16, operand, huge16, a2b, 0, key), errc::invalid_argument);

  // a valid one still works, and the refused ones touched nothing
  ASSERT_EQ(post([&] { return a.ep.atomic(atomic_op::sum, atomic_type::u64, operand, 1, a2b, 8, key); }, {&b}),
            errc::ok);
  outcome o = next(a, {&b});
  ASSERT_TRUE(o.ok) << o.err.msg;
  for (int i = 0; i < 512; ++i)
    ASSERT_EQ(t[i], 1000u + i + (i == 1 ? 7 : 0)) << "element " << i;
  cq_entry e;
  EXPECT_EQ(a.cq.read(e), errc::again) << "one completion, for the valid atomic";
}

// Local iov lengths that add up to more than 2^64 bytes: their wrapped sum
// (8 here) passed the length limits; tcp then gathered the first entry
// whole into a 512-byte frame on its stack.
TEST_P(api_review, iov_lengths_that_overflow_are_too_big) {
  std::vector<char> buf(64, 'z'), in(64);
  const ::iovec wrap[2] = {{buf.data(), std::numeric_limits<std::size_t>::max() - 7}, {buf.data(), 16}};
  EXPECT_EQ(a.ep.sendv(wrap, a2b), errc::too_big);
  EXPECT_TRUE(last_error_says("send of 18446744073709551615 bytes")) << last_error_message();
  EXPECT_EQ(a.ep.tsendv(wrap, a2b, 5), errc::too_big);
  EXPECT_EQ(a.ep.sendmsg(msg_desc{wrap, 2, a2b, 0, 0, 0, nullptr}, flag::inject), errc::too_big);
  if (a.inf.caps & cap::rma) {
    auto m = b.dom.register_memory(in.data(), in.size(), access::remote_read | access::remote_write);
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ(a.ep.writev(wrap, a2b, 0, *m->key()), errc::too_big);
    EXPECT_TRUE(last_error_says("RMA of 18446744073709551615 bytes")) << last_error_message();
    EXPECT_EQ(a.ep.readv(wrap, a2b, 0, *m->key()), errc::too_big);
    // nothing was posted: no completion, and the target is untouched
    cq_entry e;
    EXPECT_EQ(a.cq.read(e), errc::again);
    EXPECT_EQ(std::count(in.begin(), in.end(), 0), 64);
  }
  // the message path still works afterwards
  ASSERT_EQ(b.ep.recv(in.data(), in.size()), errc::ok);
  ASSERT_EQ(post([&] { return a.ep.send(buf.data(), 16, a2b); }, {&b}), errc::ok);
  outcome r = next(b, {&a});
  ASSERT_TRUE(r.ok) << r.err.msg;
  EXPECT_EQ(r.e.len, 16u);
}

INSTANTIATE_TEST_SUITE_P(providers, api_review, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

// A tcp send whose connection cannot be made at once fails with peer_dead
// and says why in last_error_message(), instead of leaving there the text of
// an earlier, unrelated failure. (A TCP connect to a multicast address fails
// at once with ENETUNREACH on Linux.)
TEST(api_review_tcp, a_path_that_cannot_be_made_says_why) {
  apply(variants_of("tcp").front());
  node a = open_node("tcp");
  address to = *a.ep.name();
  ASSERT_EQ(to.format, addr_format::inet);
  sockaddr_in sa{};
  std::memcpy(&sa, to.bytes.data(), sizeof sa);
  sa.sin_addr.s_addr = htonl(0xe0000001);  // 224.0.0.1
  std::memcpy(to.bytes.data(), &sa, sizeof sa);
  auto bad = a.av.insert(to);
  ASSERT_TRUE(bad) << bad.error().message;
  char buf[8] = {};
  ASSERT_EQ(a.ep.send(buf, sizeof buf, 12345), errc::invalid_argument);  // an earlier, unrelated failure
  const errc r = a.ep.send(buf, sizeof buf, *bad);
  ASSERT_EQ(r, errc::peer_dead) << to_string(r);
  EXPECT_EQ(std::strstr(last_error_message(), "12345"), nullptr) << "stale: " << last_error_message();
  EXPECT_TRUE(std::strstr(last_error_message(), "send: cannot connect to tcp://224.0.0.1:")) << last_error_message();
  if (a.inf.caps & cap::rma) {
    ASSERT_EQ(a.ep.send(buf, sizeof buf, 12345), errc::invalid_argument);
    ASSERT_EQ(a.ep.write(buf, sizeof buf, *bad, 0, 1), errc::peer_dead);
    EXPECT_TRUE(std::strstr(last_error_message(), "RMA: cannot connect to tcp://224.0.0.1:")) << last_error_message();
    std::uint64_t one = 1;
    ASSERT_EQ(a.ep.send(buf, sizeof buf, 12345), errc::invalid_argument);
    ASSERT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, *bad, 0, 1), errc::peer_dead);
    EXPECT_TRUE(std::strstr(last_error_message(), "atomic: cannot connect to tcp://224.0.0.1:"))
        << last_error_message();
  }
}

}  // namespace

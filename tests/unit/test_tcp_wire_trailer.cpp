// The tcp wire decoder's rules for read answers with a trailer
// (docs/wire/tcp.md, rma_resp flags more and trailer): an answer with bytes
// flagged more is a success; its trailer has no bytes; one flag at most.
#include <gtest/gtest.h>

#include "prov/tcp/wire.hpp"

namespace wire = weft::prov::tcp::wire;

namespace {

wire::status decode(std::uint8_t flags, std::uint64_t len, std::uint64_t data) {
  const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::rma_resp), flags, 0, len,
                             7, data};
  wire::frame_header out{};
  return wire::decode_header(reinterpret_cast<const std::uint8_t*>(&h), sizeof h, std::uint64_t{1} << 32, out);
}

}  // namespace

TEST(tcp_wire_trailer, more_only_on_a_successful_answer_with_bytes) {
  EXPECT_EQ(decode(wire::flag::more, 65536, 0), wire::status::ok);
  EXPECT_EQ(decode(wire::flag::more, 0, 0), wire::status::bad_field) << "without bytes";
  EXPECT_EQ(decode(wire::flag::more, 65536, 5), wire::status::bad_field) << "an error with bytes";
}

TEST(tcp_wire_trailer, a_trailer_has_no_bytes_and_any_status) {
  EXPECT_EQ(decode(wire::flag::trailer, 0, 0), wire::status::ok);
  EXPECT_EQ(decode(wire::flag::trailer, 0, 5), wire::status::ok);
  EXPECT_EQ(decode(wire::flag::trailer, 0, 9), wire::status::ok);
  EXPECT_EQ(decode(wire::flag::trailer, 8, 0), wire::status::bad_field) << "with bytes";
}

TEST(tcp_wire_trailer, one_of_revoked_more_trailer_at_most) {
  EXPECT_EQ(decode(wire::flag::more | wire::flag::trailer, 0, 0), wire::status::bad_field);
  EXPECT_EQ(decode(wire::flag::revoked | wire::flag::trailer, 0, 5), wire::status::bad_field);
  EXPECT_EQ(decode(wire::flag::revoked | wire::flag::more, 8, 0), wire::status::bad_field);
}

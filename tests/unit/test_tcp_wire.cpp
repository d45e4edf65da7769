// The tcp wire decoder's rules for the fields added with peer-failure and
// revocation support (docs/wire/tcp.md): what a peer may send, and nothing
// beyond it. (tests/fuzz runs the whole decoder on random bytes.)
#include <gtest/gtest.h>

#include "prov/tcp/wire.hpp"

namespace wire = weft::prov::tcp::wire;

namespace {

wire::status decode(wire::op op, std::uint8_t flags, std::uint64_t len, std::uint64_t tag, std::uint64_t data) {
  const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(op), flags, 0, len, tag, data};
  wire::frame_header out{};
  return wire::decode_header(reinterpret_cast<const std::uint8_t*>(&h), sizeof h, std::uint64_t{1} << 32, out);
}

}  // namespace

TEST(tcp_wire, rma_resp_revoked_only_as_an_empty_not_found) {
  EXPECT_EQ(decode(wire::op::rma_resp, wire::flag::revoked, 0, 7, 5), wire::status::ok);
  EXPECT_EQ(decode(wire::op::rma_resp, wire::flag::revoked, 8, 7, 5), wire::status::bad_field) << "with bytes";
  EXPECT_EQ(decode(wire::op::rma_resp, wire::flag::revoked, 0, 7, 0), wire::status::bad_field) << "a success";
  EXPECT_EQ(decode(wire::op::rma_resp, wire::flag::revoked, 0, 7, 3), wire::status::bad_field) << "another error";
  EXPECT_EQ(decode(wire::op::rma_resp, 1, 0, 7, 5), wire::status::bad_field) << "an unknown flag";
}

TEST(tcp_wire, hello_ack_no_resources_with_its_reason) {
  EXPECT_EQ(decode(wire::op::hello_ack, 0, 40, 0, static_cast<std::uint64_t>(wire::hello_status::no_resources)),
            wire::status::ok);
  EXPECT_EQ(decode(wire::op::hello_ack, 0, wire::max_cm_data + 1, 0,
                   static_cast<std::uint64_t>(wire::hello_status::no_resources)),
            wire::status::too_long);
  EXPECT_EQ(decode(wire::op::hello_ack, 0, 0, 0, 5), wire::status::bad_field) << "an unknown status";
}

TEST(tcp_wire, close_req_is_an_idle_close_or_a_bye) {
  EXPECT_EQ(decode(wire::op::close_req, 0, 0, 0, 0), wire::status::ok);
  EXPECT_EQ(decode(wire::op::close_req, 0, 0, 0, 1), wire::status::ok) << "bye";
  EXPECT_EQ(decode(wire::op::close_req, 0, 0, 0, 2), wire::status::bad_field);
  EXPECT_EQ(decode(wire::op::close_req, 0, 1, 0, 1), wire::status::bad_field) << "nothing follows a bye";
}

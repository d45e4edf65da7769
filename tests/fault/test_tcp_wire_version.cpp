// tcp: a peer of another wire version is refused at its hello with a
// message it can read, naming both versions (docs/wire/tcp.md, "Versions"):
// a version-1 peer (whose initiators reject the rma_resp flags of version
// 2) never gets a read answer it would misread.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "common/cm.hpp"
#include "common/harness.hpp"
#include "common/raw_frames.hpp"
#include "common/raw_socket.hpp"

using namespace weft;
using namespace weft::test;

namespace {

namespace wire = prov::tcp::wire;

// A raw connection to 127.0.0.1:port that sends a hello in `version`.
int hello_in_version(std::uint16_t port, std::uint16_t ep_type, std::uint8_t version) {
  const int s = raw_connect(port);
  if (s < 0) return -1;
  std::uint8_t frame[sizeof(wire::frame_header) + sizeof(wire::hello_body)]{};
  const wire::frame_header h{wire::magic, version, static_cast<std::uint8_t>(wire::op::hello), 0, 0,
                             sizeof(wire::hello_body), 0, 0};
  wire::hello_body hb{};
  hb.magic = wire::hello_magic;
  hb.ep_type = ep_type;
  hb.family = AF_INET;
  std::memcpy(frame, &h, sizeof h);
  std::memcpy(frame + sizeof h, &hb, sizeof hb);
  if (::send(s, frame, sizeof frame, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof frame)) {
    ::close(s);
    return -1;
  }
  return s;
}

// n bytes from s (bounded), driving meanwhile.
template <class F>
std::string read_text(int s, std::size_t n, F drive) {
  std::string out(n, '\0');
  std::size_t got = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (got < n && std::chrono::steady_clock::now() < until) {
    drive();
    pollfd p{s, POLLIN, 0};
    if (::poll(&p, 1, 1) != 1) continue;
    const ssize_t r = ::recv(s, out.data() + got, n - got, MSG_DONTWAIT);
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

}  // namespace

TEST(tcp_wire_version, version_is_2) { EXPECT_EQ(wire::version, 2); }

TEST(tcp_wire_version, an_rdm_endpoint_refuses_a_version_1_hello_with_a_message_naming_both_versions) {
  node srv = open_node("tcp", cap::msg);
  const std::uint16_t port = port_of(*srv.ep.name());
  const int s = hello_in_version(port, 2, 1);
  ASSERT_GE(s, 0);
  auto drive = [&] { srv.cq.progress(); };
  auto h = read_frame(s, drive);
  ASSERT_TRUE(h.has_value()) << "no answer to a version-1 hello (closed without a word)";
  EXPECT_EQ(h->magic, wire::magic);
  EXPECT_EQ(h->version, 1) << "the refusal must be in the peer's version, which it can read";
  EXPECT_EQ(h->op, static_cast<std::uint8_t>(wire::op::hello_ack));
  EXPECT_EQ(h->data, static_cast<std::uint64_t>(wire::hello_status::no_resources));
  ASSERT_GT(h->len, 0u);
  ASSERT_LE(h->len, wire::max_cm_data);
  const std::string why = read_text(s, h->len, drive);
  EXPECT_NE(why.find("version 1"), std::string::npos) << why;
  EXPECT_NE(why.find("version 2"), std::string::npos) << why;
  ::close(s);
}

TEST(tcp_wire_version, a_passive_endpoint_refuses_a_version_1_hello_with_a_message_naming_both_versions) {
  side srv = open_side(msg_info(true));
  auto pep = srv.dom.open_passive_endpoint(srv.inf);
  ASSERT_TRUE(pep) << pep.error().message;
  ASSERT_TRUE(pep->bind(srv.eq));
  const std::uint16_t port = port_of(*pep->name());
  const int s = hello_in_version(port, 1, 1);
  ASSERT_GE(s, 0);
  auto drive = [&] {
    eq_event e;
    (void)srv.eq.read(e);
    srv.cq.progress();
  };
  auto h = read_frame(s, drive);
  ASSERT_TRUE(h.has_value()) << "no answer to a version-1 hello (closed without a word)";
  EXPECT_EQ(h->version, 1);
  EXPECT_EQ(h->op, static_cast<std::uint8_t>(wire::op::hello_ack));
  const std::string why = read_text(s, h->len, drive);
  EXPECT_NE(why.find("version 1"), std::string::npos) << why;
  EXPECT_NE(why.find("version 2"), std::string::npos) << why;
  ::close(s);
}

// tcp: new connections from a peer whose old connection is still closing
// wait ("held") until it is gone, so that no message overtakes an older one.
// When it goes, every one of them is answered: the first is taken, the
// others are told to use it (duplicate). None stays held on a connection
// that no longer exists (each would hang its peer until the timeout).
//
// The peer is played with raw sockets speaking the wire protocol
// (docs/wire/tcp.md), so that its connections can be held on purpose.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <vector>

#include "../common/fds.hpp"
#include "../common/harness.hpp"
#include "../common/raw_frames.hpp"
#include "../common/raw_socket.hpp"
#include "prov/tcp/wire.hpp"

using namespace weft;
using namespace weft::test;
namespace wire = weft::prov::tcp::wire;

namespace {

// The socket descriptors of this process (the endpoint's accepted
// connections among them), by number.
std::set<int> socket_fds() {
  std::set<int> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return out;
  const int self = ::dirfd(d);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    char link[64] = {};
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (fd != self && ::readlink(path, link, sizeof link - 1) > 0 && std::strncmp(link, "socket:", 7) == 0)
      out.insert(fd);
  }
  ::closedir(d);
  return out;
}

// Bytes waiting to be read on a socket.
int unread(int fd) {
  int n = -1;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

// A raw peer connection claiming the listening address 127.0.0.1:claimed.
int raw_hello(const address& to, std::uint16_t claimed) {
  sockaddr_in sa{};
  std::memcpy(&sa, to.bytes.data(), sizeof sa);
  return weft::test::raw_hello(sa, 2 /* rdm */, claimed, in_addr{htonl(INADDR_LOOPBACK)});
}

// The next frame header on s, driving n meanwhile; nullopt at EOF, on an
// error, or after timeout_ms.
std::optional<wire::frame_header> next_frame(int s, node& n) {
  return read_frame(s, [&] { (void)n.cq.progress(); });
}

}  // namespace

TEST(tcp_held_conns, every_connection_held_on_a_closing_one_is_answered_when_it_goes) {
  // Idle connections close after 100 ms: the first connection starts its
  // close handshake (close_req) and the peer never finishes it.
  ::setenv("WEFT_TCP_IDLE_MS", "100", 1);
  node a = open_node("tcp");
  ::unsetenv("WEFT_TCP_IDLE_MS");
  const address me = *a.ep.name();
  constexpr std::uint16_t claimed = 9;  // the peer's "listening port": never connected to

  const int first = raw_hello(me, claimed);
  ASSERT_GE(first, 0);
  auto ack = next_frame(first, a);
  ASSERT_TRUE(ack) << "no hello_ack";
  ASSERT_EQ(ack->op, static_cast<std::uint8_t>(wire::op::hello_ack));
  ASSERT_EQ(ack->data, static_cast<std::uint64_t>(wire::hello_status::ok));
  auto creq = next_frame(first, a);  // the idle close begins
  ASSERT_TRUE(creq) << "no close_req";
  ASSERT_EQ(creq->op, static_cast<std::uint8_t>(wire::op::close_req));

  // Three new connections from the same peer while the first is closing.
  const int fds_before = count_fds();
  const std::set<int> sockets_before = socket_fds();
  constexpr int n_new = 3;
  int s[n_new];
  for (int& x : s) {
    x = raw_hello(me, claimed);
    ASSERT_GE(x, 0);
  }
  // They are accepted (one descriptor each) and their hellos read (held:
  // no answer while the first connection is there). Drive the endpoint
  // until all are accepted and the endpoint has read every hello (nothing
  // left unread on its side of each).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (count_fds() < fds_before + 2 * n_new && std::chrono::steady_clock::now() < deadline) (void)a.cq.progress();
  ASSERT_EQ(count_fds(), fds_before + 2 * n_new) << "the endpoint did not accept the new connections";
  std::vector<int> accepted;
  for (int fd : socket_fds())
    if (!sockets_before.count(fd) && std::find(std::begin(s), std::end(s), fd) == std::end(s)) accepted.push_back(fd);
  ASSERT_EQ(accepted.size(), static_cast<std::size_t>(n_new)) << "the endpoint's side of each new connection";
  auto all_read = [&] {
    return std::all_of(accepted.begin(), accepted.end(), [](int fd) { return unread(fd) == 0; });
  };
  while (!all_read() && std::chrono::steady_clock::now() < deadline) (void)a.cq.progress();
  ASSERT_TRUE(all_read()) << "the endpoint did not read the new connections' hellos (they were not held)";
  for (int i = 0; i < 100; ++i) (void)a.cq.progress();  // a chance to answer them, which it must not take
  for (int x : s) {
    pollfd p{x, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 0), 0) << "a connection was answered while the old one is still closing";
  }

  // The first connection goes: every held one is answered, exactly once.
  ::close(first);
  int ok = 0, dup = 0;
  for (int i = 0; i < n_new; ++i) {
    auto h = next_frame(s[i], a);
    ASSERT_TRUE(h) << "connection " << i << " was never answered (left held)";
    ASSERT_EQ(h->op, static_cast<std::uint8_t>(wire::op::hello_ack));
    ok += h->data == static_cast<std::uint64_t>(wire::hello_status::ok);
    dup += h->data == static_cast<std::uint64_t>(wire::hello_status::duplicate);
  }
  EXPECT_EQ(ok, 1) << "one of them is the new path";
  EXPECT_EQ(dup, n_new - 1) << "the others are told to use it";
  for (int x : s) ::close(x);
}

// Busy is not dead when the SENDER stops calling in (issue 9): a sender
// queues more than the socket buffers hold to a receiver that does not read,
// then computes without calling weft for several times WEFT_TCP_TIMEOUT_MS.
// Its kernel probes the closed window meanwhile and the receiver's kernel
// answers every probe: nothing may fail (Linux's TCP_USER_TIMEOUT would
// abort that connection, so weft judges the silence at tick time instead:
// docs/design.md, "Peer failure").
#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

struct env_guard {
  env_guard(std::initializer_list<std::pair<const char*, const char*>> kv) {
    for (auto& [k, v] : kv) {
      ::setenv(k, v, 1);
      keys.push_back(k);
    }
  }
  ~env_guard() {
    for (auto* k : keys) ::unsetenv(k);
  }
  std::vector<const char*> keys;
};

// Whether a tcp socket of this process has bytes its kernel cannot send
// because the peer advertises a zero window.
bool a_window_is_closed() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return false;
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    const int fd = std::atoi(e->d_name);
    if (fd <= 2 || fd == ::dirfd(d)) continue;
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) continue;
    if (len < offsetof(tcp_info, tcpi_snd_wnd) + sizeof ti.tcpi_snd_wnd) continue;
    if (ti.tcpi_snd_wnd == 0 && ti.tcpi_notsent_bytes > 0) found = true;
  }
  ::closedir(d);
  return found;
}

}  // namespace

TEST(tcp_busy_sender, a_sender_that_stops_calling_in_while_the_window_is_closed_keeps_its_connection) {
  env_guard env{{"WEFT_PROGRESS", "manual"}, {"WEFT_TCP_TIMEOUT_MS", "1000"}};
  node a = open_node("tcp", cap::msg);
  node b = open_node("tcp", cap::msg);
  const fi_addr_t to_b = insert(a, b);
  // The connection is up: one small message.
  std::uint64_t v = 5, got_v = 0;
  ASSERT_EQ(b.ep.recv(&got_v, sizeof got_v), errc::ok);
  ASSERT_EQ(post([&] { return a.ep.inject(&v, sizeof v, to_b); }, {&a, &b}), errc::ok);
  const outcome first = next(b, {&a}, 5000);
  ASSERT_TRUE(first.ok) << first.err.msg;
  ASSERT_EQ(got_v, 5u);

  // 64 MiB: many times what the socket buffers hold. The send writes what
  // the socket takes at once; from then on a does not call weft: its kernel
  // pushes the bytes until b's window closes (b reads nothing), and no tick
  // of a's ever sees that window.
  const auto big = pattern(std::size_t{64} << 20, 23);
  ASSERT_EQ(a.ep.send(big.data(), big.size(), to_b, nullptr), errc::ok);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() < until) {
    closed = a_window_is_closed();
    if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // between two looks at the kernel
  }
  ASSERT_TRUE(closed) << "the receiver's window never closed within 20 s";

  // Neither side calls weft for 3.5 times the timeout (more in all): the
  // sender computes, the receiver too. (The pause is the scenario, not a synchronisation.)
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));

  // Both resume: every byte arrives, nothing failed on either side.
  std::vector<unsigned char> got(big.size());
  ASSERT_EQ(b.ep.recv(got.data(), got.size()), errc::ok);
  int done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (done < 2 && std::chrono::steady_clock::now() < deadline) {
    for (node* n : {&a, &b}) {
      cq_entry e{};
      const errc r = n->cq.read(e);
      if (r == errc::ok) ++done;
      if (r == errc::error_available) {
        cq_err_entry ee{};
        ASSERT_EQ(n->cq.read_error(ee), errc::ok);
        FAIL() << (n == &a ? "the sender" : "the receiver") << " failed after the pause: " << to_string(ee.err)
               << ": " << ee.msg;
      }
    }
  }
  ASSERT_EQ(done, 2) << "the send and the receive did not both complete within 30 s";
  EXPECT_TRUE(got == big) << "bytes differ";

  // The connection still carries messages both ways.
  const fi_addr_t to_a = insert(b, a);
  v = 6;
  ASSERT_EQ(a.ep.recv(&got_v, sizeof got_v), errc::ok);
  ASSERT_EQ(post([&] { return b.ep.inject(&v, sizeof v, to_a); }, {&a, &b}), errc::ok);
  const outcome back = next(a, {&b}, 5000);
  ASSERT_TRUE(back.ok) << back.err.msg;
  EXPECT_EQ(got_v, 6u);
}

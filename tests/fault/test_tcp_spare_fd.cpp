// tcp: the domain's spare descriptor (the one a listener out of descriptors
// uses to take a waiting connection, tell it why and close it) is shared by
// every endpoint and passive endpoint of the domain, and endpoints refuse
// from their own threads (automatic progress) while others open. Several
// threads refusing connections and opening the spare at once: every refused
// peer gets the whole reason, then the end of the connection; no descriptor
// is leaked or closed twice (the process's descriptor count is the same
// before and after, and no other socket was closed under a thread's feet).
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../common/fds.hpp"
#include "prov/tcp/tcp.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int threads = 4;
constexpr int rounds = 150;  // per thread
const char reason[] = "out of file descriptors (test): refused";

}  // namespace

TEST(tcp_spare_fd, concurrent_refusals_each_tell_the_reason_and_leak_nothing) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::listen(lfd, 512), 0);
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &sl), 0);
  const int before_domain = count_fds();
  {
    auto dom = std::make_shared<prov::tcp::domain_impl>(prov::tcp::config{});
    ASSERT_TRUE(dom->open_spare());
    const int before = count_fds();
    std::atomic<int> told{0}, wrong{0}, stuck{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&] {
        for (int i = 0; i < rounds && !stop; ++i) {
          // a peer connects (the kernel completes it from the backlog) ...
          const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            ++wrong;
            if (c >= 0) ::close(c);
            continue;
          }
          timeval tv{5, 0};  // bound every read
          (void)::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
          // ... and each thread refuses one waiting peer (its own or
          // another's: every connected peer is waiting until one does), while
          // others open the spare (as a new endpoint does)
          (void)dom->open_spare();
          for (int k = 0; k < 1000 && dom->refuse_with_spare(lfd, reason, sizeof reason) != 1; ++k)
            (void)dom->open_spare();
          // the whole reason, then the end of the connection
          char buf[sizeof reason + 16];
          std::size_t got = 0;
          bool eof = false;
          for (int k = 0; k < 64 && !eof; ++k) {
            const ssize_t n = ::recv(c, buf + got, sizeof buf - got, 0);
            if (n > 0) got += static_cast<std::size_t>(n);
            else eof = n == 0;
            if (n < 0 && errno != EINTR) break;
          }
          if (!eof) ++stuck;
          else if (got == sizeof reason && std::memcmp(buf, reason, sizeof reason) == 0) ++told;
          else ++wrong;
          ::close(c);
        }
      });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(wrong.load(), 0) << "a peer got no reason, or a part of it";
    EXPECT_EQ(stuck.load(), 0) << "a peer was left hanging (its connection neither answered nor closed)";
    EXPECT_EQ(told.load(), threads * rounds);
    EXPECT_EQ(count_fds(), before) << "a descriptor was leaked or closed twice";
  }
  EXPECT_EQ(count_fds(), before_domain) << "the domain closes its spare";
  ::close(lfd);
}

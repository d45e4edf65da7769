// tcp: a connection that epoll cannot watch (epoll_ctl ADD failing, as when
// fs.epoll.max_user_watches is reached) fails with the reason at once; it
// was left unwatched, its operations waiting until the connect timeout.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "common/harness.hpp"
#include "prov/tcp/test_hooks.hpp"

namespace weft::test {
namespace {

namespace hooks = prov::tcp::test_hooks;

struct reset_hook {
  ~reset_hook() { hooks::fail_epoll_adds = 0; }
};

TEST(tcp_epoll_failures, a_connection_epoll_cannot_watch_fails_with_the_reason) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node a = open_node("tcp");
  node b = open_node("tcp");
  ASSERT_TRUE(a.ep && b.ep);
  const fi_addr_t a2b = insert(a, b);
  char msg[16] = "hello";
  reset_hook r;
  hooks::fail_epoll_adds = 1;  // the new connection's epoll_ctl(ADD)
  const errc st = a.ep.send(msg, sizeof msg, a2b, nullptr);
  EXPECT_EQ(hooks::fail_epoll_adds.load(), 0) << "the hook was not reached";
  EXPECT_EQ(st, errc::no_memory) << "the send was taken on a connection nobody watches";
  EXPECT_NE(std::string(last_error_message()).find("epoll_ctl"), std::string::npos) << last_error_message();
  // Descriptors watched again: the next send connects and arrives.
  char got[16] = {};
  ASSERT_EQ(b.ep.recv(got, sizeof got, addr_unspec, nullptr), errc::ok);
  ASSERT_EQ(a.ep.send(msg, sizeof msg, a2b, nullptr), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  EXPECT_STREQ(got, "hello");
}

}  // namespace
}  // namespace weft::test

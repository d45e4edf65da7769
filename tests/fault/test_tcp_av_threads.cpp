// tcp address vectors and the automatic-progress thread: the application's
// insert, remove and lookup take the domain's lock, so a hello that the
// progress thread handles (reverse(), which inserts with auto_insert) never
// meets them in the table.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "common/harness.hpp"
#include "prov/tcp/test_hooks.hpp"

namespace weft::test {
namespace {

namespace hooks = prov::tcp::test_hooks;

address fake_address(std::uint32_t i) {  // 10.x.y.z:port, never connected to
  sockaddr_in s{};
  s.sin_family = AF_INET;
  s.sin_addr.s_addr = htonl(0x0a000000u | (i & 0xffffffu));
  s.sin_port = htons(static_cast<std::uint16_t>(1000 + (i % 50000)));
  address a;
  a.format = addr_format::inet;
  a.size = sizeof s;
  std::memcpy(a.bytes.data(), &s, sizeof s);
  return a;
}

node open_auto_server() {
  ::setenv("WEFT_PROGRESS", "auto", 1);
  node n = open_node("tcp", cap::msg | cap::tagged, 0, /*auto_insert=*/true);
  ::setenv("WEFT_PROGRESS", "manual", 1);
  return n;
}

// The state the hook of the held insert shares with the test.
struct held_insert {
  std::thread::id app;
  node* client = nullptr;
  int reverses_before = 0;
  bool overlapped = false;
  bool client_sent = false;
  char buf[8] = "hello";
};
held_insert* held = nullptr;

// In the application's insert (the lock held, with the fix): the client
// connects and sends its hello meanwhile. The progress thread must not look
// it up in the table until this insert is over. Bounded: 1 s (the negative
// outcome, the hello waiting, takes the whole second; the positive one, the
// hello handled, would come within milliseconds).
void hold_insert() {
  if (!held || std::this_thread::get_id() != held->app) return;  // the progress thread's own inserts
  held->reverses_before = hooks::av_reverses.load();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (std::chrono::steady_clock::now() < deadline) {
    held->client->cq.progress();
    if (hooks::av_reverses.load() != held->reverses_before) {
      held->overlapped = true;
      return;
    }
  }
}

TEST(tcp_av_threads, progress_thread_waits_for_an_insert_in_progress) {
  node srv = open_auto_server();
  node cli = open_node("tcp");
  ASSERT_TRUE(srv.ep && cli.ep);
  const fi_addr_t to_srv = insert(cli, srv);
  // The client's send opens the connection; its hello reaches the server
  // while the application is inside insert().
  held_insert h;
  h.app = std::this_thread::get_id();
  h.client = &cli;
  held = &h;
  hooks::av_insert_hook = hold_insert;
  ASSERT_EQ(cli.ep.send(h.buf, sizeof h.buf, to_srv, nullptr), errc::ok);
  auto r = srv.av.insert(fake_address(1));
  hooks::av_insert_hook = nullptr;
  held = nullptr;
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_FALSE(h.overlapped) << "the progress thread used the address vector (a hello's reverse lookup) while the "
                                "application was inside insert()";
  // And the message arrives, attributed to the client.
  char got[8] = {};
  ASSERT_EQ(srv.ep.recv(got, sizeof got, addr_unspec, nullptr), errc::ok);
  outcome o = next(srv, {&cli});
  ASSERT_TRUE(o.ok);
  EXPECT_STREQ(got, "hello");
  auto who = srv.av.lookup(o.e.src);
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ(to_string(*who), to_string(*cli.ep.name()));
}

// The same without a hook: an application thread inserting and removing
// while clients connect (each hello inserts it, auto_insert). Without the
// lock this corrupts the table (ASan reports it; the release build crashes
// or loses entries).
TEST(tcp_av_threads, inserts_and_removes_race_hellos_of_new_clients) {
  node srv = open_auto_server();
  ASSERT_TRUE(srv.ep);
  constexpr int clients = 24;
  std::vector<std::unique_ptr<node>> cli;
  std::vector<fi_addr_t> to_srv;
  for (int i = 0; i < clients; ++i) {
    cli.push_back(std::make_unique<node>(open_node("tcp")));
    ASSERT_TRUE(cli.back()->ep);
    to_srv.push_back(insert(*cli.back(), srv));
  }
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread app([&] {
    std::uint32_t next_addr = 0;
    std::vector<fi_addr_t> mine;
    while (!stop.load()) {
      for (int i = 0; i < 64; ++i) {
        auto r = srv.av.insert(fake_address(next_addr++));
        if (r) mine.push_back(*r);
        else failures.fetch_add(1);
      }
      for (fi_addr_t a : mine) {
        if (!srv.av.lookup(a)) failures.fetch_add(1);
        if (!srv.av.remove(a)) failures.fetch_add(1);
      }
      mine.clear();
    }
  });
  std::vector<std::array<char, 16>> got(clients);
  for (int i = 0; i < clients; ++i) ASSERT_EQ(srv.ep.recv(got[i].data(), got[i].size(), addr_unspec, nullptr), errc::ok);
  std::vector<std::array<char, 16>> msg(clients);
  for (int i = 0; i < clients; ++i) {
    std::snprintf(msg[i].data(), msg[i].size(), "client %d", i);
    ASSERT_EQ(cli[i]->ep.send(msg[i].data(), msg[i].size(), to_srv[i], nullptr), errc::ok);
  }
  // Drive the clients until every send completed, then read the server.
  std::vector<node*> all;
  for (auto& c : cli) all.push_back(c.get());
  for (int i = 0; i < clients; ++i) {
    outcome o = next(*cli[i], all);
    EXPECT_TRUE(o.ok) << "client " << i;
  }
  std::vector<int> seen(clients, 0);
  for (int i = 0; i < clients; ++i) {
    outcome o = next(srv, all);
    ASSERT_TRUE(o.ok);
    auto who = srv.av.lookup(o.e.src);
    ASSERT_TRUE(who.has_value()) << "a client's message came from a handle the AV does not know";
    for (int k = 0; k < clients; ++k)
      if (to_string(*who) == to_string(*cli[k]->ep.name())) {
        ++seen[k];
        auto again = srv.av.insert(*cli[k]->ep.name());  // already there: the same handle
        ASSERT_TRUE(again.has_value());
        EXPECT_EQ(*again, o.e.src) << "client " << k;
      }
  }
  stop = true;
  app.join();
  EXPECT_EQ(failures.load(), 0);
  for (int k = 0; k < clients; ++k) EXPECT_EQ(seen[k], 1) << "client " << k;
}

}  // namespace
}  // namespace weft::test

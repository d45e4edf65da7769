// set_context: the context an endpoint's events carry, set by the
// application while tcp's automatic-progress thread builds those events (the
// spi field is atomic, so this is no data race: run it under
// ThreadSanitizer to see one without that).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "../common/cm.hpp"
#include "weft/spi/provider.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// Without ThreadSanitizer the test below passes with a plain field too (a
// torn pointer is not observable on x86-64): this is what fails without the
// fix in every build.
static_assert(std::is_same_v<decltype(spi::endpoint::context), std::atomic<void*>> &&
                  std::is_same_v<decltype(spi::passive_endpoint::context), std::atomic<void*>>,
              "set_context stores while a progress thread reads: the field must be atomic");

errc next_event(event_queue& q, eq_event& e) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  errc r = errc::again;
  while (r == errc::again && std::chrono::steady_clock::now() < deadline) r = q.wait(e, 100);
  return r;
}

TEST(event_context, set_while_a_progress_thread_builds_events) {
  ::setenv("WEFT_PROGRESS", "auto", 1);
  const info si = msg_info(true, 0);
  auto sfab = fabric::open(si);
  ASSERT_TRUE(sfab);
  auto sdom = sfab->open_domain(si);
  ASSERT_TRUE(sdom);
  auto seq = sdom->open_eq();
  auto pep = sdom->open_passive_endpoint(si);
  ASSERT_TRUE(seq && pep) << (pep ? "" : pep.error().message);
  ASSERT_TRUE(pep->bind(*seq));
  auto where = pep->name();
  ASSERT_TRUE(where);
  sockaddr_in sa{};
  std::memcpy(&sa, where->bytes.data(), sizeof sa);
  const info ci = msg_info(false, ntohs(sa.sin_port));
  auto cfab = fabric::open(ci);
  ASSERT_TRUE(cfab);
  auto cdom = cfab->open_domain(ci);
  ASSERT_TRUE(cdom);
  auto ccq = cdom->open_cq(16);
  auto ceq = cdom->open_eq();
  ASSERT_TRUE(ccq && ceq);

  // Another thread keeps changing the listener's context while the progress
  // thread builds its connreq events (under ThreadSanitizer, a plain field
  // there was a data race).
  int flip_a = 0, flip_b = 0;
  std::atomic<bool> stop{false};
  pep->set_context(&flip_a);  // before the thread: every event carries one of the two
  std::thread flipper([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      pep->set_context(&flip_b);
      pep->set_context(&flip_a);
    }
  });
  struct joiner {  // stops the thread however the test ends
    std::atomic<bool>& stop;
    std::thread& t;
    ~joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join_at_exit{stop, flipper};
  int client_ctx[8];
  for (int i = 0; i < 8; ++i) {
    SCOPED_TRACE(i);
    auto ep = cdom->open_endpoint(ci);
    ASSERT_TRUE(ep) << ep.error().message;
    ASSERT_TRUE(ep->bind(*ccq));
    ASSERT_TRUE(ep->bind(*ceq));
    ASSERT_TRUE(ep->enable());
    ASSERT_EQ(ep->set_context(&client_ctx[i]), errc::ok);
    ASSERT_TRUE(ep->connect(*ci.dest_addr));
    eq_event req;
    ASSERT_EQ(next_event(*seq, req), errc::ok);
    ASSERT_EQ(req.type, eq_event::kind::connreq) << req.message;
    EXPECT_TRUE(req.context == &flip_a || req.context == &flip_b) << req.context;
    ASSERT_TRUE(pep->reject(req.req));
    eq_event refused;
    ASSERT_EQ(next_event(*ceq, refused), errc::ok);
    EXPECT_EQ(refused.type, eq_event::kind::error);
    EXPECT_EQ(refused.err, errc::permission_denied) << refused.message;
    EXPECT_EQ(refused.context, &client_ctx[i]);
  }
  stop = true;
  flipper.join();
  // and a context set before the events is the one they carry
  int fixed = 0;
  pep->set_context(&fixed);
  auto ep = cdom->open_endpoint(ci);
  ASSERT_TRUE(ep && ep->bind(*ccq) && ep->bind(*ceq) && ep->enable());
  ASSERT_TRUE(ep->connect(*ci.dest_addr));
  eq_event req;
  ASSERT_EQ(next_event(*seq, req), errc::ok);
  EXPECT_EQ(req.context, &fixed);
  ASSERT_TRUE(pep->reject(req.req));
  ::setenv("WEFT_PROGRESS", "manual", 1);
}

}  // namespace

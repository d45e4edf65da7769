// Event-queue waits woken by what they wait for, not by a timer: with the
// liveness pulse off (spi::set_wait_pulse), a blocking wait on a listener's
// EQ returns the connection request a client makes while it sleeps, before
// its deadline, and its wait_stats() count a word wake and no timer wake.
// Manual progress: the wait sleeps on the domain's descriptor, which it
// drives. Automatic progress: the domain's thread takes the descriptor's
// events and pushes the request; the wait sleeps on the EQ's own word, which
// every push rings.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "../common/cm.hpp"
#include "../common/waits.hpp"

using namespace weft;
using namespace weft::test;

namespace {

class eq_wait : public ::testing::TestWithParam<variant> {
 protected:
  void SetUp() override { apply(GetParam()); }
};

TEST_P(eq_wait, a_connection_request_wakes_a_sleeping_eq_wait) {
  side srv = open_side(msg_info(true));
  auto p = srv.dom.open_passive_endpoint(srv.inf);
  ASSERT_TRUE(p) << p.error().message;
  passive_endpoint pep = std::move(*p);
  ASSERT_TRUE(pep.bind(srv.eq));
  const std::uint16_t port = port_of(*pep.name());
  ASSERT_NE(port, 0);
  side cli = open_side(msg_info(false, port));
  auto ce = make_ep(cli, cli.inf);
  ASSERT_TRUE(ce) << ce.error().message;
  no_pulse off;
  auto before = srv.eq.wait_stats();
  ASSERT_TRUE(before);
  std::atomic<bool> done{false};
  bool asleep = false;
  bool connected = false;
  eq_event ev;
  const auto start = std::chrono::steady_clock::now();
  const errc r = act_while_asleep(
      [&] {
        const errc w = srv.eq.wait(ev, 20000);
        done = true;
        return w;
      },
      [&] {
        connected = ce->connect(*cli.inf.dest_addr, bytes("knock")).has_value();
        // the client's side of the handshake (manual progress: driven here), until the wait returns
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(25);
        while (!done.load() && std::chrono::steady_clock::now() < until) (void)cli.cq.progress();
      },
      asleep);
  const auto took = std::chrono::steady_clock::now() - start;
  auto after = srv.eq.wait_stats();
  ASSERT_TRUE(after);
  ASSERT_TRUE(asleep) << "the waiter was never seen asleep";
  ASSERT_TRUE(connected);
  ASSERT_EQ(r, errc::ok) << "the request came while the EQ wait slept: it must wake it (" << to_string(r) << ")";
  EXPECT_EQ(ev.type, eq_event::kind::connreq) << ev.message;
  EXPECT_EQ(text(ev.data), "knock");
  EXPECT_GE(after->word_wakes - before->word_wakes, 1u) << "woken by a word or the descriptor";
  EXPECT_EQ(after->timer_wakes, before->timer_wakes) << "no timer: the pulse is off";
  EXPECT_LT(took, std::chrono::seconds(19)) << "the wait ran to its deadline";
  (void)pep.reject(ev.req, {});
}

TEST(eq_wait_stats, closed_queues_answer_bad_state) {
  node n = open_node("shm");
  auto q = n.dom.open_eq();
  ASSERT_TRUE(q);
  auto c = n.dom.open_counter();
  ASSERT_TRUE(c);
  ASSERT_TRUE(n.cq.wait_stats());
  ASSERT_TRUE(q->wait_stats());
  ASSERT_TRUE(c->wait_stats());
  n.cq.close();
  q->close();
  c->close();
  const auto sc = n.cq.wait_stats();
  ASSERT_FALSE(sc);
  EXPECT_EQ(sc.error(), errc::bad_state);
  EXPECT_NE(std::string(last_error_message()).find("completion queue is closed"), std::string::npos)
      << last_error_message();
  const auto se = q->wait_stats();
  ASSERT_FALSE(se);
  EXPECT_EQ(se.error(), errc::bad_state);
  EXPECT_NE(std::string(last_error_message()).find("event queue is closed"), std::string::npos)
      << last_error_message();
  const auto sk = c->wait_stats();
  ASSERT_FALSE(sk);
  EXPECT_EQ(sk.error(), errc::bad_state);
  EXPECT_NE(std::string(last_error_message()).find("counter is closed"), std::string::npos) << last_error_message();
}

INSTANTIATE_TEST_SUITE_P(tcp, eq_wait, ::testing::ValuesIn(variants_of("tcp")),
                         [](const auto& i) { return i.param.name; });

}  // namespace

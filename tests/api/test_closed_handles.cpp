// Every method of a closed handle reports bad_state (issue 9, section 2):
// the accessors of a memory region, a completion queue's progress(), an
// endpoint's set_context(), an event queue, a domain's iov registration.
#include <cstring>
#include <span>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// Every accessor of a closed handle says bad_state; none answers a plausible
// value (a null address, a length of 0, "not from the cache").
TEST(api_review_closed, every_accessor_of_a_closed_handle_reports_bad_state) {
  apply(all_variants().front());
  node n = open_node("shm");
  std::vector<char> buf(4096);
  auto m = n.dom.register_memory(buf.data(), buf.size(), access::remote_read);
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_EQ(m->addr().value_or(nullptr), buf.data());
  ASSERT_EQ(m->len().value_or(0), buf.size());
  ASSERT_TRUE(m->cache_hit().has_value());
  ASSERT_EQ(m->persist().value_or(flush_method::clflush), flush_method::none);
  m->close();
  EXPECT_EQ(m->addr().error(), errc::bad_state);
  EXPECT_EQ(m->len().error(), errc::bad_state);
  EXPECT_EQ(m->cache_hit().error(), errc::bad_state);
  EXPECT_EQ(m->persist().error(), errc::bad_state);
  EXPECT_EQ(memory_region{}.len().error(), errc::bad_state);

  // a completion queue's progress() and an endpoint's set_context()
  int ctx = 0;
  EXPECT_EQ(n.cq.progress(), errc::ok);
  EXPECT_EQ(n.ep.set_context(&ctx), errc::ok);
  n.ep.close();
  n.cq.close();
  EXPECT_EQ(n.cq.progress(), errc::bad_state);
  EXPECT_TRUE(std::strstr(last_error_message(), "the completion queue is closed")) << last_error_message();
  EXPECT_EQ(n.ep.set_context(&ctx), errc::bad_state);
  EXPECT_EQ(passive_endpoint{}.set_context(&ctx), errc::bad_state);

  // an event queue says which object is closed
  event_queue q;
  eq_event ev;
  EXPECT_EQ(q.read(ev), errc::bad_state);
  EXPECT_TRUE(std::strstr(last_error_message(), "the event queue is closed")) << last_error_message();
  EXPECT_EQ(q.wait(ev, 0), errc::bad_state);

  // a closed domain registers nothing, not even an empty list
  n.dom.close();
  auto none = n.dom.register_memory(std::span<const ::iovec>{}, access::remote_read);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code, errc::bad_state);
}

}  // namespace

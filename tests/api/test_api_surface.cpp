// The public API's surface: this translation unit includes weft.hpp only, so
// the provider objects behind the handles must be incomplete types here.
#include <gtest/gtest.h>

#include "../common/harness.hpp"  // weft.hpp and gtest only
#include "weft/weft.hpp"

namespace {

template <class T>
concept complete_type = requires { sizeof(T); };

static_assert(!complete_type<weft::spi::endpoint>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::cq>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::cntr>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::domain>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::mr>, "weft.hpp must not define the provider interface");
// ... while what an application uses is public
// atomic descriptions carry the enums, not raw bytes
static_assert(std::is_same_v<decltype(weft::atomic_desc::op), weft::atomic_op> &&
              std::is_same_v<decltype(weft::atomic_desc::type), weft::atomic_type>);
static_assert(complete_type<weft::av_attr> && complete_type<weft::commit_event> &&
              complete_type<weft::mr_cache_stats> && complete_type<weft::eq_event>);

TEST(api_surface, closed_handles_refuse_the_data_path) {
  weft::endpoint ep;
  weft::completion_queue cq;
  weft::counter c;
  char b[8] = {};
  EXPECT_EQ(ep.send(b, sizeof b, 0), weft::errc::bad_state);
  EXPECT_EQ(ep.write(b, sizeof b, 0, 0, 1), weft::errc::bad_state);
  weft::cq_entry e;
  EXPECT_EQ(cq.read(e), weft::errc::bad_state);
  EXPECT_EQ(c.wait(1, 0), weft::errc::bad_state);
}

// A closed handle says so instead of answering a plausible value (a count of
// 0, a key of 0, an empty address).
TEST(api_surface, closed_handles_report_bad_state) {
  using namespace weft;
  test::apply(test::all_variants().front());
  test::node n = test::open_node("shm");
  auto c = n.dom.open_counter();
  ASSERT_TRUE(c);
  std::vector<char> buf(4096);
  auto m = n.dom.register_memory(buf.data(), buf.size(), access::remote_read);
  ASSERT_TRUE(m);
  ASSERT_TRUE(m->key().has_value());
  EXPECT_NE(*m->key(), 0u);
  ASSERT_TRUE(c->read().has_value());
  ASSERT_TRUE(n.ep.name().has_value());
  EXPECT_NE(n.ep.name()->size, 0);
  ASSERT_TRUE(n.dom.cache_stats().has_value());

  m->close();
  c->close();
  n.ep.close();
  EXPECT_EQ(m->key().error(), errc::bad_state);
  EXPECT_EQ(c->read().error(), errc::bad_state);
  EXPECT_EQ(c->read_error().error(), errc::bad_state);
  EXPECT_EQ(c->add(1), errc::bad_state);
  EXPECT_EQ(c->set(1), errc::bad_state);
  EXPECT_EQ(c->set_error(1), errc::bad_state);
  ASSERT_FALSE(n.ep.name().has_value());
  EXPECT_EQ(n.ep.name().error().code, errc::bad_state);
  n.dom.close();
  EXPECT_EQ(n.dom.cache_stats().error().code, errc::bad_state);
  EXPECT_EQ(n.dom.monitor_name().error().code, errc::bad_state);
  EXPECT_EQ(passive_endpoint{}.name().error().code, errc::bad_state);
}

}  // namespace

// spi::endpoint_counters: the per-kind counter table both providers bind
// counters through, and the counter an operation's completion counts on.
#include <gtest/gtest.h>

#include "weft/spi/cntr.hpp"

using namespace weft;
using weft::spi::cntr;
using weft::spi::endpoint_counters;

TEST(endpoint_counters, binds_per_kind_and_refuses_a_second_counter_for_a_kind) {
  endpoint_counters t;
  auto a = std::make_shared<cntr>(), b = std::make_shared<cntr>();
  auto r = t.bind(a, flag::send | flag::recv);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(*r) << "new to this endpoint";
  EXPECT_EQ(t.send, a);
  EXPECT_EQ(t.recv, a);
  r = t.bind(a, flag::write);
  ASSERT_TRUE(r);
  EXPECT_FALSE(*r) << "already bound for other kinds: no second attach";
  r = t.bind(b, flag::recv | flag::read);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_state);
  EXPECT_EQ(t.read, nullptr) << "a refused bind changes nothing";
  r = t.bind(b, flag::read | flag::remote_write);
  ASSERT_TRUE(r);
  EXPECT_TRUE(*r);
  const auto d = t.distinct();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0], a.get());
  EXPECT_EQ(d[1], b.get());
  r = t.bind(b, 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  r = t.bind(nullptr, flag::remote_read);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
}

TEST(endpoint_counters, an_operation_counts_on_the_counter_of_its_kind) {
  endpoint_counters t;
  auto s = std::make_shared<cntr>(), rd = std::make_shared<cntr>(), wr = std::make_shared<cntr>();
  ASSERT_TRUE(t.bind(s, flag::send));
  ASSERT_TRUE(t.bind(rd, flag::read));
  ASSERT_TRUE(t.bind(wr, flag::write));
  EXPECT_EQ(t.of_tx(flag::send | flag::msg), s.get());
  EXPECT_EQ(t.of_tx(flag::send | flag::tagged), s.get());
  EXPECT_EQ(t.of_tx(flag::rma | flag::read), rd.get());
  EXPECT_EQ(t.of_tx(flag::rma | flag::write), wr.get());
  EXPECT_EQ(t.of_tx(flag::rma | flag::save), wr.get());
  EXPECT_EQ(t.of_tx(flag::atomic), wr.get());
  EXPECT_EQ(t.of_tx(flag::atomic | flag::read), wr.get()) << "a fetching atomic counts as a write";
  spi::count(t.of_tx(flag::rma | flag::read), true);
  spi::count(t.of_tx(flag::rma | flag::read), false);
  spi::count(nullptr, true);  // no counter: nothing
  EXPECT_EQ(rd->read(), 1u);
  EXPECT_EQ(rd->read_err(), 1u);
  EXPECT_EQ(wr->read(), 0u);
}

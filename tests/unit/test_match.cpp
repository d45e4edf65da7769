#include <gtest/gtest.h>

#include "util/list.hpp"
#include "util/match.hpp"

using namespace weft::util;

TEST(match, tag_and_ignore_bits) {
  EXPECT_TRUE(tag_matches(0x1234, 0, 0x1234));
  EXPECT_FALSE(tag_matches(0x1234, 0, 0x1235));
  EXPECT_TRUE(tag_matches(0x1200, 0x00ff, 0x12ab));
  EXPECT_FALSE(tag_matches(0x1200, 0x00ff, 0x13ab));
  EXPECT_TRUE(tag_matches(0, ~0ull, 0xdeadbeef)) << "all bits ignored matches anything";
  EXPECT_TRUE(tag_matches(0x8000000000000000ull, 0, 0x8000000000000000ull));
}

TEST(match, source_filter) {
  EXPECT_TRUE(source_matches(any_source, 42));
  EXPECT_TRUE(source_matches(42, 42));
  EXPECT_FALSE(source_matches(41, 42));
}

namespace {
struct item : list_node {
  int v = 0;
};
}  // namespace

TEST(match, list_keeps_order_and_finds_first) {
  pool<item> p(4);
  ilist<item> l;
  for (int i = 0; i < 4; ++i) {
    item* it = p.get();
    ASSERT_NE(it, nullptr);
    it->v = i % 2;
    l.push_back(it);
  }
  EXPECT_EQ(p.get(), nullptr) << "pool is bounded";
  item* first_one = l.find([](const item& x) { return x.v == 1; });
  ASSERT_NE(first_one, nullptr);
  EXPECT_EQ(first_one, l.next(l.front())) << "first match in insertion order";
  l.erase(first_one);
  p.put(first_one);
  EXPECT_EQ(l.size(), 3u);
  EXPECT_NE(p.get(), nullptr);
}

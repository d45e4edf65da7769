// spi::progress_group drives its sources once per call and counts, per
// thread, how many sources it drove: what lets a provider tell that the
// application came straight back to it (tcp's busy-polling pause).
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "weft/spi/progress.hpp"

using weft::spi::progress_group;
using weft::spi::progressable;
using weft::spi::thread_progress_calls;

namespace {

struct counting : progressable {
  std::vector<std::uint64_t> seen;  // thread_progress_calls() at each call
  void progress() noexcept override { seen.push_back(thread_progress_calls()); }
};

struct group : progress_group {};

// A source that drives the group it belongs to (as a completion callback may).
struct reentrant : progressable {
  group* g = nullptr;
  int calls = 0;
  void progress() noexcept override {
    ++calls;
    g->progress();
  }
};

}  // namespace

TEST(progress, counts_each_source_driven_before_calling_it) {
  counting a, b;
  group g1, g2;
  g1.attach(&a);
  g1.attach(&a);  // attached once
  g2.attach(&b);
  const std::uint64_t base = thread_progress_calls();
  g1.progress();
  g1.progress();
  ASSERT_EQ(a.seen.size(), 2u);
  EXPECT_EQ(a.seen[0], base + 1);
  EXPECT_EQ(a.seen[1], a.seen[0] + 1) << "straight back: one more";
  g2.progress();
  g1.progress();
  EXPECT_EQ(a.seen[2], a.seen[1] + 2) << "another source was driven in between";
  EXPECT_EQ(b.seen.at(0), a.seen[1] + 1);
  g1.detach(&a);
  g1.progress();
  EXPECT_EQ(a.seen.size(), 3u);
  EXPECT_EQ(thread_progress_calls(), base + 4);
}

TEST(progress, other_threads_do_not_move_this_threads_count) {
  counting a, b;
  group g1, g2;
  g1.attach(&a);
  g2.attach(&b);
  g1.progress();
  std::thread t([&] {
    const std::uint64_t start = thread_progress_calls();
    for (int i = 0; i < 100; ++i) g2.progress();
    EXPECT_EQ(thread_progress_calls(), start + 100);
  });
  t.join();
  g1.progress();
  ASSERT_EQ(a.seen.size(), 2u);
  EXPECT_EQ(a.seen[1], a.seen[0] + 1);
}

TEST(progress, reentry_is_refused_and_not_counted) {
  reentrant r;
  group g;
  r.g = &g;
  g.attach(&r);
  const std::uint64_t base = thread_progress_calls();
  g.progress();
  EXPECT_EQ(r.calls, 1);
  EXPECT_EQ(thread_progress_calls(), base + 1);
}

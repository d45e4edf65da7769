// The registry's commit (the target side of a write with commit_complete,
// or a SAVE) flushes a persistent region's memory. A region may be closed
// from another thread meanwhile (the application, the memory monitor), and
// its memory unmapped as soon as its close returns: the flush must never
// touch memory whose region's close has returned. So a commit racing a
// close answers ok (it flushed first) or not_found (the region was gone),
// never a flush failure on memory that went away (or a crash).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "weft/pmem.hpp"
#include "weft/spi/mr.hpp"

using namespace weft;

TEST(mr_commit_race, commit_racing_close_and_unmap_answers_ok_or_not_found) {
  char tmpl[] = "/tmp/weft-commit-race-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto reg = std::make_shared<spi::mr_registry>();

  std::atomic<std::uint64_t> key{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> commits{0}, ok{0}, gone{0}, other{0};
  std::atomic<int> other_code{0};
  auto commit_loop = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      const std::uint64_t k = key.load(std::memory_order_acquire);
      if (k == 0) continue;
      const errc r = reg->commit(commit_event::kind::write, k, 0, page, flag::commit_complete.bits());
      commits.fetch_add(1, std::memory_order_release);
      if (r == errc::ok) ++ok;
      else if (r == errc::not_found) ++gone;
      else {
        ++other;
        other_code = static_cast<int>(r);
      }
    }
  };
  std::thread committers[2] = {std::thread(commit_loop), std::thread(commit_loop)};

  // Bounded: rounds, and a deadline (with the fix the committers keep the
  // lock busy and the rounds are slower: the deadline ends it, it decides
  // nothing). Each round: a fresh persistent file
  // region, published to the committers, closed and unmapped while they
  // keep committing to it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int rounds = 0;
  for (; rounds < 2000 && std::chrono::steady_clock::now() < deadline && other == 0; ++rounds) {
    auto f = persistent_file::open(dir + "/r" + std::to_string(rounds % 4), page, true);
    ASSERT_TRUE(f) << f.error().message;
    auto m = reg->register_memory(f->data(), page, access::remote_write | access::persistent);
    ASSERT_TRUE(m) << m.error().message;
    const std::uint64_t seen = commits.load(std::memory_order_acquire);
    key.store((*m)->key(), std::memory_order_release);
    // the committers are at work on this region (bounded wait)
    for (int i = 0; i < 1'000'000 && commits.load(std::memory_order_acquire) < seen + 2; ++i) std::this_thread::yield();
    m->reset();  // close: from here on nothing may touch the memory
  }  // ... which goes away at once: f unmaps it
  stop = true;
  for (auto& t : committers) t.join();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  EXPECT_EQ(other.load(), 0u) << "a commit failed on memory whose region was closed and unmapped (errc "
                              << other_code.load() << ")";
  EXPECT_GT(ok.load(), 0u);
  EXPECT_GT(gone.load(), 0u);
  EXPECT_GT(rounds, 0);
}

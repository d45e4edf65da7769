#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "util/ring.hpp"

using weft::util::mpsc_ring;
using weft::util::ring_tail;

namespace {
struct slot {
  std::atomic<std::uint64_t> seq;
  std::uint32_t producer;
  std::uint32_t value;
};
}  // namespace

TEST(ring, fifo_single_producer_and_full) {
  alignas(64) ring_tail t;
  std::vector<slot> mem(8);
  mpsc_ring r(&t, reinterpret_cast<std::byte*>(mem.data()), 8, sizeof(slot));
  r.format();
  EXPECT_EQ(r.peek(), nullptr);
  for (std::uint32_t i = 0; i < 8; ++i) {
    std::uint64_t pos = 0;
    auto* s = reinterpret_cast<slot*>(r.claim(pos));
    ASSERT_NE(s, nullptr);
    s->value = i;
    r.publish(pos);
  }
  std::uint64_t pos = 0;
  EXPECT_EQ(r.claim(pos), nullptr) << "a full ring must refuse, not overwrite";
  for (std::uint32_t i = 0; i < 8; ++i) {
    auto* s = reinterpret_cast<slot*>(r.peek());
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->value, i);
    r.pop();
  }
  EXPECT_EQ(r.peek(), nullptr);
  EXPECT_NE(r.claim(pos), nullptr) << "space is reusable after pop";
}

TEST(ring, unpublished_slot_blocks_consumer) {
  alignas(64) ring_tail t;
  std::vector<slot> mem(4);
  mpsc_ring r(&t, reinterpret_cast<std::byte*>(mem.data()), 4, sizeof(slot));
  r.format();
  std::uint64_t p0 = 0, p1 = 0;
  ASSERT_NE(r.claim(p0), nullptr);
  ASSERT_NE(r.claim(p1), nullptr);
  r.publish(p1);
  EXPECT_EQ(r.peek(), nullptr) << "slot 0 is claimed but not yet written";
  r.publish(p0);
  EXPECT_NE(r.peek(), nullptr);
}

TEST(ring, four_producers_one_consumer_keep_per_producer_order) {
  alignas(64) ring_tail t;
  constexpr std::uint32_t slots = 64, producers = 4, per = 50000;
  std::vector<slot> mem(slots);
  mpsc_ring r(&t, reinterpret_cast<std::byte*>(mem.data()), slots, sizeof(slot));
  r.format();
  std::vector<std::thread> th;
  // The producers stop when the consumer does (its deadline, or a failed
  // assertion): a producer left spinning on a full ring that nobody drains
  // any more would hang the join below until ctest's timeout.
  std::atomic<bool> stop{false};
  for (std::uint32_t p = 0; p < producers; ++p)
    th.emplace_back([&, p] {
      mpsc_ring w(&t, reinterpret_cast<std::byte*>(mem.data()), slots, sizeof(slot));
      for (std::uint32_t i = 0; i < per && !stop.load(std::memory_order_relaxed);) {
        std::uint64_t pos = 0;
        if (auto* s = reinterpret_cast<slot*>(w.claim(pos))) {
          s->producer = p;
          s->value = i++;
          w.publish(pos);
        } else {
          std::this_thread::yield();
        }
      }
    });
  struct stopper {
    std::atomic<bool>& stop;
    std::vector<std::thread>& th;
    ~stopper() {
      stop.store(true);
      for (auto& x : th) x.join();
    }
  } joins{stop, th};
  std::vector<std::uint32_t> expect(producers, 0);
  std::uint64_t got = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (got < std::uint64_t{producers} * per && std::chrono::steady_clock::now() < deadline) {
    auto* s = reinterpret_cast<slot*>(r.peek());
    if (!s) {
      std::this_thread::yield();  // let a producer preempted between claim and publish finish
      continue;
    }
    ASSERT_LT(s->producer, producers);
    ASSERT_EQ(s->value, expect[s->producer]) << "producer " << s->producer << " out of order";
    ++expect[s->producer];
    r.pop();
    ++got;
  }
  EXPECT_EQ(got, std::uint64_t{producers} * per);
}

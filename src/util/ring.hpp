#pragma once
// Bounded lock-free multi-producer single-consumer ring of fixed-size slots
// over caller-provided memory (process memory or a shared-memory region).
// Each slot starts with a sequence word: a producer claims position p when
// slot[p % n].seq == p, writes the slot and publishes seq = p + 1; the
// consumer reads position h when seq == h + 1 and releases it with
// seq = h + n. No syscall, no allocation, no lock.
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace weft::util {

struct alignas(64) ring_tail {
  std::atomic<std::uint64_t> tail{0};
  char pad_[64 - sizeof(std::atomic<std::uint64_t>)];
};
static_assert(sizeof(ring_tail) == 64);

class mpsc_ring {
 public:
  mpsc_ring() = default;
  // slots: slot_count (power of two) slots of slot_size bytes, each starting
  // with a std::atomic<uint64_t> sequence word.
  mpsc_ring(ring_tail* t, std::byte* slots, std::uint32_t slot_count, std::uint32_t slot_size) noexcept
      : tail_(t), slots_(slots), mask_(slot_count - 1), slot_size_(slot_size) {}

  // Initialise sequence words (the owner does this once, before sharing).
  void format() noexcept {
    tail_->tail.store(0, std::memory_order_relaxed);
    for (std::uint64_t i = 0; i <= mask_; ++i) seq(i).store(i, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
  }

  // Producer: claim a slot; nullptr when the ring is full (back-pressure).
  [[nodiscard]] std::byte* claim(std::uint64_t& pos) noexcept {
    std::uint64_t p = tail_->tail.load(std::memory_order_relaxed);
    for (;;) {
      std::uint64_t s = seq(p).load(std::memory_order_acquire);
      auto diff = static_cast<std::int64_t>(s - p);
      if (diff == 0) {
        if (tail_->tail.compare_exchange_weak(p, p + 1, std::memory_order_relaxed)) {
          pos = p;
          return slot(p);
        }
      } else if (diff < 0) {
        return nullptr;  // full
      } else {
        p = tail_->tail.load(std::memory_order_relaxed);
      }
    }
  }
  // Producer: whether a claim would find a free slot now (claims nothing).
  [[nodiscard]] bool room() const noexcept {
    const std::uint64_t p = tail_->tail.load(std::memory_order_relaxed);
    return static_cast<std::int64_t>(seq(p).load(std::memory_order_acquire) - p) >= 0;
  }
  // Producer: make a claimed slot visible to the consumer. Sequentially
  // consistent so that a following check of the consumer's "waiting" flag
  // cannot be reordered before it (no lost wake-up). False if the consumer
  // gave the slot up meanwhile (recover_head: this producer looked dead).
  bool publish(std::uint64_t pos) noexcept {
    std::uint64_t expected = pos;
    return seq(pos).compare_exchange_strong(expected, pos + 1, std::memory_order_seq_cst);
  }

  // Consumer: the slot at head if published, else nullptr.
  [[nodiscard]] std::byte* peek() const noexcept {
    if (seq(head_).load(std::memory_order_acquire) != head_ + 1) return nullptr;
    return slot(head_);
  }
  // Consumer: release the slot at head to producers.
  void pop() noexcept {
    seq(head_).store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
  }
  // Consumer: position of the next slot to read, how far producers claimed,
  // and the raw slot at head (published or not).
  [[nodiscard]] std::uint64_t head() const noexcept { return head_; }
  [[nodiscard]] std::uint64_t claimed() const noexcept { return tail_->tail.load(std::memory_order_acquire); }
  [[nodiscard]] std::byte* head_slot() const noexcept { return slot(head_); }
  // Consumer: a producer died between claim and publish; treat the slot as
  // published so that it can be popped (the caller marks its contents invalid).
  void recover_head() noexcept { seq(head_).store(head_ + 1, std::memory_order_release); }
  [[nodiscard]] std::uint32_t slot_count() const noexcept { return static_cast<std::uint32_t>(mask_ + 1); }
  [[nodiscard]] std::uint32_t slot_size() const noexcept { return slot_size_; }

 private:
  [[nodiscard]] std::byte* slot(std::uint64_t p) const noexcept { return slots_ + (p & mask_) * slot_size_; }
  [[nodiscard]] std::atomic<std::uint64_t>& seq(std::uint64_t p) const noexcept {
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(slot(p));
  }

  ring_tail* tail_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint32_t slot_size_ = 0;
  std::uint64_t head_ = 0;  // consumer-local
};

}  // namespace weft::util

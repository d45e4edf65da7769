#pragma once
// What the performance tools share: page-aligned buffers, and a bound on
// busy waits that keeps clock reads out of timed loops.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace weft::tools {

// Buffers start on a page, as ucx_perftest's do: a copy between a source and
// a destination at unrelated page offsets can pay for 4 KiB aliasing, which
// would be the tool's cost, not the transport's.
template <class T>
struct page_allocator {
  using value_type = T;
  page_allocator() = default;
  template <class U>
  page_allocator(const page_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = (n * sizeof(T) + 4095) & ~std::size_t{4095};
    void* p = std::aligned_alloc(4096, bytes ? bytes : 4096);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { std::free(p); }
  template <class U>
  bool operator==(const page_allocator<U>&) const noexcept { return true; }
};
using page_bytes = std::vector<std::byte, page_allocator<std::byte>>;

// Bounds a busy wait of `seconds` without a clock read on every spin:
// due() is true once every `every` spins (not on the first: a wait that ends
// quickly reads no clock at all), and over() then tells whether the time ran
// out, counted from the first due spin.
class spin_deadline {
 public:
  // every: a power of two (a mask, not a division, on every spin)
  spin_deadline(int seconds, std::uint64_t every) : seconds_(seconds), mask_(every - 1) {}
  [[nodiscard]] bool due() noexcept { return (++spins_ & mask_) == 0; }
  [[nodiscard]] bool over() {
    const auto now = std::chrono::steady_clock::now();
    if (!started_) {
      started_ = true;
      end_ = now + std::chrono::seconds(seconds_);
      return false;
    }
    return now > end_;
  }

 private:
  int seconds_;
  std::uint64_t mask_;
  std::uint64_t spins_ = 0;
  bool started_ = false;
  std::chrono::steady_clock::time_point end_{};
};

}  // namespace weft::tools

#pragma once
// Page-aligned byte buffers for the performance tools.
#include <cstddef>
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

}  // namespace weft::tools

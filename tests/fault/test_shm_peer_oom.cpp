// shm first contact with a sender while memory allocation fails: mapping the
// sender (its name, its mapping, its peer object and map entry) happens on
// the data path, in noexcept code, so a std::bad_alloc there would be
// std::terminate. It is back-pressure instead, as for EMFILE: an
// announcement matching a posted receive waits in the ring, a receive posted
// for an arrived one returns again (again_reason::no_resources); once memory
// is back both complete, at both ends, with their bytes (the scenario of
// fault/shm_unmappable.hpp, with memory as the resource that lacks).
//
// Its own executable: it replaces the global operator new (and delete) to
// fail on demand, and it runs the scenario in a forked child.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "fault/shm_unmappable.hpp"

namespace {
std::atomic<bool> fail_allocations{false};

void* allocate(std::size_t n, std::size_t align) {
  if (fail_allocations.load(std::memory_order_relaxed)) throw std::bad_alloc();
  if (n == 0) n = 1;
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                              : std::malloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
void* allocate_nothrow(std::size_t n, std::size_t align) noexcept {
  try {
    return allocate(n, align);
  } catch (...) {
    return nullptr;
  }
}
}  // namespace

void* operator new(std::size_t n) { return allocate(n, 0); }
void* operator new[](std::size_t n) { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_nothrow(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_nothrow(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

using namespace weft;
using namespace weft::test;

TEST(shm_peer_oom, first_contact_without_memory_is_back_pressure_not_terminate) {
  const child_verdict v = run_in_child([] {
    return unmappable_sender_scenario(
        [] {
          fail_allocations.store(true);  // every allocation of this process fails from here
          return std::string();          // (no allocation: an empty string)
        },
        [] { fail_allocations.store(false); });
  });
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

#pragma once
// What an application uses of memory registration (cf. fi_mr(3)): access
// rights, commit events and the commit handler, registration-cache figures.
// The region itself is weft::memory_region (weft.hpp). docs/rma.md.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <type_traits>

#include "weft/error.hpp"
#include "weft/flags.hpp"

namespace weft {

namespace access {
inline constexpr access_flags remote_read{1ull << 0};   // peers may read it (RMA read, fetching atomics)
inline constexpr access_flags remote_write{1ull << 1};  // peers may write it (RMA write, atomics)
inline constexpr access_flags persistent{1ull << 2};    // a shared file mapping: commits make writes durable
inline constexpr access_flags read{1ull << 3};          // local use as an RMA read target (recorded)
inline constexpr access_flags write{1ull << 4};         // local use as an RMA write source (recorded)
inline constexpr access_flags send{1ull << 5};          // local use as a send buffer (recorded)
inline constexpr access_flags recv{1ull << 6};          // local use as a receive buffer (recorded)
inline constexpr access_flags all = remote_read | remote_write | persistent | read | write | send | recv;
}  // namespace access

// What commit_event::flags tells about the range.
namespace commit_flag {
inline constexpr commit_flags persistent{1u << 0};  // the region is persistent (the range was flushed before the call)
}  // namespace commit_flag

// What reaches a commit handler: a write with commit_complete, or a SAVE.
// Fixed layout (docs/abi.md): the one-byte fields last, then reserved bytes.
struct commit_event {
  enum class kind : std::uint8_t { write, save };
  std::uint64_t key = 0;
  void* addr = nullptr;      // start of the range made durable
  std::uint64_t offset = 0;  // ... from the start of the region
  std::size_t len = 0;
  op_flags level;            // flag::delivery_complete or flag::commit_complete
  kind what = kind::write;
  commit_flags flags;        // commit_flag::persistent
  std::uint8_t reserved[6] = {0, 0, 0, 0, 0, 0};  // zero; room for later one-byte fields
  // Whether the region is persistent (flags has commit_flag::persistent).
  [[nodiscard]] constexpr bool persistent() const noexcept { return flags.any(commit_flag::persistent); }
};
static_assert(sizeof(commit_event) == 48 && alignof(commit_event) == 8);
static_assert(offsetof(commit_event, key) == 0 && offsetof(commit_event, addr) == 8 &&
              offsetof(commit_event, offset) == 16 && offsetof(commit_event, len) == 24 &&
              offsetof(commit_event, level) == 32 && offsetof(commit_event, what) == 40 &&
              offsetof(commit_event, flags) == 41 && offsetof(commit_event, reserved) == 42);
static_assert(std::is_standard_layout_v<commit_event> && std::is_trivially_copyable_v<commit_event>);
static_assert(std::has_unique_object_representations_v<commit_event>, "no padding");
// Runs inside the provider's progress (keep it short; no weft calls on the
// same domain). ok acknowledges; any other code completes the initiator's
// operation with that error.
using commit_handler = std::function<errc(const commit_event&)>;

struct mr_cache_stats {
  std::uint64_t hits = 0;           // registrations served from the cache
  std::uint64_t misses = 0;
  std::uint64_t invalidations = 0;  // entries dropped because their memory went away
  std::size_t active = 0;           // live registrations
  std::size_t cached = 0;           // entries kept for reuse after their regions closed
};
static_assert(sizeof(mr_cache_stats) == 40 && alignof(mr_cache_stats) == 8 && offsetof(mr_cache_stats, hits) == 0 &&
              offsetof(mr_cache_stats, misses) == 8 && offsetof(mr_cache_stats, invalidations) == 16 &&
              offsetof(mr_cache_stats, active) == 24 && offsetof(mr_cache_stats, cached) == 32 &&
              std::is_standard_layout_v<mr_cache_stats> && std::is_trivially_copyable_v<mr_cache_stats>);
static_assert(std::has_unique_object_representations_v<mr_cache_stats>, "no padding");

}  // namespace weft

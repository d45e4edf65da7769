#pragma once
// What an application uses of memory registration (cf. fi_mr(3)): access
// rights, commit events and the commit handler, registration-cache figures.
// The region itself is weft::memory_region (weft.hpp). docs/rma.md.
#include <cstddef>
#include <cstdint>
#include <functional>

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

// What reaches a commit handler: a write with commit_complete, or a SAVE.
struct commit_event {
  enum class kind : std::uint8_t { write, save };
  kind what = kind::write;
  std::uint64_t key = 0;
  void* addr = nullptr;      // start of the range made durable
  std::uint64_t offset = 0;  // ... from the start of the region
  std::size_t len = 0;
  bool persistent = false;   // the region is persistent (the range was flushed before the call)
  op_flags level;            // flag::delivery_complete or flag::commit_complete
};
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

}  // namespace weft

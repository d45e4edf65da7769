#pragma once
// What /proc/self/maps says about this process's memory.
//
// map_identity(): the mapping of a range piece by piece (device, inode, file
// offset, shared flag); checked watch mode compares it with what subscribe
// recorded to see a range unmapped or replaced.
// classify_mapping(): whether a range is fully mapped and whether any of it
// is a System V shared memory segment, which userfaultfd cannot watch
// (shmdt is not reported).
//
// Both ask the PROCMAP_QUERY ioctl (Linux 6.11, one call per mapping) and
// otherwise read the text of /proc/self/maps (O(mappings of the process)).
// Interrupted calls (EINTR, EAGAIN) are retried, at most k_proc_retries
// times each. Only the answers of a kernel without PROCMAP_QUERY (ENOTTY,
// EINVAL, EOPNOTSUPP) turn PROCMAP_QUERY off for the process; any other
// failure costs that one query a read of the text. When neither answers,
// classify_mapping() says unknown and map_identity() not_supported: the
// monitors then watch the range in checked mode, never in notified mode.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "weft/error.hpp"

namespace weft::util {

inline constexpr int k_proc_retries = 8;

[[nodiscard]] std::uintptr_t page_size() noexcept;
// The pages of [addr, addr + len); false for an empty or wrapping range.
[[nodiscard]] bool page_round(const void* addr, std::size_t len, std::uintptr_t& lo, std::uintptr_t& hi) noexcept;

// One piece of the mapping of a range, as /proc/self/maps describes it.
struct map_piece {
  std::uintptr_t lo = 0;
  std::uintptr_t hi = 0;
  std::uint64_t dev = 0;
  std::uint64_t inode = 0;
  std::uint64_t offset = 0;  // file offset of lo (0 for anonymous memory)
  bool shared = false;
  friend bool operator==(const map_piece&, const map_piece&) = default;
};

// The mapping of the pages of [lo, hi): not_found if any page is unmapped,
// not_supported if /proc/self/maps could not be read.
[[nodiscard]] result<std::vector<map_piece>> map_identity(std::uintptr_t lo, std::uintptr_t hi);

// Whether identity still describes [lo, hi) (false when it cannot be read,
// and for an empty identity: nothing was recorded).
[[nodiscard]] bool identity_matches(const std::vector<map_piece>& identity, std::uintptr_t lo,
                                    std::uintptr_t hi) noexcept;

enum class range_kind : std::uint8_t {
  mapped,    // every page mapped, no System V segment in it
  hole,      // some page is not mapped
  sysv_shm,  // a System V segment covers part of it
  unknown,   // /proc/self/maps could not be read: nobody can tell
};
[[nodiscard]] range_kind classify_mapping(std::uintptr_t lo, std::uintptr_t hi) noexcept;

// A subscription that may vouch for part of a valid() query.
struct candidate {
  std::uintptr_t lo = 0;
  std::uintptr_t hi = 0;
  bool ok = false;                  // known good (registered, not invalidated)
  std::vector<map_piece> identity;  // to check when !ok
};
// Whether the good candidates (sorted by lo) cover [lo, hi).
[[nodiscard]] bool covered(const std::vector<candidate>& cands, std::uintptr_t lo, std::uintptr_t hi) noexcept;

// --- diagnostics and fault injection (tests) --------------------------------

struct proc_maps_stats {
  std::uint64_t failed_calls = 0;   // open, ioctl or read that failed (not ENOENT), after retries
  std::uint64_t retried_calls = 0;  // EINTR/EAGAIN answers retried
  int last_errno = 0;               // errno of the last failed call
  bool procmap_query = true;        // PROCMAP_QUERY still in use by this process
};
[[nodiscard]] proc_maps_stats proc_maps_diagnostics() noexcept;

// The system calls the queries make, replaceable to inject failures.
// open_maps: like open("/proc/self/maps", O_RDONLY | O_CLOEXEC); query: like
// ioctl(fd, PROCMAP_QUERY, arg). Both return -1 and set errno on failure. A
// null member means the real call.
struct proc_maps_hooks {
  int (*open_maps)() noexcept = nullptr;
  int (*query)(int fd, void* arg) noexcept = nullptr;
};
// Installs hooks; returns the previous ones.
proc_maps_hooks set_proc_maps_hooks(proc_maps_hooks hooks) noexcept;
// Forgets that PROCMAP_QUERY was found missing (tests that simulated it).
void reset_procmap_query_support() noexcept;

}  // namespace weft::util

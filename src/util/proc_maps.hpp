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
// Both ask the PROCMAP_QUERY ioctl (Linux 6.11, one call per mapping);
// map_identity() otherwise reads the text of /proc/self/maps (O(mappings of
// the process)) and classify_mapping() asks mincore only (segments are then
// not recognized).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "weft/error.hpp"

namespace weft::util {

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

// The mapping of the pages of [lo, hi); not_found if any page is unmapped.
[[nodiscard]] result<std::vector<map_piece>> map_identity(std::uintptr_t lo, std::uintptr_t hi);

// Whether identity still describes [lo, hi) (false when it cannot be read).
[[nodiscard]] bool identity_matches(const std::vector<map_piece>& identity, std::uintptr_t lo,
                                    std::uintptr_t hi) noexcept;

enum class range_kind : std::uint8_t {
  mapped,    // every page mapped, no System V segment in it
  hole,      // some page is not mapped
  sysv_shm,  // a System V segment covers part of it
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

}  // namespace weft::util

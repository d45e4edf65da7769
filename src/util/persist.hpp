#pragma once
// Making ranges of memory durable (the public side is weft/pmem.hpp).
// flush_range and persist_range are the data path (noexcept, errc);
// classify_range and the registry of live persistent_file mappings are the
// control path.
#include <cstddef>
#include <optional>

#include "weft/error.hpp"
#include "weft/pmem.hpp"

namespace weft::util {

inline constexpr std::size_t cache_line_size = 64;

// What the CPU offers (cpuid, read once). All false off x86.
struct cpu_flush_support {
  bool clwb = false;
  bool clflushopt = false;
  bool clflush = false;
};
[[nodiscard]] const cpu_flush_support& cpu_flush() noexcept;
// clwb, else clflushopt, else clflush, else none.
[[nodiscard]] flush_method best_cpu_flush() noexcept;
// Whether flush_range(m, ...) can work here (msync always; CPU methods when
// the CPU has the instruction; none and libpmem2 never).
[[nodiscard]] bool flush_supported(flush_method m) noexcept;

// Makes [addr, addr + len) durable with m:
//   clwb, clflushopt, clflush: the instruction on every 64-byte line, then
//     sfence (enough only for MAP_SYNC mappings of DAX files);
//   msync: msync(MS_SYNC) on the range widened to whole pages.
// ok (also for len 0); not_supported (none, libpmem2: see persist_range, or
// an instruction this CPU lacks); for msync: invalid_argument (EINVAL, or
// ENOMEM: part of the range is not mapped), busy (EBUSY), io_error (anything
// else, e.g. EIO or ENOSPC from writeback).
[[nodiscard]] errc flush_range(flush_method m, const void* addr, std::size_t len) noexcept;

// How [addr, addr + len) of this process can be made durable: the method of
// the live persistent_file mapping that holds it whole; otherwise, from
// /proc/self/smaps, every mapping covering the range must be a shared
// mapping of a regular file that still exists; when all of them are MAP_SYNC
// ("sf" in VmFlags) the best CPU flush, else msync. invalid_argument (with a
// message that says why) for an empty range, a hole, anonymous, private,
// special or deleted-file memory; io_error when smaps cannot be read.
[[nodiscard]] result<flush_method> classify_range(const void* addr, std::size_t len);

// flush_range, except that libpmem2 goes to the persist function of the live
// persistent_file mapping that holds the range (invalid_argument when none).
[[nodiscard]] errc persist_range(const void* addr, std::size_t len, flush_method m) noexcept;

// Process-wide registry of live persistent_file mappings (mutex-protected).
using persist_fn = void (*)(const void*, std::size_t);
struct live_mapping {
  const void* addr = nullptr;
  std::size_t len = 0;
  flush_method method = flush_method::none;
  persist_fn fn = nullptr;  // libpmem2's, else nullptr
};
void register_mapping(const live_mapping& m);
void unregister_mapping(const void* addr) noexcept;
// The live mapping that holds [addr, addr + len) whole, if any.
[[nodiscard]] std::optional<live_mapping> find_mapping(const void* addr, std::size_t len) noexcept;

}  // namespace weft::util

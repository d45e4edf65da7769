#pragma once
// Persistence: making stores to memory durable.
//
// A store becomes durable only when it reaches a file, and only through a
// shared mapping of that file. How it gets there depends on the mapping:
//   libpmem2    the mapping was made by libpmem2 (when weft was built with it),
//               which picked its own persist path (CPU flushes on DAX, msync
//               otherwise);
//   clwb, clflushopt, clflush
//               a MAP_SYNC mapping of a file on a DAX file system: flushing the
//               CPU cache lines (then sfence) is enough;
//   msync       any other shared file mapping: msync(MS_SYNC) writes the pages
//               back (on tmpfs that survives a process crash, not a reboot).
// persistent_file maps a file with the best of these; weft::util also tells
// how an arbitrary range of memory can be made durable (src/util/persist.hpp).
#include <cstddef>
#include <cstdint>
#include <string>

#include "weft/error.hpp"

namespace weft {

enum class flush_method : std::uint8_t { none, libpmem2, clwb, clflushopt, clflush, msync };

[[nodiscard]] const char* to_string(flush_method m) noexcept;

// What this build and this CPU offer (for tools and logs).
struct persist_support {
  bool libpmem2 = false;                // built with libpmem2 (WEFT_HAVE_LIBPMEM2)
  const char* libpmem2_version = "";    // the version the build saw, "" when unknown
  bool map_sync = false;                // built with MAP_SYNC (used only on DAX file systems)
  bool clwb = false;                    // cpuid leaf 7 ebx bit 24
  bool clflushopt = false;              // cpuid leaf 7 ebx bit 23
  bool clflush = false;                 // cpuid leaf 1 edx bit 19
  flush_method best_cpu = flush_method::none;  // best of the three, none when the CPU has none
};

[[nodiscard]] persist_support detect_persist_support() noexcept;
// One line, e.g. "libpmem2 1.12.1 (compiled in); cpu: clwb clflushopt clflush;
// MAP_SYNC on DAX file systems; fallback msync".
[[nodiscard]] std::string describe_persist_support();

// A file mapped shared and read/write, with the way to make its stores
// durable. Move-only; the destructor unmaps (it does not persist: call
// persist() for whatever must be durable first).
class persistent_file {
 public:
  // Maps the first len bytes of path. With create, the file is created (mode
  // 0600) or grown when shorter: to len rounded up to the page size, with its
  // blocks allocated (posix_fallocate) and its size and directory entry made
  // durable. Without create, a missing file is not_found and a file shorter
  // than len is invalid_argument. The mapping is made by libpmem2 when built
  // with it; otherwise MAP_SHARED_VALIDATE|MAP_SYNC (DAX file systems: method
  // = the best CPU flush), else plain MAP_SHARED (method = msync).
  [[nodiscard]] static result<persistent_file> open(const std::string& path, std::size_t len, bool create);

  persistent_file() noexcept = default;
  persistent_file(const persistent_file&) = delete;
  persistent_file& operator=(const persistent_file&) = delete;
  persistent_file(persistent_file&& o) noexcept;
  persistent_file& operator=(persistent_file&& o) noexcept;
  ~persistent_file();

  [[nodiscard]] void* addr() const noexcept { return addr_; }
  [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  [[nodiscard]] std::size_t len() const noexcept { return len_; }
  [[nodiscard]] flush_method method() const noexcept { return method_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] bool is_open() const noexcept { return addr_ != nullptr; }

  // Makes [offset, offset + len) durable. ok; invalid_argument when the range
  // is outside the mapping; bad_state when closed; io_error (msync failed).
  [[nodiscard]] errc persist(std::size_t offset, std::size_t len) noexcept;
  // Unmaps (idempotent). Does not persist.
  [[nodiscard]] result<void> close();

 private:
  using persist_fn = void (*)(const void*, std::size_t);

  void* addr_ = nullptr;
  std::size_t len_ = 0;       // what the caller asked for
  std::size_t map_len_ = 0;   // what is mapped (page-rounded)
  flush_method method_ = flush_method::none;
  int fd_ = -1;
  void* pmem2_map_ = nullptr;         // struct pmem2_map* with libpmem2
  persist_fn persist_fn_ = nullptr;   // libpmem2's persist function
  std::string path_;
};

}  // namespace weft

#pragma once
// Shared-memory regions: naming, creation (owner-only), mapping, liveness of
// their owners, stale-segment cleanup and the integer-port directory.
#include <sys/types.h>

#include <algorithm>
#include <cerrno>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "prov/shm/layout.hpp"
#include "util/creator_process.hpp"
#include "weft/error.hpp"

namespace weft::prov::shm {

struct config {
  std::uint32_t slot_count = 256;   // ring slots (power of two)
  // 8 KiB of payload plus the header: an odd number of cache lines per slot,
  // so successive slot headers do not all fall into the same cache set.
  std::uint32_t slot_size = 8192 + 64;
  std::uint32_t seg_count = 16;     // bounce segments for the segmented path
  std::uint32_t seg_size = 64 * 1024;
  bool cma = true;                  // single copy with process_vm_readv
  std::size_t split_min = 128 * 1024;  // from this size both processes copy (0: never)
  std::uint32_t split_count = 256;     // split entries (one per receive operation)
  std::uint32_t ctl_count = 512;       // control ring slots
  std::uint32_t ctl_slot_size = min_slot_size;
  std::uint32_t req_count = 512;       // request ring slots (two-sided RMA, atomics, SAVE)
  std::uint32_t access_count = 256;    // access slots: peers doing one-sided RMA at once
  [[nodiscard]] std::uint32_t inline_max() const noexcept { return slot_size - sizeof(slot_header); }
};
// Reads WEFT_SHM_CMA (0 = segmented only), WEFT_SHM_SPLIT_MIN (bytes; 0 = never
// split), WEFT_SHM_SLOTS, WEFT_SHM_SLOT_SIZE, WEFT_SHM_SEGMENTS.
[[nodiscard]] result<config> load_config();

[[nodiscard]] std::string region_name(std::uint32_t uid, std::uint32_t pid, std::uint32_t epid);
[[nodiscard]] bool parse_region_name(std::string_view name, std::uint32_t& uid, std::uint32_t& pid,
                                     std::uint32_t& epid) noexcept;
// Start time of a process in clock ticks since boot, 0 if it does not exist
// (or cannot be read: never use 0 as proof of death, see probe_process).
[[nodiscard]] std::uint64_t process_start_time(pid_t pid) noexcept;
// This process's start time, read once (per fork); 0 if it could not be read.
[[nodiscard]] std::uint64_t own_start_time() noexcept;

// What a look at another process can prove. `unknown` (resources exhausted,
// /proc unreadable) is never taken for death: nothing is failed or deleted on it.
enum class liveness : std::uint8_t { alive, dead, unknown };
// The process (pid, start) without any file descriptor held: kill(pid, 0)
// (ESRCH: gone), for a child of ours waitid(WNOWAIT) (an unreaped zombie is
// dead), and when `deep` (or the pid now belongs to another user) a read of
// /proc/PID/stat: another start time (pid reused) or a zombie is dead.
[[nodiscard]] liveness probe_process(pid_t pid, std::uint64_t start, bool deep, bool child) noexcept;
// /proc/PID/stat fields: 0, or the errno of the failed read (ENOENT/ESRCH: no such process).
struct proc_stat {
  char state = 0;
  std::uint32_t ppid = 0;
  std::uint64_t start = 0;
};
[[nodiscard]] int read_proc_stat(pid_t pid, proc_stat& out) noexcept;
// Opens the descriptor read_proc_stat uses when none is left (once; the
// first endpoint does it).
void keep_proc_reserve() noexcept;
// errno is resource exhaustion (EMFILE, ENFILE, ENOMEM): not a property of a peer.
[[nodiscard]] constexpr bool exhausted(int e) noexcept { return e == EMFILE || e == ENFILE || e == ENOMEM; }
// "out of file descriptors (EMFILE: RLIMIT_NOFILE is 64 ...)": what ran out and what to do.
[[nodiscard]] std::string exhaustion_text(int e);

class mapping {
 public:
  static result<std::unique_ptr<mapping>> create(const std::string& name, const config& c, std::uint32_t epid);
  static result<std::unique_ptr<mapping>> open(const std::string& name);
  ~mapping();
  mapping(const mapping&) = delete;
  mapping& operator=(const mapping&) = delete;

  [[nodiscard]] region_header* hdr() const noexcept { return hdr_; }
  [[nodiscard]] std::byte* base() const noexcept { return reinterpret_cast<std::byte*>(hdr_); }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  // Geometry comes from private copies made when the region was validated:
  // another process rewriting the shared header cannot move us out of bounds.
  [[nodiscard]] std::uint32_t seg_count() const noexcept { return g_.seg_count; }
  [[nodiscard]] std::uint32_t seg_size() const noexcept { return g_.seg_size; }
  [[nodiscard]] std::uint32_t slot_size() const noexcept { return g_.slot_size; }
  [[nodiscard]] std::byte* segment(std::uint32_t i) const noexcept {
    return i < g_.seg_count ? base() + g_.seg_offset + static_cast<std::size_t>(i) * g_.seg_size : nullptr;
  }
  [[nodiscard]] split_entry* split(std::uint32_t i) const noexcept {
    return i < g_.split_count ? reinterpret_cast<split_entry*>(base() + g_.split_offset) + i : nullptr;
  }
  [[nodiscard]] util::mpsc_ring ring() const noexcept {
    return util::mpsc_ring(&hdr_->tail, base() + g_.ring_offset, g_.slot_count, g_.slot_size);
  }
  [[nodiscard]] util::mpsc_ring ctl_ring() const noexcept {
    return util::mpsc_ring(&hdr_->ctl_tail, base() + g_.ctl_offset, g_.ctl_count, g_.ctl_slot_size);
  }
  [[nodiscard]] util::mpsc_ring req_ring() const noexcept {
    return util::mpsc_ring(&hdr_->req_tail, base() + g_.req_offset, g_.req_count, g_.req_slot_size);
  }
  // The access slots (one-sided RMA in progress), and how many of them were
  // ever claimed (the shared count, bounded by the private geometry).
  [[nodiscard]] access_slot* access_slots() const noexcept {
    return reinterpret_cast<access_slot*>(base() + g_.access_offset);
  }
  [[nodiscard]] std::uint32_t access_count() const noexcept { return g_.access_count; }
  [[nodiscard]] std::uint32_t access_used() const noexcept {
    return std::min(hdr_->access_used.load(std::memory_order_acquire), g_.access_count);
  }
  // The owner's memory-region table (mr_key_slots entries).
  [[nodiscard]] mr_entry* mr_table() const noexcept { return reinterpret_cast<mr_entry*>(base() + g_.mrt_offset); }
  // Nothing may be sent there or read from there: the owner closed the
  // endpoint, or this process found the owner dead (owner_alive).
  [[nodiscard]] bool closed() const noexcept {
    return dead_ || hdr_->state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(region_state::ready);
  }
  // Owner liveness, robust against pid reuse and holding no descriptor
  // (probe_process, at most once per 5 ms; /proc read once per second). Once
  // false, false for good. A look that proves nothing (exhaustion) is alive.
  [[nodiscard]] bool owner_alive() noexcept;
  // owner_alive() returned false before (no new look).
  [[nodiscard]] bool found_gone() const noexcept { return dead_; }
  // Why the owner is gone (after owner_alive() returned false): it closed
  // its endpoint, or its process exited.
  [[nodiscard]] bool closed_cleanly() const noexcept { return closed_cleanly_; }
  // Removes the name if it still designates this (dead owner's) region.
  void unlink_if_stale() noexcept;

 private:
  mapping() = default;
  struct geometry {
    std::uint32_t slot_count, slot_size, seg_count, seg_size, split_count, ctl_count, ctl_slot_size, mrt_count;
    std::uint64_t ring_offset, seg_offset, split_offset, ctl_offset, mrt_offset;
    std::uint32_t req_count, req_slot_size, access_count;
    std::uint64_t req_offset, access_offset;
  };
  void take_geometry() noexcept;
  geometry g_{};
  std::uint64_t next_alive_check_ = 0;
  std::uint64_t next_deep_check_ = 0;
  region_header* hdr_ = nullptr;
  std::size_t size_ = 0;
  std::string name_;
  bool owner_ = false;
  util::creator_process creator_;  // a forked child closing its copy only unmaps it
  bool dead_ = false;
  bool closed_cleanly_ = false;
  bool child_ = false;  // the owner is a child of this process (an unreaped zombie is found by waitid)
};

// Memory segments of domain::alloc_memory: /dev/shm/weft.UID.PID.mem.START.SEQ
[[nodiscard]] std::string mem_segment_name(std::uint32_t uid, std::uint32_t pid, std::uint64_t start,
                                           std::uint64_t seq);
// Removes regions, memory segments and port entries of this user whose owners are gone.
// Returns how many were removed.
std::size_t clean_stale();

// Integer service ports: /dev/shm/weft.<uid>.port.<P> names the region.
[[nodiscard]] result<void> register_port(std::uint16_t port, const std::string& region);
void unregister_port(std::uint16_t port, const std::string& region) noexcept;
[[nodiscard]] result<std::string> lookup_port(std::uint16_t port);

}  // namespace weft::prov::shm

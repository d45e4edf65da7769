#pragma once
// Default memory monitors (see weft/monitor.hpp).
//
// uffd_monitor: Linux userfaultfd in non-cooperative mode. Subscribed ranges
// are registered with UFFDIO_REGISTER_MODE_WP and never write-protected, so
// no page fault is ever delivered (with UFFD_FEATURE_WP_ASYNC, Linux 6.7, a
// write-protect fault would even be resolved by the kernel). The kernel
// reports UNMAP (munmap, mmap MAP_FIXED over, mremap shrink, brk shrink,
// glibc free() of a block it mmapped), REMOVE (madvise DONTNEED, FREE,
// REMOVE) and REMAP (mremap move) events. All uffd_monitor objects of a
// process share one userfaultfd (a range can be registered with one
// userfaultfd only) and two threads:
//  * a reader that only poll()s and read()s the fd into a fixed ring. The
//    kernel makes a thread that unmaps registered memory wait until its
//    event is read, so the reader never allocates, never calls user code and
//    takes one tiny lock that is never held across anything that can block;
//  * a dispatcher that applies the events and calls the notify functions,
//    which may therefore free, munmap, subscribe and unsubscribe.
// valid() applies events already read before answering: once munmap (or
// madvise, mremap) of subscribed memory has returned, valid() is false.
// The userfaultfd is opened with UFFD_USER_MODE_ONLY (any user, Linux 5.11),
// else without it (root or vm.unprivileged_userfaultfd=1), else through
// /dev/userfaultfd (Linux 6.1, when seccomp forbids the system call).
//
// A range the kernel will not register is watched like maps_monitor does it
// and subscribe answers watch_mode::checked: another userfaultfd owns it
// (EBUSY), a memory type the kernel refuses (regular file mappings without
// WP_ASYNC, VM_PFNMAP/IO mappings), a mapping that may never be written,
// vm.max_map_count reached, or a System V shm segment (shmdt is not
// reported; recognized by the PROCMAP_QUERY ioctl, Linux 6.11, else by the
// text of /proc/self/maps). When the mapping cannot be read at subscribe
// (/proc/self/maps unreadable, the ioctl and the read both failing), nobody
// can tell whether the range is a segment: it is checked too, never
// notified (util/proc_maps.hpp); if even its identity cannot be read,
// valid() answers false until it is subscribed again.
//
// Costs and limits to know:
//  * munmap, madvise(DONTNEED/FREE/REMOVE), mremap, MAP_FIXED over and brk
//    shrink of subscribed memory wait for the reader thread to be scheduled:
//    a few microseconds, up to ~50 us on a 2-vCPU VM (0.8 us unwatched). If
//    the reader cannot run (e.g. a debugger stops only some threads) those
//    calls stall until it does.
//  * Registration splits VMAs at range edges (vm.max_map_count, default
//    65530); registered VMAs do not merge with unregistered neighbours, do
//    not get mTHP and are not collapsed by khugepaged while partly
//    populated; a registered MAP_SHARED mapping takes one extra minor fault
//    on the first write to each page (write-notify).
//  * Not reported: mprotect, MADV_PAGEOUT/COLD (contents kept), hole punch
//    or truncation of the file behind a shared mapping, writes through other
//    mappings, anything in a child after fork() (children are not watched;
//    monitors made before fork() answer bad_state / false in the child).
//  * notify may over-approximate: page granularity; a full event ring is
//    merged into one range; a munmap queues its event just after the address
//    is free, so a range unmapped by one thread and mapped and subscribed
//    again by another at once may be invalidated (spuriously, safely).
//
// maps_monitor: the fallback when no userfaultfd can be opened (EPERM,
// ENOSYS, seccomp). It never calls notify. valid() re-reads the mapping of
// the range (PROCMAP_QUERY ioctl on /proc/self/maps, a few us; before Linux
// 6.11 mincore plus parsing /proc/self/maps, O(mappings of the process)) and
// compares each piece's device, inode, file offset and shared flag with what
// subscribe recorded: it sees munmap, a different file or offset, new
// MAP_SHARED anonymous memory. It cannot tell a new private anonymous
// mapping at the same address from the old one, nor see MADV_DONTNEED (the
// mapping stays, its pages become zero pages).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "util/proc_maps.hpp"
#include "weft/error.hpp"
#include "weft/monitor.hpp"

namespace weft::util {

// What this process may use (for diagnostics and tests).
struct uffd_support {
  bool available = false;       // a userfaultfd with the needed features opens
  bool user_mode_only = false;  // opened with UFFD_USER_MODE_ONLY
  bool dev_userfaultfd = false;  // opened through /dev/userfaultfd
  int open_errno = 0;           // why not, when !available
  std::uint64_t offered = 0;    // UFFD_FEATURE_* the kernel offers
  std::uint64_t enabled = 0;    // UFFD_FEATURE_* the monitor turns on
};
[[nodiscard]] uffd_support probe_userfaultfd() noexcept;
// A userfaultfd with the features the monitor needs (s tells how it was
// opened); -1 with s.open_errno when this process may not have one.
[[nodiscard]] int open_configured(uffd_support& s) noexcept;

class uffd_core;

class uffd_monitor final : public memory_monitor {
 public:
  // Fails (not_supported, permission_denied) when userfaultfd is unusable.
  static result<std::unique_ptr<uffd_monitor>> create();
  ~uffd_monitor() override;

  result<void> start(notify_fn notify) override;
  void stop() noexcept override;
  result<watch_mode> subscribe(const void* addr, std::size_t len) override;
  void unsubscribe(const void* addr, std::size_t len) noexcept override;
  [[nodiscard]] bool valid(const void* addr, std::size_t len) noexcept override;
  [[nodiscard]] const char* name() const noexcept override { return "userfaultfd"; }

  [[nodiscard]] uffd_support support() const noexcept;

 private:
  explicit uffd_monitor(std::shared_ptr<uffd_core> core) noexcept;

  std::shared_ptr<uffd_core> core_;
  std::atomic<std::uint64_t> client_{0};  // 0: not started
};

class maps_monitor final : public memory_monitor {
 public:
  maps_monitor() = default;
  ~maps_monitor() override = default;

  // notify is accepted and never called.
  result<void> start(notify_fn notify) override;
  void stop() noexcept override;
  // Always watch_mode::checked.
  result<watch_mode> subscribe(const void* addr, std::size_t len) override;
  void unsubscribe(const void* addr, std::size_t len) noexcept override;
  [[nodiscard]] bool valid(const void* addr, std::size_t len) noexcept override;
  [[nodiscard]] const char* name() const noexcept override { return "maps"; }

 private:
  struct record {
    std::uint32_t refs = 0;
    std::vector<map_piece> identity;
  };

  std::mutex mu_;
  bool started_ = false;
  std::map<std::pair<std::uintptr_t, std::uintptr_t>, record> recs_;  // page-rounded [lo, hi)
  std::uintptr_t max_len_ = 0;
};

}  // namespace weft::util

#pragma once
// Memory monitor: tells a registration cache when registered memory goes
// away (unmapped, freed back to the OS, remapped, MADV_DONTNEED/FREE/REMOVE),
// so that a cached registration is never reused for different pages.
//
// weft owns one monitor per domain. A user may import their own monitor on a
// domain to replace the default one (e.g. one hooked into their allocator).
//
// Contract between weft and a monitor:
//  * weft calls start() once with the notify function, before any
//    subscribe(), and stop() before it drops the monitor. After stop()
//    returns, notify is not called any more.
//  * subscribe()/unsubscribe() are reference counted per exact range: the
//    same range subscribed twice needs two unsubscribes. Ranges may overlap.
//  * notify(addr, len) is called after memory overlapping a subscribed range
//    went away. It may over-approximate (page granularity, coalesced ranges,
//    a range unsubscribed meanwhile) but must never miss a change it can see.
//  * valid(addr, len) is false if any part of the range may have changed
//    since it was subscribed; a monitor that cannot tell answers true only
//    when it is sure.
// All member functions are thread-safe (control path).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "weft/error.hpp"

namespace weft {

// How a subscribed range is watched (answer of subscribe()).
enum class watch_mode : std::uint8_t {
  notified,  // notify is called when the range goes away; valid() is cheap
  checked,   // the monitor cannot watch this range: no notify for it, valid()
             // re-checks the mapping on every call (costly): call it before
             // each reuse of a cached registration
};

[[nodiscard]] const char* to_string(watch_mode m) noexcept;

class memory_monitor {
 public:
  // Called with a range (page aligned for the default monitors) that
  // overlaps subscribed memory which went away. Called from a thread owned
  // by the monitor, after the change happened, never concurrently with
  // itself for one monitor. It may call subscribe/unsubscribe/valid, free()
  // and munmap(); it should return quickly (it delays other notifications).
  using notify_fn = std::function<void(const void* addr, std::size_t len)>;

  memory_monitor() = default;
  memory_monitor(const memory_monitor&) = delete;
  memory_monitor& operator=(const memory_monitor&) = delete;
  virtual ~memory_monitor() = default;

  // Starts monitoring; notify must be callable until stop() returns.
  [[nodiscard]] virtual result<void> start(notify_fn notify) = 0;
  // Stops monitoring and drops all subscriptions. Waits for a notify call in
  // progress to return (unless called from inside notify): do not call it
  // while holding a lock that notify takes.
  virtual void stop() noexcept = 0;

  // [addr, addr + len) must be mapped. The answer says whether notify will
  // report this range or valid() must be asked before reuse.
  [[nodiscard]] virtual result<watch_mode> subscribe(const void* addr, std::size_t len) = 0;
  // Drops one reference on exactly this range; unknown ranges are ignored.
  virtual void unsubscribe(const void* addr, std::size_t len) noexcept = 0;
  // True only if [addr, addr + len) is covered by subscriptions and none of
  // it may have changed since. A range subscribed again after it was
  // invalidated answers for the newest subscription.
  [[nodiscard]] virtual bool valid(const void* addr, std::size_t len) noexcept = 0;

  // "userfaultfd", "maps", or a user monitor's own name.
  [[nodiscard]] virtual const char* name() const noexcept = 0;
};

// The default monitor of this platform: userfaultfd when the process may use
// it (Linux; also as non-root through UFFD_USER_MODE_ONLY), else a fallback
// that re-checks /proc/self/maps in valid() and never notifies. name() tells
// which one was picked.
[[nodiscard]] result<std::shared_ptr<memory_monitor>> make_default_monitor();

}  // namespace weft

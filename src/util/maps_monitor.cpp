// maps_monitor: the memory monitor used when no userfaultfd can be opened
// (see util/uffd_monitor.hpp). Every range is checked: valid() compares the
// range's mapping now with what subscribe recorded (util/proc_maps.hpp).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "util/uffd_monitor.hpp"

namespace weft::util {

result<void> maps_monitor::start(notify_fn) {
  {
    const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return make_error(errc::not_supported, std::string("memory monitor: /proc/self/maps: ") + (::strerrordesc_np(errno) != nullptr ? ::strerrordesc_np(errno) : "unknown error"));
    }
    ::close(fd);
  }
  std::lock_guard lk(mu_);
  if (started_) return make_error(errc::bad_state, "memory monitor is already started");
  started_ = true;
  return {};
}

void maps_monitor::stop() noexcept {
  decltype(recs_) dead;  // destroyed after the lock is released
  std::lock_guard lk(mu_);
  started_ = false;
  dead.swap(recs_);
  max_len_ = 0;
}

result<watch_mode> maps_monitor::subscribe(const void* addr, std::size_t len) {
  std::uintptr_t lo = 0, hi = 0;
  if (!page_round(addr, len, lo, hi)) return make_error(errc::invalid_argument, "memory monitor: empty range");
  auto identity = map_identity(lo, hi);  // outside the lock: it reads /proc
  // Unreadable just now: subscribed with no identity, so valid() answers
  // false (never reused) until the range is subscribed again.
  if (!identity && identity.error().code != errc::not_supported) return std::unexpected(std::move(identity.error()));
  std::vector<map_piece> now = identity ? std::move(*identity) : std::vector<map_piece>{};
  std::lock_guard lk(mu_);
  if (!started_) return make_error(errc::bad_state, "memory monitor is not started");
  record& r = recs_[{lo, hi}];
  if (r.refs == UINT32_MAX) return make_error(errc::too_big, "memory monitor: too many subscriptions of one range");
  if (r.refs == 0 || r.identity != now) r.identity = std::move(now);  // new, or stale: the newest wins
  ++r.refs;
  max_len_ = std::max(max_len_, hi - lo);
  return watch_mode::checked;
}

void maps_monitor::unsubscribe(const void* addr, std::size_t len) noexcept {
  std::uintptr_t lo = 0, hi = 0;
  if (!page_round(addr, len, lo, hi)) return;
  std::lock_guard lk(mu_);
  const auto it = recs_.find({lo, hi});
  if (it != recs_.end() && --it->second.refs == 0) recs_.erase(it);
}

bool maps_monitor::valid(const void* addr, std::size_t len) noexcept {
  std::uintptr_t lo = 0, hi = 0;
  if (!page_round(addr, len, lo, hi)) return false;
  std::vector<candidate> cands;
  try {
    std::lock_guard lk(mu_);
    if (!started_) return false;
    if (const auto it = recs_.find({lo, hi}); it != recs_.end()) {
      cands.push_back(candidate{lo, hi, false, it->second.identity});
    } else {
      for (auto it = recs_.lower_bound({lo > max_len_ ? lo - max_len_ : 0, 0});
           it != recs_.end() && it->first.first < hi; ++it) {
        if (it->first.second <= lo) continue;
        cands.push_back(candidate{it->first.first, it->first.second, false, it->second.identity});
      }
    }
  } catch (...) {
    return false;
  }
  for (candidate& c : cands) c.ok = identity_matches(c.identity, c.lo, c.hi);
  return covered(cands, lo, hi);
}

}  // namespace weft::util

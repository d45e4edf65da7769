#pragma once
// The sources locks of every queue (CQs, EQ, counters) an endpoint is a
// source of, held by its destructor from its first teardown step to its
// detach(): a wait on any of them, on another thread, drives and arms its
// sources under its own group's lock only, so each group it can be reached
// through must be locked out. Taken in address order, so that two endpoints
// closing at once on shared queues never wait for each other in a cycle.
#include <algorithm>
#include <array>
#include <mutex>

#include "weft/spi/cntr.hpp"
#include "weft/spi/cq.hpp"
#include "weft/spi/eq.hpp"
#include "weft/spi/progress.hpp"

namespace weft::core {

class source_holds {
 public:
  // Every queue an endpoint can be bound to: a transmit and a receive CQ,
  // an EQ, and a counter for each kind of event (fi_ep_bind). Null ones
  // are skipped, each queue is locked once.
  static constexpr std::size_t max_queues = 2 + 1 + spi::endpoint_counters::kinds;

  source_holds(const spi::cq* tx, const spi::cq* rx, const spi::eq* eq, const spi::endpoint_counters& c) noexcept {
    add(tx);
    add(rx);
    add(eq);
    c.for_each([this](const spi::cntr* k) { add(k); });
    std::sort(groups_.begin(), groups_.begin() + n_);
    const std::size_t n = static_cast<std::size_t>(std::unique(groups_.begin(), groups_.begin() + n_) - groups_.begin());
    for (std::size_t i = 0; i < n; ++i) locks_[i] = groups_[i]->hold();
  }

 private:
  void add(const spi::progress_group* g) noexcept {
    if (g) groups_[n_++] = g;  // at most max_queues: one per argument and counter kind
  }
  std::array<const spi::progress_group*, max_queues> groups_{};
  std::array<std::unique_lock<std::recursive_mutex>, max_queues> locks_;
  std::size_t n_ = 0;
};

}  // namespace weft::core

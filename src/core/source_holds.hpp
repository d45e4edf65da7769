#pragma once
// The sources locks of every queue (CQs, EQ, counters) an endpoint is a
// source of, held by its destructor from its first teardown step to its
// detach(): a wait on any of them, on another thread, drives and arms its
// sources under its own group's lock only, so each group it can be reached
// through must be locked out. Taken in address order, so that two endpoints
// closing at once on shared queues never wait for each other in a cycle.
#include <algorithm>
#include <array>
#include <initializer_list>
#include <mutex>

#include "weft/spi/progress.hpp"

namespace weft::core {

class source_holds {
 public:
  // Queues to hold (null ones are skipped); then lock().
  void add(const spi::progress_group* g) noexcept {
    if (g && n_ < groups_.size()) groups_[n_++] = g;
  }
  void add(std::initializer_list<const spi::progress_group*> gs) noexcept {
    for (const auto* g : gs) add(g);
  }
  void lock() noexcept {
    std::sort(groups_.begin(), groups_.begin() + n_);
    const std::size_t n = static_cast<std::size_t>(std::unique(groups_.begin(), groups_.begin() + n_) - groups_.begin());
    for (std::size_t i = 0; i < n; ++i) locks_[i] = groups_[i]->hold();
  }

 private:
  // two CQs, an EQ, six counters
  std::array<const spi::progress_group*, 9> groups_{};
  std::array<std::unique_lock<std::recursive_mutex>, 9> locks_;
  std::size_t n_ = 0;
};

}  // namespace weft::core

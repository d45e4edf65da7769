#pragma once
// Completion counter (cf. fi_cntr(3)): counts completed operations of the
// kinds it is bound for, and failed ones separately. Atomic, so a provider's
// progress thread may update it while the application reads it.
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "weft/detail/ops.hpp"
#include "weft/error.hpp"
#include "weft/spi/progress.hpp"
#include "weft/types.hpp"

namespace weft::spi {

class cntr : public detail::cntr_ops, public progress_group {
 public:
  // With automatic progress, a wait sleeps on posted_ (arm_all()): bumped here.
  void inc() noexcept {
    value_.fetch_add(1, std::memory_order_release);
    if (lock_in_use()) posted();
  }
  void inc_err() noexcept {
    errors_.fetch_add(1, std::memory_order_release);
    if (lock_in_use()) posted();
  }

  // detail::cntr_ops: what weft::counter calls
  [[nodiscard]] std::uint64_t read() noexcept final;
  [[nodiscard]] std::uint64_t read_error() noexcept final;
  // As fi_cntr_add/fi_cntr_set: a wait asleep on this counter wakes (and
  // checks its threshold again).
  void add(std::uint64_t n) noexcept final {
    value_.fetch_add(n, std::memory_order_acq_rel);
    posted();
  }
  void set(std::uint64_t n) noexcept final {
    value_.store(n, std::memory_order_release);
    posted();
  }
  void set_error(std::uint64_t n) noexcept final {
    errors_.store(n, std::memory_order_release);
    seen_err_.store(n, std::memory_order_release);
    posted();
  }
  // ok once the count reaches threshold; timed_out; error_available when the
  // error count changed since the application last read or set it.
  [[nodiscard]] errc wait(std::uint64_t threshold, int timeout_ms) noexcept final;
  [[nodiscard]] sleep_stats wait_stats() const noexcept final {
    return wake_stats();
  }
  // the provider interface's older names
  [[nodiscard]] std::uint64_t read_err() noexcept { return read_error(); }
  void set_err(std::uint64_t n) noexcept { set_error(n); }

 private:
  std::atomic<std::uint64_t> value_{0}, errors_{0}, seen_err_{0};
};

// Counts one event on k, if there is a counter: a success or a failure.
inline void count(cntr* k, bool ok) noexcept {
  if (k) ok ? k->inc() : k->inc_err();
}

// The counters an endpoint is bound to, one per kind of event (fi_ep_bind
// with FI_SEND, FI_RECV, FI_READ, FI_WRITE, FI_REMOTE_READ, FI_REMOTE_WRITE).
struct endpoint_counters {
  std::shared_ptr<cntr> send, recv, read, write, remote_read, remote_write;
  // How many kinds (and so at most how many distinct counters) there are:
  // what an endpoint's teardown locks is sized by it (core/source_holds.hpp).
  static constexpr std::size_t kinds = 6;
  // Calls f with each kind's counter (null when none; a counter bound for
  // several kinds comes several times).
  template <class F>
  void for_each(F&& f) const {
    for (const cntr* c : {send.get(), recv.get(), read.get(), write.get(), remote_read.get(), remote_write.get()}) f(c);
  }

  // Binds c for the kinds named in flags (flag::send, recv, read, write,
  // remote_read, remote_write); bad_state if one of them has a counter
  // already, and nothing changes then. On success, true when c was not bound
  // here before for another kind (the endpoint then attaches to it).
  [[nodiscard]] result<bool> bind(const std::shared_ptr<cntr>& c, std::uint64_t flags);
  // Every counter bound, each once (to detach from them).
  [[nodiscard]] std::vector<cntr*> distinct() const;
  // The counter of one of the endpoint's own operations completing, by its
  // completion flags: RMA writes, SAVE and atomics count as writes, RMA reads
  // as reads, everything else as a send.
  [[nodiscard]] cntr* of_tx(std::uint64_t op_flags) const noexcept {
    if (op_flags & (flag::rma | flag::atomic))
      return (op_flags & (flag::write | flag::atomic | flag::save)) ? write.get() : read.get();
    return send.get();
  }
};
static_assert(sizeof(endpoint_counters) == endpoint_counters::kinds * sizeof(std::shared_ptr<cntr>),
              "a new kind of counter: add it to kinds, for_each() and bind()");

}  // namespace weft::spi

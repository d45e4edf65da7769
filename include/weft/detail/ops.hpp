#pragma once
// The data-path interfaces that the handles of weft.hpp call inline (as
// libfabric's handles call their fi_ops tables): operations on an endpoint,
// reads of a completion queue and of a counter. The provider interface
// (weft/spi/) derives its objects from these and adds the control path;
// applications never call them directly. Each is one virtual call from the
// application, as before the split.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "weft/types.hpp"

namespace weft::detail {

// Sets what last_error_message() returns on this thread (no allocation; cut
// at 255 bytes). For the handles' inline code and providers' data path.
void set_last_error(const char* msg) noexcept;
[[gnu::format(printf, 1, 2)]] void format_last_error(const char* fmt, ...) noexcept;
// The same, returning the code: the handles' cold paths.
[[gnu::cold]] errc fail(errc code, const char* what) noexcept;
[[gnu::cold]] errc closed(const char* object) noexcept;          // bad_state: "<object> is closed ..."
[[gnu::cold]] errc invalid_atomic(const atomic_desc& d) noexcept;  // invalid_argument, saying what is wrong

class endpoint_ops {
 public:
  endpoint_ops() = default;
  endpoint_ops(const endpoint_ops&) = delete;
  endpoint_ops& operator=(const endpoint_ops&) = delete;
  virtual ~endpoint_ops() = default;

  // m.iov/iov_count describe the buffer; flags from weft::flag.
  [[nodiscard]] virtual errc send(const msg_desc& m, std::uint64_t flags) noexcept = 0;
  [[nodiscard]] virtual errc recv(const msg_desc& m, std::uint64_t flags) noexcept = 0;
  [[nodiscard]] virtual errc cancel(void* context) noexcept = 0;
  // RMA: flags hold flag::read or flag::write
  [[nodiscard]] virtual errc rma(const rma_desc&, std::uint64_t) noexcept { return errc::not_supported; }
  [[nodiscard]] virtual errc atomic(const atomic_desc&) noexcept { return errc::not_supported; }

  // Why the last post that answered errc::again did (endpoint::again_reason()).
  [[nodiscard]] again_reason last_again() const noexcept { return again_.load(std::memory_order_relaxed); }

 protected:
  // For providers, where they return errc::again: records why (a one-byte store).
  [[nodiscard]] errc again(again_reason why) noexcept {
    again_.store(why, std::memory_order_relaxed);
    return errc::again;
  }
  void note_again(again_reason why) noexcept { again_.store(why, std::memory_order_relaxed); }

 private:
  std::atomic<again_reason> again_{again_reason::none};
};

class cq_ops {
 public:
  cq_ops() = default;
  cq_ops(const cq_ops&) = delete;
  cq_ops& operator=(const cq_ops&) = delete;
  virtual ~cq_ops() = default;

  [[nodiscard]] virtual errc read(std::span<cq_entry> out, std::size_t& n) noexcept = 0;
  [[nodiscard]] virtual errc read_error(cq_err_entry& out) noexcept = 0;
  [[nodiscard]] virtual errc wait(std::span<cq_entry> out, std::size_t& n, int timeout_ms) noexcept = 0;
  virtual void progress() noexcept = 0;
  [[nodiscard]] virtual sleep_stats wait_stats() const noexcept { return {}; }
};

class cntr_ops {
 public:
  cntr_ops() = default;
  cntr_ops(const cntr_ops&) = delete;
  cntr_ops& operator=(const cntr_ops&) = delete;
  virtual ~cntr_ops() = default;

  [[nodiscard]] virtual std::uint64_t read() noexcept = 0;
  [[nodiscard]] virtual std::uint64_t read_error() noexcept = 0;
  virtual void add(std::uint64_t n) noexcept = 0;
  virtual void set(std::uint64_t n) noexcept = 0;
  virtual void set_error(std::uint64_t n) noexcept = 0;
  [[nodiscard]] virtual errc wait(std::uint64_t threshold, int timeout_ms) noexcept = 0;
  [[nodiscard]] virtual sleep_stats wait_stats() const noexcept { return {}; }
};

}  // namespace weft::detail

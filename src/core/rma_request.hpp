#pragma once
// What every provider checks first in an RMA request (rma_desc + flags):
// the kind, the local length, the completion level and the remote ranges
// the local bytes fill in order. Data path: no allocation, an errc.
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "weft/spi/error.hpp"
#include "weft/types.hpp"

namespace weft::core {

struct rma_request {
  bool save = false, write = false, inject = false;
  std::size_t len = 0;        // local bytes (0 for SAVE)
  std::uint64_t level = 0;    // exactly one of flag::transmit/delivery/commit_complete
  rma_iov one{};              // the single range when the request names offset and key
  const rma_iov* list = nullptr;
  std::size_t count = 0;      // remote ranges
  [[nodiscard]] const rma_iov* ranges() const noexcept { return list ? list : &one; }
};

// limits: max_iov local and remote pieces, max_len local bytes, inject_max
// for inject writes, max_range bytes per remote range.
[[nodiscard]] inline errc parse_rma(const rma_desc& d, std::uint64_t flags, std::uint64_t default_level,
                                    std::size_t max_iov, std::uint64_t max_len, std::size_t inject_max,
                                    std::uint64_t max_range, rma_request& r) noexcept {
  if (d.iov_count > max_iov || (!d.iov && d.iov_count))
    return spi::bad_iov("RMA", d.iov_count, max_iov);
  if (d.rma_count > max_iov || (!d.rma && d.rma_count))
    return spi::fail(errc::invalid_argument, "RMA: too many remote ranges (tx.rma_iov_limit), or a null list");
  r.save = flags & flag::save;
  r.write = (flags & flag::write) && !r.save;
  r.inject = flags & flag::inject;
  r.len = 0;
  if (!r.save)  // lengths that add up to more than 2^64 are SIZE_MAX: too big below, never a wrapped small sum
    for (std::size_t i = 0; i < d.iov_count; ++i)
      if (__builtin_add_overflow(r.len, d.iov[i].iov_len, &r.len)) {
        r.len = SIZE_MAX;
        break;
      }
  if (r.inject && !r.write) return spi::fail(errc::invalid_argument, "RMA: only writes may be injected");
  if (r.len > max_len || (r.inject && r.len > inject_max))
    return r.inject && r.len <= max_len ? spi::over_limit("inject write", r.len, "tx.inject_size", inject_max)
                                        : spi::over_limit("RMA", r.len, "ep.max_msg_size", max_len);
  r.level = flags & flag::completion_levels;
  if (!r.level) r.level = default_level;
  if (r.level != flag::transmit_complete && r.level != flag::delivery_complete && r.level != flag::commit_complete)
    return spi::fail(errc::invalid_argument,  // one level, not a combination
                     "RMA: one completion level (flag::transmit_complete, delivery_complete or commit_complete)");
  r.one = rma_iov{d.offset, r.len, d.key};
  const bool listed = d.rma_count && !r.save;
  r.list = listed ? d.rma : nullptr;
  r.count = listed ? d.rma_count : 1;
  if (listed) {
    std::uint64_t t = 0;
    for (std::size_t i = 0; i < r.count; ++i) {
      if (r.list[i].len > max_range)
        return spi::over_limit("RMA remote range", r.list[i].len, "the limit", max_range);
      t += r.list[i].len;
    }
    if (t != r.len) return spi::fail(errc::invalid_argument, "RMA: the remote ranges must add up to the local bytes");
  } else if (r.len > max_range) {
    return spi::over_limit("RMA", r.len, "the limit", max_range);
  }
  return errc::ok;
}

}  // namespace weft::core

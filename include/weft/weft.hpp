#pragma once
// The weft C++ API: move-only RAII handles over provider objects. A child
// keeps its parent alive, so objects may be closed (destroyed) in any order.
//
// The handles call the data path inline through the interfaces of
// weft/detail/ops.hpp; everything else is defined in libweft. The provider
// interface (weft/spi/) is not included here: its classes are only named.
//
// Errors: the data path (posts, CQ and counter reads) returns errc, or
// std::expected<T, errc>; when that is an error other than again,
// weft::last_error_message() (error.hpp) says in words what was wrong on
// this thread ("send: fi_addr 7 is not in the address vector (insert the
// peer's address first ...)"). again is back-pressure: read the CQ, then
// retry; endpoint::again_reason() says what is full. The control path
// returns result<T>, whose error carries the text.
#include <sys/uio.h>

#include <expected>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/address.hpp"
#include "weft/atomic.hpp"
#include "weft/av.hpp"
#include "weft/detail/ops.hpp"
#include "weft/error.hpp"
#include "weft/event.hpp"
#include "weft/info.hpp"
#include "weft/monitor.hpp"
#include "weft/mr.hpp"
#include "weft/pmem.hpp"
#include "weft/types.hpp"

namespace weft {

namespace spi {  // the provider objects behind the handles (weft/spi/provider.hpp)
class fabric;
class domain;
class endpoint;
class passive_endpoint;
class av;
class cq;
class eq;
class cntr;
class mr;
}  // namespace spi

namespace detail {
// Impl: the provider object (an incomplete type here); Ops: its data-path
// interface (void for objects that have none), which the handle calls inline.
template <class Impl, class Ops = void>
class handle {
 public:
  handle() = default;
  // Made by libweft, where Impl is a complete type.
  handle(std::shared_ptr<Impl> impl, std::shared_ptr<void> parent) noexcept
      : parent_(std::move(parent)), impl_(std::move(impl)) {
    if constexpr (!std::is_void_v<Ops>) ops_ = impl_.get();
  }
  handle(const handle&) = delete;
  handle& operator=(const handle&) = delete;
  handle(handle&& o) noexcept
      : parent_(std::move(o.parent_)), impl_(std::move(o.impl_)), ops_(std::exchange(o.ops_, nullptr)) {}
  handle& operator=(handle&& o) noexcept {
    if (this != &o) {
      close();  // the object before its parent
      parent_ = std::move(o.parent_);
      impl_ = std::move(o.impl_);
      ops_ = std::exchange(o.ops_, nullptr);
    }
    return *this;
  }
  ~handle() { close(); }
  [[nodiscard]] explicit operator bool() const noexcept { return impl_ != nullptr; }
  [[nodiscard]] const std::shared_ptr<Impl>& impl() const noexcept { return impl_; }
  void close() noexcept {
    ops_ = nullptr;
    impl_.reset();
    parent_.reset();
  }

 protected:
  std::shared_ptr<void> parent_;  // declared first: destroyed after impl_
  std::shared_ptr<Impl> impl_;
  Ops* ops_ = nullptr;  // impl_, seen through its data-path interface
};
}  // namespace detail

class completion_queue : public detail::handle<spi::cq, detail::cq_ops> {
 public:
  using handle::handle;
  // Drives progress of every bound endpoint, then returns completions.
  // ok (n > 0), again (nothing yet) or error_available (call read_error).
  [[nodiscard]] errc read(std::span<cq_entry> out, std::size_t& n) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the completion queue");
    return ops_->read(out, n);
  }
  [[nodiscard]] errc read(cq_entry& e) noexcept {
    std::size_t n = 0;
    return read({&e, 1}, n);
  }
  // Same as read(); entries carry the sender in cq_entry::src (needs cap::source).
  [[nodiscard]] errc read_from(std::span<cq_entry> out, std::size_t& n) noexcept { return read(out, n); }
  [[nodiscard]] errc read_error(cq_err_entry& e) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the completion queue");
    return ops_->read_error(e);
  }
  // Drives progress of the bound endpoints without taking completions: ok,
  // or bad_state once closed. (Not [[nodiscard]]: it is called for its effect.)
  errc progress() noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the completion queue");
    ops_->progress();
    return errc::ok;
  }
  // Spins briefly, then sleeps; timeout_ms < 0 waits forever. Returns ok
  // (n > 0) or error_available as read() does; timed_out when nothing
  // arrived in time; again (n == 0) when room appeared at a peer that
  // refused a post for a full ring (again_reason::peer_busy) since then:
  // retry the post; again too when an endpoint bound to this CQ was closed
  // during the wait. The sleep ends only on a doorbell, room, the deadline,
  // or a liveness pulse while operations to a peer are outstanding
  // (wait_stats() tells them apart). A counter's wait sleeps the same way.
  [[nodiscard]] errc wait(std::span<cq_entry> out, std::size_t& n, int timeout_ms) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the completion queue");
    return ops_->wait(out, n, timeout_ms);
  }
  [[nodiscard]] errc wait(cq_entry& e, int timeout_ms) noexcept {
    std::size_t n = 0;
    return wait({&e, 1}, n, timeout_ms);
  }
  // How this queue's blocking waits slept so far (sleep_stats); bad_state once closed.
  [[nodiscard]] std::expected<sleep_stats, errc> wait_stats() const noexcept {
    if (!ops_) [[unlikely]]
      return std::unexpected(detail::closed("the completion queue"));
    return ops_->wait_stats();
  }
};

class address_vector : public detail::handle<spi::av> {
 public:
  using handle::handle;
  [[nodiscard]] result<fi_addr_t> insert(const address& a);
  [[nodiscard]] result<void> remove(fi_addr_t a);
  [[nodiscard]] result<address> lookup(fi_addr_t a) const;
};

class event_queue : public detail::handle<spi::eq> {
 public:
  using handle::handle;
  // ok (an event), again (none yet); bad_state once closed. Drives progress of the bound objects.
  [[nodiscard]] errc read(eq_event& e);
  // timed_out when nothing arrived in time; timeout_ms < 0 waits forever.
  // The sleep ends on an event pushed by any thread, a source's doorbell or
  // descriptor, the deadline, or a liveness pulse while a bound endpoint has
  // peers whose death it must report (wait_stats() tells them apart).
  [[nodiscard]] errc wait(eq_event& e, int timeout_ms);
  // How this queue's blocking waits slept so far (room_returns is 0); bad_state once closed.
  [[nodiscard]] std::expected<sleep_stats, errc> wait_stats() const noexcept;
};

class memory_region : public detail::handle<spi::mr> {
 public:
  using handle::handle;
  // What a peer needs to name this region in RMA operations; bad_state once closed.
  [[nodiscard]] std::expected<std::uint64_t, errc> key() const noexcept;
  // The registered (or allocated) memory and its length; bad_state once closed.
  [[nodiscard]] std::expected<void*, errc> addr() const noexcept;
  [[nodiscard]] std::expected<std::size_t, errc> len() const noexcept;
  // Persistent regions: how commits make writes durable (flush_method::none
  // otherwise); bad_state once closed.
  [[nodiscard]] std::expected<flush_method, errc> persist() const noexcept;
  // Whether the registration was served from the domain's registration
  // cache; bad_state once closed.
  [[nodiscard]] std::expected<bool, errc> cache_hit() const noexcept;
  // The local memory descriptor of this region's buffers (mr_desc::none
  // once closed), for the desc arguments of operations on them.
  [[nodiscard]] mr_desc desc() const noexcept;
};

class counter : public detail::handle<spi::cntr, detail::cntr_ops> {
 public:
  using handle::handle;
  // Drives progress of the bound endpoints, then reads; bad_state once closed.
  [[nodiscard]] std::expected<std::uint64_t, errc> read() noexcept {
    if (!ops_) [[unlikely]]
      return std::unexpected(detail::closed("the counter"));
    return ops_->read();
  }
  [[nodiscard]] std::expected<std::uint64_t, errc> read_error() noexcept {
    if (!ops_) [[unlikely]]
      return std::unexpected(detail::closed("the counter"));
    return ops_->read_error();
  }
  // ok, or bad_state once closed.
  [[nodiscard]] errc add(std::uint64_t n) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the counter");
    ops_->add(n);
    return errc::ok;
  }
  [[nodiscard]] errc set(std::uint64_t n) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the counter");
    ops_->set(n);
    return errc::ok;
  }
  [[nodiscard]] errc set_error(std::uint64_t n) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the counter");
    ops_->set_error(n);
    return errc::ok;
  }
  // ok once read() >= threshold; timed_out; error_available when an
  // operation failed since read_error() or set_error() was last called.
  [[nodiscard]] errc wait(std::uint64_t threshold, int timeout_ms) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the counter");
    return ops_->wait(threshold, timeout_ms);
  }
  // How this counter's blocking waits slept so far (sleep_stats; room_returns
  // is 0); bad_state once closed.
  [[nodiscard]] std::expected<sleep_stats, errc> wait_stats() const noexcept {
    if (!ops_) [[unlikely]]
      return std::unexpected(detail::closed("the counter"));
    return ops_->wait_stats();
  }
};

class endpoint : public detail::handle<spi::endpoint, detail::endpoint_ops> {
  [[nodiscard]] errc do_atomic(const atomic_desc& d) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the endpoint");
    const auto op = d.op;
    const auto t = d.type;
    // count > max / size, not count * size > max: the product wraps for a huge count
    if (op > atomic_op::cswap || t > atomic_type::f64 || !atomic_valid(op, t) || d.count == 0 ||
        d.count > atomic_max_bytes / size_of(t) || !d.operand || (op == atomic_op::cswap && (!d.compare || !d.result)))
      [[unlikely]] return detail::invalid_atomic(d);
    return ops_->atomic(d);
  }
  [[nodiscard]] errc tx(const msg_desc& m, op_flags flags) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the endpoint");
    return ops_->send(m, flags);
  }
  [[nodiscard]] errc rx(const msg_desc& m, op_flags flags) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the endpoint");
    return ops_->recv(m, flags);
  }
  [[nodiscard]] errc do_rma(const rma_desc& d, op_flags flags) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the endpoint");
    return ops_->rma(d, flags);
  }

 public:
  using handle::handle;
  // setup
  [[nodiscard]] result<void> bind(completion_queue& q, op_flags flags = flag::transmit | flag::receive);
  [[nodiscard]] result<void> bind(address_vector& a);
  // Counts completed sends (flag::send), receives (flag::recv), RMA reads and
  // writes issued here (flag::read, flag::write; atomics count as writes) and
  // RMA accesses by peers to this endpoint's regions (flag::remote_read,
  // flag::remote_write); injected sends included; failures go to the error count.
  [[nodiscard]] result<void> bind(counter& c, op_flags flags);
  // After binding a CQ and, on RDM endpoints, an address vector (bad_state
  // otherwise: bind them, then enable again).
  [[nodiscard]] result<void> enable();
  // The address peers reach this endpoint at (insert it into their AVs).
  [[nodiscard]] result<address> name() const;

  // Events: connection management on MSG endpoints (cf. fi_cm(3)); on RDM
  // endpoints, eq_event::kind::peer_dead names a peer that died or closed.
  [[nodiscard]] result<void> bind(event_queue& q);
  // What this endpoint's events carry in eq_event::context. May be called
  // from any thread at any time, also while a progress thread
  // (WEFT_PROGRESS=auto) builds events (an atomic store). ok, or bad_state
  // once closed.
  errc set_context(void* ctx) noexcept;
  // Connect to a listening peer with up to 256 bytes of connection data; a
  // connected (or error) event follows on the bound event queue.
  [[nodiscard]] result<void> connect(const address& peer, std::span<const std::byte> data = {});
  // Accept the connreq this endpoint was opened from (its info).
  [[nodiscard]] result<void> accept(std::span<const std::byte> data = {});
  // The peer gets a shutdown event; receives posted here complete as canceled.
  [[nodiscard]] result<void> shutdown();

  // Local memory descriptors: every form that names local buffers takes the
  // region they lie in as its last argument (memory_region::desc(); for the
  // iov forms, an array with one per iov entry), as fi_send's desc. Only a
  // provider with info.domain.mr_local needs them; shm and tcp ignore them.

  // messages
  [[nodiscard]] errc send(const void* buf, std::size_t len, fi_addr_t dest, void* ctx = nullptr,
                          mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, 0, 0, 0, ctx, &desc}, flag::msg);
  }
  [[nodiscard]] errc sendv(std::span<const ::iovec> iov, fi_addr_t dest, void* ctx = nullptr,
                           const mr_desc* desc = nullptr) noexcept {
    return tx(msg_desc{iov.data(), iov.size(), dest, 0, 0, 0, ctx, desc}, flag::msg);
  }
  [[nodiscard]] errc senddata(const void* buf, std::size_t len, std::uint64_t data, fi_addr_t dest,
                              void* ctx = nullptr, mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, 0, 0, data, ctx, &desc}, flag::msg | flag::remote_cq_data);
  }
  [[nodiscard]] errc inject(const void* buf, std::size_t len, fi_addr_t dest) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, 0, 0, 0, nullptr}, flag::msg | flag::inject);
  }
  [[nodiscard]] errc injectdata(const void* buf, std::size_t len, std::uint64_t data, fi_addr_t dest) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, 0, 0, data, nullptr}, flag::msg | flag::inject | flag::remote_cq_data);
  }
  [[nodiscard]] errc sendmsg(const msg_desc& m, op_flags flags) noexcept {
    return tx(m, (flags & ~flag::tagged) | flag::msg);
  }
  [[nodiscard]] errc recv(void* buf, std::size_t len, fi_addr_t src = addr_unspec, void* ctx = nullptr,
                          mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{buf, len};
    return rx(msg_desc{&v, 1, src, 0, 0, 0, ctx, &desc}, flag::msg);
  }
  [[nodiscard]] errc recvv(std::span<const ::iovec> iov, fi_addr_t src = addr_unspec, void* ctx = nullptr,
                           const mr_desc* desc = nullptr) noexcept {
    return rx(msg_desc{iov.data(), iov.size(), src, 0, 0, 0, ctx, desc}, flag::msg);
  }
  [[nodiscard]] errc recvmsg(const msg_desc& m, op_flags flags) noexcept {
    return rx(m, (flags & ~flag::tagged) | flag::msg);
  }

  // tagged messages
  [[nodiscard]] errc tsend(const void* buf, std::size_t len, fi_addr_t dest, std::uint64_t tag, void* ctx = nullptr,
                           mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, tag, 0, 0, ctx, &desc}, flag::tagged);
  }
  [[nodiscard]] errc tsendv(std::span<const ::iovec> iov, fi_addr_t dest, std::uint64_t tag, void* ctx = nullptr,
                            const mr_desc* desc = nullptr) noexcept {
    return tx(msg_desc{iov.data(), iov.size(), dest, tag, 0, 0, ctx, desc}, flag::tagged);
  }
  [[nodiscard]] errc tsenddata(const void* buf, std::size_t len, std::uint64_t data, fi_addr_t dest,
                               std::uint64_t tag, void* ctx = nullptr, mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, tag, 0, data, ctx, &desc}, flag::tagged | flag::remote_cq_data);
  }
  [[nodiscard]] errc tinject(const void* buf, std::size_t len, fi_addr_t dest, std::uint64_t tag) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, tag, 0, 0, nullptr}, flag::tagged | flag::inject);
  }
  [[nodiscard]] errc tinjectdata(const void* buf, std::size_t len, std::uint64_t data, fi_addr_t dest,
                                 std::uint64_t tag) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return tx(msg_desc{&v, 1, dest, tag, 0, data, nullptr}, flag::tagged | flag::inject | flag::remote_cq_data);
  }
  [[nodiscard]] errc tsendmsg(const msg_desc& m, op_flags flags) noexcept {
    return tx(m, (flags & ~flag::msg) | flag::tagged);
  }
  [[nodiscard]] errc trecv(void* buf, std::size_t len, fi_addr_t src, std::uint64_t tag, std::uint64_t ignore,
                           void* ctx = nullptr, mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{buf, len};
    return rx(msg_desc{&v, 1, src, tag, ignore, 0, ctx, &desc}, flag::tagged);
  }
  [[nodiscard]] errc trecvv(std::span<const ::iovec> iov, fi_addr_t src, std::uint64_t tag, std::uint64_t ignore,
                            void* ctx = nullptr, const mr_desc* desc = nullptr) noexcept {
    return rx(msg_desc{iov.data(), iov.size(), src, tag, ignore, 0, ctx, desc}, flag::tagged);
  }
  // flags: peek, peek|claim, claim, peek|discard, claim|discard (cf. fi_tagged(3)).
  [[nodiscard]] errc trecvmsg(const msg_desc& m, op_flags flags) noexcept {
    return rx(m, (flags & ~flag::msg) | flag::tagged);
  }
  // RMA: write len bytes at offset of the peer's region (key), or read them.
  // The peer's progress applies them (it checks key, bounds and access);
  // a violation completes with an error here, the peer's memory untouched.
  [[nodiscard]] errc write(const void* buf, std::size_t len, fi_addr_t dest, std::uint64_t offset,
                           std::uint64_t key, void* ctx = nullptr, mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return do_rma(rma_desc{&v, 1, dest, offset, key, ctx, 0, nullptr, 0, &desc}, flag::rma | flag::write);
  }
  // ... and the target gets a completion (flag::remote_write |
  // flag::remote_cq_data) carrying data. A target whose completion queue is
  // full answers busy: retry after it has read its completions.
  [[nodiscard]] errc writedata(const void* buf, std::size_t len, std::uint64_t data, fi_addr_t dest,
                               std::uint64_t offset, std::uint64_t key, void* ctx = nullptr,
                               mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return do_rma(rma_desc{&v, 1, dest, offset, key, ctx, data, nullptr, 0, &desc},
                  flag::rma | flag::write | flag::remote_cq_data);
  }
  // Write len bytes, reusable as soon as this returns; no completion unless it
  // fails (then an error entry with a null context). At most tx.inject_size
  // bytes, as inject().
  [[nodiscard]] errc inject_write(const void* buf, std::size_t len, fi_addr_t dest, std::uint64_t offset,
                                  std::uint64_t key) noexcept {
    ::iovec v{const_cast<void*>(buf), len};
    return do_rma(rma_desc{&v, 1, dest, offset, key, nullptr}, flag::rma | flag::write | flag::inject);
  }
  // The general forms: local iov (and d.desc), a list of remote ranges
  // (d.rma, d.rma_count) that the local bytes fill in order, and flags: a
  // completion level (flag::transmit_complete, delivery_complete,
  // commit_complete; default: the endpoint's, info.tx.op_flags),
  // flag::remote_cq_data, flag::inject.
  [[nodiscard]] errc writemsg(const rma_desc& d, op_flags flags) noexcept {
    return do_rma(d, (flags & (flag::completion_levels | flag::remote_cq_data | flag::inject)) | flag::rma |
                         flag::write);
  }
  [[nodiscard]] errc readmsg(const rma_desc& d, op_flags flags) noexcept {
    return do_rma(d, (flags & flag::completion_levels) | flag::rma | flag::read);
  }
  // SAVE: moves no data; completes once every write this endpoint issued
  // earlier to the peer's region (key) is durable at the level asked
  // (flag::commit_complete: flushed; flag::delivery_complete: placed). Orders
  // only against earlier writes to that region. The peer's commit handler,
  // if any, runs and decides the answer.
  [[nodiscard]] errc save(fi_addr_t dest, std::uint64_t key, op_flags level = flag::commit_complete,
                          void* ctx = nullptr) noexcept {
    if (level != flag::commit_complete && level != flag::delivery_complete && level != flag::transmit_complete)
      [[unlikely]] return detail::fail(errc::invalid_argument,
                                       "save: the level is flag::commit_complete, delivery_complete or transmit_complete");
    return do_rma(rma_desc{nullptr, 0, dest, 0, key, ctx}, flag::rma | flag::save | level);
  }
  [[nodiscard]] errc read(void* buf, std::size_t len, fi_addr_t src, std::uint64_t offset, std::uint64_t key,
                          void* ctx = nullptr, mr_desc desc = mr_desc::none) noexcept {
    ::iovec v{buf, len};
    return do_rma(rma_desc{&v, 1, src, offset, key, ctx, 0, nullptr, 0, &desc}, flag::rma | flag::read);
  }
  [[nodiscard]] errc writev(std::span<const ::iovec> iov, fi_addr_t dest, std::uint64_t offset, std::uint64_t key,
                            void* ctx = nullptr, const mr_desc* desc = nullptr) noexcept {
    return do_rma(rma_desc{iov.data(), iov.size(), dest, offset, key, ctx, 0, nullptr, 0, desc},
                  flag::rma | flag::write);
  }
  [[nodiscard]] errc readv(std::span<const ::iovec> iov, fi_addr_t src, std::uint64_t offset, std::uint64_t key,
                           void* ctx = nullptr, const mr_desc* desc = nullptr) noexcept {
    return do_rma(rma_desc{iov.data(), iov.size(), src, offset, key, ctx, 0, nullptr, 0, desc},
                  flag::rma | flag::read);
  }
  // Atomics on count elements at offset of the peer's region (key). Atomic
  // with respect to every other weft atomic on that memory, from any peer.
  // invalid_argument for an op/type pair that atomic_valid() refuses.
  // The last arguments are the local memory descriptors of the operand (and
  // result, compare) buffers, as for send and RMA (memory_region::desc();
  // mr_desc::none: not registered). shm and tcp ignore them.
  [[nodiscard]] errc atomic(atomic_op op, atomic_type t, const void* operand, std::size_t count, fi_addr_t dest,
                            std::uint64_t offset, std::uint64_t key, void* ctx = nullptr,
                            mr_desc desc = mr_desc::none) noexcept {
    return do_atomic(atomic_desc{.operand = operand, .count = count, .addr = dest, .offset = offset, .key = key,
                                 .context = ctx, .desc = desc, .op = op, .type = t});
  }
  // ... and result receives the values before the operation.
  [[nodiscard]] errc fetch_atomic(atomic_op op, atomic_type t, const void* operand, void* result, std::size_t count,
                                  fi_addr_t dest, std::uint64_t offset, std::uint64_t key, void* ctx = nullptr,
                                  mr_desc desc = mr_desc::none, mr_desc result_desc = mr_desc::none) noexcept {
    return do_atomic(atomic_desc{.operand = operand, .result = result, .count = count, .addr = dest, .offset = offset,
                                 .key = key, .context = ctx, .desc = desc, .result_desc = result_desc, .op = op,
                                 .type = t});
  }
  // Compare-and-swap: where the target equals compare, store operand; result gets the old values.
  [[nodiscard]] errc compare_atomic(atomic_type t, const void* operand, const void* compare, void* result,
                                    std::size_t count, fi_addr_t dest, std::uint64_t offset, std::uint64_t key,
                                    void* ctx = nullptr, mr_desc desc = mr_desc::none,
                                    mr_desc compare_desc = mr_desc::none,
                                    mr_desc result_desc = mr_desc::none) noexcept {
    return do_atomic(atomic_desc{.operand = operand, .compare = compare, .result = result, .count = count,
                                 .addr = dest, .offset = offset, .key = key, .context = ctx, .desc = desc,
                                 .compare_desc = compare_desc, .result_desc = result_desc, .op = atomic_op::cswap,
                                 .type = t});
  }
  // The general form: every field of d, its descriptors included.
  [[nodiscard]] errc atomicmsg(const atomic_desc& d) noexcept { return do_atomic(d); }
  // Cancels a posted receive; it completes with errc::canceled.
  [[nodiscard]] errc cancel(void* ctx) noexcept {
    if (!ops_) [[unlikely]]
      return detail::closed("the endpoint");
    return ops_->cancel(ctx);
  }

  // Why the last post on this endpoint that answered errc::again did, so
  // the application knows what frees room (weft::again_reason says what to
  // do for each); meaningful right after an again.
  [[nodiscard]] weft::again_reason again_reason() const noexcept {
    return ops_ ? ops_->last_again() : weft::again_reason::none;
  }

 private:
  friend class domain;
  bool needs_av_ = false;  // an RDM endpoint: enable() needs an address vector bound
  bool av_bound_ = false;
  bool cq_bound_ = false;  // (without one, the provider's enable() says so first)
};

class passive_endpoint : public detail::handle<spi::passive_endpoint> {
 public:
  using handle::handle;
  [[nodiscard]] result<void> bind(event_queue& q);
  // What this endpoint's connreq events carry in eq_event::context (as
  // endpoint::set_context: any thread, any time; bad_state once closed).
  errc set_context(void* ctx) noexcept;
  // The listening address (its port too).
  [[nodiscard]] result<address> name() const;
  // Refuse a connreq; the connector gets an error event (errc::permission_denied) carrying data.
  [[nodiscard]] result<void> reject(const info& req, std::span<const std::byte> data = {});
};

class domain : public detail::handle<spi::domain> {
 public:
  using handle::handle;
  [[nodiscard]] result<endpoint> open_endpoint(const info& i);
  // Listens on info.src_addr (hints.source = true, node and port; port 0: any).
  [[nodiscard]] result<passive_endpoint> open_passive_endpoint(const info& i);
  [[nodiscard]] result<event_queue> open_eq();
  [[nodiscard]] result<counter> open_counter();
  // Registers [buf, buf + len) with access flags (access::remote_read,
  // remote_write, persistent, and the local read/write/send/recv). The same
  // range with the same access again is a registration-cache hit (a fresh
  // key; the classification and monitor subscription are reused).
  // access::persistent needs a shared file mapping (e.g. persistent_file).
  [[nodiscard]] result<memory_region> register_memory(void* buf, std::size_t len, access_flags access);
  // Allocates len bytes for RMA and registers them; the region owns the
  // memory (freed when it closes). On shm the memory is a shared-memory file
  // that peers on this host map: their RMA and atomics on it are plain
  // loads, stores and CPU atomics (no system call, no help from this
  // process). Elsewhere: page-aligned anonymous memory.
  [[nodiscard]] result<memory_region> alloc_memory(std::size_t len, access_flags access);
  // The iov form: one region per piece.
  [[nodiscard]] result<std::vector<memory_region>> register_memory(std::span<const ::iovec> iov, access_flags access);
  // Replaces this domain's memory monitor (the default: userfaultfd where
  // the kernel allows it, docs/rma.md).
  [[nodiscard]] result<void> import_monitor(std::shared_ptr<memory_monitor> m);
  // Runs inside the provider when a commit_complete write or a SAVE reaches
  // one of this domain's regions; its result is the initiator's answer. A
  // handler that throws answers errc::io_error (the exception is dropped).
  [[nodiscard]] result<void> set_commit_handler(commit_handler h);
  [[nodiscard]] result<mr_cache_stats> cache_stats() const;
  [[nodiscard]] result<std::string> monitor_name() const;
  [[nodiscard]] result<address_vector> open_av(const av_attr& a = {});
  [[nodiscard]] result<completion_queue> open_cq(std::size_t size = 1024);
  [[nodiscard]] const info& get_info() const noexcept { return info_; }
  void set_info(info i) { info_ = std::move(i); }

 private:
  info info_;
};

class fabric : public detail::handle<spi::fabric> {
 public:
  using handle::handle;
  [[nodiscard]] static result<fabric> open(const info& i);
  [[nodiscard]] result<domain> open_domain(const info& i);
  [[nodiscard]] const info& get_info() const noexcept { return info_; }

 private:
  info info_;
};

}  // namespace weft

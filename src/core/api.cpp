// The handles' control-path methods (weft.hpp declares them; the provider
// interface they call is not visible to applications).
#include "weft/spi/provider.hpp"
#include "weft/weft.hpp"

namespace weft {

result<fi_addr_t> address_vector::insert(const address& a) {
  if (!impl_) return make_error(errc::bad_state, "insert into a closed address vector");
  return impl_->insert(a);
}

result<void> address_vector::remove(fi_addr_t a) {
  if (!impl_) return make_error(errc::bad_state, "remove from a closed address vector");
  return impl_->remove(a);
}

result<address> address_vector::lookup(fi_addr_t a) const {
  if (!impl_) return make_error(errc::bad_state, "lookup in a closed address vector");
  return impl_->lookup(a);
}

errc event_queue::read(eq_event& e) { return impl_ ? impl_->read(e) : detail::closed("the event queue"); }

errc event_queue::wait(eq_event& e, int timeout_ms) {
  return impl_ ? impl_->wait(e, timeout_ms) : detail::closed("the event queue");
}

std::expected<sleep_stats, errc> event_queue::wait_stats() const noexcept {
  if (!impl_) return std::unexpected(detail::closed("the event queue"));
  return impl_->wait_stats();
}

std::expected<std::uint64_t, errc> memory_region::key() const noexcept {
  if (!impl_) return std::unexpected(detail::closed("the memory region"));
  return impl_->key();
}
std::expected<void*, errc> memory_region::addr() const noexcept {
  if (!impl_) return std::unexpected(detail::closed("the memory region"));
  return impl_->addr();
}
std::expected<std::size_t, errc> memory_region::len() const noexcept {
  if (!impl_) return std::unexpected(detail::closed("the memory region"));
  return impl_->len();
}
std::expected<flush_method, errc> memory_region::persist() const noexcept {
  if (!impl_) return std::unexpected(detail::closed("the memory region"));
  return impl_->persist();
}
std::expected<bool, errc> memory_region::cache_hit() const noexcept {
  if (!impl_) return std::unexpected(detail::closed("the memory region"));
  return impl_->cache_hit();
}
mr_desc memory_region::desc() const noexcept { return impl_ ? spi::to_desc(impl_.get()) : mr_desc::none; }

result<void> endpoint::enable() {
  if (!impl_) return make_error(errc::bad_state, "enable on a closed endpoint");
  if (needs_av_ && !av_bound_ && cq_bound_)
    return make_error(errc::bad_state,
                      "bind an address vector before enable(): an RDM endpoint names its peers through one "
                      "(domain.open_av(), then endpoint.bind(av))");
  return impl_->enable();
}

result<address> endpoint::name() const {
  if (!impl_) return make_error(errc::bad_state, "name of a closed endpoint");
  return impl_->name();
}

errc endpoint::set_context(void* ctx) noexcept {
  if (!impl_) return detail::closed("the endpoint");
  impl_->context.store(ctx, std::memory_order_release);
  return errc::ok;
}

errc passive_endpoint::set_context(void* ctx) noexcept {
  if (!impl_) return detail::closed("the passive endpoint");
  impl_->context.store(ctx, std::memory_order_release);
  return errc::ok;
}

result<void> endpoint::connect(const address& peer, std::span<const std::byte> data) {
  if (!impl_) return make_error(errc::bad_state, "connect on a closed endpoint");
  return impl_->connect(peer, data);
}

result<void> endpoint::accept(std::span<const std::byte> data) {
  if (!impl_) return make_error(errc::bad_state, "accept on a closed endpoint");
  return impl_->accept(data);
}

result<void> endpoint::shutdown() {
  if (!impl_) return make_error(errc::bad_state, "shutdown on a closed endpoint");
  return impl_->shutdown();
}

result<address> passive_endpoint::name() const {
  if (!impl_) return make_error(errc::bad_state, "name of a closed passive endpoint");
  return impl_->name();
}

result<void> passive_endpoint::reject(const info& req, std::span<const std::byte> data) {
  if (!impl_) return make_error(errc::bad_state, "reject on a closed passive endpoint");
  return impl_->reject(req, data);
}

}  // namespace weft

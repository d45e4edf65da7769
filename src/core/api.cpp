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

errc event_queue::read(eq_event& e) { return impl_ ? impl_->read(e) : errc::bad_state; }

errc event_queue::wait(eq_event& e, int timeout_ms) { return impl_ ? impl_->wait(e, timeout_ms) : errc::bad_state; }

std::expected<std::uint64_t, errc> memory_region::key() const noexcept {
  if (!impl_) return std::unexpected(errc::bad_state);
  return impl_->key();
}
void* memory_region::addr() const noexcept { return impl_ ? impl_->addr() : nullptr; }
std::size_t memory_region::len() const noexcept { return impl_ ? impl_->len() : 0; }
flush_method memory_region::persist() const noexcept { return impl_ ? impl_->persist() : flush_method::none; }
bool memory_region::cache_hit() const noexcept { return impl_ && impl_->cache_hit(); }
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

void endpoint::set_context(void* ctx) noexcept {
  if (impl_) impl_->context.store(ctx, std::memory_order_release);
}

void passive_endpoint::set_context(void* ctx) noexcept {
  if (impl_) impl_->context.store(ctx, std::memory_order_release);
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

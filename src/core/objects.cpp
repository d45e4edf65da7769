#include "weft/spi/provider.hpp"
#include "weft/weft.hpp"

namespace weft {

result<fabric> fabric::open(const info& i) {
  for (auto& p : spi::providers()) {
    if (p.name != i.fabric.prov_name) continue;
    auto f = p.open_fabric(i);
    if (!f) return std::unexpected(f.error());
    fabric out(std::move(*f), nullptr);
    out.info_ = i;
    return out;
  }
  return make_error(errc::not_found, "no provider named '" + i.fabric.prov_name +
                                         "': pass an info returned by weft::get_info()");
}

result<domain> fabric::open_domain(const info& i) {
  if (!impl_) return make_error(errc::bad_state, "open_domain on a closed fabric");
  auto d = impl_->open_domain(i);
  if (!d) return std::unexpected(d.error());
  domain out(std::move(*d), impl_);
  out.set_info(i);
  return out;
}

result<endpoint> domain::open_endpoint(const info& i) {
  if (!impl_) return make_error(errc::bad_state, "open_endpoint on a closed domain");
  if (const std::uint64_t l = i.tx.op_flags & flag::completion_levels; l & (l - 1))
    return make_error(errc::invalid_argument,
                      "info.tx.op_flags names more than one completion level (transmit, delivery, commit)");
  if (i.tx.op_flags & ~flag::completion_levels)
    return make_error(errc::invalid_argument, "info.tx.op_flags takes completion levels only");
  auto e = impl_->open_endpoint(i);
  if (!e) return std::unexpected(e.error());
  endpoint out(std::move(*e), impl_);
  out.needs_av_ = i.ep.type != ep_type::msg;  // RDM (unspec opens RDM endpoints)
  return out;
}

result<passive_endpoint> domain::open_passive_endpoint(const info& i) {
  if (!impl_) return make_error(errc::bad_state, "open_passive_endpoint on a closed domain");
  auto p = impl_->open_passive_endpoint(i);
  if (!p) return std::unexpected(p.error());
  return passive_endpoint(std::move(*p), impl_);
}

result<event_queue> domain::open_eq() {
  if (!impl_) return make_error(errc::bad_state, "open_eq on a closed domain");
  return event_queue(std::make_shared<spi::eq>(), impl_);
}

result<memory_region> domain::register_memory(void* buf, std::size_t len, access_flags acc) {
  if (!impl_) return make_error(errc::bad_state, "register_memory on a closed domain");
  if (!buf || len == 0) return make_error(errc::invalid_argument, "register a non-empty buffer");
  if (!acc || (acc & ~access::all))
    return make_error(errc::invalid_argument,
                      "access is a combination of access::remote_read, remote_write, persistent, read, write, "
                      "send and recv");
  auto m = impl_->register_memory(buf, len, acc);
  if (!m) return std::unexpected(m.error());
  return memory_region(std::move(*m), impl_);
}

result<memory_region> domain::alloc_memory(std::size_t len, access_flags acc) {
  if (!impl_) return make_error(errc::bad_state, "alloc_memory on a closed domain");
  if (len == 0) return make_error(errc::invalid_argument, "allocate at least one byte");
  if (!acc || (acc & ~access::all) || (acc & access::persistent))
    return make_error(errc::invalid_argument,
                      "access is a combination of access::remote_read, remote_write, read, write, send and recv "
                      "(persistent memory: register a persistent_file)");
  auto m = impl_->alloc_memory(len, acc);
  if (!m) return std::unexpected(m.error());
  return memory_region(std::move(*m), impl_);
}

result<std::vector<memory_region>> domain::register_memory(std::span<const ::iovec> iov, access_flags acc) {
  if (!impl_) return make_error(errc::bad_state, "register_memory on a closed domain");
  std::vector<memory_region> out;
  out.reserve(iov.size());
  for (const auto& v : iov) {
    auto m = register_memory(v.iov_base, v.iov_len, acc);
    if (!m) return std::unexpected(m.error());  // the ones registered so far close with out
    out.push_back(std::move(*m));
  }
  return out;
}

result<void> domain::import_monitor(std::shared_ptr<memory_monitor> m) {
  if (!impl_) return make_error(errc::bad_state, "import_monitor on a closed domain");
  return impl_->registry()->import_monitor(std::move(m));
}

result<void> domain::set_commit_handler(commit_handler h) {
  if (!impl_) return make_error(errc::bad_state, "set_commit_handler on a closed domain");
  impl_->registry()->set_commit_handler(std::move(h));
  return {};
}

result<mr_cache_stats> domain::cache_stats() const {
  if (!impl_) return make_error(errc::bad_state, "cache_stats of a closed domain");
  return impl_->registry()->stats();
}

result<std::string> domain::monitor_name() const {
  if (!impl_) return make_error(errc::bad_state, "monitor_name of a closed domain");
  return impl_->registry()->monitor_name();
}

result<counter> domain::open_counter() {
  if (!impl_) return make_error(errc::bad_state, "open_counter on a closed domain");
  return counter(std::make_shared<spi::cntr>(), impl_);
}

result<void> endpoint::bind(counter& c, op_flags flags) {
  if (!impl_ || !c) return make_error(errc::bad_state, "bind on a closed endpoint or counter");
  constexpr std::uint64_t kinds =
      flag::send | flag::recv | flag::read | flag::write | flag::remote_read | flag::remote_write;
  if (!(flags & kinds) || (flags & ~kinds))
    return make_error(errc::invalid_argument,
                      "bind a counter with flag::send, recv, read, write, remote_read and/or remote_write");
  return impl_->bind_cntr(c.impl(), flags);
}

result<void> endpoint::bind(event_queue& q) {
  if (!impl_ || !q) return make_error(errc::bad_state, "bind on a closed endpoint or event queue");
  return impl_->bind_eq(q.impl());
}

result<void> passive_endpoint::bind(event_queue& q) {
  if (!impl_ || !q) return make_error(errc::bad_state, "bind on a closed passive endpoint or event queue");
  return impl_->bind_eq(q.impl());
}

result<address_vector> domain::open_av(const av_attr& a) {
  if (!impl_) return make_error(errc::bad_state, "open_av on a closed domain");
  auto v = impl_->open_av(a);
  if (!v) return std::unexpected(v.error());
  return address_vector(std::move(*v), impl_);
}

result<completion_queue> domain::open_cq(std::size_t size) {
  if (!impl_) return make_error(errc::bad_state, "open_cq on a closed domain");
  if (size == 0) return make_error(errc::invalid_argument, "a completion queue needs a size of at least 1");
  auto q = impl_->open_cq(size);
  if (!q) return std::unexpected(q.error());
  return completion_queue(std::move(*q), impl_);
}

result<void> endpoint::bind(completion_queue& q, op_flags flags) {
  if (!impl_ || !q) return make_error(errc::bad_state, "bind on a closed endpoint or completion queue");
  if (!(flags & (flag::transmit | flag::receive)))
    return make_error(errc::invalid_argument, "bind a CQ with flag::transmit, flag::receive or both");
  auto r = impl_->bind_cq(q.impl(), flags);
  if (r) cq_bound_ = true;
  return r;
}

result<void> endpoint::bind(address_vector& a) {
  if (!impl_ || !a) return make_error(errc::bad_state, "bind on a closed endpoint or address vector");
  auto r = impl_->bind_av(a.impl());
  if (r) av_bound_ = true;
  return r;
}

}  // namespace weft

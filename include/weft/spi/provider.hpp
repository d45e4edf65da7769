#pragma once
// The provider interface. A provider registers a descriptor (name, version,
// get_info, open_fabric); the core filters and orders what providers return.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "weft/av.hpp"
#include "weft/detail/ops.hpp"
#include "weft/info.hpp"
#include "weft/spi/cntr.hpp"
#include "weft/spi/cq.hpp"
#include "weft/spi/error.hpp"
#include "weft/spi/eq.hpp"
#include "weft/spi/mr.hpp"
#include "weft/types.hpp"

namespace weft::spi {

using weft::av_attr;

class av {
 public:
  virtual ~av() = default;
  virtual result<fi_addr_t> insert(const address& a) = 0;
  virtual result<void> remove(fi_addr_t a) = 0;
  virtual result<address> lookup(fi_addr_t a) const = 0;
  [[nodiscard]] virtual std::size_t count() const noexcept = 0;
};

// The data path (send, recv, cancel, rma, atomic) is detail::endpoint_ops
// (weft/detail/ops.hpp), which the application's handle calls inline.
class endpoint : public detail::endpoint_ops {
 public:
  ~endpoint() override = default;
  virtual result<void> bind_cq(std::shared_ptr<cq> q, std::uint64_t flags) = 0;
  virtual result<void> bind_av(std::shared_ptr<av> a) = 0;
  virtual result<void> enable() = 0;
  [[nodiscard]] virtual address name() const = 0;
  // counters for flag::send and/or flag::recv events
  virtual result<void> bind_cntr(std::shared_ptr<cntr>, std::uint64_t) {
    return make_error(errc::not_supported, "this provider has no counters");
  }
  // MSG endpoints: connection management events; RDM endpoints: peer_dead events
  virtual result<void> bind_eq(std::shared_ptr<eq>) {
    return make_error(errc::not_supported, "this provider's endpoints report no events yet");
  }
  // connected (MSG) endpoints; RDM endpoints refuse these
  virtual result<void> connect(const address&, std::span<const std::byte>) {
    return make_error(errc::not_supported, "connect is for MSG endpoints (ep_type::msg)");
  }
  virtual result<void> accept(std::span<const std::byte>) {
    return make_error(errc::not_supported, "accept is for MSG endpoints opened from a connreq event");
  }
  virtual result<void> shutdown() {
    return make_error(errc::not_supported, "shutdown is for MSG endpoints (ep_type::msg)");
  }
  // Reported in EQ events. Atomic: the application sets it while a progress
  // thread may be building an event (providers read it as a plain void*).
  std::atomic<void*> context{nullptr};
};

class passive_endpoint {
 public:
  virtual ~passive_endpoint() = default;
  virtual result<void> bind_eq(std::shared_ptr<eq> q) = 0;
  [[nodiscard]] virtual address name() const = 0;  // the listening address (its port too)
  virtual result<void> reject(const info& req, std::span<const std::byte> data) = 0;
  std::atomic<void*> context{nullptr};  // as endpoint::context
};

class domain {
 public:
  virtual ~domain() = default;
  virtual result<std::shared_ptr<endpoint>> open_endpoint(const info& i) = 0;
  virtual result<std::shared_ptr<av>> open_av(const av_attr& a) = 0;
  virtual result<std::shared_ptr<cq>> open_cq(std::size_t size) {
    return std::make_shared<cq>(size);
  }
  virtual result<std::shared_ptr<passive_endpoint>> open_passive_endpoint(const info&) {
    return make_error(errc::not_supported, "this provider has no passive (listening) endpoints");
  }
  virtual result<std::shared_ptr<mr>> register_memory(void*, std::size_t, std::uint64_t) {
    return make_error(errc::not_supported, "this provider has no memory registration (RMA) yet");
  }
  // Memory allocated for RMA and registered at once (the region owns it).
  // Default: page-aligned anonymous memory; shm: a shared-memory file that
  // peers on the host map, so their RMA and atomics are loads and stores.
  virtual result<std::shared_ptr<mr>> alloc_memory(std::size_t len, std::uint64_t access);
  // Keys, the registration cache and monitor, persistent regions and the
  // commit handler of this domain's regions.
  [[nodiscard]] const std::shared_ptr<mr_registry>& registry() const noexcept { return registry_; }

 protected:
  std::shared_ptr<mr_registry> registry_ = std::make_shared<mr_registry>();
};

class fabric {
 public:
  virtual ~fabric() = default;
  virtual result<std::shared_ptr<domain>> open_domain(const info& i) = 0;
};

struct provider {
  std::string name;
  std::uint32_t version = 0;
  // Entries this provider offers for the hints (the core filters them again).
  std::function<result<std::vector<info>>(const hints&)> get_info;
  std::function<result<std::shared_ptr<fabric>>(const info&)> open_fabric;
};

// All registered providers, in order of preference.
[[nodiscard]] const std::vector<provider>& providers();

}  // namespace weft::spi

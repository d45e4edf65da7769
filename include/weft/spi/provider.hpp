#pragma once
// The provider interface. A provider registers a descriptor (name, version,
// get_info, open_fabric); the core filters and orders what providers return.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "weft/info.hpp"
#include "weft/spi/cq.hpp"
#include "weft/types.hpp"

namespace weft::spi {

struct av_attr {
  std::size_t count = 64;     // expected entries (a hint)
  bool auto_insert = false;   // unknown senders are inserted on first receive
};

class av {
 public:
  virtual ~av() = default;
  virtual result<fi_addr_t> insert(const address& a) = 0;
  virtual result<void> remove(fi_addr_t a) = 0;
  virtual result<address> lookup(fi_addr_t a) const = 0;
  [[nodiscard]] virtual std::size_t count() const noexcept = 0;
};

class endpoint {
 public:
  virtual ~endpoint() = default;
  virtual result<void> bind_cq(std::shared_ptr<cq> q, std::uint64_t flags) = 0;
  virtual result<void> bind_av(std::shared_ptr<av> a) = 0;
  virtual result<void> enable() = 0;
  [[nodiscard]] virtual address name() const = 0;
  // data path: m.iov/iov_count describe the buffer; flags from weft::flag.
  [[nodiscard]] virtual errc send(const msg_desc& m, std::uint64_t flags) noexcept = 0;
  [[nodiscard]] virtual errc recv(const msg_desc& m, std::uint64_t flags) noexcept = 0;
  [[nodiscard]] virtual errc cancel(void* context) noexcept = 0;
};

class domain {
 public:
  virtual ~domain() = default;
  virtual result<std::shared_ptr<endpoint>> open_endpoint(const info& i) = 0;
  virtual result<std::shared_ptr<av>> open_av(const av_attr& a) = 0;
  virtual result<std::shared_ptr<cq>> open_cq(std::size_t size) {
    return std::make_shared<cq>(size);
  }
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

#pragma once
// shm provider internals: peers, address vector, domain and RDM endpoint.
#include <sys/uio.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "prov/shm/access.hpp"
#include "prov/shm/layout.hpp"
#include "prov/shm/region.hpp"
#include "util/list.hpp"
#include "weft/spi/provider.hpp"

namespace weft::prov::shm {

inline constexpr std::size_t max_iov = 16;
inline constexpr std::size_t tx_size = 256;
inline constexpr std::size_t rx_size = 256;
inline constexpr std::size_t unexpected_count = 256;
// inject writes the target copies itself (two-sided) wait in one of these
// buffers, each of inline_max bytes (tx.inject_size, as for messages)
inline constexpr std::size_t rma_inject_bufs = 64;
inline constexpr std::size_t max_rma_parts = 256;  // RMA requests in flight per endpoint (one ack each)
// The largest message (info.ep.max_msg_size): larger sends are too_big, and
// an rts announcing more is malformed.
inline constexpr std::size_t max_msg_size = std::size_t{1} << 40;

[[nodiscard]] constexpr std::uint64_t peer_key(std::uint32_t pid, std::uint32_t epid) noexcept {
  return (std::uint64_t{pid} << 32) | epid;
}

// A mapped remote endpoint, shared by address-vector entries and by the
// endpoints of a domain that receive from it.
// A peer's memory segments (domain::alloc_memory) mapped here, the most
// recently used first; at most max_peer_segs (older ones are unmapped).
// A segment its owner freed is unmapped at the next lookup that is not of
// the most recent one (the owner bumps segs_freed in its region when it
// revokes a segment's key: then each cached segment whose key left the
// owner's table goes), so freed shared memory is returned to the system
// instead of staying mapped here until eviction.
inline constexpr std::size_t max_peer_segs = 64;
struct peer_segs {
  struct seg {
    std::uint64_t id = 0;
    std::uint64_t key = 0;  // the region's key when it was mapped (its entry names the segment while it lives)
    std::byte* base = nullptr;
    std::size_t len = 0;
  };
  std::vector<seg> v;
  peer_segs() = default;
  peer_segs(const peer_segs&) = delete;
  peer_segs& operator=(const peer_segs&) = delete;
  ~peer_segs();
  // The mapping of segment id of the peer m (published under key), at least
  // len bytes; null if it cannot be mapped. The most recent segment is
  // answered inline (a stream of one-sided operations on one region: a
  // compare instead of a call).
  [[nodiscard]] std::byte* get(const mapping& m, std::uint64_t key, std::uint64_t id, std::size_t len) noexcept {
    if (!v.empty() && v.front().id == id) [[likely]]
      return v.front().len >= len ? v.front().base : nullptr;
    return find_or_map(m, key, id, len);
  }

 private:
  std::byte* find_or_map(const mapping& m, std::uint64_t key, std::uint64_t id, std::size_t len) noexcept;
  // Unmaps the segments whose key left m's table (after segs_freed moved).
  void drop_freed(const mapping& m) noexcept;
  std::uint32_t seen_freed_ = 0;  // m's segs_freed at the last drop_freed()
};

struct peer {
  std::unique_ptr<mapping> map;
  peer_segs segs;
  access_claim access;   // our access slot in its region (one-sided RMA); given back before map goes
  util::mpsc_ring ring;  // producer view of its message ring
  util::mpsc_ring ctl;   // producer view of its control ring
  util::mpsc_ring req;   // producer view of its request ring
  std::uint64_t key = 0;
  std::uint32_t pid = 0;
  std::uint32_t inline_max = 0;
  bool cma_ok = true;   // process_vm_readv from it works
  bool coop_ok = true;  // it can write into us (cooperative copy)
};

class domain_impl;

class av_impl final : public spi::av {
 public:
  av_impl(std::shared_ptr<domain_impl> d, const spi::av_attr& a) : dom_(std::move(d)), attr_(a) {}
  result<fi_addr_t> insert(const address& a) override;
  result<void> remove(fi_addr_t a) override;
  result<address> lookup(fi_addr_t a) const override;
  [[nodiscard]] std::size_t count() const noexcept override { return rev_.size(); }

  [[nodiscard]] const std::shared_ptr<peer>* at(fi_addr_t a) const noexcept {
    return a < table_.size() && table_[a].p ? &table_[a].p : nullptr;
  }
  // The handle of a sender, inserting it first if the AV auto-inserts. When
  // that insertion fails (resources, or the sender is gone) the result is
  // addr_notavail and `failed` is set (insert_failure() says why); a later
  // message from it tries again, at most every 100 ms.
  [[nodiscard]] fi_addr_t reverse(std::uint64_t key, bool& failed) noexcept;
  // The handle of key if it is in the AV (no insertion), else addr_notavail.
  [[nodiscard]] fi_addr_t find(std::uint64_t key) const noexcept;
  // Why the last auto-insertion of key failed; null if it did not (or later worked).
  [[nodiscard]] const error* insert_failure(std::uint64_t key) const noexcept;
  // Changes with every insert and remove: endpoints rescan the entries then.
  [[nodiscard]] std::uint64_t version() const noexcept { return version_; }
  template <class F>
  void for_each(F&& f) const {
    for (fi_addr_t i = 0; i < table_.size(); ++i)
      if (table_[i].p) f(i, table_[i].p);
  }

 private:
  struct entry {
    std::shared_ptr<peer> p;
    address a;
  };
  struct failure {
    error err;
    std::uint64_t retry_at = 0;
  };
  std::unordered_map<std::uint64_t, failure> failed_;
  std::uint64_t version_ = 0;
  std::shared_ptr<domain_impl> dom_;
  spi::av_attr attr_;
  std::vector<entry> table_;
  std::vector<fi_addr_t> free_;
  std::unordered_map<std::uint64_t, fi_addr_t> rev_;
  // the last sender resolved: streams from one peer skip the hash lookup
  std::uint64_t last_key_ = ~0ull;
  fi_addr_t last_addr_ = addr_notavail;
};

class domain_impl final : public spi::domain, public std::enable_shared_from_this<domain_impl> {
 public:
  explicit domain_impl(config c) : cfg_(c) {}
  result<std::shared_ptr<spi::endpoint>> open_endpoint(const info& i) override;
  result<std::shared_ptr<spi::av>> open_av(const spi::av_attr& a) override;
  result<std::shared_ptr<spi::mr>> register_memory(void* buf, std::size_t len, std::uint64_t acc) override;
  result<std::shared_ptr<spi::mr>> alloc_memory(std::size_t len, std::uint64_t acc) override;
  [[nodiscard]] const config& cfg() const noexcept { return cfg_; }
  // A mapped peer by region name or by (pid, epid); mapped once per domain.
  result<std::shared_ptr<peer>> peer_by_name(const std::string& name);
  // peer_by_key runs on the data path (first contact with a sender): it
  // never throws. Running out of memory mapping the peer is errc::no_memory
  // (no allocation for its text), which the callers treat like EMFILE: the
  // work waits (ring back-pressure, again with again_reason::no_resources).
  result<std::shared_ptr<peer>> peer_by_key(std::uint64_t key) noexcept;
  // Drops mappings of peers that are gone and that nothing else references.
  void sweep() noexcept;

 private:
  config cfg_;
  std::unordered_map<std::uint64_t, std::shared_ptr<peer>> peers_;
};

}  // namespace weft::prov::shm

#pragma once
// tcp provider internals: addresses, the per-domain epoll engine, the address
// vector, and the endpoint (RDM: connections made on demand).
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "prov/tcp/wire.hpp"
#include "util/creator_process.hpp"
#include "util/list.hpp"
#include "util/reserve_fd.hpp"
#include "weft/spi/provider.hpp"

namespace weft::prov::tcp {

inline constexpr std::size_t max_iov = 16;
inline constexpr std::size_t tx_size = 256;
inline constexpr std::size_t rx_size = 256;
inline constexpr std::size_t unexpected_count = 256;
inline constexpr std::size_t inject_size = 8192;     // also: unexpected messages buffered up to this size
inline constexpr std::size_t max_msg_size = std::size_t{1} << 32;

struct config {
  int timeout_ms = 10000;  // connect timeout; a host silent that long with data in flight is dead (WEFT_TCP_TIMEOUT_MS)
  int idle_ms = 60000;     // close idle RDM connections after this (WEFT_TCP_IDLE_MS, 0: never)
  bool auto_progress = false;  // WEFT_PROGRESS=auto, or domain_attr.progress = automatic
  // With one connection, polls that read it directly between two epoll_waits
  // (WEFT_TCP_DIRECT_POLLS; 0: always epoll)
  int direct_polls = 15;
  // Busy polling of that connection: after an empty poll, the next waits this
  // long with cpu_relax() before its receive (WEFT_TCP_POLL_PAUSE_NS; 0: none)
  int poll_pause_ns = 1000;
  int sndbuf = 0;  // SO_SNDBUF in bytes (WEFT_TCP_SNDBUF; 0: the kernel's autotuning)
  // TCP congestion control (WEFT_TCP_CONGESTION; empty: reno on loopback, the
  // system default elsewhere; "default": always the system default)
  std::string congestion;
};
[[nodiscard]] config load_config();

// Addresses are raw sockaddr_in / sockaddr_in6 bytes.
[[nodiscard]] address from_sockaddr(const sockaddr* sa) noexcept;
[[nodiscard]] bool to_sockaddr(const address& a, sockaddr_storage& ss, socklen_t& len) noexcept;
// family, port and IP as a compact comparable key.
[[nodiscard]] std::string key_of(const address& a);
[[nodiscard]] result<address> resolve(const std::string& node, std::uint16_t port, bool passive);

// Something the engine wakes up for an epoll event.
class handler {
 public:
  virtual ~handler() = default;
  virtual void on_event(std::uint32_t events) noexcept = 0;
};

// One epoll progress engine per domain.
class engine {
 public:
  engine();
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;
  [[nodiscard]] int fd() const noexcept { return epfd_; }
  bool add(int fd, handler* h, std::uint32_t events) noexcept;
  bool mod(int fd, handler* h, std::uint32_t events) noexcept;
  void del(int fd) noexcept;
  [[nodiscard]] const util::creator_process& creator() const noexcept { return creator_; }
  // Dispatches ready events (no waiting). Returns how many. Under the
  // dispatch lock: with manual progress the epoll set is shared by all the
  // domain's endpoints, so a wait on one endpoint's CQ dispatches events of
  // the others, and the domain's lock is no lock then. A thread that finds
  // the lock taken waits for it up to dispatch_wait_ns, then returns 0: a
  // dispatching thread dispatches for all and lets go soon; a closing
  // endpoint holds it for its whole teardown, and a waiter then sleeps in
  // these bounded waits instead of spinning. In a forked child (fork
  // generation changed since the engine was made) it dispatches nothing:
  // the child only closes what it inherited (README, "fork()"), and a lock
  // a parent thread held at the fork has no owner there.
  int poll() noexcept;
  // Held by a closing endpoint (or passive endpoint) from its first teardown
  // step until its descriptors have left the set: no dispatch on another
  // thread reaches its handlers meanwhile, and none after. The innermost
  // lock: taken after the domain's and the sources locks, and nothing that
  // a dispatch calls takes those. In a forked child it holds nothing (no
  // dispatch happens there, and the lock may have been left held).
  [[nodiscard]] std::unique_lock<std::recursive_timed_mutex> hold_dispatch() noexcept {
    if (util::fork_generation() != fork_gen_) return {};
    return std::unique_lock<std::recursive_timed_mutex>(dispatch_mu_);
  }
  static constexpr std::uint64_t dispatch_wait_ns = 1'000'000;

 private:
  int epfd_ = -1;
  bool in_poll_ = false;  // under dispatch_mu_: a dispatch that polls again (same thread) returns
  std::recursive_timed_mutex dispatch_mu_;
  std::uint32_t fork_gen_ = (util::count_forks(), util::fork_generation());
  // After fork the epoll instance is shared with the parent: a child's del
  // would drop the parent's registration of the same socket.
  util::creator_process creator_;
};

class domain_impl;

// An endpoint bound to an address vector, told of its changes (under the
// domain's lock): a removed handle names nobody now (connections to its peer
// lose it: their messages carry no handle, directed receives and deaths no
// longer concern it); a new entry is given to the connections of its peer.
class av_user {
 public:
  virtual void av_removed(fi_addr_t h) noexcept = 0;
  virtual void av_inserted(fi_addr_t h, const std::string& key) noexcept = 0;

 protected:
  ~av_user() = default;
};

// The application's calls (insert, remove, lookup, count) take the domain's
// lock: with automatic progress the progress thread uses the table too
// (reverse() on a hello, which inserts with auto_insert). The provider's own
// calls (at, reverse, version) come from code that holds it already.
class av_impl final : public spi::av {
 public:
  av_impl(std::shared_ptr<domain_impl> d, const spi::av_attr& a) : dom_(std::move(d)), attr_(a) {}
  result<fi_addr_t> insert(const address& a) override;
  result<void> remove(fi_addr_t a) override;
  result<address> lookup(fi_addr_t a) const override;
  [[nodiscard]] std::size_t count() const noexcept override;
  [[nodiscard]] const address* at(fi_addr_t a) const noexcept {
    return a < table_.size() && table_[a].used ? &table_[a].a : nullptr;
  }
  [[nodiscard]] std::uint64_t version() const noexcept { return version_; }
  [[nodiscard]] const domain_impl* owner() const noexcept { return dom_.get(); }
  // Endpoints bound to this AV are told of every insert and remove, so that
  // a connection never keeps the handle of an entry that now names another
  // peer (remove() frees the handle and the next insert() reuses it).
  void attach(av_user* e);
  void detach(av_user* e) noexcept;
  // handle of a peer's listening address; inserts it when auto_insert is set
  [[nodiscard]] fi_addr_t reverse(const address& a);

 private:
  struct entry {
    address a;
    bool used = false;
  };
  std::shared_ptr<domain_impl> dom_;
  spi::av_attr attr_;
  std::vector<entry> table_;
  std::vector<fi_addr_t> free_;
  std::unordered_map<std::string, fi_addr_t> rev_;
  std::vector<av_user*> users_;  // bound endpoints (attach, detach)
  std::uint64_t version_ = 0;  // bumped on remove: endpoints drop cached paths
};

class domain_impl final : public spi::domain, public std::enable_shared_from_this<domain_impl> {
 public:
  explicit domain_impl(config c) : cfg_(c) {}
  ~domain_impl() override;
  // Automatic progress: a thread drives every endpoint of the domain; then
  // all entry points serialize on lock().
  void start_progress_thread();
  [[nodiscard]] bool automatic() const noexcept { return auto_; }
  [[nodiscard]] std::recursive_mutex* lock() noexcept { return auto_ ? &mu_ : nullptr; }
  [[nodiscard]] std::unique_lock<std::recursive_mutex> guard() noexcept {
    return auto_ ? std::unique_lock<std::recursive_mutex>(mu_) : std::unique_lock<std::recursive_mutex>();
  }
  // In the child of fork (one thread), instead of unlocking the lock the
  // parent's forking thread took: a recursive mutex refuses an unlock from
  // another thread id (EPERM), and the child's copy would stay held for good.
  void renew_lock_in_child() noexcept { std::construct_at(&mu_); }
  void add_target(spi::progressable* p);
  void remove_target(spi::progressable* p) noexcept;
  result<std::shared_ptr<spi::endpoint>> open_endpoint(const info& i) override;
  result<std::shared_ptr<spi::av>> open_av(const spi::av_attr& a) override;
  result<std::shared_ptr<spi::passive_endpoint>> open_passive_endpoint(const info& i) override;
  result<std::shared_ptr<spi::mr>> register_memory(void* buf, std::size_t len, std::uint64_t acc) override {
    return registry_->register_memory(buf, len, acc);
  }
  [[nodiscard]] const config& cfg() const noexcept { return cfg_; }
  [[nodiscard]] engine& eng() noexcept { return eng_; }
  // A listener whose accept fails for want of descriptors takes the waiting
  // connection with the domain's spare descriptor, sends it frame (the
  // reason), closes it and takes the spare back, so that the peer is not
  // left hanging and the listener does not spin while it stays readable.
  // All of it under the spare's mutex: endpoints open (open_spare) and refuse from
  // any thread, the progress thread's included, and the spare must never
  // be closed twice, leaked, or taken by two refusals at once.
  // Returns 1 (refused), 0 (nobody was waiting: EAGAIN), -1 (no spare
  // descriptor: the listener should pause).
  int refuse_with_spare(int lfd, const void* frame, std::size_t len) noexcept;
  result<void> open_spare();  // at the first endpoint or passive endpoint

 private:
  config cfg_;
  engine eng_;
  bool auto_ = false;
  std::recursive_mutex mu_;
  std::thread thr_;
  std::atomic<bool> stop_{false};
  std::vector<spi::progressable*> targets_;
  // A descriptor on /dev/null kept for refuse_with_spare, under its own
  // mutex (not lock(): that one is a no-op in manual mode).
  util::reserve_fd spare_;
};

}  // namespace weft::prov::tcp

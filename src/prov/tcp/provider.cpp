// tcp provider: registration, discovery, addresses, epoll engine, address vector.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "prov/tcp/tcp.hpp"
#include "prov/tcp/test_hooks.hpp"

namespace weft::prov::tcp {

namespace test_hooks {
std::atomic<void (*)()> av_insert_hook{nullptr};
std::atomic<int> av_reverses{0};
std::atomic<std::uint64_t> progress_loops{0};
std::atomic<int> fail_epoll_adds{0};
std::atomic<void (*)()> dispatch_hook{nullptr};
}  // namespace test_hooks

namespace {
constexpr std::uint32_t version = 1;

int env_int(const char* name, int def) {
  const char* s = std::getenv(name);
  return s && *s ? std::atoi(s) : def;
}

info base_info() {
  info i;
  i.caps = cap::msg | cap::tagged | cap::source | cap::directed_recv | cap::remote_cq_data | cap::local_comm |
           cap::remote_comm | cap::rma | cap::atomic | cap::pmem;
  i.fabric = {"tcp", "tcp", version};
  i.domain.name = "tcp";
  i.domain.max_ep_count = 1024;
  i.ep.type = ep_type::rdm;
  i.ep.max_msg_size = max_msg_size;
  i.tx = {tx_size, inject_size, max_iov, max_iov, 0};
  i.rx = {rx_size, max_iov, unexpected_count * inject_size};
  i.format = addr_format::inet;
  return i;
}

result<std::vector<info>> get_info(const hints& h) {
  info i = base_info();
  std::uint16_t port = 0;
  if (h.port) port = *h.port;  // the core resolved hints.service into hints.port
  if (h.source) {
    auto a = resolve(h.node, port, true);
    if (!a) return std::unexpected(a.error());
    i.src_addr = *a;
    i.src_port = port;
    i.format = a->format;
  } else if (!h.node.empty() || port) {
    if (port == 0) return make_error(errc::invalid_argument, "tcp needs a port to reach node '" + h.node + "'");
    auto a = resolve(h.node.empty() ? "localhost" : h.node, port, false);
    if (!a) return std::unexpected(a.error());
    i.dest_addr = *a;
    i.format = a->format;
  }
  // MSG: connected endpoints (connection management through an event queue)
  info m = i;
  m.ep.type = ep_type::msg;
  m.caps = cap::msg | cap::tagged | cap::remote_cq_data | cap::local_comm | cap::remote_comm | cap::rma | cap::atomic |
           cap::pmem;
  return std::vector<info>{i, m};
}

class fabric_impl final : public spi::fabric {
 public:
  result<std::shared_ptr<spi::domain>> open_domain(const info& i) override {
    if (i.fabric.prov_name != "tcp")
      return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not tcp");
    config c = load_config();
    if (i.domain.progress == progress_mode::automatic) c.auto_progress = true;
    auto d = std::make_shared<domain_impl>(c);
    if (d->eng().fd() < 0)
      return make_error(errc::io_error, std::string("epoll_create1 failed: ") + std::strerror(errno));
    if (c.auto_progress) d->start_progress_thread();
    return d;
  }
};
}  // namespace

config load_config() {
  config c;
  c.timeout_ms = env_int("WEFT_TCP_TIMEOUT_MS", c.timeout_ms);
  c.idle_ms = env_int("WEFT_TCP_IDLE_MS", c.idle_ms);
  c.direct_polls = std::clamp(env_int("WEFT_TCP_DIRECT_POLLS", c.direct_polls), 0, 1 << 20);
  c.poll_pause_ns = std::clamp(env_int("WEFT_TCP_POLL_PAUSE_NS", c.poll_pause_ns), 0, 1000000);
  c.sndbuf = std::clamp(env_int("WEFT_TCP_SNDBUF", c.sndbuf), 0, 1 << 30);
  if (const char* cc = std::getenv("WEFT_TCP_CONGESTION")) c.congestion = cc;
  if (const char* p = std::getenv("WEFT_PROGRESS"); p && std::strcmp(p, "auto") == 0) c.auto_progress = true;
  if (c.timeout_ms < 1) c.timeout_ms = 1;
  if (c.idle_ms < 0) c.idle_ms = 0;
  return c;
}

spi::provider make_provider() {
  spi::provider p;
  p.name = "tcp";
  p.version = version;
  p.get_info = get_info;
  p.open_fabric = [](const info&) -> result<std::shared_ptr<spi::fabric>> {
    return std::make_shared<fabric_impl>();
  };
  return p;
}

// ---- addresses

address from_sockaddr(const sockaddr* sa) noexcept {
  address a;
  if (sa->sa_family == AF_INET) {
    a.format = addr_format::inet;
    a.size = sizeof(sockaddr_in);
  } else if (sa->sa_family == AF_INET6) {
    a.format = addr_format::inet6;
    a.size = sizeof(sockaddr_in6);
  } else {
    return a;
  }
  std::memcpy(a.bytes.data(), sa, a.size);
  return a;
}

bool to_sockaddr(const address& a, sockaddr_storage& ss, socklen_t& len) noexcept {
  std::memset(&ss, 0, sizeof ss);
  if (a.format == addr_format::inet && a.size == sizeof(sockaddr_in)) {
    std::memcpy(&ss, a.bytes.data(), a.size);
    len = sizeof(sockaddr_in);
    return ss.ss_family == AF_INET;
  }
  if (a.format == addr_format::inet6 && a.size == sizeof(sockaddr_in6)) {
    std::memcpy(&ss, a.bytes.data(), a.size);
    len = sizeof(sockaddr_in6);
    return ss.ss_family == AF_INET6;
  }
  return false;
}

std::string key_of(const address& a) {
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(a, ss, len)) return {};
  std::string k;
  if (ss.ss_family == AF_INET) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    k.assign("4");
    k.append(reinterpret_cast<const char*>(&s->sin_addr), 4);
    k.append(reinterpret_cast<const char*>(&s->sin_port), 2);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    k.assign("6");
    k.append(reinterpret_cast<const char*>(&s->sin6_addr), 16);
    k.append(reinterpret_cast<const char*>(&s->sin6_port), 2);
  }
  return k;
}

result<address> resolve(const std::string& node, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = (passive ? AI_PASSIVE : 0) | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string svc = std::to_string(port);
  int rc = ::getaddrinfo(node.empty() ? nullptr : node.c_str(), svc.c_str(), &hints, &res);
  if (rc != 0)
    return make_error(errc::not_found, "cannot resolve '" + node + "': " + ::gai_strerror(rc));
  address a;
  for (addrinfo* r = res; r; r = r->ai_next) {  // IPv4 first when both exist
    if (r->ai_family == AF_INET) {
      a = from_sockaddr(r->ai_addr);
      break;
    }
    if (r->ai_family == AF_INET6 && a.size == 0) a = from_sockaddr(r->ai_addr);
  }
  ::freeaddrinfo(res);
  if (a.size == 0) return make_error(errc::not_found, "'" + node + "' has no IPv4 or IPv6 address");
  return a;
}

// ---- engine

engine::engine() : epfd_(::epoll_create1(EPOLL_CLOEXEC)) {}
engine::~engine() {
  if (epfd_ >= 0) ::close(epfd_);
}

bool engine::add(int fd, handler* h, std::uint32_t events) noexcept {
  if (test_hooks::take(test_hooks::fail_epoll_adds)) {
    errno = ENOSPC;  // as when fs.epoll.max_user_watches is reached
    return false;
  }
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  return ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}
bool engine::mod(int fd, handler* h, std::uint32_t events) noexcept {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  return ::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) == 0;
}
void engine::del(int fd) noexcept {
  if (creator_.is_this_process()) ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

int engine::poll() noexcept {
  if (util::fork_generation() != fork_gen_) return 0;  // a forked child: see the declaration
  if (!dispatch_mu_.try_lock() && !dispatch_mu_.try_lock_for(std::chrono::nanoseconds(dispatch_wait_ns)))
    return 0;  // another thread dispatches (for every endpoint), or an endpoint closes
  std::unique_lock<std::recursive_timed_mutex> g(dispatch_mu_, std::adopt_lock);
  if (in_poll_) return 0;
  in_poll_ = true;
  if (auto* h = test_hooks::dispatch_hook.load(std::memory_order_relaxed)) h();
  epoll_event evs[64];
  int n = ::epoll_wait(epfd_, evs, 64, 0);
  for (int i = 0; i < n; ++i) static_cast<handler*>(evs[i].data.ptr)->on_event(evs[i].events);
  in_poll_ = false;
  return n < 0 ? 0 : n;
}

// ---- domain and address vector

// fork() while a progress thread is inside progress (allocating a new
// connection, say) can leave the child with a lock (the allocator's) that no
// thread will ever release. Around fork, every automatic domain's lock is
// held by the forking thread, so no progress thread is in progress then.
namespace {
std::mutex auto_domains_mu;
std::vector<domain_impl*>& auto_domains() {
  static auto* v = new std::vector<domain_impl*>();  // never destroyed: atfork handlers outlive statics
  return *v;
}
void fork_prepare() noexcept {
  auto_domains_mu.lock();
  for (auto* d : auto_domains()) d->lock()->lock();
}
void fork_release() noexcept {
  auto& v = auto_domains();
  for (auto it = v.rbegin(); it != v.rend(); ++it) (*it)->lock()->unlock();
  auto_domains_mu.unlock();
}
void fork_child() noexcept {
  for (auto* d : auto_domains()) d->renew_lock_in_child();
  auto_domains_mu.unlock();  // a plain mutex: any thread may unlock it
}
}  // namespace

domain_impl::~domain_impl() {
  if (thr_.joinable()) {
    if (eng_.creator().is_this_process()) {
      stop_ = true;
      thr_.join();
    } else {
      thr_.detach();  // a forked child: the thread exists only in the parent (joining it would never return)
    }
    std::lock_guard lk(auto_domains_mu);
    std::erase(auto_domains(), this);
  }
}

result<void> domain_impl::open_spare() {
  if (spare_.keep()) return {};
  const int e = errno;
  return make_error(e == EMFILE || e == ENFILE ? errc::no_memory : errc::io_error,
                    std::string("cannot keep a spare descriptor for refusing connections: ") + std::strerror(e) +
                        (e == EMFILE ? " (raise ulimit -n)" : ""));
}

int domain_impl::refuse_with_spare(int lfd, const void* frame, std::size_t len) noexcept {
  int fd = -1, e = 0;
  const bool had_spare = spare_.use([&]() noexcept {
    fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    e = errno;
    if (fd >= 0) {
      (void)::send(fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT);  // a new socket's buffer takes it
      ::close(fd);
    }
  });
  if (!had_spare) return -1;
  if (fd >= 0) return 1;
  // -1 if another thread (not one of ours: they all use the spare under its
  // mutex) took the descriptor meanwhile; the next refusal tries again
  return e == EAGAIN || e == EWOULDBLOCK ? 0 : -1;
}

void domain_impl::start_progress_thread() {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(fork_prepare, fork_release, fork_child); });
  auto_ = true;  // before it is listed: fork_prepare takes lock()
  {
    std::lock_guard lk(auto_domains_mu);
    auto_domains().push_back(this);
  }
  thr_ = std::thread([this] {
    while (!stop_.load(std::memory_order_relaxed)) {
      pollfd p{eng_.fd(), POLLIN, 0};
      (void)::poll(&p, 1, 10);  // sleep until there is work (or 10 ms for timers)
      test_hooks::progress_loops.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard<std::recursive_mutex> g(mu_);
      for (std::size_t i = 0; i < targets_.size(); ++i) targets_[i]->progress();
      // Whatever is still readable is handled too: a descriptor only
      // objects that are not progress targets watch (a passive endpoint
      // with no event queue yet) would otherwise wake poll() at once,
      // again and again (a busy spin) while nobody takes its event.
      eng_.poll();
    }
  });
}

void domain_impl::add_target(spi::progressable* p) {
  auto g = guard();
  targets_.push_back(p);
}

void domain_impl::remove_target(spi::progressable* p) noexcept {
  auto g = guard();
  std::erase(targets_, p);
}

result<std::shared_ptr<spi::av>> domain_impl::open_av(const spi::av_attr& a) {
  return std::make_shared<av_impl>(shared_from_this(), a);
}

result<fi_addr_t> av_impl::insert(const address& a) {
  auto g = dom_->guard();  // the progress thread inserts too (reverse() with auto_insert)
  std::string k = key_of(a);
  if (k.empty()) return make_error(errc::invalid_argument, "address '" + to_string(a) + "' is not a tcp address");
  if (auto it = rev_.find(k); it != rev_.end()) return it->second;
  if (auto* hook = test_hooks::av_insert_hook.load(std::memory_order_relaxed)) hook();
  fi_addr_t h;
  if (!free_.empty()) {
    h = free_.back();
    free_.pop_back();
  } else {
    h = table_.size();
    table_.emplace_back();
  }
  table_[h] = entry{a, true};
  rev_[k] = h;
  for (av_user* e : users_) e->av_inserted(h, k);  // connections to that peer take the handle
  return h;
}

result<void> av_impl::remove(fi_addr_t a) {
  auto g = dom_->guard();
  if (a >= table_.size() || !table_[a].used)
    return make_error(errc::not_found, "address handle " + std::to_string(a) + " is not in this address vector");
  rev_.erase(key_of(table_[a].a));
  table_[a] = entry{};
  free_.push_back(a);
  for (av_user* e : users_) e->av_removed(a);  // the handle names nobody now
  ++version_;
  return {};
}

result<address> av_impl::lookup(fi_addr_t a) const {
  auto g = dom_->guard();
  if (a >= table_.size() || !table_[a].used)
    return make_error(errc::not_found, "address handle " + std::to_string(a) + " is not in this address vector");
  return table_[a].a;
}

void av_impl::attach(av_user* e) {
  auto g = dom_->guard();
  users_.push_back(e);
}

void av_impl::detach(av_user* e) noexcept {
  auto g = dom_->guard();
  std::erase(users_, e);
}

std::size_t av_impl::count() const noexcept {
  auto g = dom_->guard();
  return rev_.size();
}

fi_addr_t av_impl::reverse(const address& a) {
  test_hooks::av_reverses.fetch_add(1, std::memory_order_relaxed);
  if (auto it = rev_.find(key_of(a)); it != rev_.end()) return it->second;
  if (!attr_.auto_insert) return addr_notavail;
  auto r = insert(a);
  return r ? *r : addr_notavail;
}

}  // namespace weft::prov::tcp

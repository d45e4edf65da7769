// tcp endpoint: connection management of MSG endpoints (connect, accept,
// shutdown) and passive endpoints (listen, connreq, reject).
#include <netinet/in.h>
#include <unistd.h>

#include <cstdio>
#include <functional>

#include "prov/tcp/endpoint.hpp"
#include "prov/tcp/test_hooks.hpp"
#include "util/clock.hpp"

namespace weft::prov::tcp {

namespace test_hooks {
std::atomic<int> fail_connreq_events{0};
std::atomic<int> fail_accepts{0};
}  // namespace test_hooks

namespace {

// A connection accepted by a passive endpoint, waiting for its hello and
// then for accept() or reject().
struct pending final : handler {
  int fd = -1;
  engine* eng = nullptr;
  bool registered = false;
  bool complete = false, bad = false;
  bool unannounced = false;  // complete, but its connreq event could not be made yet (progress retries)
  std::uint8_t buf[sizeof(wire::frame_header) + sizeof(wire::hello_body) + wire::max_cm_data]{};
  std::size_t got = 0, need = sizeof(wire::frame_header);
  wire::hello_body hello{};
  address peer{};
  std::uint64_t started = 0;
  std::function<void(pending*)> on_complete;
  ~pending() override {
    if (registered) eng->del(fd);
    if (fd >= 0) ::close(fd);
  }
  void on_event(std::uint32_t) noexcept override {
    while (!complete && !bad) {
      ssize_t n = ::recv(fd, buf + got, need - got, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) {
        bad = true;
        break;
      }
      got += static_cast<std::size_t>(n);
      if (got < need) continue;
      if (need == sizeof(wire::frame_header)) {
        wire::frame_header h;
        const wire::status ds = wire::decode_header(buf, got, max_msg_size, h);
        if (ds == wire::status::bad_version) {  // told why (docs/wire/tcp.md, "Versions")
          char why[200];
          refuse_version(fd, buf[1], why);
        }
        if (ds != wire::status::ok || h.op != static_cast<std::uint8_t>(wire::op::hello)) {
          bad = true;
          break;
        }
        need += h.len;
        continue;
      }
      if (wire::decode_hello(buf + sizeof(wire::frame_header), got - sizeof(wire::frame_header), hello) !=
              wire::status::ok ||
          hello.ep_type != 1) {
        bad = true;
        break;
      }
      complete = true;
    }
    if (registered) {  // the endpoint that accepts registers the socket again
      eng->del(fd);
      registered = false;
    }
    if (on_complete) on_complete(this);
  }
};

class passive_impl final : public spi::passive_endpoint, public spi::progressable, public handler {
 public:
  passive_impl(std::shared_ptr<domain_impl> d, const info& i) : dom_(std::move(d)), info_(i) {}
  ~passive_impl() override {
    auto g = dom_->guard();  // the progress thread must not see any of this half-gone
    // nor a wait on our EQ from another thread (its sources lock, after the domain's)
    std::unique_lock<std::recursive_mutex> heq;
    if (eq_ && dom_->eng().creator().is_this_process()) heq = eq_->hold();  // none in a forked child (endpoint.cpp)
    auto d = dom_->eng().hold_dispatch();  // nor a dispatch from a wait on another endpoint's queue
    dom_->remove_target(this);
    if (eq_) {
      eq_->detach(this);
      eq_->release_lock(dom_->lock());
    }
    if (lfd_ >= 0) {
      dom_->eng().del(lfd_);
      ::close(lfd_);
    }
    for (auto& p : waiting_) p->on_complete = nullptr;
    waiting_.clear();  // pending connections leave epoll here, under the lock
  }
  result<void> init() {
    address a;
    if (info_.src_addr) {
      a = *info_.src_addr;
    } else {
      sockaddr_in any{};
      any.sin_family = AF_INET;
      a = from_sockaddr(reinterpret_cast<sockaddr*>(&any));
    }
    sockaddr_storage ss;
    socklen_t len;
    if (!to_sockaddr(a, ss, len)) return make_error(errc::invalid_argument, "not a tcp listening address");
    lfd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    (void)::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd_ < 0 || ::bind(lfd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(lfd_, 512) != 0) {
      int e = errno;
      return make_error(e == EADDRINUSE ? errc::address_in_use : errc::io_error,
                        "cannot listen on " + to_string(a) + ": " + std::strerror(e));
    }
    sockaddr_storage me{};
    socklen_t ml = sizeof me;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&me), &ml);
    name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
    if (auto r = dom_->open_spare(); !r) return r;
    if (!dom_->eng().add(lfd_, this, EPOLLIN)) {  // unwatched, it would never accept anything
      const int e = errno;
      ::close(lfd_);
      lfd_ = -1;
      return make_error(errc::no_memory, std::string("cannot watch the listening socket (epoll_ctl: ") +
                                             std::strerror(e) +
                                             "): close descriptors or raise fs.epoll.max_user_watches");
    }
    return {};
  }
  result<void> bind_eq(std::shared_ptr<spi::eq> q) override {
    auto g = dom_->guard();
    if (eq_) return make_error(errc::bad_state, "an event queue is already bound");
    if (!q->set_lock(dom_->lock()))
      return make_error(errc::bad_state, "this event queue already serves another automatic-progress domain");
    eq_ = std::move(q);
    eq_->attach(this);
    if (dom_->automatic()) dom_->add_target(this);
    // What arrived before an event queue was bound is told now.
    if (fd_report_) report();
    if (oom_refused_) report_memory();
    if (unwatched_) report_unwatched();
    if (unannounced_) announce_all();
    return {};
  }
  [[nodiscard]] address name() const override { return name_; }
  result<void> reject(const info& req, std::span<const std::byte> data) override {
    auto g = dom_->guard();
    auto p = std::static_pointer_cast<pending>(req.handle);
    if (!p || p->fd < 0 || !p->complete)
      return make_error(errc::invalid_argument, "reject() takes the info of a connreq event not yet answered");
    if (data.size() > wire::max_cm_data) return make_error(errc::too_big, "reject data is limited to 256 bytes");
    std::uint8_t frame[sizeof(wire::frame_header) + wire::max_cm_data];
    wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::hello_ack), 0, 0,
                         data.size(), 0, static_cast<std::uint64_t>(wire::hello_status::rejected)};
    std::memcpy(frame, &h, sizeof h);
    if (!data.empty()) std::memcpy(frame + sizeof h, data.data(), data.size());
    (void)::send(p->fd, frame, sizeof h + data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);  // fits the socket buffer
    ::close(p->fd);
    p->fd = -1;
    return {};
  }
  void on_event(std::uint32_t) noexcept override {
    for (int i = 0; i < 64; ++i) {
      // Too many connections waiting for their hello (or for an event queue):
      // stop accepting; new ones wait in the kernel's backlog until one of
      // them finishes (never closed without a reason).
      if (waiting_.size() >= max_handshakes) {
        pause_for_handshakes();
        return;
      }
      int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
        if (refuse(errno)) continue;
        return;
      }
      if (fd < 0) return;
      fd_short_ = false;
      set_socket_options(fd, dom_->cfg(), nullptr);
      try {
        if (test_hooks::take(test_hooks::fail_accepts)) throw std::bad_alloc();
        // Everything that allocates, before p owns fd (its destructor closes
        // it; the refusal below needs it open).
        waiting_.reserve(waiting_.size() + 1);
        auto p = std::make_shared<pending>();
        p->fd = fd;
        p->eng = &dom_->eng();
        p->started = util::now_ns();
        sockaddr_storage peer{};
        socklen_t pl = sizeof peer;
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl);
        p->peer = from_sockaddr(reinterpret_cast<sockaddr*>(&peer));
        p->on_complete = [this](pending* x) { completed(x); };
        if (!dom_->eng().add(fd, p.get(), EPOLLIN)) {
          // Never watched, its hello would never be read: refused at once
          // with the reason, rather than left until the handshake timeout.
          const int e = errno;
          p->fd = -1;
          refuse_unwatched(fd, e);
          continue;
        }
        p->registered = true;
        waiting_.push_back(std::move(p));
      } catch (...) {
        // Out of memory for the request: the peer is told why (its connect
        // fails with the reason), the application gets an error event.
        refuse_accepted(fd, oom_reason);
        ++oom_refused_;
        report_memory();
      }
    }
  }
  void progress() noexcept override {
    auto g = dom_->guard();
    if (accept_paused_until_ && util::now_ns() >= accept_paused_until_) {
      accept_paused_until_ = 0;
      if (!handshakes_full_) dom_->eng().mod(lfd_, this, EPOLLIN);
    }
    if (fd_report_) report();
    if (oom_refused_) report_memory();
    if (unwatched_) report_unwatched();
    if (unannounced_) announce_all();
    dom_->eng().poll();
    // hellos that never come are dropped after the timeout
    const std::uint64_t now = util::now_ns();
    const std::uint64_t to = static_cast<std::uint64_t>(dom_->cfg().timeout_ms) * 1'000'000ull;
    std::erase_if(waiting_, [&](const std::shared_ptr<pending>& p) { return !p->complete && now - p->started > to; });
    resume_if_room();
  }
  [[nodiscard]] int wait_fd() const noexcept override { return dom_->eng().fd(); }

 private:
  void completed(pending* x) noexcept {
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](auto& p) { return p.get() == x; });
    if (it == waiting_.end()) return;
    const std::shared_ptr<pending> keep = *it;  // we run inside its on_event: it lives until we return
    if (x->bad) {  // garbage, or closed before its hello: dropped (closing the socket)
      waiting_.erase(it);
      resume_if_room();
      return;
    }
    // The request stays in waiting_ until its event is made: when the event
    // queue cannot take it now (out of memory), progress tries again, and
    // with no event queue bound yet, bind_eq() tells it; the peer waits
    // meanwhile (its connect timeout bounds that), never dropped.
    x->unannounced = true;
    unannounced_ = true;
    announce_all();
  }
  void announce_all() noexcept {
    unannounced_ = false;
    for (std::size_t i = 0; i < waiting_.size();) {
      pending* p = waiting_[i].get();
      if (!p->unannounced) {
        ++i;
        continue;
      }
      if (!announce(waiting_[i])) {
        unannounced_ = true;
        ++i;
        continue;
      }
      waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
    }
    resume_if_room();
  }
  // max_handshakes connections wait: the listening socket leaves epoll
  // until one of them finishes (resume_if_room).
  void pause_for_handshakes() noexcept {
    handshakes_full_ = true;
    dom_->eng().mod(lfd_, this, 0);
  }
  void resume_if_room() noexcept {
    if (!handshakes_full_ || waiting_.size() >= max_handshakes) return;
    handshakes_full_ = false;
    if (!accept_paused_until_) dom_->eng().mod(lfd_, this, EPOLLIN);  // else progress() resumes it
  }
  // The connreq event of p; false if it could not be made (retried later).
  bool announce(const std::shared_ptr<pending>& p) noexcept {
    if (!eq_) return false;
    try {
      if (test_hooks::take(test_hooks::fail_connreq_events)) throw std::bad_alloc();
      eq_event ev;
      ev.type = eq_event::kind::connreq;
      ev.context = context;
      ev.req = info_;
      ev.req.ep.type = ep_type::msg;
      ev.req.caps = cap::msg | cap::tagged | cap::remote_cq_data | cap::local_comm | cap::remote_comm | cap::rma |
                    cap::atomic | cap::pmem;
      ev.req.src_addr.reset();
      ev.req.dest_addr = p->peer;
      ev.req.handle = p;
      const std::uint8_t* cm = p->buf + sizeof(wire::frame_header) + sizeof(wire::hello_body);
      ev.data.assign(reinterpret_cast<const std::byte*>(cm), reinterpret_cast<const std::byte*>(cm) + p->hello.cm_len);
      eq_->push(std::move(ev));
      p->unannounced = false;
      return true;
    } catch (...) {
      return false;
    }
  }

  // Out of descriptors: the waiting connection is taken with the domain's
  // spare descriptor, told why (hello_ack no_resources) and closed; the
  // application gets one error event per shortage. false: stop accepting.
  bool refuse(int err) noexcept {
    if (!fd_short_) {
      fd_short_ = true;
      fd_errno_ = err;
      fd_report_ = true;
      report();
    }
    char lim[96];
    describe_fd_shortage(err, lim, sizeof lim);
    const std::size_t n = std::strlen(lim);
    std::uint8_t frame[sizeof(wire::frame_header) + sizeof lim];
    const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::hello_ack), 0, 0,
                               n, 0, static_cast<std::uint64_t>(wire::hello_status::no_resources)};
    std::memcpy(frame, &h, sizeof h);
    std::memcpy(frame + sizeof h, lim, n);
    const int r = dom_->refuse_with_spare(lfd_, frame, sizeof h + n);
    if (r < 0) {  // no spare: stop listening a while (no spinning)
      dom_->eng().mod(lfd_, this, 0);
      accept_paused_until_ = util::now_ns() + 100'000'000ull;
    }
    return r > 0;
  }
  // The error event of a shortage (retried at the next progress when the
  // event queue cannot take it now).
  void report() noexcept {
    if (!eq_) return;
    try {
      char lim[96];
      describe_fd_shortage(fd_errno_, lim, sizeof lim);
      eq_event ev;
      ev.type = eq_event::kind::error;
      ev.context = context;
      ev.err = errc::no_memory;
      ev.message = std::string(lim) + ": connection requests are refused until descriptors are free: raise ulimit -n";
      eq_->push(std::move(ev));
      fd_report_ = false;
    } catch (...) {
    }
  }

  // The error event of requests refused for want of memory (retried at the
  // next progress, or when an event queue is bound, until it can be made).
  void report_memory() noexcept {
    if (!eq_) return;
    try {
      eq_event ev;
      ev.type = eq_event::kind::error;
      ev.context = context;
      ev.err = errc::no_memory;
      ev.message = std::string(oom_reason) + ": " + std::to_string(oom_refused_) +
                   " connection request(s) refused (the peer was told no_resources); free memory, the peer may retry";
      eq_->push(std::move(ev));
      oom_refused_ = 0;
    } catch (...) {
    }
  }

  // A connection accepted that epoll cannot watch (epoll_ctl ADD: ENOMEM,
  // or ENOSPC at fs.epoll.max_user_watches): the peer is told why (its
  // connect fails with errc::busy quoting it), the application gets one
  // error event for the refusals since the last one.
  void refuse_unwatched(int fd, int err) noexcept {
    char reason[128];
    std::snprintf(reason, sizeof reason, "cannot watch the connection (epoll_ctl: %s)", std::strerror(err));
    refuse_accepted(fd, reason);
    ++unwatched_;
    unwatched_errno_ = err;
    report_unwatched();
  }
  void report_unwatched() noexcept {
    if (!eq_) return;
    try {
      eq_event ev;
      ev.type = eq_event::kind::error;
      ev.context = context;
      ev.err = errc::no_memory;
      ev.message = "cannot watch an accepted connection (epoll_ctl: " + std::string(std::strerror(unwatched_errno_)) +
                   "): " + std::to_string(unwatched_) +
                   " connection request(s) refused (the peer was told no_resources); close descriptors or raise "
                   "fs.epoll.max_user_watches, the peer may retry";
      eq_->push(std::move(ev));
      unwatched_ = 0;
    } catch (...) {
    }
  }

  static constexpr const char* oom_reason = "out of memory accepting a connection request";
  std::size_t unwatched_ = 0;  // requests refused because epoll could not watch them, not yet reported
  int unwatched_errno_ = 0;
  std::shared_ptr<domain_impl> dom_;
  info info_;
  int lfd_ = -1;
  std::size_t oom_refused_ = 0;  // requests refused for want of memory, not yet reported
  address name_{};
  std::shared_ptr<spi::eq> eq_;
  std::vector<std::shared_ptr<pending>> waiting_;
  bool fd_short_ = false, fd_report_ = false;
  bool handshakes_full_ = false;  // max_handshakes wait: not accepting (pause_for_handshakes)
  bool unannounced_ = false;  // a request in waiting_ waits for its connreq event
  int fd_errno_ = 0;
  std::uint64_t accept_paused_until_ = 0;
};

result<void> take_pending(const info& i, int& fd, address& peer) {
  auto p = std::static_pointer_cast<pending>(i.handle);
  if (!p || !p->complete || p->fd < 0)
    return make_error(errc::invalid_argument,
                      "accept() needs an endpoint opened from the info of a connreq event not yet answered");
  if (p->registered) {
    p->eng->del(p->fd);
    p->registered = false;
  }
  fd = p->fd;
  p->fd = -1;
  peer = p->peer;
  return {};
}

}  // namespace

// --------------------------------------------------- connection management

// Through the pending events (liveness.cpp): delivered at once, or at the
// next progress when the EQ cannot take it now (out of memory).
void endpoint_impl::cm_event(eq_event::kind k, errc e, const char* msg, const std::uint8_t* data,
                             std::size_t len) noexcept {
  push_event(k, e, address{}, addr_notavail, msg, data, len);
}

void endpoint_impl::cancel_posted() noexcept {
  for (auto* l : {&posted_msg_, &posted_tag_})
    while (rx_op* r = l->front()) {
      l->erase(r);
      rx_error(r, errc::canceled, "the connection was shut down");
    }
}

result<void> endpoint_impl::connect(const address& peer, std::span<const std::byte> data) {
  auto g = dom_->guard();
  if (!msg_mode_) return make_error(errc::not_supported, "connect is for MSG endpoints (ep_type::msg)");
  if (!enabled_) return make_error(errc::bad_state, "enable() the endpoint before connect()");
  if (single_) return make_error(errc::bad_state, "this endpoint is already connected or connecting");
  if (data.size() > wire::max_cm_data)
    return make_error(errc::too_big, "connection data is limited to 256 bytes");
  std::string k = key_of(peer);
  if (k.empty()) return make_error(errc::invalid_argument, to_string(peer).append(" is not a tcp address"));
  conn* c = nullptr;
  try {
    c = open_conn(peer, k, addr_unspec, data);
  } catch (const std::bad_alloc&) {
    return make_error(errc::no_memory, "out of memory connecting to " + to_string(peer));
  }
  if (!c)  // open_errno_: the failing call's errno, captured there (errno itself is stale by now)
    return make_error(errc::io_error, "cannot connect to " + to_string(peer) + ": " + std::strerror(open_errno_));
  by_key_.erase(k);  // MSG connections are not shared
  single_ = c;
  was_connected_ = true;
  return {};
}

result<void> endpoint_impl::accept(std::span<const std::byte> data) {
  auto g = dom_->guard();
  if (!msg_mode_) return make_error(errc::not_supported, "accept is for MSG endpoints");
  if (!enabled_) return make_error(errc::bad_state, "enable() the endpoint before accept()");
  if (single_) return make_error(errc::bad_state, "this endpoint is already connected");
  if (data.size() > wire::max_cm_data)
    return make_error(errc::too_big, "connection data is limited to 256 bytes");
  int fd = -1;
  address peer;
  if (auto r = take_pending(info_, fd, peer); !r) return r;
  conn* raw;
  try {
    raw = add_conn(fd, false);
  } catch (const std::bad_alloc&) {
    ::close(fd);
    return make_error(errc::no_memory, "out of memory accepting the connection");
  }
  raw->peer = peer;
  raw->state = conn::st::established;
  if (!dom_->eng().add(fd, raw, EPOLLIN)) {
    const int e = errno;
    // The connector is told why (hello_ack no_resources: its connect fails
    // with errc::busy quoting it), not left to see a bare close.
    char reason[128];
    std::snprintf(reason, sizeof reason, "cannot watch the connection (epoll_ctl: %s)", std::strerror(e));
    refuse_accepted(fd, reason);
    raw->fd = -1;
    fail_conn(raw, errc::no_memory, "cannot watch the accepted connection (epoll_ctl)");
    return make_error(errc::no_memory, std::string("cannot watch the accepted connection (epoll_ctl: ") +
                                              std::strerror(e) + "): close other descriptors, then connect again");
  }
  single_ = raw;
  was_connected_ = true;
  sockaddr_storage me{};
  socklen_t ml = sizeof me;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &ml) == 0)
    name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
  queue_frame(raw, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), data.data(),
              data.size());
  // connected first: if sending the answer fails (the peer reset the
  // connection meanwhile), the shutdown event with the reason follows it,
  // never comes before it (fi_cm(3): shutdown ends a connection that was up).
  cm_event(eq_event::kind::connected, errc::ok, "", nullptr, 0);
  flush(raw);
  return {};
}

result<void> endpoint_impl::shutdown() {
  auto g = dom_->guard();
  if (!msg_mode_) return make_error(errc::not_supported, "shutdown is for MSG endpoints");
  if (!single_) return make_error(errc::bad_state, "the endpoint is not connected");
  flush(single_);  // what could leave without waiting leaves; the rest is canceled
  conn* c = single_;
  while (tx_op* op = c->txq.front()) {
    c->txq.erase(op);
    end_op(op, errc::canceled, "canceled by shutdown()");
  }
  cancel_posted();
  // Graceful: our FIN follows everything written; unread input is drained
  // first, since closing with unread data would reset the connection and
  // the peer could lose messages it has not read yet.
  ::shutdown(c->fd, SHUT_WR);
  char sink[4096];
  for (int i = 0; i < 256 && ::recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  close_conn(c);
  return {};
}

result<std::shared_ptr<spi::passive_endpoint>> domain_impl::open_passive_endpoint(const info& i) {
  if (i.fabric.prov_name != "tcp")
    return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not tcp");
  auto p = std::make_shared<passive_impl>(shared_from_this(), i);
  if (auto r = p->init(); !r) return std::unexpected(r.error());
  return p;
}

}  // namespace weft::prov::tcp

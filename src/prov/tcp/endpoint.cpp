// tcp endpoint: setup, binding, progress and timers (endpoint.hpp lists the other parts).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cstdio>
#include <optional>

#include "core/source_holds.hpp"
#include "prov/tcp/endpoint.hpp"
#include "util/clock.hpp"
#include "util/relax.hpp"

namespace weft::prov::tcp {

namespace {

bool is_loopback(const sockaddr* sa) noexcept {
  if (sa->sa_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a) ||
           (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
  }
  return false;
}

// The congestion control of a connection: WEFT_TCP_CONGESTION if set; else,
// on loopback, reno: BBR's pacing holds back the tail of every frame larger
// than 64 KiB there (64 KiB RMA writes ran at 1.7 GB/s with BBR, 6.2 without
// pacing, on this project's machines), and loopback loses nothing, so the
// algorithm with the least work per ACK wins (64 B one-way 2.81-2.89 us with
// reno, 2.89-3.04 with cubic); elsewhere the system's default.
void set_congestion(int fd, const sockaddr* peer, const std::string& cc) noexcept {
  const char* name = !cc.empty() ? cc.c_str() : (peer && is_loopback(peer)) ? "reno" : nullptr;
  if (name && std::strcmp(name, "default") != 0)
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, static_cast<socklen_t>(std::strlen(name)));
}

}  // namespace

void set_socket_options(int fd, const config& cfg, const sockaddr* peer) noexcept {
  int one = 1;
  if (cfg.sndbuf > 0) (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg.sndbuf, sizeof cfg.sndbuf);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // No TCP_USER_TIMEOUT: Linux applies it to zero-window probing too, and
  // would abort the connection to a live peer that is busy (not reading)
  // while this side queued data and stopped calling in. Data the kernel
  // holds is watched at tick time instead (liveness.cpp, watch_in_flight),
  // and keep-alive probes an idle connection, so a host that vanishes while
  // nothing is unacknowledged (an RMA answer awaited, an idle close asked)
  // is found within about the timeout too: idle for timeout/2, then
  // timeout/2 probes one second apart.
  int idle_s = std::clamp(cfg.timeout_ms / 2000, 1, 32767);  // TCP_KEEPIDLE: at most 32767 s
  int intvl_s = 1;
  int cnt = std::clamp(cfg.timeout_ms / 2000, 1, 127);  // the kernel refuses more than 127 probes
  (void)::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl_s, sizeof intvl_s);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  sockaddr_storage ss{};
  if (!peer) {
    socklen_t l = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &l) == 0) peer = reinterpret_cast<sockaddr*>(&ss);
  }
  set_congestion(fd, peer, cfg.congestion);
}

// ------------------------------------------------------------------ setup

addr_text text_of(const address& a) noexcept {
  addr_text t{};
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(a, ss, len)) {
    std::snprintf(t.s, sizeof t.s, "an unknown address");
    return t;
  }
  char ip[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
    std::snprintf(t.s, sizeof t.s, "tcp://%s:%u", ip, static_cast<unsigned>(ntohs(s->sin_port)));
  } else {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
    std::snprintf(t.s, sizeof t.s, "tcp://[%s]:%u", ip, static_cast<unsigned>(ntohs(s->sin6_port)));
  }
  return t;
}

result<void> endpoint_impl::init() {
  msg_mode_ = info_.ep.type == ep_type::msg;
  reg_ = dom_->registry();
  // Told when a region closes, so that no RMA read answer reads it after that.
  reg_->add_observer(this);
  observing_ = true;
  if (std::uint64_t l = info_.tx.op_flags & flag::completion_levels) level_ = l;
  events_.reserve(5);  // a MSG connection's events, the listener's three reports (connections reserve more)
  ux_storage_.reset(new std::uint8_t[unexpected_count * inject_size]);
  for (std::uint32_t i = 0; i < unexpected_count; ++i) uxp_.at(i)->payload = ux_storage_.get() + i * inject_size;
  if (msg_mode_) return {};  // connects or accepts; a passive endpoint listens
  address bind_addr;
  if (info_.src_addr) {
    bind_addr = *info_.src_addr;
  } else {
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    bind_addr = from_sockaddr(reinterpret_cast<sockaddr*>(&any));
  }
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(bind_addr, ss, len)) return make_error(errc::invalid_argument, "not a tcp source address");
  lfd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd_ < 0) return make_error(errc::io_error, std::string("socket: ") + std::strerror(errno));
  int one = 1;
  (void)::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(lfd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int e = errno;
    return make_error(e == EADDRINUSE ? errc::address_in_use : errc::io_error,
                      "cannot listen on " + to_string(bind_addr) + ": " + std::strerror(e) +
                          (e == EADDRINUSE ? " (choose another port, or 0 for any)" : ""));
  }
  if (::listen(lfd_, 512) != 0) return make_error(errc::io_error, std::string("listen: ") + std::strerror(errno));
  sockaddr_storage me{};
  socklen_t ml = sizeof me;
  ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&me), &ml);
  name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
  lst_.ep = this;
  if (!dom_->eng().add(lfd_, &lst_, EPOLLIN)) return make_error(errc::io_error, "epoll_ctl failed");
  source_cap_ = (info_.caps & cap::source) != 0;
  // A listener out of descriptors refuses connections with the domain's spare one.
  if (auto r = dom_->open_spare(); !r) return r;
  return {};
}

endpoint_impl::~endpoint_impl() {
  // The progress thread first (it may be sending an answer straight from a
  // region), then the registry: until the progress thread is out, a region
  // that closes must still revoke our answers, or it would read the region
  // after its close returned. Lock order as in progress (the domain's lock,
  // then the registry's): drain() takes neither.
  auto g = dom_->guard();
  // A wait on our CQs, EQ or counters from another thread must neither
  // drive nor arm us while we come apart: their sources locks (after the
  // domain's, as in progress) until we are detached. Not in a forked child:
  // a parent thread inside a wait at fork() left them held, with no owner
  // here (and the child's only business with us is this close).
  std::optional<core::source_holds> holds;
  if (creator_.is_this_process()) holds.emplace(txcq_.get(), rxcq_.get(), eq_.get(), cntrs_);
  // Nor a dispatch from a wait on another endpoint's CQ (manual progress
  // shares the domain's epoll set, and the domain's lock is no lock then):
  // the engine's dispatch lock until our descriptors have left the set.
  auto d = dom_->eng().hold_dispatch();
  dom_->remove_target(this);
  if (av_) av_->detach(this);  // no av_removed() after this
  if (observing_) reg_->remove_observer(this);  // no drain() after this (a close draining us finishes first)
  for (std::uint32_t i = 0; i < txp_.capacity(); ++i) delete[] txp_.at(i)->own;
  // Give back the CQ room held by operations that will never complete.
  if (rxcq_) {
    for (auto* l : {&posted_msg_, &posted_tag_})
      for (rx_op* r = l->front(); r; r = l->next(r)) rxcq_->unreserve();
    for (auto& c : conns_)
      if (c->rx && c->rx != &c->sink) rxcq_->unreserve();  // the sink reserved nothing
  }
  if (txcq_)
    for (auto& c : conns_)
      for (tx_op* op = c->txq.front(); op; op = c->txq.next(op))
        if (op->completion && !(op->flags & (flag::rma | flag::atomic))) txcq_->unreserve();
  if (txcq_)
    for (std::size_t i = 0; i < rma_reserved_; ++i) txcq_->unreserve();
  for (auto* q : {txcq_.get(), rxcq_ != txcq_ ? rxcq_.get() : nullptr})
    if (q) {
      q->detach(this);
      q->release_lock(dom_->lock());
    }
  {
    for (spi::cntr* c : cntrs_.distinct()) {
      c->detach(this);
      c->release_lock(dom_->lock());
    }
  }
  if (eq_) {
    eq_->detach(this);
    eq_->release_lock(dom_->lock());
  }
  for (auto& c : conns_) {
    say_bye(c.get());  // an orderly close, not a death, for the peer
    if (c->fd >= 0) {
      dom_->eng().del(c->fd);
      ::close(c->fd);
    }
  }
  if (lfd_ >= 0) {
    dom_->eng().del(lfd_);
    ::close(lfd_);
  }
}

result<void> endpoint_impl::bind_cq(std::shared_ptr<spi::cq> q, std::uint64_t flags) {
  auto g = dom_->guard();
  if (enabled_) return make_error(errc::bad_state, "bind CQs before enable()");
  if (((flags & flag::transmit) && txcq_) || ((flags & flag::receive) && rxcq_))
    return make_error(errc::bad_state, "a completion queue is already bound for that direction");
  if (!q->set_lock(dom_->lock()))
    return make_error(errc::bad_state, "this completion queue already serves another automatic-progress domain");
  if (flags & flag::transmit) txcq_ = q;
  if (flags & flag::receive) rxcq_ = q;
  q->attach(this);
  return {};
}

result<void> endpoint_impl::bind_av(std::shared_ptr<spi::av> a) {
  auto g = dom_->guard();
  if (enabled_) return make_error(errc::bad_state, "bind the address vector before enable()");
  auto p = std::dynamic_pointer_cast<av_impl>(a);
  if (!p) return make_error(errc::invalid_argument, "the address vector belongs to another provider");
  if (p->owner() != dom_.get())  // its lock (automatic progress) would not be ours
    return make_error(errc::invalid_argument,
                      "the address vector belongs to another domain: open it with this endpoint's domain");
  if (av_) av_->detach(this);
  p->attach(this);
  av_ = std::move(p);
  return {};
}

result<void> endpoint_impl::bind_cntr(std::shared_ptr<spi::cntr> c, std::uint64_t flags) {
  auto g = dom_->guard();
  if (enabled_) return make_error(errc::bad_state, "bind counters before enable()");
  if (!c) return make_error(errc::invalid_argument, "no counter to bind");
  const auto mine = cntrs_.distinct();
  const bool known = std::find(mine.begin(), mine.end(), c.get()) != mine.end();
  if (!known && !c->set_lock(dom_->lock()))
    return make_error(errc::bad_state, "this counter already serves another automatic-progress domain");
  auto fresh = cntrs_.bind(c, flags);
  if (!fresh) {
    if (!known) c->release_lock(dom_->lock());
    return std::unexpected(fresh.error());
  }
  if (*fresh) c->attach(this);
  return {};
}

result<void> endpoint_impl::bind_eq(std::shared_ptr<spi::eq> q) {
  auto g = dom_->guard();
  // MSG endpoints: connection management; RDM endpoints: peer_dead events
  // (and the listener's descriptor shortage).
  if (!q) return make_error(errc::invalid_argument, "no event queue to bind");
  if (eq_) return make_error(errc::bad_state, "an event queue is already bound");
  if (!q->set_lock(dom_->lock()))
    return make_error(errc::bad_state, "this event queue already serves another automatic-progress domain");
  eq_ = std::move(q);
  eq_->attach(this);
  return {};
}

result<void> endpoint_impl::enable() {
  auto g = dom_->guard();
  if (msg_mode_ && !eq_)
    return make_error(errc::bad_state, "bind an event queue before enable(): connection events go there");
  if (!txcq_ || !rxcq_)
    return make_error(errc::bad_state, "bind a completion queue for transmit and receive before enable() "
                                       "(bind(cq) binds both)");
  if (enabled_) return {};
  // The endpoint takes part in the wire from now on: until enable(), peers'
  // connections (and what they send) wait in the listening socket's backlog
  // (on_accept took the listener out of epoll's interest, so that nobody
  // spins on it), since nothing could take their messages and completions
  // (no CQ, no AV yet). docs/wire/tcp.md, "Not yet enabled".
  if (accept_before_enable_ && !dom_->eng().mod(lfd_, &lst_, EPOLLIN))
    return make_error(errc::io_error, std::string("cannot watch the listening socket (epoll_ctl): ") +
                                          std::strerror(errno) + "; close other descriptors and enable again");
  enabled_ = true;
  if (dom_->automatic()) dom_->add_target(this);
  return {};
}

std::string endpoint_impl::my_key(conn* c) const {
  // Our listening address as the peer sees it: an unspecified listening IP is
  // replaced by this connection's local IP.
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(name_, ss, len)) return {};
  sockaddr_storage local{};
  socklen_t ll = sizeof local;
  if (::getsockname(c->fd, reinterpret_cast<sockaddr*>(&local), &ll) == 0) {
    if (ss.ss_family == AF_INET && reinterpret_cast<sockaddr_in*>(&ss)->sin_addr.s_addr == htonl(INADDR_ANY) &&
        local.ss_family == AF_INET)
      reinterpret_cast<sockaddr_in*>(&ss)->sin_addr = reinterpret_cast<sockaddr_in*>(&local)->sin_addr;
    if (ss.ss_family == AF_INET6 && local.ss_family == AF_INET6 &&
        IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr))
      reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr = reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr;
  }
  return key_of(from_sockaddr(reinterpret_cast<sockaddr*>(&ss)));
}

void endpoint_impl::reap() noexcept {
  need_reap_ = false;
  std::erase_if(stalled_, [](conn* c) { return c->dead; });
  std::erase_if(conns_, [](const std::unique_ptr<conn>& c) { return c->dead; });
}

void endpoint_impl::tick(std::uint64_t now) noexcept {
  if (accept_paused_until_ && now >= accept_paused_until_) {
    accept_paused_until_ = 0;
    if (!handshakes_full_) dom_->eng().mod(lfd_, &lst_, EPOLLIN);
  }
  const std::uint64_t to = static_cast<std::uint64_t>(cfg_.timeout_ms) * 1'000'000ull;
  const std::uint64_t idle = static_cast<std::uint64_t>(cfg_.idle_ms) * 1'000'000ull;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conn* c = conns_[i].get();
    if (c->dead) continue;
    if (c->activity != c->activity_seen) {
      c->activity_seen = c->activity;
      c->last_active = std::max(c->last_active, now);
      if (!c->in_kernel) {  // bytes moved: some may wait in the kernel for the peer
        c->in_kernel = true;
        c->kernel_since = now;
      }
    }
    if (c->dup_loser && !c->txq.empty() && now - c->started > replace_after_ns) {
      // No winner appeared: the peer holds a stale connection to us.
      // Connect again, telling it to drop the old one.
      conn* n = nullptr;
      try {
        n = open_conn(c->peer, c->key, c->addr, {}, wire::flag::replace);
      } catch (...) {
        n = nullptr;  // out of memory: the timeout below ends it
      }
      if (n) {
        move_user_ops(c, n);
        close_conn(c);
        continue;
      }
    }
    // A connection whose socket is up waits for the peer's application as
    // long as its kernel answers: a peer that computes without progress for
    // longer than the timeout is busy, not dead (its death shows on the
    // socket: a reset, the end of the stream, keep-alive; or in its kernel
    // answering nothing for the timeout while data is in flight, below).
    // Only the kernel's connect, a MSG connect, and what an accepting side
    // waits for from an unknown connector are bounded here; an RDM hello
    // delivered to the peer's kernel waits for its application's answer.
    // A timed-out operation fails with timed_out; a peer is declared dead
    // only when it was up and the kernel got no answer at all.
    const bool handshaking = c->state == conn::st::connecting ||
                             (c->state == conn::st::wait_ack && msg_mode_) ||  // fi_connect's own bound
                             c->state == conn::st::wait_hello || c->held || (c->dup_loser && !c->txq.empty());
    if (handshaking && now - std::max(c->started, c->last_active) > to) {
      char why[200];
      std::snprintf(why, sizeof why, "connection to %s timed out after %d ms (WEFT_TCP_TIMEOUT_MS)%s",
                    c->key.empty() ? "a peer" : text_of(c->peer).s, cfg_.timeout_ms,
                    c->state == conn::st::connecting ? "" : ": the peer's application did not answer");
      if (c->state == conn::st::connecting)
        lose_conn(c, errc::timed_out, why);  // no answer from its host: a peer that was up is dead
      else
        fail_conn(c, errc::timed_out, why);  // its host answers: busy, not dead
      continue;
    }
    if ((c->in_kernel || !c->txq.empty()) && c->state != conn::st::connecting) {
      watch_in_flight(c, now);
      if (c->dead) continue;
    }
    if (idle && !msg_mode_ && c->state == conn::st::established && c->txq.empty() && c->await.empty() &&
        c->rstage == conn::rs::header &&
        c->hdr_got == 0 && c->rpos == c->rend && now - c->last_active > idle) {
      c->state = conn::st::closing;  // new sends queue here, then move to a new connection
      queue_frame(c, wire::op::close_req, 0, nullptr, 0);
      flush(c);
    }
  }
}

// epoll_wait (without waiting) and the timers (at most every tick_ns).
void endpoint_impl::poll_engine() noexcept {
  dom_->eng().poll();
  const std::uint64_t now = util::now_ns();
  if (now >= next_tick_) {
    next_tick_ = now + tick_ns;
    tick(now);
  }
}

void endpoint_impl::progress() noexcept {
  auto g = dom_->guard();
  // One established connection with nothing to write, polled by the
  // application: read it directly and take it out of epoll's read interest
  // (no wake-up callback on every packet); epoll_wait runs one poll in
  // direct_polls + 1 for everything else (a new connection, timers).
  conn* only = conns_.size() == 1 ? conns_.front().get() : nullptr;
  const bool direct_ok = only && !only->dead && only->state == conn::st::established && only->txq.empty() &&
                         !paused(only) && !only->held && cfg_.direct_polls > 0 && !dom_->automatic();
  if (direct_conn_ && (!direct_ok || direct_conn_ != only)) leave_direct();
  if (direct_ok) {
    if (!only->direct) {
      only->direct = true;
      direct_conn_ = only;
      update_events(only);
    }
    if (++direct_polls_ > static_cast<std::uint32_t>(cfg_.direct_polls)) {
      direct_polls_ = 0;
      poll_engine();
    }
    if (!only->dead && only->direct) {
      // Busy polling. A receive takes the socket's lock, which the kernel
      // needs to deliver the very packet we wait for, and a tight loop of
      // system calls starves whatever shares the core: when the application
      // comes straight back after an empty poll (within poll_recent_ns, having
      // driven nothing else), wait poll_pause_ns with cpu_relax() before the
      // next receive (docs/design.md, "Busy polling a socket").
      const std::uint64_t calls = spi::thread_progress_calls();
      if (cfg_.poll_pause_ns > 0 && last_empty_ns_ != 0 && calls == empty_calls_ + 1) {
        const std::uint64_t now = util::now_ns();
        if (now - last_empty_ns_ < poll_recent_ns)
          util::relax_until(now + static_cast<std::uint64_t>(cfg_.poll_pause_ns));
      }
      const bool got = read_conn(only);
      last_empty_ns_ = got || cfg_.poll_pause_ns <= 0 ? 0 : util::now_ns();
      empty_calls_ = calls;
    }
  } else {
    direct_polls_ = 0;
    poll_engine();
  }
  if (handshakes_full_) resume_accepting();
  if (answer_waits_) resume_answers();
  if (pend_n_) push_pending_errors();
  if (need_doom_) fail_doomed();
  if (!events_.empty()) deliver_events();
  if (need_reap_) reap();
}

// Back into epoll's read interest (before sleeping on it, or when another
// connection or pending output needs epoll).
void endpoint_impl::leave_direct() noexcept {
  conn* c = direct_conn_;
  direct_conn_ = nullptr;
  last_empty_ns_ = 0;
  if (!c || c->dead) return;
  c->direct = false;
  update_events(c);
}

void endpoint_impl::prepare_sleep() noexcept {
  auto g = dom_->guard();
  if (direct_conn_) leave_direct();
}

result<std::shared_ptr<spi::endpoint>> domain_impl::open_endpoint(const info& i) {
  if (i.fabric.prov_name != "tcp")
    return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not tcp");
  auto ep = std::make_shared<endpoint_impl>(shared_from_this(), i);
  if (auto r = ep->init(); !r) return std::unexpected(r.error());
  return ep;
}

}  // namespace weft::prov::tcp

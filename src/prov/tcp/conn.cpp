// tcp endpoint: connections (open on demand, accept, the hello handshake,
// simultaneous connects, close and failure).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdio>

#include "prov/tcp/endpoint.hpp"
#include "prov/tcp/test_hooks.hpp"
#include "util/clock.hpp"

namespace weft::prov::tcp {

namespace test_hooks {
std::atomic<int> fail_hellos{0};
}  // namespace test_hooks

void conn::on_event(std::uint32_t events) noexcept { ep->on_conn_event(this, events); }
void listener::on_event(std::uint32_t) noexcept { ep->on_accept(); }

// ------------------------------------------------------------ connections

conn* endpoint_impl::path(fi_addr_t a) noexcept {
  if (msg_mode_) return single_;
  sync_av();
  if (a < by_addr_.size() && by_addr_[a] && !by_addr_[a]->dead) return by_addr_[a];
  const address* pa = av_->at(a);
  if (!pa) return nullptr;
  // First contact with this peer since the path was dropped: control path
  // (allocation; out of memory: no path, and path_err_ says why).
  path_err_ = errc::peer_dead;
  std::snprintf(path_why_, sizeof path_why_, "cannot connect to %s", text_of(*pa).s);
  try {
    std::string k = key_of(*pa);
    index_peer(a);
    conn* c = nullptr;
    if (auto it = by_key_.find(k); it != by_key_.end() && !it->second->dead) c = it->second;
    if (!c) c = open_conn(*pa, k, a);
    if (!c) return nullptr;
    by_addr_[a] = c;
    c->addr = a;
    return c;
  } catch (...) {
    path_err_ = errc::no_memory;
    std::snprintf(path_why_, sizeof path_why_, "out of memory opening a connection to %s", text_of(*pa).s);
    return nullptr;
  }
}

errc endpoint_impl::path_failed(const char* op) noexcept {
  if (msg_mode_)
    detail::format_last_error("%s on a MSG endpoint whose connection has ended (shut down, or the peer is gone)", op);
  else
    detail::format_last_error("%s: %s", op, path_why_);
  return path_err_;
}

void endpoint_impl::index_peer(fi_addr_t a) {
  if (a == addr_notavail || a == addr_unspec) return;
  if (a >= by_addr_.size()) by_addr_.resize(a + 1, nullptr);
  if (a >= peer_state_.size()) peer_state_.resize(a + 1, 0);
}

conn* endpoint_impl::add_conn(int fd, bool outgoing) {
  auto c = std::make_unique<conn>();
  conns_.reserve(conns_.size() + 1);
  stalled_.reserve(conns_.size() + 1);
  // One event per connection at most (this one included), and one for each
  // of the listener's reports (descriptors, memory, epoll watches).
  if (const std::size_t need = events_.size() + conns_.size() + 4; events_.capacity() < need)
    events_.reserve(2 * need);
  c->ep = this;
  c->fd = fd;
  c->outgoing = outgoing;
  c->started = c->last_active = util::now_ns();
  conn* raw = c.get();
  conns_.push_back(std::move(c));  // capacity reserved: cannot throw
  return raw;
}

conn* endpoint_impl::open_conn(const address& peer, const std::string& key, fi_addr_t a,
                                std::span<const std::byte> cm, std::uint8_t hello_flags) {
  sockaddr_storage ss;
  socklen_t len;
  open_errno_ = EAFNOSUPPORT;
  if (!to_sockaddr(peer, ss, len)) return nullptr;
  sockaddr_storage me{};
  socklen_t ml = 0;
  if (msg_mode_) {  // no listening address: advertise the connection's family only
    me.ss_family = ss.ss_family;
  } else if (!to_sockaddr(name_, me, ml)) {
    return nullptr;
  }
  open_errno_ = 0;
  // Everything that allocates, before the socket exists.
  std::string k = key;
  auto [slot, fresh] = by_key_.try_emplace(key, nullptr);
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int serr = fd < 0 ? errno : 0;
  if (fd < 0 && serr != EMFILE && serr != ENFILE) {
    std::snprintf(path_why_, sizeof path_why_, "cannot open a socket to connect to %s: %s", text_of(peer).s,
                  std::strerror(serr));
    if (fresh) by_key_.erase(slot);
    open_errno_ = serr;
    return nullptr;
  }
  conn* raw;
  try {
    raw = add_conn(fd, true);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    if (fresh) by_key_.erase(slot);
    throw;
  }
  raw->peer = peer;
  raw->key = std::move(k);
  raw->addr = a;
  raw->state = conn::st::connecting;
  slot->second = raw;
  if (fd < 0) {
    // Out of descriptors: the operations queued on it fail at the next
    // progress with an error that says so (fail_doomed).
    raw->doom = serr;
    need_doom_ = true;
    return raw;
  }
  set_socket_options(fd, cfg_, reinterpret_cast<sockaddr*>(&ss));
  if (!msg_mode_) {  // a specific listening IP is also our source: the peer checks it
    sockaddr_storage src = me;
    const bool specific = src.ss_family == ss.ss_family &&
                          (src.ss_family == AF_INET
                               ? reinterpret_cast<sockaddr_in*>(&src)->sin_addr.s_addr != htonl(INADDR_ANY)
                               : !IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<sockaddr_in6*>(&src)->sin6_addr));
    if (specific) {
      if (src.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&src)->sin_port = 0;
      else reinterpret_cast<sockaddr_in6*>(&src)->sin6_port = 0;
      (void)::bind(fd, reinterpret_cast<sockaddr*>(&src), ml);
    }
  }
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  const int cerr = rc != 0 ? errno : 0;  // before anything else can change errno
  if (rc != 0 && cerr != EINPROGRESS) {
    char why[200];
    std::snprintf(why, sizeof why, "cannot connect to %s: %s", text_of(peer).s, std::strerror(cerr));
    std::snprintf(path_why_, sizeof path_why_, "%s", why);
    fail_conn(raw, errno_to_errc(cerr), why);  // closing the socket changes errno: open_errno_ keeps it
    open_errno_ = cerr;
    return nullptr;
  }
  if (!dom_->eng().add(fd, raw, EPOLLIN | EPOLLOUT)) {  // never watched, it would wait for nothing
    const int e = errno;
    char why[200];
    std::snprintf(why, sizeof why, "cannot watch the connection to %s (epoll_ctl: %s)", text_of(peer).s,
                  std::strerror(e));
    std::snprintf(path_why_, sizeof path_why_, "%s", why);
    fail_conn(raw, errc::no_memory, why);
    path_err_ = errc::no_memory;
    open_errno_ = e;
    return nullptr;
  }
  raw->events = EPOLLIN | EPOLLOUT;
  raw->want_out = true;
  // the hello is the first frame on the wire
  wire::hello_body hb{};
  hb.magic = wire::hello_magic;
  hb.ep_type = msg_mode_ ? 1 : 2;
  hb.cm_len = static_cast<std::uint16_t>(cm.size());
  if (me.ss_family == AF_INET) {
    auto* sa = reinterpret_cast<sockaddr_in*>(&me);
    hb.family = AF_INET;
    hb.port = sa->sin_port;
    std::memcpy(hb.addr, &sa->sin_addr, 4);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&me);
    hb.family = AF_INET6;
    hb.port = sa->sin6_port;
    std::memcpy(hb.addr, &sa->sin6_addr, 16);
  }
  std::uint8_t body[sizeof hb + wire::max_cm_data];
  std::memcpy(body, &hb, sizeof hb);
  if (!cm.empty()) std::memcpy(body + sizeof hb, cm.data(), cm.size());
  queue_frame(raw, wire::op::hello, 0, body, sizeof hb + cm.size(), false, hello_flags);
  return raw;
}

void endpoint_impl::on_accept() noexcept {
  if (!enabled_) {  // not in the wire yet: the connection waits in the backlog until enable()
    accept_before_enable_ = true;
    dom_->eng().mod(lfd_, &lst_, 0);
    return;
  }
  std::size_t unidentified = 0;
  for (auto& x : conns_) unidentified += !x->dead && x->state == conn::st::wait_hello;
  for (int i = 0; i < 64; ++i) {
    // A flood of connections that send no hello: stop accepting. New ones
    // wait in the kernel's backlog until one of these finishes or times
    // out (resume_accepting); none is accepted and closed without a reason.
    if (unidentified >= max_handshakes) {
      handshakes_full_ = true;
      dom_->eng().mod(lfd_, &lst_, 0);
      return;
    }
    int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EMFILE || err == ENFILE) {
        if (refuse_for_descriptors(err)) continue;  // each waiting connection is refused with the reason
        return;
      }
      return;  // EAGAIN: none waiting (or a transient error: the listener stays readable)
    }
    fd_short_ = false;  // descriptors again: a later shortage is reported again
    set_socket_options(fd, cfg_, nullptr);
    conn* c;
    try {
      if (test_hooks::take(test_hooks::fail_accepts)) throw std::bad_alloc();
      c = add_conn(fd, false);
    } catch (...) {
      refuse_for_memory(fd);  // the peer is told why, the application too
      continue;
    }
    c->state = conn::st::wait_hello;
    if (!dom_->eng().add(fd, c, EPOLLIN)) {
      // Never watched, its hello would never be read: refused at once with
      // the reason (the peer's operations fail with errc::busy quoting it,
      // the peer is not taken for dead), and counted: the application gets
      // one event for all such refusals since the last one (a burst at a
      // peer's pace never crowds out other events nor grows their queue).
      const int e = errno;
      char reason[128];
      std::snprintf(reason, sizeof reason, "cannot watch the connection (epoll_ctl: %s)", std::strerror(e));
      refuse_accepted(fd, reason);
      c->fd = -1;
      close_conn(c);
      count_watch_refusal(e);
      continue;
    }
    ++unidentified;
  }
}

// The listener stopped at max_handshakes: it listens again once fewer wait
// for their hello (each finishes, fails or times out in tick()).
void endpoint_impl::resume_accepting() noexcept {
  std::size_t unidentified = 0;
  for (auto& x : conns_) unidentified += !x->dead && x->state == conn::st::wait_hello;
  if (unidentified >= max_handshakes) return;
  handshakes_full_ = false;
  if (!accept_paused_until_) dom_->eng().mod(lfd_, &lst_, EPOLLIN);  // else tick() resumes it
}

void endpoint_impl::on_conn_event(conn* c, std::uint32_t ev) noexcept {
  if (c->dead) return;
  if (c->state == conn::st::connecting) {
    if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t l = sizeof err;
    ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err && (ev & EPOLLIN) && err == ECONNRESET) {
      // Accepted and closed at once: the peer may have said why first (a
      // hello_ack such as no_resources): read it before failing.
      c->state = conn::st::wait_ack;
      read_conn(c);
      if (c->dead) return;
    }
    if (err) {
      char why[160];
      std::snprintf(why, sizeof why, "cannot connect to %s: %s", text_of(c->peer).s, std::strerror(err));
      lose_conn(c, errno_to_errc(err), why);
      return;
    }
    c->state = conn::st::wait_ack;
  }
  if (ev & EPOLLIN) read_conn(c);
  if (c->dead) return;
  if (ev & (EPOLLERR | EPOLLHUP)) {
    int err = 0;
    socklen_t l = sizeof err;
    ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err || !(ev & EPOLLIN)) {
      char why[160];
      std::snprintf(why, sizeof why, "connection to %s lost: %s", text_of(c->peer).s,
                    err ? std::strerror(err) : "closed by the peer");
      lose_conn(c, err ? errno_to_errc(err) : errc::peer_dead, why);
      return;
    }
  }
  if (ev & EPOLLOUT) flush(c);
}

// --------------------------------------------------------- hello handshake

void endpoint_impl::on_ctrl(conn* c) noexcept {
  const auto code = static_cast<wire::op>(c->cur.op);
  if (code == wire::op::hello) handle_hello(c);
  else if (code == wire::op::hello_ack) handle_hello_ack(c);
  else handle_rma_req(c);
}

void endpoint_impl::handle_hello(conn* c) noexcept {
  wire::hello_body hb;
  if (wire::decode_hello(c->ctrl, c->cur.len, hb) != wire::status::ok || hb.ep_type != 2) {
    queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::bad_request), nullptr, 0);
    c->close_after_flush = true;
    c->state = conn::st::lost;
    flush(c);
    return;
  }
  // The peer's listening address; an unspecified IP is the connection's source.
  sockaddr_storage peer{};
  socklen_t pl = sizeof peer;
  ::getpeername(c->fd, reinterpret_cast<sockaddr*>(&peer), &pl);
  sockaddr_storage lis{};
  bool spoofed = false;
  if (hb.family == AF_INET) {
    auto* s = reinterpret_cast<sockaddr_in*>(&lis);
    s->sin_family = AF_INET;
    s->sin_port = hb.port;
    std::memcpy(&s->sin_addr, hb.addr, 4);
    if (s->sin_addr.s_addr == htonl(INADDR_ANY) && peer.ss_family == AF_INET)
      s->sin_addr = reinterpret_cast<sockaddr_in*>(&peer)->sin_addr;
    else if (peer.ss_family != AF_INET ||
             s->sin_addr.s_addr != reinterpret_cast<sockaddr_in*>(&peer)->sin_addr.s_addr)
      spoofed = true;
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&lis);
    s->sin6_family = AF_INET6;
    s->sin6_port = hb.port;
    std::memcpy(&s->sin6_addr, hb.addr, 16);
    if (IN6_IS_ADDR_UNSPECIFIED(&s->sin6_addr) && peer.ss_family == AF_INET6)
      s->sin6_addr = reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr;
    else if (peer.ss_family != AF_INET6 ||
             std::memcmp(&s->sin6_addr, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, 16) != 0)
      spoofed = true;
  }
  if (spoofed) {  // claims an address it does not connect from
    queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::bad_request), nullptr, 0);
    c->close_after_flush = true;
    c->state = conn::st::lost;
    flush(c);
    return;
  }
  c->peer = from_sockaddr(reinterpret_cast<sockaddr*>(&lis));
  try {
    if (test_hooks::take(test_hooks::fail_hellos)) throw std::bad_alloc();
    c->key = key_of(c->peer);
    const fi_addr_t a = av_ ? av_->reverse(c->peer) : addr_notavail;
    conn* existing = nullptr;
    if (auto it = by_key_.find(c->key); it != by_key_.end() && it->second != c && !it->second->dead)
      existing = it->second;
    if (c->key == my_key(c)) {
      // Sending to ourselves: this is the receiving half of our own
      // connection; the sending half stays the path.
      c->state = conn::st::established;
      c->addr = a;
      queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), nullptr, 0, true);
      flush(c);
      return;
    }
    if (existing && (c->cur.flags & wire::flag::replace)) {
      // The peer has no live connection to us any more: ours is stale.
      adopt(c, a);
      queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), nullptr, 0, true);
      move_user_ops(existing, c);
      fail_conn(existing, errc::peer_dead, "replaced by a new connection from the peer");
      flush(c);
      return;
    }
    const bool ours_pending = existing && existing->outgoing &&
                              (existing->state == conn::st::connecting || existing->state == conn::st::wait_ack);
    if ((ours_pending && my_key(c) < c->key) || (existing && existing->state == conn::st::established)) {
      // Both connected at once and ours wins, or this is the other side's
      // losing connection arriving late: the peer uses the existing one.
      queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::duplicate), nullptr, 0);
      c->state = conn::st::lost;
      c->close_after_flush = true;
      flush(c);
      return;
    }
    if (existing && !existing->dup_loser &&
        (existing->state == conn::st::closing || existing->state == conn::st::lost)) {
      // The old connection is still closing: read this one only after it, so
      // that no message overtakes an older one.
      c->held = true;
      c->held_on = existing;
      update_events(c);
      return;
    }
    adopt(c, a);
    queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), nullptr, 0, true);
    if (existing) {
      // Ours lost the simultaneous connect: its queued messages move over, in
      // order; it closes without carrying data (nor its hello, if unsent).
      move_user_ops(existing, c);
      existing->state = conn::st::lost;
      if (tx_op* h = existing->txq.front(); h && h->internal && h->sent == 0) {
        existing->txq.erase(h);
        complete_tx(h, errc::ok, "");
      }
      if (existing->txq.empty()) close_conn(existing);
      else existing->close_after_flush = true;
    }
    flush(c);
  } catch (...) {
    // Out of memory taking the connection: refused with the reason (the
    // peer's operations fail with busy quoting it; a bare close would look
    // like our death to a peer that knew us), and counted in the listener's
    // report of refusals for want of memory.
    static constexpr char reason[] = "out of memory accepting the connection";
    queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::no_resources), reason,
                sizeof reason - 1);
    c->close_after_flush = true;
    c->state = conn::st::lost;
    flush(c);
    count_memory_refusal();
  }
}

// The text of a hello_ack no_resources (the peer's reason): printable bytes only.
static void printable_reason(const conn* c, char (&out)[wire::max_cm_data + 1]) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < c->cur.len && i < wire::max_cm_data; ++i) {
    const unsigned char ch = c->ctrl[i];
    out[n++] = ch >= 0x20 && ch < 0x7f ? static_cast<char>(ch) : '?';
  }
  out[n] = 0;
}

void endpoint_impl::handle_hello_ack(conn* c) noexcept {
  const auto st = static_cast<wire::hello_status>(c->cur.data);
  if (msg_mode_) {
    if (st == wire::hello_status::ok) {
      c->state = conn::st::established;
      sockaddr_storage me{};
      socklen_t ml = sizeof me;
      if (::getsockname(c->fd, reinterpret_cast<sockaddr*>(&me), &ml) == 0)
        name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
      cm_event(eq_event::kind::connected, errc::ok, "", c->ctrl, c->cur.len);
      flush(c);
    } else {
      const bool rej = st == wire::hello_status::rejected;
      const bool full = st == wire::hello_status::no_resources;
      char why[512];
      if (full) {
        char reason[wire::max_cm_data + 1];
        printable_reason(c, reason);
        std::snprintf(why, sizeof why,
                      "the listener refused the connection: %s: free resources there (for descriptors: ulimit -n), "
                      "or retry later",
                      reason[0] ? reason : "out of resources");
      }
      cm_event(eq_event::kind::error, rej ? errc::permission_denied : full ? errc::busy : errc::io_error,
               rej    ? "the listener rejected the connection (its data is attached)"
               : full ? why
                      : "the listener refused the connection request as malformed",
               c->ctrl, c->cur.len);
      c->state = conn::st::lost;
      close_conn(c);
    }
    return;
  }
  if (st == wire::hello_status::ok) {
    c->state = conn::st::established;
    peer_up(c);
    flush(c);
    return;
  }
  if (st == wire::hello_status::no_resources) {
    // The peer could not take the connection (out of descriptors); its
    // reason follows as text (at most 256 bytes, the decoder's bound).
    char reason[wire::max_cm_data + 1];
    printable_reason(c, reason);
    char why[512];
    std::snprintf(why, sizeof why,
                  "%s refused the connection: %s: it must free resources (for descriptors: raise ulimit -n), or retry "
                  "later",
                  text_of(c->peer).s, reason[0] ? reason : "out of resources");
    fail_conn(c, errc::busy, why);
    return;
  }
  if (st == wire::hello_status::duplicate) {
    // The peer's connection to us wins; our messages go there once it is known.
    c->state = conn::st::lost;
    c->dup_loser = true;
    auto it = by_key_.find(c->key);
    if (it != by_key_.end() && it->second != c && !it->second->dead) {
      move_user_ops(c, it->second);
      flush(it->second);
    } else {
      // The winner has not been accepted yet: keep the queue until it is
      // (handle_hello moves it), the connect timeout bounds the wait.
      c->started = util::now_ns();
      return;
    }
    close_conn(c);
    return;
  }
  fail_conn(c, errc::io_error, "the peer refused the connection (bad hello)");
}

// Allocates first (the caller catches), then changes nothing that can fail.
void endpoint_impl::adopt(conn* c, fi_addr_t a) {
  index_peer(a);
  by_key_[c->key] = c;
  c->state = conn::st::established;
  c->addr = a;
  if (a != addr_notavail && a != addr_unspec) by_addr_[a] = c;
  peer_up(c);
}

void endpoint_impl::move_user_ops(conn* from, conn* to) noexcept {
  from->credit_wait = false;  // its waiting request moves (and waits anew there if it must)
  for (tx_op* op = from->txq.front(); op;) {
    tx_op* next = from->txq.next(op);
    if (!op->internal && op->sent == 0) {
      from->txq.erase(op);
      to->txq.push_back(op);
    }
    op = next;
  }
  set_out(to, !to->txq.empty());
}

// ------------------------------------------------------------- teardown

// Whatever a connection was receiving ends with it: the receive being filled
// completes with an error, buffers and list entries pointing at it go away.
void endpoint_impl::abort_receives(conn* c, errc e, const char* why) noexcept {
  if (c->rstage == conn::rs::user && c->rx == &c->sink) {
    // An answer cut short (one awaiting its trailer is still in c->await: it ends below).
    if (c->sink_op && !c->sink_more) finish_part(c->sink_op, e, why);
    c->sink_op = nullptr;
    c->sink_more = false;
    c->rx = nullptr;
  } else if (c->rstage == conn::rs::user && c->rx) {
    rx_error(c->rx, e, why);
    c->rx = nullptr;
  }
  // requests sent here will never be answered
  while (tx_op* op = c->await.front()) {
    c->await.erase(op);
    op->on = nullptr;
    finish_part(op, e == errc::canceled ? errc::peer_dead : e,
                "the connection to the target was lost before it answered (the operation may or may not have "
                "taken effect)");
  }
  if (c->rstage == conn::rs::unexp && c->ux) {
    uxp_.put(c->ux);
    c->ux = nullptr;
  }
  for (auto* l : {&ux_msg_, &ux_tag_, &claimed_}) {
    for (unexp* u = l->front(); u;) {
      unexp* next = l->next(u);
      if (u->stalled == c) {  // a large message still in this socket is gone
        l->erase(u);
        u->stalled = nullptr;
        u->claim_ctx = nullptr;
        uxp_.put(u);
      }
      u = next;
    }
  }
  c->rstage = conn::rs::header;
  set_lowat(c, 1);
}

void endpoint_impl::close_conn(conn* c) noexcept {
  if (c->dead) return;
  abort_receives(c, errc::canceled, "the connection was closed while this message was arriving");
  // Transmit-complete writes no answer came for: none can come now (they
  // completed when they left); their failure slots come back.
  retire_tc(c, c->tc_sent);
  c->retirers = 0;
  // user messages still queued (deferred during an idle close) get a new path
  util::ilist<tx_op> keep;
  for (tx_op* op = c->txq.front(); op;) {
    tx_op* next = c->txq.next(op);
    c->txq.erase(op);
    if (!op->internal && op->sent == 0) keep.push_back(op);
    else end_op(op, op->internal ? errc::ok : errc::peer_dead, "connection closed before the message left");
    op = next;
  }
  c->dead = true;
  need_reap_ = true;
  if (c == single_) single_ = nullptr;  // freed by reap(): never used again
  if (c == direct_conn_) direct_conn_ = nullptr;
  if (c->fd >= 0) {
    dom_->eng().del(c->fd);
    ::close(c->fd);
    c->fd = -1;
  }
  if (auto it = by_key_.find(c->key); it != by_key_.end() && it->second == c) by_key_.erase(it);
  if (c->addr < by_addr_.size() && by_addr_[c->addr] == c) by_addr_[c->addr] = nullptr;
  // New connections from the same peer waited for this one: take every one
  // now, in the order they came (conns_ order). The first is adopted; the
  // others find it established and are told to use it (duplicate). None is
  // left held on a connection that no longer exists.
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conn* h = conns_[i].get();
    if (!h->held || h->dead || h->held_on != c) continue;
    h->held = false;
    h->held_on = nullptr;
    update_events(h);
    handle_hello(h);
    if (!h->dead && !paused(h)) {
      consume(h);
      if (!h->dead) read_conn(h);
    }
  }
  if (!keep.empty() && msg_mode_) {  // a MSG connection is never reopened behind the user's back
    while (tx_op* op = keep.front()) {
      keep.erase(op);
      end_op(op, errc::canceled, "the connection was closed before the message left");
    }
  }
  if (!keep.empty()) {
    conn* n = nullptr;
    errc why = errc::peer_dead;
    if (auto it = by_key_.find(c->key); it != by_key_.end() && !it->second->dead) n = it->second;
    if (!n && !c->key.empty()) {
      try {
        n = open_conn(c->peer, c->key, c->addr);
      } catch (...) {
        n = nullptr;
        why = errc::no_memory;
      }
    }
    while (tx_op* op = keep.front()) {
      keep.erase(op);
      if (n) n->txq.push_back(op);
      else end_op(op, why, why == errc::no_memory ? "out of memory reconnecting to the peer" : "cannot reconnect to the peer");
    }
    if (n) set_out(n, true);
  }
}

void endpoint_impl::fail_conn(conn* c, errc e, const char* why) noexcept {
  if (c->dead) return;
  if (msg_mode_ && c == single_) {
    if (c->state == conn::st::connecting || c->state == conn::st::wait_ack) {
      cm_event(eq_event::kind::error, e, why, nullptr, 0);
    } else if (c->state == conn::st::established) {
      cm_event(eq_event::kind::shutdown, e, why, nullptr, 0);
      cancel_posted();
    }
  }
  while (tx_op* op = c->txq.front()) {
    c->txq.erase(op);
    end_op(op, e, why);
  }
  abort_receives(c, e, why);
  close_conn(c);
}

}  // namespace weft::prov::tcp

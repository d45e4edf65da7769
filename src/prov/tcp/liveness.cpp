// tcp endpoint: liveness. A peer whose connection fails on its socket is
// dead: its directed receives and operations in flight complete with
// peer_dead and the application is told once (an EQ event, or a CQ error
// entry). A listener out of file descriptors refuses connections with a
// reason instead of leaving them hanging. Events wait here, in room
// reserved when connections were made, until they can be delivered.
// docs/design.md, "Peer failure".
#include <linux/tcp.h>  // tcp_info with tcpi_notsent_bytes (glibc's copy predates it)
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "prov/tcp/endpoint.hpp"
#include "util/clock.hpp"

namespace weft::prov::tcp {

void describe_fd_shortage(int err, char* out, std::size_t n) noexcept {
  if (err == ENFILE) {
    std::snprintf(out, n, "the system is out of file descriptors (ENFILE: fs.file-max)");
    return;
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    std::snprintf(out, n, "out of file descriptors (RLIMIT_NOFILE %llu)",
                  static_cast<unsigned long long>(rl.rlim_cur));
  else
    std::snprintf(out, n, "out of file descriptors (EMFILE)");
}

// ------------------------------------------------------------ peer failure

// Data the kernel holds for the peer (sent and unacknowledged, or waiting
// for its window) is the one case keep-alive does not cover. Linux's
// TCP_USER_TIMEOUT would, but it applies to zero-window probing too: a
// sender that queued more than the peer's buffers hold and then computes
// without calling in would have its connection to a live, busy receiver
// aborted by its kernel after the timeout, though the receiver's kernel
// answers every probe. So the silence is judged here, at tick time (an
// application learns of a death only by calling in, and waits wake for
// ticks), from TCP_INFO, by judge() (liveness_rule.hpp, which says the
// rule). TCP_INFO takes the socket's lock: it is read at most every
// timeout/8 per connection, so a death is seen within timeout + timeout/8
// of its silence. Once the kernel holds nothing, the connection is idle and
// keep-alive watches it.
void endpoint_impl::watch_in_flight(conn* c, std::uint64_t now) noexcept {
  if (c->fd < 0 || c->dead) return;
  if (!c->in_kernel) {
    c->in_kernel = true;
    c->kernel_since = now;
  }
  const std::uint64_t to = static_cast<std::uint64_t>(cfg_.timeout_ms) * 1'000'000ull;
  if (now < c->info_next) return;
  c->info_next = now + std::max<std::uint64_t>(to / 8, 1'000'000ull);
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return;
  if (len < offsetof(tcp_info, tcpi_notsent_bytes) + sizeof ti.tcpi_notsent_bytes) {
    // A kernel before 4.6 cannot say what waits for the window: its own
    // user timeout bounds data in flight there (and, as Linux applies it to
    // zero-window probing, also a busy receiver's closed window).
    if (!c->user_timeout) {
      const unsigned ms = static_cast<unsigned>(cfg_.timeout_ms);
      (void)::setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
      c->user_timeout = true;
    }
    return;
  }
  const kernel_view k{ti.tcpi_unacked,       ti.tcpi_notsent_bytes,       ti.tcpi_probes,
                      ti.tcpi_last_ack_recv, ti.tcpi_last_data_recv, ti.tcpi_rto / 1000u};
  const std::uint64_t ms = now / 1'000'000ull;
  if (!c->watch.holding) {
    c->watch.holding = true;
    c->watch.since = c->kernel_since / 1'000'000ull;
  }
  const verdict v = judge(k, c->watch, ms, static_cast<std::uint64_t>(cfg_.timeout_ms));
  if (v == verdict::idle) {
    c->in_kernel = !c->txq.empty();  // nothing in the kernel (what waits in txq will be watched once written)
    c->kernel_since = now;
    return;
  }
  if (v != verdict::dead) return;
  const std::uint64_t silence = std::min({k.since_ack, k.since_data, ms - c->watch.since});
  char why[200];
  std::snprintf(why, sizeof why,
                "its host answered nothing for %llu ms with data in flight (WEFT_TCP_TIMEOUT_MS %d)",
                static_cast<unsigned long long>(silence), cfg_.timeout_ms);
  lose_conn(c, errc::peer_dead, why);
}

void endpoint_impl::sync_av() noexcept {
  if (!av_ || av_->version() == av_version_) return;
  // An entry was removed (and may name another peer now): nothing known per
  // entry holds any more.
  std::fill(by_addr_.begin(), by_addr_.end(), nullptr);
  std::fill(peer_state_.begin(), peer_state_.end(), std::uint8_t{0});
  av_version_ = av_->version();
}

void endpoint_impl::av_removed(fi_addr_t h) noexcept {
  for (auto& c : conns_)
    if (c->addr == h) c->addr = addr_notavail;
  for (auto* l : {&ux_msg_, &ux_tag_, &claimed_})
    for (unexp* u = l->front(); u; u = l->next(u))
      if (u->src == h) u->src = addr_notavail;
  if (h < by_addr_.size()) by_addr_[h] = nullptr;
  if (h < peer_state_.size()) peer_state_[h] = 0;
}

void endpoint_impl::av_inserted(fi_addr_t h, const std::string& key) noexcept {
  for (auto& c : conns_)
    if (!c->dead && c->addr == addr_notavail && c->key == key) c->addr = h;
}

bool endpoint_impl::is_dead(fi_addr_t a) noexcept {
  sync_av();
  return a < peer_state_.size() && (peer_state_[a] & peer_gone);
}

void endpoint_impl::peer_up(conn* c) noexcept {
  c->was_up = true;
  if (c->addr < peer_state_.size()) peer_state_[c->addr] = peer_known;  // alive: a dead one is a new peer now
}

void endpoint_impl::lose_conn(conn* c, errc e, const char* why) noexcept {
  if (c->dead) return;
  const bool socket_failure = e == errc::peer_dead || e == errc::timed_out;
  const bool known = c->was_up || (c->addr < peer_state_.size() && (peer_state_[c->addr] & peer_known));
  if (msg_mode_ || c->key.empty() || !socket_failure || !known) {
    fail_conn(c, e, why);
    return;
  }
  // Its operations fail first (in order, before the report), then the peer.
  fail_conn(c, errc::peer_dead, why);
  peer_lost(c, true, why);
}

void endpoint_impl::peer_lost(conn* c, bool died, const char* why) noexcept {
  const fi_addr_t a = c->addr;
  const bool in_av = a < peer_state_.size();
  const addr_text name = text_of(c->peer);
  if (in_av) {
    if (peer_state_[a] & peer_gone) return;  // told already; not up since
    peer_state_[a] |= peer_gone;
    // Receives only that peer could complete never will.
    char msg[160];
    std::snprintf(msg, sizeof msg, "the peer %s %s: this receive directed at it cannot complete", name.s,
                  died ? "died or lost its connection" : "closed its endpoint");
    for (auto* l : {&posted_msg_, &posted_tag_})
      for (rx_op* r = l->front(); r;) {
        rx_op* next = l->next(r);
        if (r->src_filter == a) {
          l->erase(r);
          rx_error(r, errc::peer_dead, msg);
        }
        r = next;
      }
  }
  char msg[160];
  if (died)
    std::snprintf(msg, sizeof msg, "the peer %s is dead (%s): its operations failed; a send reconnects", name.s, why);
  else
    std::snprintf(msg, sizeof msg, "the peer %s closed its endpoint", name.s);
  push_event(eq_event::kind::peer_dead, errc::peer_dead, c->peer, in_av ? a : addr_notavail, msg, nullptr, 0,
             died && in_av);
}

void endpoint_impl::say_bye(conn* c) noexcept {
  // A forked child closing its copy: the connection is the parent's (no bye
  // for the peer, and its input is the parent's to read).
  if (!creator_.is_this_process()) return;
  if (msg_mode_ || c->fd < 0 || c->dead || c->key.empty() || !c->was_up) return;
  if (c->state != conn::st::established && c->state != conn::st::closing) return;
  if (tx_op* op = c->txq.front(); op && op->sent > 0) return;  // mid-frame: the peer sees a cut (a death)
  const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::close_req), 0, 0, 0, 0,
                             1};
  (void)::send(c->fd, &h, sizeof h, MSG_NOSIGNAL | MSG_DONTWAIT);
  // Unread input would make close() reset the connection, and the peer
  // could lose the bye: drain what is there (bounded).
  std::uint8_t sink[4096];
  for (int i = 0; i < 64 && ::recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
}

// ------------------------------------------------------------------ events

void endpoint_impl::push_event(eq_event::kind k, errc e, const address& peer, fi_addr_t a, const char* msg,
                               const std::uint8_t* data, std::size_t len, bool cq_too, std::uint8_t report) noexcept {
  // Room was reserved (init, add_conn): one event per connection, one for
  // each of the listener's reports, a few for a MSG endpoint's connection.
  if (events_.size() == events_.capacity()) return;  // not reached: see the reservations
  events_.emplace_back();
  pending_event& p = events_.back();
  p.kind = k;
  p.err = e;
  p.peer = peer;
  p.addr = a;
  std::snprintf(p.msg, sizeof p.msg, "%s", msg);
  p.cq_too = cq_too;
  p.report = report;
  p.data_len = static_cast<std::uint16_t>(std::min(len, sizeof p.data));
  if (p.data_len && data) std::memcpy(p.data, data, p.data_len);
  deliver_events();
}

// In order, as far as they go: an EQ event (its allocation failing: it
// waits for the next progress), else, for a death or the listener's report
// on an RDM endpoint (cq_too), a CQ error entry when the CQ has room (flags
// recv, no context, data = the peer's fi_addr_t). An orderly close, and a
// peer the application has no name for (not in its address vector), go to
// an EQ only.
void endpoint_impl::deliver_events() noexcept {
  std::size_t done = 0;
  for (; done < events_.size(); ++done) {
    pending_event& p = events_[done];
    if (p.report == report_memory)  // every refusal until now, however many (they share this one place)
      std::snprintf(p.msg, sizeof p.msg,
                    "out of memory accepting connections: %zu refused (each peer was told no_resources); they may "
                    "retry once memory is free",
                    oom_refused_);
    if (p.report == report_watch)
      std::snprintf(p.msg, sizeof p.msg,
                    "cannot watch accepted connections (epoll_ctl: %s): %zu refused (each peer was told why); close "
                    "descriptors or raise fs.epoll.max_user_watches",
                    std::strerror(watch_errno_), watch_refused_);
    if (eq_) {
      try {
        eq_event ev;
        ev.type = p.kind;
        ev.context = context;
        ev.err = p.err;
        ev.message = p.msg;
        ev.peer = p.peer;
        ev.addr = p.addr;
        if (p.data_len)
          ev.data.assign(reinterpret_cast<const std::byte*>(p.data),
                         reinterpret_cast<const std::byte*>(p.data) + p.data_len);
        eq_->push(std::move(ev));
      } catch (...) {
        break;
      }
    } else if (p.cq_too && rxcq_) {
      if (!rxcq_->reserve()) break;
      cq_err_entry ee;
      ee.flags = flag::recv;
      ee.err = p.err;
      ee.data = p.addr;
      std::snprintf(ee.msg, sizeof ee.msg, "%s", p.msg);
      rxcq_->push_error(ee);
    }
    if (p.report == report_fd) fd_report_ = false;
    if (p.report == report_memory) {
      oom_refused_ = 0;
      oom_queued_ = false;
    }
    if (p.report == report_watch) {
      watch_refused_ = 0;
      watch_queued_ = false;
    }
  }
  if (done) events_.erase(events_.begin(), events_.begin() + static_cast<std::ptrdiff_t>(done));
}

// ----------------------------------------------------- descriptor shortage

// Connections opened while out of descriptors: their operations fail with
// an error that names the limit.
void endpoint_impl::fail_doomed() noexcept {
  need_doom_ = false;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conn* c = conns_[i].get();
    if (c->dead || !c->doom) continue;
    char lim[96];
    describe_fd_shortage(c->doom, lim, sizeof lim);
    char why[256];
    std::snprintf(why, sizeof why, "cannot open a socket to %s: %s: raise the limit (ulimit -n) or close descriptors",
                  text_of(c->peer).s, lim);
    fail_conn(c, errc::no_memory, why);
  }
}

void endpoint_impl::report_descriptors(int err) noexcept {
  if (fd_short_) return;  // once per shortage
  fd_short_ = true;
  fd_errno_ = err;
  if (fd_report_) return;  // the last report is not delivered yet
  fd_report_ = true;
  char lim[96];
  describe_fd_shortage(err, lim, sizeof lim);
  char msg[200];
  std::snprintf(msg, sizeof msg, "%s: connections from peers are refused until descriptors are free: raise ulimit -n",
                lim);
  push_event(eq_event::kind::error, errc::no_memory, name_, addr_notavail, msg, nullptr, 0, true, report_fd);
}

bool endpoint_impl::refuse_for_descriptors(int err) noexcept {
  report_descriptors(err);
  // Say why, then close: the peer's connect fails at once with the reason.
  char lim[96];
  describe_fd_shortage(err, lim, sizeof lim);
  const std::size_t n = std::strlen(lim);
  std::uint8_t frame[sizeof(wire::frame_header) + sizeof lim];
  const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::hello_ack), 0, 0, n, 0,
                             static_cast<std::uint64_t>(wire::hello_status::no_resources)};
  std::memcpy(frame, &h, sizeof h);
  std::memcpy(frame + sizeof h, lim, n);
  const int r = dom_->refuse_with_spare(lfd_, frame, sizeof h + n);
  if (r == 0) return false;  // nobody waits
  if (r < 0) {
    // No spare descriptor: the listener would stay readable and spin the
    // engine. Stop listening for a while; tick() resumes it.
    dom_->eng().mod(lfd_, &lst_, 0);
    accept_paused_until_ = util::now_ns() + 100'000'000ull;
    return false;
  }
  accept_paused_until_ = 0;
  return true;
}

}  // namespace weft::prov::tcp

// ------------------------------------------------------- out of memory

namespace weft::prov::tcp {

void endpoint_impl::refuse_for_memory(int fd) noexcept {
  static constexpr char reason[] = "out of memory accepting the connection";
  refuse_accepted(fd, reason);
  count_memory_refusal();
}

// Counted, and reported by one event however many come before it is
// delivered (its text is made then, deliver_events): a burst of refusals
// while the event queue or CQ cannot take events fills no room that a
// peer's death needs.
void endpoint_impl::count_memory_refusal() noexcept {
  ++oom_refused_;
  if (oom_queued_) {
    deliver_events();
    return;
  }
  oom_queued_ = true;
  push_event(eq_event::kind::error, errc::no_memory, name_, addr_notavail, "", nullptr, 0, true, report_memory);
}

void refuse_version(int fd, std::uint8_t theirs, char (&why)[200]) noexcept {
  // Every version keeps the frame header's layout and hello_ack no_resources
  // with its reason as text (docs/wire/tcp.md, "Versions"): the peer reads
  // why it was refused.
  char reason[wire::max_cm_data];
  const int n = std::snprintf(reason, sizeof reason,
                              "weft tcp wire version mismatch: you speak version %u, this peer version %u: use the "
                              "same weft release on both sides",
                              theirs, wire::version);
  std::uint8_t frame[sizeof(wire::frame_header) + wire::max_cm_data];
  const std::size_t len = std::min<std::size_t>(n > 0 ? static_cast<std::size_t>(n) : 0, sizeof reason - 1);
  const wire::frame_header h{wire::magic, theirs, static_cast<std::uint8_t>(wire::op::hello_ack), 0, 0, len, 0,
                             static_cast<std::uint64_t>(wire::hello_status::no_resources)};
  std::memcpy(frame, &h, sizeof h);
  std::memcpy(frame + sizeof h, reason, len);
  (void)::send(fd, frame, sizeof h + len, MSG_NOSIGNAL | MSG_DONTWAIT);  // a new socket's buffer takes it
  ::shutdown(fd, SHUT_WR);
  std::uint8_t sink[512];
  for (int i = 0; i < 4 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  std::snprintf(why, sizeof why,
                "refused a connection from a peer speaking weft tcp wire version %u (this build speaks version %u): "
                "use the same weft release on both sides",
                theirs, wire::version);
}

void refuse_accepted(int fd, const char* reason) noexcept {
  const std::size_t n = std::min(std::strlen(reason), wire::max_cm_data);
  std::uint8_t frame[sizeof(wire::frame_header) + wire::max_cm_data];
  const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::hello_ack), 0, 0, n, 0,
                             static_cast<std::uint64_t>(wire::hello_status::no_resources)};
  std::memcpy(frame, &h, sizeof h);
  std::memcpy(frame + sizeof h, reason, n);
  (void)::send(fd, frame, sizeof h + n, MSG_NOSIGNAL | MSG_DONTWAIT);  // a new socket's buffer takes it
  // A FIN after the answer, and no unread hello: close() with unread input
  // would reset the connection, and the peer could lose the answer.
  ::shutdown(fd, SHUT_WR);
  std::uint8_t sink[512];
  for (int i = 0; i < 4 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  ::close(fd);
}

void endpoint_impl::count_watch_refusal(int err) noexcept {
  ++watch_refused_;
  watch_errno_ = err;
  if (watch_queued_) {
    deliver_events();
    return;
  }
  watch_queued_ = true;
  push_event(eq_event::kind::error, errc::no_memory, name_, addr_notavail, "", nullptr, 0, true, report_watch);
}

}  // namespace weft::prov::tcp

// tcp endpoint: receiving (frame decoding, matching, unexpected messages).
#include <cstdio>

#include "prov/tcp/endpoint.hpp"
#include "util/clock.hpp"

namespace weft::prov::tcp {

// ---------------------------------------------------------------- receiving

// Reads what the socket has; true when there were bytes to consume.
bool endpoint_impl::read_conn(conn* c) noexcept {
  bool got = c->rpos != c->rend;  // bytes already buffered count
  for (int rounds = 0; rounds < 16 && !c->dead && !c->held && !paused(c); ++rounds) {
    if (c->rpos == c->rend) {
      c->rpos = c->rend = 0;
      if (c->rstage == conn::rs::user) {
        const std::size_t want = c->cur.len - c->pay_got;
        // A write's piece goes into the region under the access lock (released
        // right after the readv, and at the end of this block otherwise).
        std::unique_lock<std::mutex> lk;
        if (c->rx == &c->sink && !c->sink_op && c->pay_got < c->rx->cap && want >= direct_read_min)
          (void)sink_check(c, std::min<std::size_t>(want, 256 * 1024), lk);
        const std::size_t room = c->pay_got < c->rx->cap ? c->rx->cap - c->pay_got : 0;
        if (want >= direct_read_min && room >= direct_read_min) {
          // large payload: straight into the receive buffer
          ::iovec v[max_iov];
          const std::size_t chunk = (c->rx == &c->sink && !c->sink_op) ? std::min<std::size_t>(256 * 1024, want)
                                                                          : want;
          std::size_t n = slice_from(c->rx->iov, c->rx->iov_count, c->pay_got, std::min(chunk, room), v, max_iov);
          ssize_t r = ::readv(c->fd, v, static_cast<int>(n));
          const int rerr = errno;
          if (lk.owns_lock()) lk.unlock();
          errno = rerr;
          if (r > 0) {
            got = true;
            c->pay_got += static_cast<std::size_t>(r);
            ++c->activity;
            const std::size_t left = c->cur.len - c->pay_got;
            const std::size_t room_left = c->pay_got < c->rx->cap ? c->rx->cap - c->pay_got : 0;
            // Wake for the rest in large pieces, not for every segment; only
            // while the rest goes straight into the receive buffer.
            set_lowat(c, left >= direct_read_min && room_left >= direct_read_min
                             ? static_cast<int>(std::min<std::size_t>(std::min(left, room_left), 256 * 1024))
                             : 1);
            if (c->pay_got == c->cur.len) finish_user(c);
            else if (static_cast<std::size_t>(r) < std::min(want, room)) return got;  // drained for now
            continue;
          }
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return got;
          if (r < 0 && errno == EFAULT) {  // our memory, not the peer: nothing of the piece was consumed
            payload_fault(c);
            continue;
          }
          const int err = r == 0 ? 0 : errno;
          char why[160];
          if (r == 0)
            std::snprintf(why, sizeof why, "connection to %s closed by the peer in the middle of a message",
                          text_of(c->peer).s);
          else
            std::snprintf(why, sizeof why, "receive from %s failed: %s", text_of(c->peer).s, std::strerror(err));
          lose_conn(c, r == 0 ? errc::peer_dead : errno_to_errc(err), why);
          return got;
        }
      }
      // After a large frame the next is likely large too: read its start
      // only, so that its payload goes straight into place, not via rbuf.
      const std::size_t want = c->bulk ? bulk_read : rbuf_size;
      ssize_t r = ::recv(c->fd, c->rbuf.get(), want, MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return got;
        const int err = errno;
        char why[160];
        std::snprintf(why, sizeof why, "receive from %s failed: %s", text_of(c->peer).s, std::strerror(err));
        lose_conn(c, errno_to_errc(err), why);
        return got;
      }
      if (r == 0) {
        const bool clean = c->rstage == conn::rs::header && c->hdr_got == 0;
        if (msg_mode_ && clean && c->state == conn::st::established) {
          // the peer shut the connection down: an event, and posted receives end
          cm_event(eq_event::kind::shutdown, errc::ok, "", nullptr, 0);
          cancel_posted();
          close_conn(c);
        } else if (clean && (c->state == conn::st::lost || c->state == conn::st::closing)) close_conn(c);
        else {
          char why[160];
          std::snprintf(why, sizeof why, "connection to %s closed by the peer%s", text_of(c->peer).s,
                        clean ? "" : " in the middle of a message");
          lose_conn(c, errc::peer_dead, why);
        }
        return got;
      }
      got = true;
      c->rend = static_cast<std::size_t>(r);
      ++c->activity;
      if (c->rend < want) {  // a short read drained the socket: no second recv for EAGAIN
        consume(c);
        return got;
      }
    }
    consume(c);
  }
  return got;
}

void endpoint_impl::consume(conn* c) noexcept {
  while (c->rpos < c->rend && !c->dead && !c->held) {
    const std::uint8_t* p = c->rbuf.get() + c->rpos;
    const std::size_t avail = c->rend - c->rpos;
    switch (c->rstage) {
      case conn::rs::header: {
        const std::size_t take = std::min(avail, sizeof c->hdr - c->hdr_got);
        std::memcpy(c->hdr + c->hdr_got, p, take);
        c->hdr_got += take;
        c->rpos += take;
        if (c->hdr_got == sizeof c->hdr) {
          c->hdr_got = 0;
          on_header(c);
        }
        break;
      }
      case conn::rs::user: {
        const std::size_t take = std::min(avail, c->cur.len - c->pay_got);
        {
          std::unique_lock<std::mutex> lk;  // a write's piece goes into the region under it
          if (c->rx == &c->sink && !c->sink_op && c->pay_got < c->rx->cap) (void)sink_check(c, take, lk);
          if (c->pay_got < c->rx->cap)
            scatter(c->rx->iov, c->rx->iov_count, c->pay_got, p, std::min(take, c->rx->cap - c->pay_got));
        }
        c->pay_got += take;
        c->rpos += take;
        if (c->pay_got == c->cur.len) finish_user(c);
        break;
      }
      case conn::rs::unexp: {
        const std::size_t take = std::min(avail, c->cur.len - c->pay_got);
        std::memcpy(c->ux->payload + c->pay_got, p, take);
        c->pay_got += take;
        c->rpos += take;
        if (c->pay_got == c->cur.len) finish_unexp(c);
        break;
      }
      case conn::rs::ctrl: {
        const std::size_t take = std::min(avail, c->ctrl_want - c->pay_got);
        std::memcpy(c->ctrl + c->pay_got, p, take);
        c->pay_got += take;
        c->rpos += take;
        if (c->pay_got == c->ctrl_want) {
          c->rstage = conn::rs::header;
          on_ctrl(c);
        }
        break;
      }
      case conn::rs::discard: {
        const std::size_t take = std::min(avail, c->cur.len - c->pay_got);
        c->pay_got += take;
        c->rpos += take;
        if (c->pay_got == c->cur.len) c->rstage = conn::rs::header;
        break;
      }
      case conn::rs::stalled:
      case conn::rs::answers: return;
    }
  }
}

void endpoint_impl::on_header(conn* c) noexcept {
  wire::status s = wire::decode_header(c->hdr, sizeof c->hdr, max_msg_size, c->cur);
  if (s == wire::status::bad_version && c->fd >= 0) [[unlikely]] {
    // Another wire version (docs/wire/tcp.md, "Versions"): its hello is
    // refused with a reason the peer can read; its answer to our hello
    // (its own refusal, in its version) ends ours with a clear message.
    char why[200];
    if (!c->outgoing && c->state == conn::st::wait_hello) {
      refuse_version(c->fd, c->hdr[1], why);
    } else {
      std::snprintf(why, sizeof why,
                    "%s speaks weft tcp wire version %u, this build version %u: connection dropped; use the same weft "
                    "release on both sides",
                    c->key.empty() ? "an unidentified peer" : text_of(c->peer).s, c->hdr[1], wire::version);
    }
    fail_conn(c, errc::not_supported, why);
    return;
  }
  if (s != wire::status::ok) {
    char why[160];
    std::snprintf(why, sizeof why, "protocol error from %s: %s; connection dropped",
                  c->key.empty() ? "an unidentified peer" : text_of(c->peer).s, wire::to_string(s));
    fail_conn(c, errc::io_error, why);
    return;
  }
  const auto code = static_cast<wire::op>(c->cur.op);
  const bool identified = c->state == conn::st::established || c->state == conn::st::closing ||
                          (c->state == conn::st::lost && !c->key.empty());
  c->pay_got = 0;
  switch (code) {
    case wire::op::hello:
      if (c->outgoing || c->state != conn::st::wait_hello) {
        fail_conn(c, errc::io_error, "protocol error: unexpected hello; connection dropped");
        return;
      }
      c->rstage = conn::rs::ctrl;
      c->ctrl_want = c->cur.len;
      break;
    case wire::op::hello_ack:
      if (!c->outgoing || c->state != conn::st::wait_ack) {
        fail_conn(c, errc::io_error, "protocol error: unexpected hello_ack; connection dropped");
        return;
      }
      c->rstage = conn::rs::ctrl;
      c->ctrl_want = c->cur.len;
      if (c->cur.len == 0) {
        c->rstage = conn::rs::header;
        on_ctrl(c);
      }
      break;
    case wire::op::msg:
      if (!identified) {
        fail_conn(c, errc::io_error, "protocol error: message before hello; connection dropped");
        return;
      }
      (void)dispatch_msg(c);
      break;
    case wire::op::rma_write:
    case wire::op::rma_read:
    case wire::op::atomic:
    case wire::op::save:
      if (!identified) {
        fail_conn(c, errc::io_error, "protocol error: RMA request before hello; connection dropped");
        return;
      }
      if (!answer_room(c)) {
        // Too many answers owed (or none can be queued now): read nothing
        // more from this peer until they drain; progress resumes it.
        c->rstage = conn::rs::answers;
        ++answer_waits_;
        update_events(c);
        return;
      }
      c->rstage = conn::rs::ctrl;
      c->ctrl_want = code == wire::op::atomic ? c->cur.len : sizeof(wire::rma_req);
      break;
    case wire::op::rma_resp:
      if (!identified) {
        fail_conn(c, errc::io_error, "protocol error: RMA answer before hello; connection dropped");
        return;
      }
      handle_rma_resp(c);
      break;
    case wire::op::close_req:
      if (!identified) {
        fail_conn(c, errc::io_error, "protocol error: close before hello; connection dropped");
        return;
      }
      c->rstage = conn::rs::header;
      if (c->cur.data == 1) {
        // bye: the peer's endpoint is closing; nothing follows. Not a death,
        // but nothing directed at it can arrive any more.
        peer_lost(c, false, "it closed its endpoint");
        close_conn(c);
      } else if (c->state == conn::st::closing) {
        close_conn(c);  // both asked at once: each has read all of the other's data
      } else if (c->state == conn::st::established && c->txq.empty() && c->await.empty()) {
        // Idle here too: agree. Everything we sent precedes the close_ack.
        c->state = conn::st::lost;
        c->close_after_flush = true;
        queue_frame(c, wire::op::close_ack, 0, nullptr, 0);
        flush(c);
      } else {
        queue_frame(c, wire::op::close_ack, 1, nullptr, 0);  // busy: refuse
        flush(c);
      }
      break;
    case wire::op::close_ack:
      c->rstage = conn::rs::header;
      if (c->state != conn::st::closing || c->cur.data > 1) {
        fail_conn(c, errc::io_error, "protocol error: unexpected close_ack; connection dropped");
        return;
      }
      if (c->cur.data == 1) {  // refused: carry on, with what was queued meanwhile
        c->state = conn::st::established;
        c->last_active = util::now_ns();
        flush(c);
      } else {
        close_conn(c);
      }
      break;
  }
}

bool endpoint_impl::dispatch_msg(conn* c) noexcept {
  const bool tagged = c->cur.flags & wire::flag::tagged;
  auto& pl = tagged ? posted_tag_ : posted_msg_;
  rx_op* r = pl.find([&](const rx_op& x) {
    return util::source_matches(x.src_filter, c->addr) && (!tagged || util::tag_matches(x.tag, x.ignore, c->cur.tag));
  });
  if (r) {
    pl.erase(r);
    c->rx = r;
    c->rstage = conn::rs::user;
    if (c->cur.len == 0) finish_user(c);
    return true;
  }
  unexp* u = uxp_.get();
  if (!u) {  // no room for it: leave it in the socket until there is
    c->rstage = conn::rs::stalled;
    update_events(c);
    if (!c->in_list) {
      stalled_.push_back(c);  // capacity >= conns_.size() (add_conn): no allocation
      c->in_list = true;
    }
    return false;
  }
  u->flags = c->cur.flags;
  u->len = c->cur.len;
  u->tag = c->cur.tag;
  u->data = c->cur.data;
  u->src = c->addr;
  u->claim_ctx = nullptr;
  if (c->cur.len <= inject_size) {
    u->stalled = nullptr;
    c->ux = u;
    c->rstage = conn::rs::unexp;
    if (c->cur.len == 0) finish_unexp(c);
  } else {
    // large: the list entry stands for it; the bytes wait in the socket
    u->stalled = c;
    c->rstage = conn::rs::stalled;
    update_events(c);
    (tagged ? ux_tag_ : ux_msg_).push_back(u);
  }
  return true;
}

void endpoint_impl::set_lowat(conn* c, int v) noexcept {
  if (v == c->lowat || c->fd < 0) return;
  (void)::setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
  c->lowat = v;
}

// The payload's destination in this process cannot be written (EFAULT: a
// receive buffer or a read's local buffer unmapped or read-only, a region's
// memory unmapped without closing it). A local failure: only the operation
// it belongs to fails, the rest of the frame is read and dropped, and the
// connection carries on (the peer is fine and never learns of it, except
// through the error answer of a write).
void endpoint_impl::payload_fault(conn* c) noexcept {
  const std::size_t rest = c->cur.len - c->pay_got;
  set_lowat(c, 1);
  if (c->rx == &c->sink && !c->sink_op) {  // target: a write into a region whose memory is gone
    c->sink_err = errc::not_found;          // answered with it (sink_done), as after the monitor's report
    c->sink.cap = c->pay_got;               // nothing more is copied
    return;
  }
  if (c->rx == &c->sink) {  // initiator: a read's or fetch's answer into our buffers
    static constexpr char why[] =
        "the buffer of this read is not writable (EFAULT: unmapped or read-only memory): the answer was dropped";
    tx_op* op = c->sink_op;
    c->sink_op = nullptr;
    c->rx = nullptr;
    discard_payload(c, rest);
    if (c->sink_more) {  // its trailer ends it: with this failure, which comes first
      c->sink_more = false;
      tx_op* u = op->parent ? op->parent : op;
      if (u->part_err == errc::ok) {
        u->part_err = errc::io_error;
        std::snprintf(u->why, sizeof u->why, "%s", why);
      }
    } else {
      finish_part(op, errc::io_error, why);
    }
    return;
  }
  rx_op* r = c->rx;
  c->rx = nullptr;
  discard_payload(c, rest);
  rx_error(r, errc::io_error,
           "the receive buffer is not writable (EFAULT: unmapped or read-only memory): the message was dropped");
}

void endpoint_impl::finish_user(conn* c) noexcept {
  set_lowat(c, 1);  // small frames must wake us again
  c->bulk = c->cur.len >= direct_read_min;
  rx_op* r = c->rx;
  c->rx = nullptr;
  c->rstage = conn::rs::header;
  if (r == &c->sink) {
    sink_done(c);
    return;
  }
  complete_rx(r, std::min<std::size_t>(c->cur.len, r->cap), c->cur.len, c->cur.flags, c->cur.tag, c->cur.data,
              c->addr);
}

void endpoint_impl::finish_unexp(conn* c) noexcept {
  unexp* u = c->ux;
  c->ux = nullptr;
  c->rstage = conn::rs::header;
  // A receive posted while this message was still arriving did not see it:
  // it belongs to this message, which is older than anything after it.
  const bool tagged = u->flags & wire::flag::tagged;
  auto& pl = tagged ? posted_tag_ : posted_msg_;
  rx_op* r = pl.find([&](const rx_op& x) {
    return util::source_matches(x.src_filter, u->src) && (!tagged || util::tag_matches(x.tag, x.ignore, u->tag));
  });
  if (r) {
    pl.erase(r);
    deliver_unexpected(r, u);
    return;
  }
  (tagged ? ux_tag_ : ux_msg_).push_back(u);
}

void endpoint_impl::complete_rx(rx_op* r, std::size_t copied, std::size_t msg_len, std::uint8_t flags,
                                std::uint64_t tag, std::uint64_t data, fi_addr_t src) noexcept {
  const std::uint64_t f = r->flags | ((flags & wire::flag::cq_data) ? flag::remote_cq_data : 0);
  void* buf = r->iov_count ? r->iov[0].iov_base : nullptr;
  spi::count(cntrs_.recv.get(), copied >= msg_len);
  if (copied < msg_len) {
    cq_err_entry e;
    e.context = r->ctx;
    e.flags = f;
    e.len = copied;
    e.buf = buf;
    e.data = data;
    e.tag = tag;
    e.olen = msg_len - copied;
    e.err = errc::truncated;
    std::snprintf(e.msg, sizeof e.msg, "message of %zu bytes truncated to the %zu-byte receive buffer", msg_len,
                  copied);
    rxcq_->push_error(e);
  } else {
    rxcq_->push(cq_entry{r->ctx, f, copied, buf, data, tag, source_cap_ ? src : addr_unspec});
  }
  ++r->gen;
  rxp_.put(r);
}

void endpoint_impl::rx_error(rx_op* r, errc err, const char* why) noexcept {
  if (cntrs_.recv) cntrs_.recv->inc_err();
  cq_err_entry e;
  e.context = r->ctx;
  e.flags = r->flags;
  e.buf = r->iov_count ? r->iov[0].iov_base : nullptr;
  e.err = err;
  std::snprintf(e.msg, sizeof e.msg, "%s", why);
  rxcq_->push_error(e);
  ++r->gen;
  rxp_.put(r);
}

void endpoint_impl::deliver_unexpected(rx_op* r, unexp* u) noexcept {
  if (u->stalled) {
    conn* c = u->stalled;
    u->stalled = nullptr;
    uxp_.put(u);
    c->rx = r;
    c->rstage = conn::rs::user;
    update_events(c);
    consume(c);  // bytes already buffered, then the socket
    if (!c->dead && !paused(c)) read_conn(c);
    resume_stalled();
    return;
  }
  const std::size_t n = std::min(u->len, r->cap);
  scatter(r->iov, r->iov_count, 0, u->payload, n);
  complete_rx(r, n, u->len, u->flags, u->tag, u->data, u->src);
  uxp_.put(u);
  resume_stalled();
}

void endpoint_impl::drop_unexpected(unexp* u) noexcept {
  if (u->stalled) {
    conn* c = u->stalled;
    u->stalled = nullptr;
    c->rstage = conn::rs::discard;
    if (c->cur.len == 0) c->rstage = conn::rs::header;
    update_events(c);
    consume(c);
    if (!c->dead) read_conn(c);
  }
  u->claim_ctx = nullptr;
  uxp_.put(u);
  resume_stalled();
}

void endpoint_impl::resume_stalled() noexcept {
  // Connections stalled for lack of unexpected buffers (not those whose
  // large message waits for a receive: their header is in an unexp entry).
  for (std::size_t i = 0; i < stalled_.size();) {
    conn* c = stalled_[i];
    if (c->dead || c->rstage != conn::rs::stalled) {
      c->in_list = false;
      stalled_.erase(stalled_.begin() + static_cast<long>(i));
      continue;
    }
    if (uxp_.available() == 0) {  // only a posted receive can take it now
      const bool tagged = c->cur.flags & wire::flag::tagged;
      auto& pl = tagged ? posted_tag_ : posted_msg_;
      if (!pl.find([&](const rx_op& x) {
            return util::source_matches(x.src_filter, c->addr) &&
                   (!tagged || util::tag_matches(x.tag, x.ignore, c->cur.tag));
          })) {
        ++i;
        continue;
      }
    }
    c->in_list = false;
    stalled_.erase(stalled_.begin() + static_cast<long>(i));
    c->rstage = conn::rs::header;
    if (dispatch_msg(c)) {
      update_events(c);
      consume(c);
      if (!c->dead) read_conn(c);
    }
  }
}

errc endpoint_impl::recv(const msg_desc& m, std::uint64_t flags) noexcept {
  auto g = dom_->guard();
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("receive");
  if (m.iov_count > max_iov || (!m.iov && m.iov_count)) [[unlikely]]
    return spi::bad_iov("receive", m.iov_count, max_iov);
  if (spi::iov_overflows(m.iov, m.iov_count)) [[unlikely]]
    return spi::fail(errc::too_big, "receive: the iov lengths add up to more than 2^64 - 1 bytes (give at most "
                                    "SIZE_MAX bytes in all)");
  if (msg_mode_ && was_connected_ && !single_)
    return spi::fail(errc::peer_dead, "receive on a MSG endpoint whose connection has ended (shut down, or the peer "
                                      "is gone)");
  fi_addr_t src = util::any_source;
  if (m.addr != addr_unspec && !msg_mode_) {  // MSG endpoints have one peer
    if (!av_ || !av_->at(m.addr)) return spi::no_peer("receive", m.addr, av_ != nullptr);
    src = m.addr;
  }
  const bool tagged = flags & flag::tagged;
  if (flags & (flag::peek | flag::claim | flag::discard)) {
    if (!tagged) return spi::fail(errc::invalid_argument, "peek and claim are tagged operations (trecvmsg)");
    return peek_claim(m, flags, src);
  }
  rx_op* r = rxp_.get();
  if (!r) return again(again_reason::rx_full);
  if (!rxcq_->reserve()) {
    rxp_.put(r);
    return again(again_reason::cq_full);
  }
  r->ctx = m.context;
  r->flags = flag::recv | (tagged ? flag::tagged : flag::msg);
  std::copy_n(m.iov, m.iov_count, r->iov);
  r->iov_count = m.iov_count;
  r->cap = iov_total(m.iov, m.iov_count);
  r->src_filter = src;
  r->tag = m.tag;
  r->ignore = m.ignore;
  auto& uxl = tagged ? ux_tag_ : ux_msg_;
  unexp* u = uxl.find([&](const unexp& x) {
    return util::source_matches(src, x.src) && (!tagged || util::tag_matches(m.tag, m.ignore, x.tag));
  });
  if (u) {
    uxl.erase(u);
    deliver_unexpected(r, u);
    return errc::ok;
  }
  if (src != util::any_source && is_dead(src)) [[unlikely]] {
    // Directed at a peer declared dead (and not connected since): nothing
    // can come from it; the receive ends at once instead of waiting forever.
    char why[256];
    std::snprintf(why, sizeof why, "the peer %s died or closed its endpoint: nothing can arrive from it (a send to it reconnects)",
                  text_of(*av_->at(src)).s);
    rx_error(r, errc::peer_dead, why);
    return errc::ok;
  }
  (tagged ? posted_tag_ : posted_msg_).push_back(r);
  if (!stalled_.empty()) resume_stalled();  // a connection stalled for buffers may match it
  return errc::ok;
}

errc endpoint_impl::peek_claim(const msg_desc& m, std::uint64_t flags, fi_addr_t src) noexcept {
  if (!rxcq_->reserve()) return again(again_reason::cq_full);
  const std::uint64_t cflags = flag::recv | flag::tagged;
  if (flags & flag::peek) {
    progress();
    unexp* u = ux_tag_.find([&](const unexp& x) {
      return util::source_matches(src, x.src) && util::tag_matches(m.tag, m.ignore, x.tag);
    });
    if (!u) {
      cq_err_entry e;
      e.context = m.context;
      e.flags = cflags;
      e.tag = m.tag;
      e.err = errc::no_message;
      std::snprintf(e.msg, sizeof e.msg, "peek: no unexpected message matches tag 0x%llx",
                    static_cast<unsigned long long>(m.tag));
      rxcq_->push_error(e);
      return errc::ok;
    }
    cq_entry c{m.context, cflags | ((u->flags & wire::flag::cq_data) ? flag::remote_cq_data : 0), u->len, nullptr,
               u->data, u->tag, source_cap_ ? u->src : addr_unspec};
    if (flags & flag::discard) {
      ux_tag_.erase(u);
      drop_unexpected(u);
    } else if (flags & flag::claim) {
      ux_tag_.erase(u);
      u->claim_ctx = m.context;
      claimed_.push_back(u);
    }
    rxcq_->push(c);
    return errc::ok;
  }
  unexp* u = claimed_.find([&](const unexp& x) { return x.claim_ctx == m.context; });
  if (!u) {
    rxcq_->unreserve();
    return spi::fail(errc::not_found, "claim: no message was reserved for this context by a peek|claim");
  }
  if (flags & flag::discard) {
    claimed_.erase(u);
    rxcq_->push(cq_entry{m.context, cflags, 0, nullptr, u->data, u->tag, source_cap_ ? u->src : addr_unspec});
    drop_unexpected(u);
    return errc::ok;
  }
  rx_op* r = rxp_.get();
  if (!r) {
    rxcq_->unreserve();
    return again(again_reason::rx_full);
  }
  claimed_.erase(u);
  r->ctx = m.context;
  r->flags = cflags;
  std::copy_n(m.iov, m.iov_count, r->iov);
  r->iov_count = m.iov_count;
  r->cap = iov_total(m.iov, m.iov_count);
  deliver_unexpected(r, u);
  return errc::ok;
}

errc endpoint_impl::cancel(void* context) noexcept {
  auto g = dom_->guard();
  for (auto* l : {&posted_msg_, &posted_tag_}) {
    rx_op* r = l->find([&](const rx_op& x) { return x.ctx == context; });
    if (!r) continue;
    l->erase(r);
    rx_error(r, errc::canceled, "receive canceled by cancel()");
    return errc::ok;
  }
  return spi::fail(errc::not_found, "cancel: no posted receive has this context");
}

}  // namespace weft::prov::tcp

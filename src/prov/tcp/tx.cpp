// tcp endpoint: sending (frames, the transmit queue, transmit completions).
#include <cstdio>

#include "prov/tcp/endpoint.hpp"
#include "prov/tcp/test_hooks.hpp"

namespace weft::prov::tcp {

namespace test_hooks {
std::atomic<int> answer_send_cap{0};
}  // namespace test_hooks

void endpoint_impl::queue_frame(conn* c, wire::op code, std::uint64_t data, const void* payload, std::size_t len,
                                bool front, std::uint8_t flags) noexcept {
  tx_op* op = txp_.get();
  if (!op) {  // protocol frames have 64 spare operations; running out is a bug
    fail_conn(c, errc::no_memory, "out of transmit operations for protocol frames");
    return;
  }
  op->internal = true;
  op->completion = false;
  op->hdr = wire::frame_header{wire::magic, wire::version, static_cast<std::uint8_t>(code), flags, 0, len, 0, data};
  if (len) std::memcpy(op->buf, payload, len);
  op->iov[0] = {&op->hdr, sizeof op->hdr};
  op->iov[1] = {op->buf, len};
  op->iov_count = len ? 2 : 1;
  op->total = sizeof op->hdr + len;
  op->sent = 0;
  if (front && !c->txq.empty() && c->txq.front()->sent == 0) {
    // insert before the first unsent operation
    util::ilist<tx_op> tmp;
    while (tx_op* x = c->txq.front()) {
      c->txq.erase(x);
      tmp.push_back(x);
    }
    c->txq.push_back(op);
    while (tx_op* x = tmp.front()) {
      tmp.erase(x);
      c->txq.push_back(x);
    }
  } else {
    c->txq.push_back(op);
  }
  set_out(c, true);
}

void endpoint_impl::set_out(conn* c, bool on) noexcept {
  if (c->want_out == on || c->fd < 0 || c->dead) return;
  c->want_out = on;
  update_events(c);
}

// A stalled or held connection is not read: epoll (level-triggered) must not
// report its data either, or progress would spin on it.
void endpoint_impl::update_events(conn* c) noexcept {
  if (c->fd < 0 || c->dead) return;
  const bool reading = !paused(c) && !c->held && !c->direct;
  const std::uint32_t ev = (reading ? static_cast<std::uint32_t>(EPOLLIN) : 0u) | (c->want_out ? EPOLLOUT : 0u);
  if (ev == c->events) return;
  c->events = ev;
  dom_->eng().mod(c->fd, c, ev);
}

// ------------------------------------------------------------------ sending

namespace {

// One sendmsg of what is left of op's frame (at most `most` bytes).
// A poisoned read answer (tx_op::poisoned): the rest of its header (an
// earlier send may have taken only part of it), zeros for the rest of its
// payload (the region cannot be read), then its trailer, which says so.
ssize_t write_poisoned(int fd, const tx_op* op, std::size_t most) noexcept {
  static constexpr std::uint8_t zeros[16384] = {};
  constexpr std::size_t h = sizeof op->hdr;
  if (op->sent < h) {
    const auto* hb = reinterpret_cast<const std::uint8_t*>(&op->hdr);
    return ::send(fd, hb + op->sent, std::min(h - op->sent, most), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  const std::size_t pay_end = h + op->hdr.len;
  if (op->sent < pay_end)
    return ::send(fd, zeros, std::min({pay_end - op->sent, sizeof zeros, most}), MSG_NOSIGNAL | MSG_DONTWAIT);
  const auto* t = reinterpret_cast<const std::uint8_t*>(&op->trailer);
  return ::send(fd, t + (op->sent - pay_end), std::min(op->total - op->sent, most), MSG_NOSIGNAL | MSG_DONTWAIT);
}

ssize_t write_op(int fd, const tx_op* op, std::size_t most = SIZE_MAX) noexcept {
  ::iovec v[max_iov + 2];
  std::size_t n =
      slice_from(op->iov, op->iov_count, op->sent, std::min(op->total - op->sent, most), v, max_iov + 2);
  msghdr mh{};
  mh.msg_iov = v;
  mh.msg_iovlen = n;
  return ::sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

void endpoint_impl::flush(conn* c) noexcept {
  while (tx_op* op = c->txq.front()) {
    const bool may_send = op->internal ? c->state != conn::st::connecting
                                       : c->state == conn::st::established;
    if (!may_send) break;
    // A request whose answer the target would have to queue beyond its
    // budget waits for one of ours to come back (credits; the answer resumes
    // it), and the answers we owe the peer go ahead of it: two peers reading
    // from each other never both stop reading, nor wait for each other.
    const bool asks = op->await && op->sent == 0 && !op->internal;
    if (asks && c->asked >= max_answers) [[unlikely]] {
      for (tx_op* n = c->txq.next(op); n;) {
        tx_op* after = c->txq.next(n);
        if (n->answer) {
          c->txq.erase(n);
          c->txq.insert_before(op, n);
        }
        n = after;
      }
      if (c->txq.front() != op) continue;
      c->credit_wait = true;
      set_out(c, false);
      return;
    }
    ssize_t w;
    int err = 0;
    if (op->zc) [[unlikely]] {
      // An answer straight from a region: drain() may rewrite it, but not
      // while it is being written (once a region's close returns, nothing
      // reads its memory any more).
      std::unique_lock lk(zc_mu_);
      std::size_t most = SIZE_MAX;
      if (const int cap = test_hooks::answer_send_cap.load(std::memory_order_relaxed)) [[unlikely]] {
        most = static_cast<std::size_t>(cap);
        test_hooks::answer_send_cap.store(0, std::memory_order_relaxed);
      }
      w = op->poisoned ? write_poisoned(c->fd, op, most) : write_op(c->fd, op, most);
      err = errno;
      if (w > 0) op->sent += static_cast<std::size_t>(w);
    } else {
      w = write_op(c->fd, op);
      err = errno;
      if (w > 0) op->sent += static_cast<std::size_t>(w);
    }
    if (w < 0) {
      if (err == EAGAIN || err == EWOULDBLOCK) {
        set_out(c, true);
        return;
      }
      if (err == EFAULT && op->zc && !op->poisoned) {
        // The region's memory went away under the answer (unmapped, not
        // closed): a local failure. Its frame is completed with zeros and its
        // trailer fails the read; the connection carries on.
        std::lock_guard lk(zc_mu_);
        poison_answer(op, errc::io_error, "its region's memory was unmapped while it was being sent");
        continue;
      }
      char why[200];
      std::snprintf(why, sizeof why, "send to %s failed: %s", text_of(c->peer).s, std::strerror(err));
      lose_conn(c, errno_to_errc(err), why);
      return;
    }
    ++c->activity;
    c->asked += asks && op->sent > 0;  // it left (its first bytes at least)
    if (op->sent < op->total) {
      set_out(c, true);
      return;
    }
    c->txq.erase(op);
    on_sent(c, op);
  }
  // Nothing more can be written now (empty, or waiting for the handshake).
  set_out(c, false);
  if (c->txq.empty() && c->close_after_flush) close_conn(c);
}

// An error entry no operation reserved CQ room for, with the failure slot
// its write took when posted: into the CQ if it has room and nothing waits
// before it (the slot comes back), else it waits in order, in its slot, for
// room, which progress gives it as soon as the application reads the CQ.
// The slots bound the waiting entries, so none is ever dropped. Never a
// pause of the connection: the completions that would free the CQ may be
// behind it in the same stream.
// The error entry of a transmit-complete write the target answered failed
// (a compact record: the status, and whether it was an inject).
void endpoint_impl::push_answered(spi::cq& cq, std::uint16_t rec) noexcept {
  const auto st = static_cast<errc>(rec & 0xff);
  cq_err_entry ee;
  ee.err = st;
  if (rec & rec_inject) {
    ee.flags = flag::rma | flag::write | flag::inject;
    std::snprintf(ee.msg, sizeof ee.msg, "an injected write failed at the target (%s)", to_string(st));
  } else {
    ee.flags = flag::rma | flag::write;
    std::snprintf(ee.msg, sizeof ee.msg,
                  "a write that completed at transmit failed at the target (%s): use delivery_complete to "
                  "learn which",
                  to_string(st));
  }
  cq.push_error(ee);
}

void endpoint_impl::report_error(const cq_err_entry& ee) noexcept {
  if (pend_n_ == 0 && txcq_->reserve()) {
    txcq_->push_error(ee);
    ++islots_free_;
    return;
  }
  // full_n_ < inject_slots: every waiting entry holds one of the slots
  pend_full_[(full_head_ + full_n_) % inject_slots] = ee;
  ++full_n_;
  push_record(rec_full);
}

void endpoint_impl::report_answered_failure(errc e, bool inject) noexcept {
  const auto rec = static_cast<std::uint16_t>(static_cast<std::uint8_t>(e) | (inject ? rec_inject : 0));
  if (pend_n_ == 0 && txcq_->reserve()) {
    push_answered(*txcq_, rec);
    ++slots_free_;
    return;
  }
  push_record(rec);
}

void endpoint_impl::push_record(std::uint16_t rec) noexcept {
  // pend_n_ < failure_slots + inject_slots: every record holds a slot
  pend_rec_[(pend_head_ + pend_n_) % pend_rec_.size()] = rec;
  ++pend_n_;
}

void endpoint_impl::push_pending_errors() noexcept {
  while (pend_n_ && txcq_->reserve()) {
    const std::uint16_t rec = pend_rec_[pend_head_];
    pend_head_ = (pend_head_ + 1) % pend_rec_.size();
    --pend_n_;
    if (rec & rec_full) {
      txcq_->push_error(pend_full_[full_head_]);
      full_head_ = (full_head_ + 1) % inject_slots;
      --full_n_;
      ++islots_free_;
    } else {
      push_answered(*txcq_, rec);
      ++slots_free_;
    }
  }
}

void endpoint_impl::complete_tx(tx_op* op, errc e, const char* why) noexcept {
  if (op->answer && op->on) --op->on->answers;
  if (!op->internal) spi::count(cntrs_.of_tx(op->flags), e == errc::ok);
  if (!op->internal && !op->completion && e != errc::ok && (op->flags & flag::rma)) {
    // inject write: nothing to report when it worked; a failure is not lost
    cq_err_entry ee;
    ee.flags = op->flags | flag::inject;
    ee.err = e;
    std::snprintf(ee.msg, sizeof ee.msg, "an injected write failed: %s", why);
    op->islot = false;  // the entry takes the slot
    report_error(ee);
  }
  if (op->completion && (op->flags & (flag::rma | flag::atomic))) --rma_reserved_;
  if (op->completion) {
    if (e == errc::ok) {
      txcq_->push(cq_entry{op->ctx, op->flags, op->len, nullptr, 0, op->tag, addr_unspec});
    } else {
      cq_err_entry ee;
      ee.context = op->ctx;
      ee.flags = op->flags;
      ee.tag = op->tag;
      ee.err = e;
      std::snprintf(ee.msg, sizeof ee.msg, "%s", why);
      txcq_->push_error(ee);
    }
  }
  recycle(op);
}

void endpoint_impl::recycle(tx_op* op) noexcept {
  op->retirer = false;
  if (op->fslot || op->islot) [[unlikely]] {  // it ended without needing its failure slots
    slots_free_ += std::size_t{op->fslot};
    islots_free_ += std::size_t{op->islot};
    op->fslot = op->islot = false;
  }
  if (op->zc) [[unlikely]] {
    std::lock_guard lk(zc_mu_);
    if (op->zc_key) --zc_live_;
    op->zc = false;
    op->zc_key = 0;
    op->poisoned = false;
    delete[] op->own;
    op->own = nullptr;
  }
  op->await = false;
  op->await_trailer = false;
  op->answer = false;
  op->on = nullptr;
  op->parent = nullptr;
  op->parts = 1;
  op->part_err = errc::ok;
  op->local_count = op->local_len = 0;
  ++op->gen;
  txp_.put(op);
}

// An operation leaves (or is given up): RMA parts report to their parent.
void endpoint_impl::end_op(tx_op* op, errc e, const char* why) noexcept {
  if (!op->internal && (op->flags & (flag::rma | flag::atomic))) finish_part(op, e, why);
  else complete_tx(op, e, why);
}

void endpoint_impl::finish_part(tx_op* op, errc e, const char* why) noexcept {
  tx_op* u = op->parent ? op->parent : op;
  if (e != errc::ok && u->part_err == errc::ok) {
    u->part_err = e;
    std::snprintf(u->why, sizeof u->why, "%s", why);
  }
  if (op != u) recycle(op);
  if (--u->parts == 0) complete_tx(u, u->part_err, u->why);
}

void endpoint_impl::on_sent(conn* c, tx_op* op) noexcept {
  if (op->internal || !(op->flags & (flag::rma | flag::atomic))) {
    complete_tx(op, errc::ok, "");
  } else if (op->await) {
    op->on = c;
    op->tc_mark = c->tc_sent;  // its answer resolves every transmit-complete write before it
    c->await.push_back(op);
  } else {
    ++c->tc_sent;  // a failure may still be reported: the connection holds its slot now
    op->fslot = false;
    finish_part(op, errc::ok, "");  // transmit_complete: the data left
  }
}

errc endpoint_impl::send(const msg_desc& m, std::uint64_t flags) noexcept {
  auto g = dom_->guard();
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("send");
  if (m.iov_count > max_iov || (!m.iov && m.iov_count)) [[unlikely]]
    return spi::bad_iov("send", m.iov_count, max_iov);
  if (!msg_mode_ && (!av_ || !av_->at(m.addr))) [[unlikely]]
    return spi::no_peer("send", m.addr, av_ != nullptr);
  const std::size_t len = iov_total(m.iov, m.iov_count);
  const bool inject = flags & flag::inject;
  if (len > max_msg_size || (inject && len > inject_size))
    return spi::over_limit(inject ? "inject" : "send", len, inject ? "tx.inject_size" : "ep.max_msg_size",
                           inject ? inject_size : max_msg_size);
  conn* c = path(m.addr);
  if (!c) return msg_mode_ && !was_connected_ ? spi::not_connected("send") : path_failed("send");
  tx_op* op = txp_.get();
  if (!op || txp_.available() < 128) {  // keep room for protocol frames and answers
    if (op) txp_.put(op);
    return again(again_reason::tx_full);
  }
  if (!inject && !txcq_->reserve()) {
    txp_.put(op);
    return again(again_reason::cq_full);
  }
  op->internal = false;
  op->completion = !inject;
  op->ctx = m.context;
  op->flags = flag::send | (flags & (flag::msg | flag::tagged));
  op->tag = m.tag;
  op->len = len;
  op->hdr = wire::frame_header{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::msg),
                               static_cast<std::uint8_t>(((flags & flag::tagged) ? wire::flag::tagged : 0) |
                                                         ((flags & flag::remote_cq_data) ? wire::flag::cq_data : 0)),
                               0, len, m.tag, m.data};
  op->iov[0] = {&op->hdr, sizeof op->hdr};
  std::copy_n(m.iov, m.iov_count, op->iov + 1);
  op->iov_count = m.iov_count + 1;
  op->total = sizeof op->hdr + len;
  op->sent = 0;
  if (c->state == conn::st::established && c->txq.empty()) {
    // fast path: one system call (small frames as one contiguous send)
    ssize_t w;
    if (op->total <= small_frame) {
      std::uint8_t frame[small_frame];
      std::memcpy(frame, &op->hdr, sizeof op->hdr);
      gather(m.iov, m.iov_count, frame + sizeof op->hdr);
      w = ::send(c->fd, frame, op->total, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
      msghdr mh{};
      mh.msg_iov = op->iov;
      mh.msg_iovlen = op->iov_count;
      w = ::sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (w == static_cast<ssize_t>(op->total)) {
      ++c->activity;
      complete_tx(op, errc::ok, "");
      return errc::ok;
    }
    if (w > 0) op->sent = static_cast<std::size_t>(w);
    else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      const int err = errno;
      if (!inject) txcq_->unreserve();
      op->completion = false;
      op->internal = true;  // recycled: neither a completion nor a count (the caller gets peer_dead)
      complete_tx(op, errc::ok, "");
      char why[160];
      std::snprintf(why, sizeof why, "send to %s failed: %s", text_of(c->peer).s, std::strerror(err));
      lose_conn(c, errno_to_errc(err), why);
      return spi::fail(errc::peer_dead, why);
    }
  }
  if (inject || len <= inject_size) {
    // queued: keep our own copy of small payloads (inject returns at once)
    gather(m.iov, m.iov_count, op->buf);
    op->iov[1] = {op->buf, len};
    op->iov_count = len ? 2 : 1;
  }
  c->txq.push_back(op);
  set_out(c, true);
  return errc::ok;
}

}  // namespace weft::prov::tcp

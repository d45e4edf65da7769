// tcp endpoint: RMA and atomics, initiator and target (docs/wire/tcp.md).
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdio>
#include <new>

#include "core/atomic_apply.hpp"
#include "core/rma_request.hpp"
#include "prov/tcp/endpoint.hpp"
#include "prov/tcp/self_copy.hpp"
#include "prov/tcp/test_hooks.hpp"

namespace weft::prov::tcp {

namespace test_hooks {
std::atomic<int> fail_revoke_copies{0};
}  // namespace test_hooks

// --------------------------------------------------------- RMA, initiator

// n operations for one request (one per remote range), the first carrying
// the completion; null (again) if the pool or the CQ has no room.
bool endpoint_impl::take_ops(std::size_t n, bool completion, tx_op** out) noexcept {
  if (txp_.available() < n + 128) {  // keep room for protocol frames and answers
    note_again(again_reason::tx_full);
    return false;
  }
  if (completion && !txcq_->reserve()) {
    note_again(again_reason::cq_full);
    return false;
  }
  if (completion) ++rma_reserved_;
  tx_op* first = nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    tx_op* op = txp_.get();
    op->internal = false;
    op->completion = completion && i == 0;
    op->parent = i ? first : nullptr;
    op->parts = 1;
    op->part_err = errc::ok;
    op->why[0] = 0;
    op->await = false;
    op->on = nullptr;
    op->local_count = op->local_len = 0;
    op->sent = 0;
    if (!first) first = op;
    out[i] = op;
  }
  first->parts = static_cast<std::uint32_t>(n);
  return true;
}

errc endpoint_impl::rma(const rma_desc& d, std::uint64_t flags) noexcept {
  auto g = dom_->guard();
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("RMA");
  if (!msg_mode_ && (!av_ || !av_->at(d.addr))) [[unlikely]]
    return spi::no_peer("RMA", d.addr, av_ != nullptr);
  core::rma_request q;
  if (errc e = core::parse_rma(d, flags, level_, max_iov, max_msg_size, inject_size,
                               (flags & flag::write) ? max_msg_size : 0xffffffffu, q);
      e != errc::ok)
    return e;
  const bool save = q.save, write = q.write, inject = q.inject;
  const std::size_t len = q.len;
  // An inject write gives no completion: at delivery level, unless a write
  // counter counts its delivery, the target's answer would tell nobody
  // anything. Sent as transmit-complete, a failure is still reported.
  std::uint64_t level =
      inject && q.level == flag::delivery_complete && !cntrs_.write ? flag::transmit_complete : q.level;
  const rma_iov* rr = q.ranges();
  const std::size_t nr = q.count;
  // Failure slots (endpoint.hpp): one per part answered only if it fails,
  // and an inject slot for an inject write's own error entry. When failure
  // slots run low, the write asks for an answer instead, which gives back
  // the slots of every write sent before it on the connection: one such
  // write at a time per connection, and every write below a quarter free.
  conn* c = path(d.addr);
  if (!c) return msg_mode_ && !was_connected_ ? spi::not_connected("RMA") : path_failed("RMA");
  std::size_t need = write && level == flag::transmit_complete ? nr : 0;
  const std::size_t ineed = inject ? 1 : 0;
  bool retirer = false;
  if (need && slots_free_ < need + failure_slots / 2 &&
      (c->retirers == 0 || slots_free_ < need + failure_slots / 4)) {
    level = flag::delivery_complete;
    need = 0;
    retirer = true;
  }
  // the CQ must be read (or the target answer) first
  if (slots_free_ < need || islots_free_ < ineed) return again(again_reason::cq_full);
  tx_op* ops[max_iov];
  if (!take_ops(nr, !inject, ops)) return errc::again;
  slots_free_ -= need;
  islots_free_ -= ineed;
  c->retirers += retirer;
  ops[0]->islot = inject;
  std::size_t off = 0;
  for (std::size_t i = 0; i < nr; ++i) {
    tx_op* op = ops[i];
    op->ctx = d.context;
    op->flags = flag::rma | (save ? flag::save : write ? flag::write : flag::read);
    op->tag = 0;
    op->len = len;
    std::uint8_t f = 0;
    if (write && (flags & flag::remote_cq_data) && i + 1 == nr) f |= wire::flag::cq_data;
    if (write && level == flag::commit_complete) f |= wire::flag::commit;
    // transmit_complete: no answer unless it fails (tc_sent - tc_done bounds the
    // failures the peer may report to the writes we actually sent)
    if (write && level != flag::transmit_complete) f |= wire::flag::ack;
    op->await = !write || level != flag::transmit_complete;
    op->fslot = !op->await;
    op->retirer = retirer && i + 1 == nr;
    const wire::op code = save ? wire::op::save : write ? wire::op::rma_write : wire::op::rma_read;
    const std::size_t part = rr[i].len;
    // The id names the operation an answer is for; an unawaited (transmit-
    // complete) write is answered only when it fails, and its id then says
    // whether it was an inject (bit 63), for the error entry's flags.
    const std::uint64_t id = request_id(op) | (!op->await && inject ? tc_inject_bit : 0);
    wire::rma_req q{rr[i].key, rr[i].offset, id,
                    write || save ? 0u : static_cast<std::uint32_t>(part), 0, 0,
                    static_cast<std::uint8_t>(save ? (level == flag::commit_complete ? 3 : level == flag::delivery_complete ? 2 : 1) : 0),
                    0};
    std::memcpy(op->buf, &q, sizeof q);
    op->hdr = wire::frame_header{wire::magic, wire::version, static_cast<std::uint8_t>(code), f, 0,
                                 sizeof q + (write ? part : 0), 0, write ? d.data : 0};
    op->iov[0] = {&op->hdr, sizeof op->hdr};
    op->iov[1] = {op->buf, sizeof q};
    op->iov_count = 2;
    if (write && part) {
      if (inject || part <= inject_size) {  // our own copy: the caller's buffer is free at once
        ::iovec sl[max_iov];
        const std::size_t k = slice_from(d.iov, d.iov_count, off, part, sl, max_iov);
        gather(sl, k, op->buf + sizeof q);
        op->iov[2] = {op->buf + sizeof q, part};
        op->iov_count = 3;
      } else {
        op->iov_count = 2 + slice_from(d.iov, d.iov_count, off, part, op->iov + 2, max_iov);
      }
    } else if (!write && !save) {
      op->local_count = slice_from(d.iov, d.iov_count, off, part, op->local, max_iov);
      op->local_len = part;
    }
    op->total = sizeof op->hdr + op->hdr.len;
    op->sent = 0;
    off += part;
    c->txq.push_back(op);
  }
  if (c->state == conn::st::established) flush(c);
  else set_out(c, true);
  return errc::ok;
}

errc endpoint_impl::atomic(const atomic_desc& d) noexcept {
  auto g = dom_->guard();
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("atomic");
  if (!msg_mode_ && (!av_ || !av_->at(d.addr))) [[unlikely]]
    return spi::no_peer("atomic", d.addr, av_ != nullptr);
  const auto t = static_cast<atomic_type>(d.type);
  const std::size_t bytes = d.count * size_of(t);
  const bool cswap = static_cast<atomic_op>(d.op) == atomic_op::cswap;
  conn* c = path(d.addr);
  if (!c) return msg_mode_ && !was_connected_ ? spi::not_connected("atomic") : path_failed("atomic");
  tx_op* op = nullptr;
  if (!take_ops(1, true, &op)) return errc::again;
  op->ctx = d.context;
  op->flags = flag::atomic | (d.result ? flag::read : flag::write);
  op->tag = 0;
  op->len = bytes;
  op->await = true;
  wire::rma_req q{d.key, d.offset, request_id(op), static_cast<std::uint32_t>(d.count),
                  static_cast<std::uint8_t>(d.op), static_cast<std::uint8_t>(d.type), 0, 0};
  std::memcpy(op->buf, &q, sizeof q);
  std::memcpy(op->buf + sizeof q, d.operand, bytes);
  if (cswap) std::memcpy(op->buf + sizeof q + bytes, d.compare, bytes);
  const std::size_t plen = sizeof q + bytes * (cswap ? 2 : 1);
  op->hdr = wire::frame_header{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::atomic),
                               static_cast<std::uint8_t>(d.result ? wire::flag::fetch : 0), 0, plen, 0, 0};
  op->iov[0] = {&op->hdr, sizeof op->hdr};
  op->iov[1] = {op->buf, plen};
  op->iov_count = 2;
  if (d.result) {
    op->local[0] = {d.result, bytes};
    op->local_count = 1;
    op->local_len = bytes;
  }
  op->total = sizeof op->hdr + plen;
  c->txq.push_back(op);
  if (c->state == conn::st::established) flush(c);
  else set_out(c, true);
  return errc::ok;
}

// An answer: the operation it names gets its bytes (read, fetch) and completes.
void endpoint_impl::handle_rma_resp(conn* c) noexcept {
  const std::uint64_t id = c->cur.tag;
  const std::uint64_t raw = c->cur.data;
  if (raw > static_cast<std::uint64_t>(errc::permission_denied)) {
    fail_conn(c, errc::io_error, "protocol error: RMA answer with an unknown status; connection dropped");
    return;
  }
  const auto st = static_cast<errc>(raw);
  tx_op* op = txp_.at(static_cast<std::uint32_t>(id));
  if (!op || request_id(op) != id || !op->await || op->on != c) op = nullptr;
  // No operation waits for it: the failure of a transmit-complete write
  // (they are answered only when they fail). Beyond the number of such
  // writes sent here, a peer is making answers up.
  const bool more = c->cur.flags & wire::flag::more;
  const bool trailer = c->cur.flags & wire::flag::trailer;
  if ((!op && (c->tc_sent == c->tc_done || st == errc::ok || more || trailer)) ||
      (op && trailer != op->await_trailer)) {
    fail_conn(c, errc::io_error, "protocol error: an RMA answer nobody asked for; connection dropped");
    return;
  }
  if (more) {
    // A read answer sent from the target's region: its bytes now, its final
    // status in the trailer that follows (the operation waits for it, in
    // c->await: a connection lost meanwhile ends it).
    if (c->cur.len != op->local_len) {
      fail_conn(c, errc::io_error, "protocol error: RMA answer of the wrong length; connection dropped");
      return;
    }
    op->await_trailer = true;
    c->sink.iov_count = op->local_count;
    std::copy_n(op->local, op->local_count, c->sink.iov);
    c->sink.cap = op->local_len;
    c->sink_op = op;
    c->sink_more = true;
    c->rx = &c->sink;
    c->rstage = conn::rs::user;
    return;
  }
  if (!op) {
    ++c->tc_done;  // its slot goes to the error entry
    report_answered_failure(st, (id & tc_inject_bit) != 0);
    if (cntrs_.write) cntrs_.write->inc_err();
    discard_payload(c, c->cur.len);
    return;
  }
  c->await.erase(op);
  op->on = nullptr;
  if (c->asked) --c->asked;
  if (c->credit_wait) {  // a request waits for this credit: epoll says when the socket takes it
    c->credit_wait = false;
    set_out(c, true);
  }
  retire_tc(c, op->tc_mark);
  if (op->retirer) {
    op->retirer = false;
    if (c->retirers) --c->retirers;
  }
  if (trailer) {  // the end of an answer whose bytes came before (flag more)
    op->await_trailer = false;
    finish_part(op, st,
                st == errc::not_found
                    ? "the target region was closed while its answer was sent, and the rest could not be kept: the "
                      "bytes in the buffer are not valid"
                    : "the target could not send all of its answer (its region's memory went away while it was "
                      "sent): the bytes in the buffer are not valid");
    return;
  }
  if (st != errc::ok) {
    discard_payload(c, c->cur.len);
    const char* why = (c->cur.flags & wire::flag::revoked)
                          ? "the region was closed while the read was in flight (the target closed it before its "
                            "bytes were sent)"
                      : st == errc::not_found         ? "no memory region with that key at the target (closed, or a wrong key)"
                      : st == errc::permission_denied ? "the target region does not allow this access"
                      : st == errc::invalid_argument  ? "the remote range lies outside the target region (or is not aligned for an atomic)"
                      : st == errc::busy ? "written, but the target's completion queue is full: retry after it reads it"
                                         : "the target could not apply it, or its commit handler refused";
    finish_part(op, st, why);
    return;
  }
  if (c->cur.len != op->local_len) {
    finish_part(op, errc::io_error, "the target answered with a wrong length");
    fail_conn(c, errc::io_error, "protocol error: RMA answer of the wrong length; connection dropped");
    return;
  }
  if (c->cur.len == 0) {
    finish_part(op, errc::ok, "");
    return;
  }
  c->sink.iov_count = op->local_count;
  std::copy_n(op->local, op->local_count, c->sink.iov);
  c->sink.cap = op->local_len;
  c->sink_op = op;
  c->rx = &c->sink;
  c->rstage = conn::rs::user;
}

void endpoint_impl::discard_payload(conn* c, std::size_t len) noexcept {
  c->cur.len = len;
  c->pay_got = 0;
  c->rstage = len ? conn::rs::discard : conn::rs::header;
}

// ------------------------------------------------------------ RMA, target

// A write's bytes keep arriving over many progress calls: before each piece
// goes into the region, the region must still be there (closed, or its
// memory gone: the rest is dropped and the initiator told).
bool endpoint_impl::sink_check(conn* c, std::size_t n, std::unique_lock<std::mutex>& lk) noexcept {
  const std::size_t len = std::min(n, c->sink.cap - c->pay_got);
  std::byte* where = nullptr;
  errc st = find_locked(c->sink_req.key, c->sink_req.offset + c->pay_got, len, access::remote_write, where, lk);
  if (st == errc::ok && where == static_cast<std::byte*>(c->sink.iov[0].iov_base) + c->pay_got) return true;
  if (lk.owns_lock()) lk.unlock();
  c->sink_err = st == errc::ok ? errc::not_found : st;
  c->sink.cap = c->pay_got;  // nothing more is copied
  return false;
}

errc endpoint_impl::find_locked(std::uint64_t key, std::uint64_t offset, std::uint64_t len, std::uint64_t need,
                                std::byte*& where, std::unique_lock<std::mutex>& lk) noexcept {
  {
    std::lock_guard g(zc_mu_);
    access_key_ = key;
    access_revoked_ = false;
  }
  // Not under zc_mu_: drain() may take it under the registry's lock (a close with no memory for its list).
  errc st = reg_->find(key, offset, len, need, where);
  std::unique_lock l(zc_mu_);
  if (access_revoked_ && st == errc::ok) st = errc::not_found;  // closed since the find
  access_key_ = 0;
  if (st == errc::ok) lk = std::move(l);
  return st;
}

// Connections that stopped reading because too many answers were owed.
void endpoint_impl::resume_answers() noexcept {
  answer_waits_ = 0;  // counted again: those still waiting, and any that start waiting below
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conn* c = conns_[i].get();
    if (c->dead || c->rstage != conn::rs::answers) continue;
    if (!answer_room(c)) {
      ++answer_waits_;
      continue;
    }
    const auto code = static_cast<wire::op>(c->cur.op);
    c->rstage = conn::rs::ctrl;
    c->ctrl_want = code == wire::op::atomic ? c->cur.len : sizeof(wire::rma_req);
    c->pay_got = 0;
    update_events(c);
    consume(c);
    if (!c->dead && !paused(c)) read_conn(c);
  }
}

tx_op* endpoint_impl::answer_op(conn* c, std::uint64_t id, errc st, const void* payload, std::size_t len) noexcept {
  tx_op* op = txp_.get();
  if (!op) {
    fail_conn(c, errc::no_memory, "out of transmit operations for RMA answers");
    return nullptr;
  }
  op->internal = true;
  op->completion = false;
  op->answer = true;
  op->on = c;
  ++c->answers;
  op->hdr = wire::frame_header{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::rma_resp), 0, 0, len,
                               id, static_cast<std::uint64_t>(st)};
  op->iov[0] = {&op->hdr, sizeof op->hdr};
  op->iov_count = 1;
  if (len && len <= inject_size) {
    std::memcpy(op->buf, payload, len);
    op->iov[1] = {op->buf, len};
    op->iov_count = 2;
  } else if (len) {
    op->iov[1] = {const_cast<void*>(payload), len};  // straight from the region
    op->iov_count = 2;
  }
  op->total = sizeof op->hdr + len;
  op->sent = 0;
  // Ahead of a request waiting for a credit (flush), behind earlier answers.
  tx_op* waiting = c->credit_wait ? c->txq.find([](const tx_op& o) {
    return !o.answer && o.sent == 0 && o.await && !o.internal;
  }) : nullptr;
  if (waiting) c->txq.insert_before(waiting, op);
  else c->txq.push_back(op);
  return op;
}

void endpoint_impl::respond(conn* c, std::uint64_t id, errc st, const void* payload, std::size_t len) noexcept {
  if (answer_op(c, id, st, payload, len)) flush(c);
}

// An RMA read: the answer is sent from the region itself when it is larger
// than inject_size, so it is registered for drain() before it is queued.
void endpoint_impl::respond_read(conn* c, const wire::rma_req& q) noexcept {
  std::byte* where = nullptr;
  if (q.len <= inject_size) {
    // Copied into the answer at once, under the access lock (find_locked).
    tx_op* op = answer_op(c, q.id, errc::ok, nullptr, 0);
    if (!op) return;
    std::unique_lock<std::mutex> lk;
    const errc st = find_locked(q.key, q.offset, q.len, access::remote_read, where, lk);
    if (st == errc::ok && q.len) {
      std::memcpy(op->buf, where, q.len);
      op->hdr.len = q.len;
      op->iov[1] = {op->buf, q.len};
      op->iov_count = 2;
      op->total = sizeof op->hdr + q.len;
    }
    if (lk.owns_lock()) lk.unlock();
    op->hdr.data = static_cast<std::uint64_t>(st);
    spi::count(cntrs_.remote_read.get(), st == errc::ok);
    flush(c);
    return;
  }
  errc st = reg_->find(q.key, q.offset, q.len, access::remote_read, where);
  spi::count(cntrs_.remote_read.get(), st == errc::ok);
  if (st != errc::ok || !observing_) {
    respond(c, q.id, st, nullptr, 0);
    return;
  }
  tx_op* op = answer_op(c, q.id, errc::ok, where, q.len);
  if (!op) return;
  // Its final status follows in a trailer: if the region's memory cannot be
  // read to the end once the answer has started, the frame is completed with
  // zeros and the trailer fails the read (poison_answer), the connection
  // carries on.
  op->hdr.flags = wire::flag::more;
  op->trailer = wire::frame_header{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::rma_resp),
                                   wire::flag::trailer, 0, 0, q.id, static_cast<std::uint64_t>(errc::ok)};
  op->iov[2] = {&op->trailer, sizeof op->trailer};
  op->iov_count = 3;
  op->total += sizeof op->trailer;
  {
    std::lock_guard lk(zc_mu_);
    op->zc = true;
    op->zc_key = q.key;
    ++zc_live_;
  }
  // From here drain() sees the answer; a close between the find above and
  // that point is seen here instead.
  std::byte* now = nullptr;
  if (reg_->find(q.key, q.offset, q.len, access::remote_read, now) != errc::ok || now != where) {
    std::lock_guard lk(zc_mu_);
    if (op->zc_key) revoke_answer(op);
  }
  flush(c);
}


// zc_mu_ held. A read answer whose region is gone: if nothing of it left
// yet, it becomes an error answer (not_found, flagged revoked); if part of
// it is on the wire, the rest is copied into memory the operation owns, so
// that the region's memory is never read again. When that copy cannot be
// made, the operation is poisoned: flush() completes its frame with zeros
// and its trailer fails the read (the connection carries on).
void endpoint_impl::revoke_answer(tx_op* op) noexcept {
  static_assert(static_cast<std::uint64_t>(errc::not_found) == 5, "docs/wire/tcp.md: rma_resp flag revoked");
  op->zc_key = 0;
  --zc_live_;
  constexpr std::size_t h = sizeof(wire::frame_header);
  const std::size_t len = op->hdr.len;
  if (op->sent == 0) {
    op->hdr.len = 0;
    op->hdr.flags = wire::flag::revoked;
    op->hdr.data = static_cast<std::uint64_t>(errc::not_found);
    op->iov_count = 1;
    op->total = h;
    return;
  }
  if (op->sent >= h + len) return;  // all of its payload left already (its trailer reads no region)
  const std::size_t done = op->sent > h ? op->sent - h : 0;  // payload bytes on the wire
  const std::size_t rest = len - done;
  const auto* src = static_cast<const std::byte*>(op->iov[1].iov_base) + done;
  std::byte* copy =
      test_hooks::take(test_hooks::fail_revoke_copies) ? nullptr : new (std::nothrow) std::byte[rest];
  if (!copy) {
    poison_answer(op, errc::not_found, "its region was closed and no memory was left to copy the rest");
    return;
  }
  if (!copy_if_mapped(copy, src, rest)) {
    delete[] copy;
    poison_answer(op, errc::io_error, "its region's memory was unmapped while it was being sent");
    return;
  }
  op->own = copy;
  if (done == 0) {
    op->iov[1] = {copy, rest};
    op->iov[2] = {&op->trailer, sizeof op->trailer};
    op->iov_count = 3;
  } else {
    op->iov[1] = {nullptr, done};  // sent already: skipped by offset, never read
    op->iov[2] = {copy, rest};
    op->iov[3] = {&op->trailer, sizeof op->trailer};
    op->iov_count = 4;
  }
}

void endpoint_impl::poison_answer(tx_op* op, errc e, const char* why) noexcept {
  if (op->zc_key) {  // drain() has nothing more to do with it
    op->zc_key = 0;
    --zc_live_;
  }
  op->poisoned = true;
  op->trailer.data = static_cast<std::uint64_t>(e);
  std::snprintf(op->why, sizeof op->why, "%s", why);
}

// Under the registry's lock: nothing to do here (the registry's find()
// refuses the key from now on). The answers and the access under way that
// found it before are dealt with in drain(), without the registry's lock:
// zc_mu_ may be held by a write of an answer or a copy into the region.
void endpoint_impl::revoked(std::uint64_t) noexcept {}

void endpoint_impl::drain(std::uint64_t key) noexcept {
  std::lock_guard lk(zc_mu_);  // waits for an access under way (find_locked)
  if (key == access_key_) access_revoked_ = true;  // found, not yet touched: it must not be
  if (zc_live_ == 0) return;
  for (std::uint32_t i = 0; i < txp_.capacity(); ++i) {
    tx_op* op = txp_.at(i);
    if (op->zc && op->zc_key == key) revoke_answer(op);
  }
}

void endpoint_impl::handle_rma_req(conn* c) noexcept {
  wire::rma_req q;
  const std::uint8_t code = c->cur.op;
  if (wire::status ws = wire::decode_rma_req(c->ctrl, c->ctrl_want, code, q); ws != wire::status::ok) {
    char why[160];
    std::snprintf(why, sizeof why, "protocol error from %s: %s in an RMA request; connection dropped",
                  text_of(c->peer).s, wire::to_string(ws));
    fail_conn(c, errc::io_error, why);
    return;
  }
  switch (static_cast<wire::op>(code)) {
    case wire::op::rma_write: {
      const std::size_t len = c->cur.len - sizeof q;
      std::byte* where = nullptr;
      errc st = reg_->find(q.key, q.offset, len, access::remote_write, where);
      if (st != errc::ok) {
        if (cntrs_.remote_write) cntrs_.remote_write->inc_err();
        respond(c, q.id, st, nullptr, 0);  // the bytes are read and dropped
        if (!c->dead) discard_payload(c, len);
        return;
      }
      c->sink.iov[0] = {where, len};
      c->sink.iov_count = 1;
      c->sink.cap = len;
      c->sink_op = nullptr;
      c->sink_req = q;
      c->sink_flags = c->cur.flags;
      c->sink_err = errc::ok;
      c->rx = &c->sink;
      c->cur.len = len;
      c->pay_got = 0;
      c->rstage = conn::rs::user;
      if (len == 0) finish_user(c);
      return;
    }
    case wire::op::rma_read:
      respond_read(c, q);
      return;
    case wire::op::atomic: {
      const bool fetch = c->cur.flags & wire::flag::fetch;
      errc st = core::check_atomic(q.atomic_op, q.atomic_type, q.len);
      const auto op = static_cast<atomic_op>(q.atomic_op);
      const std::size_t sz = st == errc::ok ? size_of(static_cast<atomic_type>(q.atomic_type)) : 1;
      const std::size_t bytes = static_cast<std::size_t>(q.len) * sz;
      if (st == errc::ok && c->ctrl_want != sizeof q + bytes * (op == atomic_op::cswap ? 2 : 1))
        st = errc::invalid_argument;
      std::byte* where = nullptr;
      std::unique_lock<std::mutex> lk;  // the region's memory is touched under it (find_locked)
      if (st == errc::ok)
        st = find_locked(q.key, q.offset, bytes, access::remote_write | (fetch ? access::remote_read : 0), where,
                         lk);
      if (st == errc::ok && reinterpret_cast<std::uintptr_t>(where) % sz != 0) st = errc::invalid_argument;
      alignas(8) std::byte old[atomic_max_bytes];
      if (st == errc::ok) {
        const auto* operand = reinterpret_cast<const std::byte*>(c->ctrl + sizeof q);
        core::apply_atomic(op, static_cast<atomic_type>(q.atomic_type), where, operand,
                           op == atomic_op::cswap ? operand + bytes : nullptr, q.len, old);
      }
      if (lk.owns_lock()) lk.unlock();
      spi::count(cntrs_.remote_write.get(), st == errc::ok);
      respond(c, q.id, st, old, st == errc::ok && fetch ? bytes : 0);
      return;
    }
    case wire::op::save: {
      // Every earlier frame on this connection was handled: flushing the
      // region now covers every earlier write to it from this peer.
      const std::uint64_t level = q.level == 3 ? flag::commit_complete : flag::delivery_complete;
      respond(c, q.id, reg_->commit(commit_event::kind::save, q.key, 0, 0, level), nullptr, 0);
      return;
    }
    default: return;
  }
}

// The bytes of a write are in the region, or an answer is in the initiator's buffers.
void endpoint_impl::sink_done(conn* c) noexcept {
  if (tx_op* op = c->sink_op) {
    c->sink_op = nullptr;
    if (c->sink_more) {  // its trailer (the next frame) says whether all of it was good
      c->sink_more = false;
      return;
    }
    finish_part(op, errc::ok, "");
    return;
  }
  const wire::rma_req& q = c->sink_req;
  const std::size_t len = c->cur.len;
  errc st = c->sink_err;
  c->sink_err = errc::ok;
  if (st == errc::ok && (c->sink_flags & wire::flag::commit))
    st = reg_->commit(commit_event::kind::write, q.key, q.offset, len, flag::commit_complete);
  if (st == errc::ok && (c->sink_flags & wire::flag::cq_data)) {
    if (rxcq_->reserve())
      rxcq_->push(cq_entry{nullptr, flag::rma | flag::remote_write | flag::remote_cq_data, len,
                           c->sink.iov[0].iov_base, c->cur.data, 0, src_of(c)});
    else
      st = errc::busy;  // written, but no room to tell the application
  }
  spi::count(cntrs_.remote_write.get(), st == errc::ok);
  if (st != errc::ok || (c->sink_flags & wire::flag::ack)) respond(c, q.id, st, nullptr, 0);
}

}  // namespace weft::prov::tcp

// shm rendezvous: messages larger than a ring slot (single, cooperative and
// segmented copies) and the control replies that carry them
// (docs/wire/shm.md, "Protocols").
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "prov/shm/copy.hpp"
#include "prov/shm/endpoint.hpp"
#include "util/clock.hpp"

namespace weft::prov::shm {

void endpoint_impl::handle_cts(const slot_header* h) noexcept {
  tx_op* op = by_cookie(txp_, h->cookie);
  if (!op || op->state != tx_op::st::wait_reply) return;
  op->state = tx_op::st::streaming;
  op->rx_cookie = h->aux;
  op->accepted = std::min<std::size_t>(h->data, op->len);
  stream(op);
}

void endpoint_impl::stream(tx_op* op) noexcept {
  auto* hdr = self_->hdr();
  const std::uint32_t nseg = self_->seg_count();
  for (std::uint32_t i = 0; op->seg_mask && i < nseg; ++i) {
    const std::uint64_t bit = 1ull << i;
    if ((op->seg_mask & bit) && hdr->seg_busy[i].load(std::memory_order_acquire) == 0) {
      op->seg_mask &= ~bit;
      segs_held_ &= ~bit;
    }
  }
  peer& p = *op->p;
  while (op->sent < op->accepted) {
    std::uint32_t seg = 0;
    while (seg < nseg && (segs_held_ & (1ull << seg))) ++seg;
    if (seg == nseg) break;  // all segments in flight
    std::uint64_t pos;
    auto* s = p.ctl.claim(pos);
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    // First, before the copy: names the writer of the claimed slot, so that
    // a receiver that finds it unpublished for long (we are stopped inside
    // the copy) sees a live writer, not one that died before naming itself.
    h->src_pid = pid_;
    const std::size_t chunk = std::min<std::size_t>(self_->seg_size(), op->accepted - op->sent);
    gather(op->iov, op->iov_count, op->sent, self_->segment(seg), chunk);
    hdr->seg_busy[seg].store(1, std::memory_order_release);
    segs_held_ |= 1ull << seg;
    op->seg_mask |= 1ull << seg;
    h->code = op::data;
    h->flags = 0;
    h->len = static_cast<std::uint32_t>(chunk);
    h->tag = op->sent;
    h->src_epid = epid_;
    h->cookie = cookie(txp_.index(op), op->gen);
    h->aux = op->rx_cookie;
    h->seg = seg;
    op->sent += chunk;
    if (!p.ctl.publish(pos)) {
      complete_tx(op, errc::io_error, "the receiver dropped part of the message (it took us for dead)");
      return;
    }
    wake(p);
  }
  if (op->sent == op->accepted && op->seg_mask == 0) complete_tx(op, errc::ok, "");
}

// Writes m into p's control ring; false when it is full (or when the slot
// was taken back because we stalled: not delivered either), so the caller
// keeps the reply and tries again.
bool endpoint_impl::post_ctrl(peer& p, const ctrl_msg& m) noexcept {
  const rx_op* r = nullptr;
  if (m.code == op::split) {  // the receive's iov list goes with the offer
    r = by_cookie(rxp_, m.aux);
    if (!r || !r->split) return true;  // that copy is over: nothing to offer any more
  }
  std::uint64_t pos;
  auto* s = p.ctl.claim(pos);
  if (!s) return false;
  auto* h = reinterpret_cast<slot_header*>(s);
  h->src_pid = pid_;
  h->code = m.code;
  h->flags = 0;
  h->len = m.len;
  h->data = m.data;
  h->src_epid = epid_;
  h->cookie = m.cookie;
  h->aux = m.aux;
  h->seg = m.seg;
  h->tag = m.tag;
  h->iov_count = 0;
  if (r) {
    auto* riov = reinterpret_cast<remote_iov*>(s + sizeof(slot_header));
    for (std::size_t i = 0; i < r->iov_count; ++i)
      riov[i] = remote_iov{reinterpret_cast<std::uint64_t>(r->iov[i].iov_base), r->iov[i].iov_len};
    h->iov_count = static_cast<std::uint32_t>(r->iov_count);
  }
  if (!p.ctl.publish(pos)) return false;  // the peer took the slot back (we looked dead): send it again
  wake(p);
  return true;
}

// A reply, now or, when the peer's control ring is full, from progress. The
// entry it may need was counted when the work was taken (owed_, or
// can_take_request for an answer), so the pool is never empty here.
void endpoint_impl::send_ctrl(const std::shared_ptr<peer>& p, const ctrl_msg& m, bool request) noexcept {
  if (post_ctrl(*p, m)) return;
  ctrl* c = ctp_.get();
  if (!c) [[unlikely]]
    return;  // unreachable: every caller holds an entry (owed_ or can_take_request)
  c->p = p;
  c->m = m;
  c->request = request;
  requests_waiting_ += request;
  ctrl_pending_.push_back(c);
}

void endpoint_impl::answer(const std::shared_ptr<peer>& p, std::uint64_t ck, errc st) noexcept {
  ctrl_msg m;
  m.code = op::ack;
  m.cookie = ck;
  m.aux = static_cast<std::uint64_t>(st);
  send_ctrl(p, m, true);
}

void endpoint_impl::deliver(rx_op* r, const incoming& in) noexcept {
  if (in.bad) [[unlikely]] {
    // A real sender learns that its message failed. Every caller mapped the
    // sender before taking the message (handle_incoming for a posted receive,
    // ack_reachable for an arrived one), waiting while it cannot be mapped
    // for want of resources: this lookup finds the mapped peer (allocating
    // nothing) and fails only for a sender that is gone, which needs no ack.
    if (in.code == op::rts)
      if (auto p = dom_->peer_by_key(in.src_key))
        send_owed(*p, r->owes, op::ack, in.cookie, static_cast<std::uint64_t>(errc::io_error), 0);
    char why[sizeof(cq_err_entry::msg)];
    std::snprintf(why, sizeof why, "malformed message from process %u: %s", static_cast<unsigned>(in.src_key >> 32),
                  in.bad);
    r->msg_tag = in.tag;
    complete_rx_error(r, errc::io_error, why);
    return;
  }
  if (in.code == op::inline_msg) {
    const std::size_t n = std::min<std::size_t>(in.len, r->cap);
    scatter(r->iov, r->iov_count, 0, in.payload, n);
    complete_rx(r, in, n);
  } else {
    start_rendezvous(r, in);
  }
}

void endpoint_impl::start_rendezvous(rx_op* r, const incoming& in) noexcept {
  r->msg_tag = in.tag;
  auto pr = dom_->peer_by_key(in.src_key);
  if (!pr) {
    if (pr.error().code == errc::peer_dead || pr.error().code == errc::not_found)
      complete_rx_error(r, errc::peer_dead, "the sender exited before its message could be read");
    else  // resources (EMFILE ...): the message says which and what to do
      complete_rx_error(r, pr.error().code, pr.error().message.c_str());
    return;
  }
  const std::shared_ptr<peer>& p = *pr;
  const std::size_t accept = std::min<std::size_t>(in.len, r->cap);
  if (accept == 0) {
    send_owed(p, r->owes, op::ack, in.cookie, static_cast<std::uint64_t>(errc::ok), 0);
    complete_rx(r, in, 0);
    return;
  }
  if (cfg_.cma && p->cma_ok) {
    r->p = p;
    start_split(r, in, accept);
    return;
  }
  r->p = p;
  r->active = true;
  r->msg_len = in.len;
  r->accepted = accept;
  r->received = 0;
  r->msg_data = in.data;
  r->msg_flags = in.flags;
  r->src_key = in.src_key;
  rx_active_.push_back(r);
  send_owed(p, r->owes, op::cts, in.cookie, cookie(rxp_.index(r), r->gen), accept);
  forgive(r->owes);  // the segmented receive needs no further reply
  r->owes = 0;
}

// A receive by cross-memory attach: the message is cut into chunks that
// progress copies, copy_budget bytes per progress call, so neither the call
// that matched the message nor any one progress call copies a large message
// at once. From split_min bytes (cooperative copy) the chunks are offered to
// the sender too (op::split with the receiver's iov list): each process
// claims chunks in the receiver's split_entry and copies them, the sender
// with process_vm_writev from its own progress. The receiver completes when
// every chunk is done and acknowledges the sender. A sender that is not
// progressing simply leaves every chunk to the receiver.
void endpoint_impl::start_split(rx_op* r, const incoming& in, std::size_t accept) noexcept {
  const std::uint32_t idx = rxp_.index(r);
  split_entry* se = self_->split(idx);
  const bool offer = cfg_.split_min && accept >= cfg_.split_min && r->p->coop_ok;
  // Offered: quarters of at least 64 KiB, work for both processes (measured:
  // 1 MiB one-way 34 us with quarters, 42 us with eighths). Either way at
  // most copy_piece: the step of progress.
  r->chunk = offer ? std::min(copy_piece, std::max<std::size_t>(64 * 1024, ((accept / 4) + 4095) & ~std::size_t{4095}))
                   : copy_piece;
  r->nchunks = static_cast<std::uint32_t>((accept + r->chunk - 1) / r->chunk);
  r->active = true;
  r->split = true;
  r->split_err = 0;
  r->msg_len = in.len;
  r->accepted = accept;
  r->msg_data = in.data;
  r->msg_flags = in.flags;
  r->src_key = in.src_key;
  r->msg_cookie = in.cookie;
  r->riov_count = in.iov_count;
  std::copy_n(in.riov, in.iov_count, r->riov);
  se->done.store(0, std::memory_order_relaxed);
  se->failed.store(0, std::memory_order_relaxed);
  se->claim.store(std::uint64_t{r->gen} << 32, std::memory_order_release);
  if (offer) {
    ctrl_msg m;
    m.code = op::split;
    m.cookie = in.cookie;
    m.aux = (std::uint64_t{r->gen} << 32) | idx;
    m.data = accept;
    m.tag = r->chunk;  // 64-bit
    m.seg = r->nchunks;
    send_owed(r->p, r->owes, m);  // one reply (the ack) stays owed
  }
  rx_active_.push_back(r);
  ++splits_pending_;
  if (budget_) copy_chunks(r, budget_);  // matched inside progress: start at once (a receive call copies nothing)
}

// Copies chunks of r while budget lasts (at least one chunk when any is
// left); finishes the receive when every chunk is done.
void endpoint_impl::copy_chunks(rx_op* r, std::size_t& budget) noexcept {
  split_entry* se = self_->split(rxp_.index(r));
  std::uint32_t c;
  while (budget && claim_chunk(*se, r->gen, r->nchunks, c)) {
    const std::size_t off = c * r->chunk, len = std::min(r->chunk, r->accepted - off);
    if (!r->split_err)
      r->split_err = r->p->map->closed() ? ESRCH
                                          : cma_copy(true, static_cast<pid_t>(r->p->pid), r->iov, r->iov_count,
                                                     r->riov, r->riov_count, off, len);
    se->done.fetch_add(1, std::memory_order_acq_rel);
    budget -= std::min(budget, len);
  }
  (void)finish_split(r);
}

bool endpoint_impl::finish_split(rx_op* r) noexcept {
  split_entry* se = self_->split(rxp_.index(r));
  if (se->done.load(std::memory_order_acquire) < r->nchunks) return false;
  // Close this generation so a late sender cannot claim anything.
  se->claim.store((std::uint64_t{r->gen} << 32) | r->nchunks, std::memory_order_release);
  if (!r->split_err && r->p->map->closed()) r->split_err = ESRCH;  // its buffers may be gone
  if (se->failed.load(std::memory_order_acquire) && !r->split_err) {
    // The sender could not write here: copy it all again ourselves, in
    // steps, under a generation the sender's offer does not name.
    r->p->coop_ok = false;
    ++r->gen;
    r->chunk = copy_piece;
    r->nchunks = static_cast<std::uint32_t>((r->accepted + r->chunk - 1) / r->chunk);
    se->done.store(0, std::memory_order_relaxed);
    se->failed.store(0, std::memory_order_relaxed);
    se->claim.store(std::uint64_t{r->gen} << 32, std::memory_order_release);
    return false;
  }
  rx_active_.erase(r);
  --splits_pending_;
  r->split = false;
  std::shared_ptr<peer> p = r->p;
  const std::uint64_t ck = r->msg_cookie;
  const int err = r->split_err;
  if (err == 0) {
    incoming in{op::rts, r->msg_flags, r->msg_len, r->msg_tag, r->msg_data, r->src_key, 0, nullptr, nullptr, 0};
    send_owed(p, r->owes, op::ack, ck, static_cast<std::uint64_t>(errc::ok), 0);
    complete_rx(r, in, r->accepted);
  } else if (err == EPERM || err == ENOSYS) {
    // Cross-memory attach refused: stream it through the sender's segments.
    p->cma_ok = false;
    r->received = 0;
    rx_active_.push_back(r);
    send_owed(p, r->owes, op::cts, ck, cookie(rxp_.index(r), r->gen), r->accepted);
  } else if (err == ESRCH) {
    complete_rx_error(r, errc::peer_dead, "the sender exited during the transfer");
  } else {
    send_owed(p, r->owes, op::ack, ck, static_cast<std::uint64_t>(errc::io_error), 0);
    complete_rx_error(r, errc::io_error, "the sender's buffer was not readable (freed before completion?)");
  }
  return true;
}

// The sender's side of a cooperative copy: the offer is kept with the send,
// and progress copies chunks of it (help_split) within its budget.
void endpoint_impl::handle_split(const slot_header* h) noexcept {
  tx_op* op = by_cookie(txp_, h->cookie);
  if (!op || op->state != tx_op::st::wait_reply || h->iov_count > max_iov || h->tag == 0) return;
  peer& p = *op->p;
  if (!p.map->split(static_cast<std::uint32_t>(h->aux)) || p.pid != h->src_pid) return;
  // An offer whose numbers do not fit our message is ignored: the receiver
  // then copies every chunk itself.
  const std::size_t accept = std::min<std::size_t>(h->data, op->len);
  if (h->tag > copy_piece || h->seg == 0 || h->seg > (accept + h->tag - 1) / h->tag) return;
  op->help_aux = h->aux;
  op->help_chunks = h->seg;
  op->help_chunk = h->tag;
  op->help_accept = accept;
  op->help_iov_count = h->iov_count;
  std::copy_n(reinterpret_cast<const remote_iov*>(reinterpret_cast<const std::byte*>(h) + sizeof(slot_header)),
              h->iov_count, op->help_iov);
  op->helping = true;
  if (budget_) help_split(op, budget_);  // at once, within this progress call's budget
}

void endpoint_impl::help_split(tx_op* op, std::size_t& budget) noexcept {
  peer& p = *op->p;
  split_entry* se = p.map->split(static_cast<std::uint32_t>(op->help_aux));
  const auto gen = static_cast<std::uint32_t>(op->help_aux >> 32);
  std::uint32_t c;
  bool more = false;
  // the receiver's endpoint closing revokes the offer (its buffers may go)
  while (budget && !p.map->closed() && (more = claim_chunk(*se, gen, op->help_chunks, c))) {
    const std::size_t off = std::size_t{c} * op->help_chunk;
    const std::size_t len = off < op->help_accept ? std::min(op->help_chunk, op->help_accept - off) : 0;
    if (len && cma_copy(false, static_cast<pid_t>(p.pid), op->iov, op->iov_count, op->help_iov, op->help_iov_count,
                        off, len)) {
      se->failed.store(1, std::memory_order_release);  // the receiver will copy everything itself
      se->done.fetch_add(1, std::memory_order_acq_rel);
      more = false;
      break;
    }
    se->done.fetch_add(1, std::memory_order_acq_rel);
    budget -= std::min(budget, len);
  }
  if (!more || p.map->closed()) op->helping = false;
  wake(p);
}

// A chunk of a segmented receive. Its segment is the sender's, lent until
// we give it back (seg_busy): data for a receive that is no longer active
// (failed, or a stale cookie) still gives it back. While the sender cannot
// be mapped for want of resources (EMFILE, no memory) the chunk is set aside
// (stale_, up to stale_max) and its segment given back once the mapping
// works, so the control messages behind it (acks, cts...) are not held;
// with the side list full it stays in the control ring (false) and is
// handled again later. Dropped, the segment would stay held and the sender's
// pool shrink for good. Only a sender that is gone (its segments with it)
// is not answered.
bool endpoint_impl::handle_data(const slot_header* h) noexcept {
  rx_op* r = by_cookie(rxp_, h->aux);
  if (r && r->split) r = nullptr;
  std::shared_ptr<peer> pr;
  if (r && r->active) {
    pr = r->p;
  } else {
    const std::uint64_t key = peer_key(h->src_pid, h->src_epid);
    auto m = dom_->peer_by_key(key);
    if (!m) {
      if (m.error().code != errc::no_memory) return true;  // gone: nothing to give back
      if (nstale_ == stale_max) return false;              // EMFILE, side list full: wait in the ring
      stale_[nstale_++] = stale_chunk{key, h->seg};         // EMFILE: aside, retried by progress
      return true;
    }
    pr = std::move(*m);
  }
  if (!pr) return true;
  auto* ph = pr->map->hdr();
  const bool sane = h->seg < pr->map->seg_count() && h->len <= pr->map->seg_size();
  if (r && r->active && sane && h->tag <= r->accepted && h->len <= r->accepted - h->tag) {
    scatter(r->iov, r->iov_count, h->tag, pr->map->segment(h->seg), h->len);
    r->received += h->len;
  }
  if (h->seg < pr->map->seg_count()) ph->seg_busy[h->seg].store(0, std::memory_order_release);
  wake(*pr);
  if (r && r->active && r->received >= r->accepted) {
    rx_active_.erase(r);
    incoming in{op::rts, r->msg_flags, r->msg_len, r->msg_tag, r->msg_data, r->src_key, 0, nullptr, nullptr, 0};
    complete_rx(r, in, r->accepted);
  }
  return true;
}

// The chunks set aside by handle_data, in order: each sender mapped now has
// its segment back; the first that still cannot be mapped (EMFILE) ends the
// round (the others would fail alike); a sender gone is forgotten.
void endpoint_impl::retry_stale() noexcept {
  std::size_t done = 0;
  for (; done < nstale_; ++done) {
    const stale_chunk& c = stale_[done];
    auto m = dom_->peer_by_key(c.key);
    if (!m) {
      if (m.error().code == errc::no_memory) break;
      continue;  // gone: its segments with it
    }
    peer& pr = **m;
    if (c.seg < pr.map->seg_count()) pr.map->hdr()->seg_busy[c.seg].store(0, std::memory_order_release);
    wake(pr);
  }
  if (done == 0) return;
  std::copy(stale_.begin() + static_cast<std::ptrdiff_t>(done), stale_.begin() + static_cast<std::ptrdiff_t>(nstale_),
            stale_.begin());
  nstale_ -= done;
}

}  // namespace weft::prov::shm

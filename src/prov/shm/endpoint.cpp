// shm RDM endpoint: the message protocol (docs/wire/shm.md).
//  - len <= inline_max: one ring slot carries the payload (no syscall).
//  - larger: rendezvous. RTS carries the sender's iov list; the receiver, once
//    matched, either reads it with one process_vm_readv and answers ACK, or
//    answers CTS and the sender streams chunks through its bounce segments.
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/source_holds.hpp"
#include "prov/shm/copy.hpp"
#include "prov/shm/endpoint.hpp"
#include "util/clock.hpp"
#include "util/match.hpp"

namespace weft::prov::shm {

namespace {

std::atomic<std::uint32_t> next_epid{1};
constexpr int progress_batch = 64;
constexpr std::uint32_t stuck_check_polls = 4096;  // empty polls between checks (and at every sleep)
constexpr std::uint64_t stuck_dead_writer_ns = 1'000'000'000;  // writer known and dead
constexpr std::uint64_t stuck_unknown_writer_ns = 5'000'000'000;  // died before naming itself

}  // namespace

result<void> endpoint_impl::init() {
  if (info_.ep.type != ep_type::rdm && info_.ep.type != ep_type::unspec)
    return make_error(errc::not_supported, "shm offers RDM endpoints only: ask get_info for ep_type::rdm");
  pid_ = static_cast<std::uint32_t>(::getpid());
  epid_ = next_epid.fetch_add(1);
  auto m = mapping::create(region_name(static_cast<std::uint32_t>(::getuid()), pid_, epid_), cfg_, epid_);
  if (!m) return std::unexpected(m.error());
  self_ = std::move(*m);
  ring_ = self_->ring();
  ctl_ = self_->ctl_ring();
  req_ = self_->req_ring();
  advertise_fences(*self_);
  self_hdr_ = self_->hdr();
  room_fenced_ = advertise_room_fences(*self_);
  inline_max_ = cfg_.inline_max();
  source_cap_ = (info_.caps & cap::source) != 0;
  if (std::uint64_t l = info_.tx.op_flags & flag::completion_levels) level_ = l;
  reg_ = dom_->registry();
  reg_->add_observer(this);
  observing_ = true;
  inject_bufs_.reset(new std::byte[static_cast<std::size_t>(inline_max_) * rma_inject_bufs]);
  for (std::uint32_t i = 0; i < rma_inject_bufs; ++i) inject_free_.push_back(rma_inject_bufs - 1 - i);
  ux_storage_.reset(new std::byte[unexpected_count * static_cast<std::size_t>(inline_max_)]);
  for (std::uint32_t i = 0; i < unexpected_count; ++i)
    uxp_.at(i)->payload = ux_storage_.get() + std::size_t{i} * inline_max_;
  if (info_.src_port) {
    auto r = register_port(info_.src_port, self_->name());
    if (!r) return std::unexpected(r.error());
    port_ = info_.src_port;
  }
  return {};
}

endpoint_impl::~endpoint_impl() {
  // A wait on our CQs, EQ or counters from another thread must neither
  // drive nor arm us while we come apart: their sources locks until we are detached.
  const core::source_holds holds(txcq_.get(), rxcq_.get(), eq_.get(), cntrs_);
  // Peers may be copying into a region through our table, which outlives
  // us in their mappings: every key leaves it, and each access under way
  // ends, before the regions can close without us (revoked()).
  if (observing_) reg_->withdraw_observer(this);
  // Cooperative copies in progress: close their generations so no sender
  // claims another chunk, and wait for the chunks already claimed: a sender
  // that claimed one writes it into the receive buffer, which is the
  // application's again once we return. It is waited for while it lives,
  // however long it is stopped (as a region's close waits for an RMA access
  // under way: wait_unaccessed); a sender found dead or closed writes nothing.
  // In a forked child the region and its split entries are the parent's.
  for (rx_op* r = rx_active_.front(); r && creator_.is_this_process(); r = rx_active_.next(r)) {
    if (!r->split) continue;
    split_entry* se = self_->split(rxp_.index(r));
    std::uint64_t w = se->claim.exchange((std::uint64_t{r->gen} << 32) | r->nchunks, std::memory_order_acq_rel);
    const auto claimed = std::min<std::uint32_t>(static_cast<std::uint32_t>(w), r->nchunks);
    wait_claimed_chunks(*se, claimed, *r->p->map);
  }
  // Give back the CQ room held by operations that will never complete.
  if (rxcq_) {
    for (auto* l : {&posted_msg_, &posted_tag_, &rx_active_})
      for (rx_op* r = l->front(); r; r = l->next(r)) rxcq_->unreserve();
  }
  if (txcq_)
    for (tx_op* op = tx_active_.front(); op; op = tx_active_.next(op))
      txcq_->unreserve();  // every operation reserved room (an inject write, for its failure)
  if (txcq_) txcq_->detach(this);
  if (rxcq_ && rxcq_ != txcq_) rxcq_->detach(this);
  if (eq_) eq_->detach(this);
  for (spi::cntr* c : cntrs_.distinct()) c->detach(this);
  if (port_) unregister_port(port_, self_->name());
}

result<void> endpoint_impl::bind_cq(std::shared_ptr<spi::cq> q, std::uint64_t flags) {
  if (enabled_) return make_error(errc::bad_state, "bind CQs before enable()");
  if (((flags & flag::transmit) && txcq_) || ((flags & flag::receive) && rxcq_))
    return make_error(errc::bad_state, "a completion queue is already bound for that direction");
  if (!q->set_lock(nullptr) || q->lock_in_use())
    return make_error(errc::bad_state, "this completion queue serves an automatic-progress domain of another provider");
  if (flags & flag::transmit) txcq_ = q;
  if (flags & flag::receive) rxcq_ = q;
  q->attach(this);
  return {};
}

result<void> endpoint_impl::bind_av(std::shared_ptr<spi::av> a) {
  if (enabled_) return make_error(errc::bad_state, "bind the address vector before enable()");
  auto p = std::dynamic_pointer_cast<av_impl>(a);
  if (!p) return make_error(errc::invalid_argument, "the address vector belongs to another provider");
  av_ = std::move(p);
  return {};
}

result<void> endpoint_impl::bind_cntr(std::shared_ptr<spi::cntr> c, std::uint64_t flags) {
  if (enabled_) return make_error(errc::bad_state, "bind counters before enable()");
  auto fresh = cntrs_.bind(c, flags);
  if (!fresh) return std::unexpected(fresh.error());
  if (*fresh) c->attach(this);
  // Counting peers' accesses needs to see them: no one-sided RMA into us.
  if (flags & (flag::remote_read | flag::remote_write))
    self_->hdr()->flags.fetch_or(region_flag::two_sided_rma, std::memory_order_release);
  return {};
}

result<void> endpoint_impl::bind_eq(std::shared_ptr<spi::eq> q) {
  if (enabled_) return make_error(errc::bad_state, "bind the event queue before enable()");
  if (eq_) return make_error(errc::bad_state, "an event queue is already bound to this endpoint");
  if (!q->set_lock(nullptr) || q->lock_in_use())
    return make_error(errc::bad_state, "this event queue serves an automatic-progress domain of another provider");
  eq_ = std::move(q);
  eq_->attach(this);  // reading the EQ drives this endpoint, so deaths are found while the application waits there
  return {};
}

result<void> endpoint_impl::enable() {
  if (!txcq_ || !rxcq_)
    return make_error(errc::bad_state, "bind a completion queue for transmit and receive before enable() "
                                       "(bind(cq) binds both)");
  watch_.bind(rxcq_.get(), eq_.get(), av_.get());
  enabled_ = true;
  return {};
}

// ---------------------------------------------------------------- sending

errc endpoint_impl::send(const msg_desc& m, std::uint64_t flags) noexcept {
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("send");
  if (m.iov_count > max_iov || (!m.iov && m.iov_count)) [[unlikely]]
    return spi::bad_iov("send", m.iov_count, max_iov);
  const std::shared_ptr<peer>* pp = av_ ? av_->at(m.addr) : nullptr;
  if (!pp) [[unlikely]]
    return spi::no_peer("send", m.addr, av_ != nullptr);
  peer& p = **pp;
  if (p.map->closed()) [[unlikely]]  // its endpoint is closed: nothing would read this
    return spi::peer_gone("send", m.addr);
  const std::size_t len = checked_total(m.iov, m.iov_count);  // SIZE_MAX when it overflows: too_big below
  const std::uint16_t sflags = static_cast<std::uint16_t>(((flags & flag::tagged) ? slot_flag::tagged : 0) |
                                                          ((flags & flag::remote_cq_data) ? slot_flag::cq_data : 0));
  const bool inject = flags & flag::inject;
  const std::uint64_t cflags = flag::send | (flags & (flag::msg | flag::tagged));
  std::uint64_t pos;

  if (len <= p.inline_max) {
    if (!inject && !txcq_->reserve()) return again(again_reason::cq_full);
    auto* s = p.ring.claim(pos);
    if (!s) [[unlikely]] {
      if (!inject) txcq_->unreserve();
      return refused_busy(*pp, &peer::ring);
    }
    room_found(p);
    auto* h = reinterpret_cast<slot_header*>(s);
    h->src_pid = pid_;  // first: names the writer if it dies before publishing
    h->code = op::inline_msg;
    h->flags = sflags;
    h->len = static_cast<std::uint32_t>(len);
    h->tag = m.tag;
    h->data = m.data;
    h->src_epid = epid_;
    gather(m.iov, m.iov_count, 0, s + sizeof(slot_header), len);
    if (!p.ring.publish(pos)) [[unlikely]] {
      if (!inject) txcq_->unreserve();
      return spi::fail(errc::io_error, "send: the receiver took this process for dead and skipped its message (its "
                                       "liveness check timed out); the message was not delivered");
    }
    wake(p);
    if (!inject) txcq_->push(cq_entry{m.context, cflags, len, nullptr, 0, m.tag, addr_unspec});
    if (cntrs_.send) cntrs_.send->inc();
    return errc::ok;
  }
  if (inject || len > max_msg_size)
    return inject ? spi::over_limit("inject", len, "tx.inject_size", p.inline_max)
                  : spi::over_limit("send", len, "ep.max_msg_size", max_msg_size);
  tx_op* op = txp_.get();
  if (!op) return again(again_reason::tx_full);
  if (!txcq_->reserve()) {
    txp_.put(op);
    return again(again_reason::cq_full);
  }
  auto* s = p.ring.claim(pos);
  if (!s) {
    txcq_->unreserve();
    txp_.put(op);
    return refused_busy(*pp, &peer::ring);
  }
  room_found(p);
  op->state = tx_op::st::wait_reply;
  op->ctx = m.context;
  op->flags = cflags;
  std::copy_n(m.iov, m.iov_count, op->iov);
  op->iov_count = m.iov_count;
  op->len = len;
  op->p = *pp;
  op->accepted = op->sent = 0;
  op->seg_mask = 0;
  op->tag = m.tag;
  op->data = m.data;
  auto* h = reinterpret_cast<slot_header*>(s);
  h->src_pid = pid_;
  h->code = op::rts;
  h->flags = sflags;
  h->len = 0;
  h->tag = m.tag;
  h->data = m.data;
  h->src_epid = epid_;
  h->cookie = cookie(txp_.index(op), op->gen);
  h->aux = len;
  h->iov_count = static_cast<std::uint32_t>(m.iov_count);
  auto* riov = reinterpret_cast<remote_iov*>(s + sizeof(slot_header));
  for (std::size_t i = 0; i < m.iov_count; ++i)
    riov[i] = remote_iov{reinterpret_cast<std::uint64_t>(m.iov[i].iov_base), m.iov[i].iov_len};
  return finish_request(p, p.ring, op, pos);
}

void endpoint_impl::complete_tx(tx_op* op, errc e, const char* what) noexcept {
  tx_active_.erase(op);
  if (op->seg_mask) {  // segments the (dead) receiver never released
    for (std::uint32_t i = 0; i < max_segments; ++i)
      if (op->seg_mask & (1ull << i)) self_->hdr()->seg_busy[i].store(0, std::memory_order_relaxed);
    segs_held_ &= ~op->seg_mask;
  }
  spi::count(cntrs_.of_tx(op->flags), e == errc::ok);
  if (!op->completion) {
    // inject write: nothing to report when it worked; a failure is not lost
    // (its room was reserved when it was posted)
    if (e == errc::ok) {
      txcq_->unreserve();
    } else {
      cq_err_entry ee;
      ee.flags = op->flags | flag::inject;
      ee.err = e;
      std::snprintf(ee.msg, sizeof ee.msg, "an injected write failed at the target: %s", what);
      txcq_->push_error(ee);
    }
  } else if (e == errc::ok) {
    txcq_->push(cq_entry{op->ctx, op->flags, op->len, nullptr, 0, op->tag, addr_unspec});
  } else {
    cq_err_entry ee;
    ee.context = op->ctx;
    ee.flags = op->flags;
    ee.tag = op->tag;
    ee.err = e;
    std::snprintf(ee.msg, sizeof ee.msg, "%s", what);
    txcq_->push_error(ee);
  }
  put_tx(op);
}

void endpoint_impl::handle_ack(const slot_header* h) noexcept {
  tx_op* op = by_cookie(txp_, h->cookie);
  if (!op || op->state != tx_op::st::wait_reply) return;  // stale
  // a status that is no weft::errc (a confused peer) is reported as io_error
  const errc st =
      h->aux <= static_cast<std::uint64_t>(errc::permission_denied) ? static_cast<errc>(h->aux) : errc::io_error;
  if (st != errc::ok && op->part_err == errc::ok) op->part_err = st;
  if (op->parts > 1) {  // an RMA over several remote ranges: wait for every part
    --op->parts;
    return;
  }
  errc e = op->part_err;
  const char* why = "";
  if (e != errc::ok) {
    if (!(op->flags & flag::rma)) why = "the receiver could not read the message (see its error completion)";
    else if (e == errc::not_found) why = "no memory region with that key at the target (closed, or a wrong key)";
    else if (e == errc::permission_denied) why = "the target region does not allow this access";
    else if (e == errc::busy) why = "written, but the target's completion queue is full: retry after it reads it";
    else if (e == errc::invalid_argument)
      why = "the remote range lies outside the target region (or is not aligned for an atomic)";
    else if (e == errc::not_supported) why = "the target does not support this operation";
    else if ((op->flags & flag::save) || e == errc::io_error) why = "the target could not make the data durable (or copy it)";
    else why = "the target could not copy the data, or its commit handler refused";
  }
  complete_tx(op, e, why);
}

// --------------------------------------------------------------- receiving

errc endpoint_impl::recv(const msg_desc& m, std::uint64_t flags) noexcept {
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("receive");
  if (m.iov_count > max_iov || (!m.iov && m.iov_count)) [[unlikely]]
    return spi::bad_iov("receive", m.iov_count, max_iov);
  if (spi::iov_overflows(m.iov, m.iov_count)) [[unlikely]]
    return spi::fail(errc::too_big, "receive: the iov lengths add up to more than 2^64 - 1 bytes (give at most "
                                    "SIZE_MAX bytes in all)");
  std::uint64_t src = util::any_source;
  const peer* from = nullptr;
  if (m.addr != addr_unspec) {
    const std::shared_ptr<peer>* pp = av_ ? av_->at(m.addr) : nullptr;
    if (!pp) return spi::no_peer("receive", m.addr, av_ != nullptr);
    src = (*pp)->key;
    from = pp->get();
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
    return util::source_matches(src, x.src_key) && (!tagged || util::tag_matches(m.tag, m.ignore, x.tag));
  });
  if (u && !ack_reachable(u)) {  // its sender cannot be mapped now (EMFILE): nothing is lost
    rxcq_->unreserve();
    rxp_.put(r);
    return again(again_reason::no_resources);
  }
  if (u) {
    uxl.erase(u);
    r->owes = u->owes;  // the replies held for it when it arrived
    u->owes = 0;
    deliver(r, u->view());
    release_unexpected(u, false);
    return errc::ok;
  }
  if (from && from->map->closed()) [[unlikely]] {
    // Directed at a peer that is gone: once what it sent was consumed, it can never match.
    if (watch_.fate_of(src, ring_.claimed()) == peer_watch::fate::dead) {
      char name[48], msg[160];
      peer_name(src, name);
      std::snprintf(msg, sizeof msg, "receive directed at shm peer %s, which is gone (died or closed): it can "
                    "never match; post it for another peer", name);
      r->msg_tag = m.tag;
      complete_rx_error(r, errc::peer_dead, msg);
      return errc::ok;
    }
  }
  (tagged ? posted_tag_ : posted_msg_).push_back(r);
  directed_posted_ += src != util::any_source;
  return errc::ok;
}

void endpoint_impl::release_unexpected(unexp* u, bool ack_sender) noexcept {
  if (ack_sender && u->code == op::rts) {  // discarded: let the sender complete
    auto p = dom_->peer_by_key(u->src_key);
    if (p) send_owed(*p, u->owes, op::ack, u->cookie, static_cast<std::uint64_t>(errc::ok), 0);
  }
  forgive(u->owes);
  u->owes = 0;
  u->claim_ctx = nullptr;
  uxp_.put(u);
}

errc endpoint_impl::peek_claim(const msg_desc& m, std::uint64_t flags, std::uint64_t src) noexcept {
  if (!rxcq_->reserve()) return again(again_reason::cq_full);
  const std::uint64_t cflags = flag::recv | flag::tagged;
  if (flags & flag::peek) {
    progress();  // look at what has arrived so far
    unexp* u = ux_tag_.find([&](const unexp& x) {
      return util::source_matches(src, x.src_key) && util::tag_matches(m.tag, m.ignore, x.tag);
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
    cq_entry c{m.context, cflags | ((u->flags & slot_flag::cq_data) ? flag::remote_cq_data : 0), u->len, nullptr,
               u->data, u->tag, source_of(u->src_key)};
    if (flags & flag::discard) {
      if (!ack_reachable(u)) {
        rxcq_->unreserve();
        return again(again_reason::no_resources);
      }
      ux_tag_.erase(u);
      release_unexpected(u, true);
    } else if (flags & flag::claim) {
      ux_tag_.erase(u);
      u->claim_ctx = m.context;
      claimed_.push_back(u);
    }
    rxcq_->push(c);
    return errc::ok;
  }
  // claim: receive (or discard) the message an earlier peek|claim reserved.
  unexp* u = claimed_.find([&](const unexp& x) { return x.claim_ctx == m.context; });
  if (!u) {
    rxcq_->unreserve();
    return spi::fail(errc::not_found, "claim: no message was reserved for this context by a peek|claim");
  }
  if (flags & flag::discard) {
    if (!ack_reachable(u)) {
      rxcq_->unreserve();
      return again(again_reason::no_resources);
    }
    claimed_.erase(u);
    rxcq_->push(cq_entry{m.context, cflags, 0, nullptr, u->data, u->tag, source_of(u->src_key)});
    release_unexpected(u, true);
    return errc::ok;
  }
  rx_op* r = rx_reachable_or_again(u);
  if (!r) {
    rxcq_->unreserve();
    return again(rxp_.available() ? again_reason::no_resources : again_reason::rx_full);
  }
  claimed_.erase(u);
  r->ctx = m.context;
  r->flags = cflags;
  std::copy_n(m.iov, m.iov_count, r->iov);
  r->iov_count = m.iov_count;
  r->cap = iov_total(m.iov, m.iov_count);
  r->owes = u->owes;
  u->owes = 0;
  deliver(r, u->view());
  release_unexpected(u, false);
  return errc::ok;
}

errc endpoint_impl::cancel(void* context) noexcept {
  for (auto* l : {&posted_msg_, &posted_tag_}) {
    rx_op* r = l->find([&](const rx_op& x) { return x.ctx == context; });
    if (!r) continue;
    l->erase(r);
    directed_posted_ -= r->src_filter != util::any_source;
    cq_err_entry e;
    e.context = r->ctx;
    e.flags = r->flags;
    e.buf = r->iov_count ? r->iov[0].iov_base : nullptr;
    e.err = errc::canceled;
    std::snprintf(e.msg, sizeof e.msg, "receive canceled by cancel()");
    rxcq_->push_error(e);
    if (cntrs_.recv) cntrs_.recv->inc_err();
    put_rx(r);
    return errc::ok;
  }
  return spi::fail(errc::not_found, "cancel: no posted receive has this context");
}

void endpoint_impl::complete_rx(rx_op* r, const incoming& in, std::size_t copied) noexcept {
  const std::uint64_t f = r->flags | ((in.flags & slot_flag::cq_data) ? flag::remote_cq_data : 0);
  void* buf = r->iov_count ? r->iov[0].iov_base : nullptr;
  spi::count(cntrs_.recv.get(), copied >= in.len);
  if (copied < in.len) {
    cq_err_entry e;
    e.context = r->ctx;
    e.flags = f;
    e.len = copied;
    e.buf = buf;
    e.data = in.data;
    e.tag = in.tag;
    e.olen = in.len - copied;
    e.err = errc::truncated;
    std::snprintf(e.msg, sizeof e.msg, "message of %llu bytes truncated to the %zu-byte receive buffer",
                  static_cast<unsigned long long>(in.len), copied);
    rxcq_->push_error(e);
  } else {
    rxcq_->push(cq_entry{r->ctx, f, copied, buf, in.data, in.tag, source_of(in.src_key)});
  }
  put_rx(r);
}

void endpoint_impl::complete_rx_error(rx_op* r, errc err, const char* what) noexcept {
  if (cntrs_.recv) cntrs_.recv->inc_err();
  cq_err_entry e;
  e.context = r->ctx;
  e.flags = r->flags;
  e.buf = r->iov_count ? r->iov[0].iov_base : nullptr;
  e.tag = r->msg_tag;
  e.err = err;
  std::snprintf(e.msg, sizeof e.msg, "%s", what);
  rxcq_->push_error(e);
  put_rx(r);
}

bool endpoint_impl::handle_incoming(const slot_header* h) noexcept {
  const bool tagged = h->flags & slot_flag::tagged;
  const std::uint64_t key = peer_key(h->src_pid, h->src_epid);
  watch_.saw(key);  // a sender is a known peer: its death is reported
  incoming in{h->code, h->flags, 0, h->tag, h->data, key, h->cookie,
              reinterpret_cast<const std::byte*>(h) + sizeof(slot_header),
              reinterpret_cast<const remote_iov*>(reinterpret_cast<const std::byte*>(h) + sizeof(slot_header)),
              h->iov_count};
  std::uint32_t owes = 0;  // control replies this message will need (rts: now, and an ack later)
  // Every length is checked before use: a malformed message fails the
  // receive it matches (io_error) and reads nothing.
  if (h->code == op::inline_msg) {
    if (h->len > inline_max_) in.bad = "an inline message longer than a ring slot";
    else in.len = h->len;
  } else {
    owes = 2;
    if (!can_owe(owes)) return false;  // no room for its replies yet: leave it in the ring (back-pressure)
    if (h->iov_count > max_iov) in.bad = "a rendezvous announcement with more than 16 buffers";
    else if (h->aux > max_msg_size) in.bad = "a rendezvous announcement larger than max_msg_size";
    else if (checked_total(in.riov, h->iov_count) != h->aux)
      in.bad = "a rendezvous announcement whose buffers do not add up to its length";
    else in.len = h->aux;
  }
  if (in.bad) in.iov_count = 0;
  auto& pl = tagged ? posted_tag_ : posted_msg_;
  rx_op* r = pl.find([&](const rx_op& x) {
    return util::source_matches(x.src_filter, key) && (!tagged || util::tag_matches(x.tag, x.ignore, h->tag));
  });
  if (r && h->code == op::rts) {
    // Its sender is answered (cts, ack): while it cannot be mapped for want
    // of descriptors (EMFILE), the announcement waits in the ring.
    auto p = dom_->peer_by_key(key);
    if (!p && p.error().code == errc::no_memory) return false;
  }
  if (r) {
    pl.erase(r);
    directed_posted_ -= r->src_filter != util::any_source;
    owe(owes);
    r->owes = owes;
    deliver(r, in);
    return true;
  }
  unexp* u = uxp_.get();
  if (!u) return false;  // unexpected buffers full: leave it in the ring (back-pressure)
  owe(owes);
  u->owes = owes;
  u->code = in.code;
  u->flags = in.flags;
  u->len = in.len;
  u->tag = in.tag;
  u->data = in.data;
  u->src_key = key;
  u->cookie = in.cookie;
  u->iov_count = in.code == op::rts ? in.iov_count : 0;
  u->bad = in.bad;
  if (in.code == op::inline_msg) std::memcpy(u->payload, in.payload, in.len);
  else std::copy_n(in.riov, in.iov_count, u->riov);
  (tagged ? ux_tag_ : ux_msg_).push_back(u);
  return true;
}

// ----------------------------------------------------------------- progress

bool endpoint_impl::handle_control(slot_header* h) noexcept {
  switch (h->code) {
    case op::cts: handle_cts(h); break;
    case op::ack: handle_ack(h); break;
    case op::data: return handle_data(h);
    case op::split: handle_split(h); break;
    default: break;  // nop, not a control code, or a recovered slot: drop
  }
  return true;
}

// Requests are taken only while their answer has room (can_take_request).
bool endpoint_impl::handle_request(slot_header* h) noexcept {
  switch (h->code) {
    case op::rma_write:
    case op::rma_read: return handle_rma(h);
    case op::atomic: return handle_atomic(h);
    case op::save: return handle_save(h);
    default: return true;  // nop, not a request, or a recovered slot: drop
  }
}

void endpoint_impl::progress() noexcept {
  budget_ = copy_budget;  // large copies: about this much per call in all
  // Control first: it never waits for anything, so it is never blocked.
  int work = 0;
  for (int i = 0; i < progress_batch; ++i, ++work) {
    auto* s = ctl_.peek();
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    if (!handle_control(h)) break;  // a segment whose owner cannot be mapped now (EMFILE): given back later
    h->src_pid = 0;  // the next writer of this slot names itself afresh
    ctl_.pop();
  }
  // Requests while their answers have room: otherwise they wait in the ring
  // (their initiators see again) until the answers we hold drain.
  for (int i = 0; i < progress_batch && can_take_request(); ++i, ++work) {
    auto* s = req_.peek();
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    if (!handle_request(h)) break;  // its initiator cannot be mapped now (EMFILE): retried later
    h->src_pid = 0;
    req_.pop();
  }
  for (int i = 0; i < progress_batch; ++i, ++work) {
    auto* s = ring_.peek();
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    if ((h->code == op::inline_msg || h->code == op::rts) && !handle_incoming(h)) break;  // back-pressure
    h->src_pid = 0;
    ring_.pop();
  }
  if (work) room_freed();  // a sender refused for a full ring may sleep: tell it
  if (work == 0) {
    if (++idle_polls_ >= stuck_check_polls) {
      idle_polls_ = 0;
      housekeeping();
    }
    liveness(util::coarse_now_ns());  // an empty poll: a few loads from the vDSO page
  } else if ((++busy_polls_ & 15) == 0) {
    liveness(util::coarse_now_ns());
  }
  if (nstale_) [[unlikely]]
    retry_stale();
  for (ctrl* c = ctrl_pending_.front(); c;) {
    // Each entry on its own: a peer that does not progress blocks only itself.
    ctrl* next = ctrl_pending_.next(c);
    bool stale = !c->p->map->owner_alive();
    if (c->m.code == op::split) {  // an offer whose copy is already over
      split_entry* se = self_->split(static_cast<std::uint32_t>(c->m.aux));
      const std::uint64_t w = se ? se->claim.load(std::memory_order_acquire) : 0;
      stale = stale || !se || (w >> 32) != (c->m.aux >> 32) || static_cast<std::uint32_t>(w) >= c->m.seg;
    }
    if (stale || post_ctrl(*c->p, c->m)) {
      ctrl_pending_.erase(c);
      c->p.reset();
      requests_waiting_ -= c->request;
      ctp_.put(c);
    }
    c = next;
  }
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->state == tx_op::st::streaming) stream(op);
    else if (op->helping && budget_) help_split(op, budget_);
    op = next;
  }
  if (splits_pending_) {
    for (rx_op* r = rx_active_.front(); r;) {
      rx_op* next = rx_active_.next(r);
      if (r->split) copy_chunks(r, budget_);  // with no budget left: only finish what others copied
      r = next;
    }
  }
  budget_ = 0;  // outside progress (a receive being posted) nothing is copied
}

void endpoint_impl::housekeeping() noexcept {
  check_stuck_head(ring_, stuck_ring_);
  check_stuck_head(ctl_, stuck_ctl_);
  check_stuck_head(req_, stuck_req_);
  dom_->sweep();
}

// A producer killed between claiming a slot and publishing it would block the
// ring for everyone. If the head slot stays claimed-but-unpublished and its
// writer is dead (or never named itself within 5 s), the slot is skipped.
void endpoint_impl::check_stuck_head(util::mpsc_ring& ring, stuck_state& st) noexcept {
  const std::uint64_t head = ring.head();
  if (ring.claimed() == head || ring.peek()) {
    st.pos = ~0ull;
    return;
  }
  const std::uint64_t now = util::now_ns();
  if (st.pos != head) {
    st.pos = head;
    st.since = now;
    return;
  }
  auto* h = reinterpret_cast<slot_header*>(ring.head_slot());
  const std::uint32_t writer = __atomic_load_n(&h->src_pid, __ATOMIC_RELAXED);
  bool dead;
  if (writer != 0) {
    dead = now - st.since >= stuck_dead_writer_ns && ::kill(static_cast<pid_t>(writer), 0) != 0 && errno == ESRCH;
  } else {
    dead = now - st.since >= stuck_unknown_writer_ns;
  }
  if (!dead) return;
  h->code = static_cast<op>(0);
  ring.recover_head();  // a late writer's publish now fails instead of jamming the ring
  st.pos = ~0ull;
}

// Every reply already given: the control messages published (bounded by the
// ring's size), and segments released by receivers of streamed sends whose
// data is all sent (such a send completes when they are free: no ack).
void endpoint_impl::drain_control() noexcept {
  for (std::uint32_t i = 0; i < ctl_.slot_count(); ++i) {
    auto* s = ctl_.peek();
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    if (!handle_control(h)) break;  // a segment whose owner cannot be mapped now (EMFILE): given back later
    h->src_pid = 0;
    ctl_.pop();
  }
  room_freed();
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->state == tx_op::st::streaming && op->sent == op->accepted) stream(op);
    op = next;
  }
}

}  // namespace weft::prov::shm

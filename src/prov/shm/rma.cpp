// shm RMA and atomics: one-sided where the target need not see the access,
// two-sided through the target's rings otherwise (docs/rma.md,
// docs/wire/shm.md "RMA").
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
#include "core/atomic_apply.hpp"
#include "core/rma_request.hpp"
#include "weft/atomic.hpp"

namespace weft::prov::shm {

// A request that a peer answers with ack (RMA, atomics): an operation, CQ
// room for its completion and a slot of the peer's request ring, or again.
errc endpoint_impl::begin_request(const std::shared_ptr<peer>& sp, void* ctx, tx_op*& op, std::byte*& slot, std::uint64_t& pos) noexcept {
  peer& p = *sp;
  op = txp_.get();
  if (!op) return again(again_reason::tx_full);
  if (!txcq_->reserve()) {
    txp_.put(op);
    return again(again_reason::cq_full);
  }
  slot = p.req.claim(pos);
  if (!slot) {
    txcq_->unreserve();
    txp_.put(op);
    return refused_busy(sp, &peer::req);
  }
  room_found(p);
  op->state = tx_op::st::wait_reply;
  op->ctx = ctx;
  return errc::ok;
}

errc endpoint_impl::finish_request(peer& p, util::mpsc_ring& ring, tx_op* op, std::uint64_t pos) noexcept {
  if (!ring.publish(pos)) [[unlikely]] {
    txcq_->unreserve();
    op->p.reset();
    txp_.put(op);
    return spi::fail(errc::io_error, "the peer took this process for dead and skipped its request (its liveness "
                                     "check timed out); the request was not delivered");
  }
  tx_active_.push_back(op);
  wake(p);
  return errc::ok;
}

errc endpoint_impl::rma(const rma_desc& d, std::uint64_t flags) noexcept {
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("RMA");
  if (!cfg_.cma)
    return spi::fail(errc::not_supported, "RMA on shm needs cross-memory attach (WEFT_SHM_CMA=0 turns it off)");
  const std::shared_ptr<peer>* pp = av_ ? av_->at(d.addr) : nullptr;
  if (!pp) [[unlikely]]
    return spi::no_peer("RMA", d.addr, av_ != nullptr);
  peer& p = **pp;
  if (p.map->closed()) return spi::peer_gone("RMA", d.addr);
  core::rma_request q;
  if (errc e = core::parse_rma(d, flags, level_, max_iov, 0xffffffffu, inline_max_, 0xffffffffu, q); e != errc::ok)
    return e;
  const bool save = q.save, write = q.write, inject = q.inject;
  const std::size_t len = q.len;
  const std::uint64_t level = q.level;
  const rma_iov* rr = q.ranges();
  const std::size_t nr = q.count;
  // Straight into the target's memory unless it must see the access: remote
  // CQ data, commit (flush and handler), SAVE, or it counts peers' accesses.
  if (!save && !(write && (flags & flag::remote_cq_data)) && level != flag::commit_complete &&
      !(p.map->hdr()->flags.load(std::memory_order_acquire) & region_flag::two_sided_rma))
    if (access_claim* slot = access_to(p)) [[likely]]
      return one_sided(p, *slot, d, rr, nr, len, write, inject);
  // Every part is answered by its own ack: bound what a target may owe us.
  if (rma_parts_ + nr > max_rma_parts) return again(again_reason::tx_full);
  tx_op* op = txp_.get();
  if (!op) return again(again_reason::tx_full);
  // Room for the completion, or for an inject write's failure: never dropped.
  if (!txcq_->reserve()) {
    txp_.put(op);
    return again(again_reason::cq_full);
  }
  if (inject) {
    if (inject_free_.empty()) {
      txcq_->unreserve();
      txp_.put(op);
      return again(again_reason::tx_full);
    }
    op->ibuf = static_cast<std::int32_t>(inject_free_.back());
    inject_free_.pop_back();
  }
  // Every part's request slot first, so that a full ring gives nothing away.
  std::byte* slots[max_iov];
  std::uint64_t pos[max_iov];
  for (std::size_t i = 0; i < nr; ++i) {
    slots[i] = p.req.claim(pos[i]);
    if (!slots[i]) {
      for (std::size_t j = 0; j < i; ++j) {
        reinterpret_cast<slot_header*>(slots[j])->code = op::nop;
        (void)p.req.publish(pos[j]);
      }
      txcq_->unreserve();
      put_tx(op);
      return refused_busy(*pp, &peer::req);
    }
  }
  room_found(p);
  op->state = tx_op::st::wait_reply;
  op->ctx = d.context;
  op->flags = flag::rma | (save ? flag::save : write ? flag::write : flag::read);
  op->completion = !inject;
  op->parts = static_cast<std::uint32_t>(nr);
  op->rma_parts = static_cast<std::uint32_t>(nr);
  rma_parts_ += nr;
  op->part_err = errc::ok;
  op->len = len;
  op->p = *pp;
  op->tag = 0;
  if (inject) {
    std::byte* b = inject_bufs_.get() + static_cast<std::size_t>(op->ibuf) * inline_max_;
    gather(d.iov, d.iov_count, 0, b, len);
    op->iov[0] = {b, len};
    op->iov_count = 1;
  } else {
    std::copy_n(d.iov, d.iov_count, op->iov);
    op->iov_count = d.iov_count;
  }
  std::size_t off = 0;
  std::uint32_t failed = 0;
  for (std::size_t i = 0; i < nr; ++i) {
    auto* h = reinterpret_cast<slot_header*>(slots[i]);
    h->src_pid = pid_;
    h->code = save ? op::save : write ? op::rma_write : op::rma_read;
    std::uint16_t f = 0;
    if (write && (flags & flag::remote_cq_data) && i + 1 == nr) f |= slot_flag::cq_data;  // one target completion
    if (write && level == flag::commit_complete) f |= slot_flag::commit;
    h->flags = f;
    h->len = static_cast<std::uint32_t>(rr[i].len);
    h->tag = rr[i].offset;
    h->data = save ? level : d.data;
    h->src_epid = epid_;
    h->cookie = cookie(txp_.index(op), op->gen);
    h->aux = rr[i].key;
    ::iovec part[max_iov];
    const std::size_t k = rr[i].len ? slice(op->iov, op->iov_count, off, rr[i].len, part) : 0;
    auto* riov = reinterpret_cast<remote_iov*>(slots[i] + sizeof(slot_header));
    for (std::size_t j = 0; j < k; ++j)
      riov[j] = remote_iov{reinterpret_cast<std::uint64_t>(part[j].iov_base), part[j].iov_len};
    h->iov_count = static_cast<std::uint32_t>(k);
    off += rr[i].len;
    if (k == max_iov && i + 1 < nr) {
      std::uint64_t covered = 0;
      for (std::size_t j = 0; j < k; ++j) covered += part[j].iov_len;
      if (covered < rr[i].len) h->len = static_cast<std::uint32_t>(covered);  // the target reports the mismatch
    }
  }
  tx_active_.push_back(op);
  for (std::size_t i = 0; i < nr; ++i)
    if (!p.req.publish(pos[i])) [[unlikely]]
      ++failed;  // the slot was taken back as stuck: that part never reaches the target
  if (failed) {
    op->part_err = errc::io_error;
    if (failed >= op->parts) {
      complete_tx(op, errc::io_error, "the request could not be posted to the target");
      return errc::ok;
    }
    op->parts -= failed;
  }
  wake(p);
  return errc::ok;
}

// ----------------------------------------------------- one-sided RMA (CMA)

// The owner's side of the table: a seqlock per entry (odd while rewritten).
void endpoint_impl::published(std::uint64_t key, std::byte* addr, std::size_t len, std::uint64_t acc,
                              std::uint64_t tag) noexcept {
  mr_entry& e = self_->mr_table()[spi::mr_key_slot(key)];
  const std::uint32_t s = e.seq.load(std::memory_order_relaxed);
  e.seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(&e.access, static_cast<std::uint32_t>(acc), __ATOMIC_RELAXED);
  __atomic_store_n(&e.addr, reinterpret_cast<std::uint64_t>(addr), __ATOMIC_RELAXED);
  __atomic_store_n(&e.len, static_cast<std::uint64_t>(len), __ATOMIC_RELAXED);
  __atomic_store_n(&e.seg, tag, __ATOMIC_RELAXED);  // alloc_memory: the segment peers may map
  __atomic_store_n(&e.key, key, __ATOMIC_RELAXED);
  e.seq.store(s + 2, std::memory_order_release);
}

// The key goes out of the table (under the registry's lock), then, outside
// it (drain()), we wait until no peer is still inside an access that found
// it there (access slots): when the registry's close returns, no peer copy
// into or out of the region is under way or can start.
void endpoint_impl::revoked(std::uint64_t key) noexcept {
  if (!creator_.is_this_process()) return;  // a forked child's close: the table is the parent's
  mr_entry& e = self_->mr_table()[spi::mr_key_slot(key)];
  if (__atomic_load_n(&e.key, __ATOMIC_RELAXED) == key) {
    const std::uint32_t s = e.seq.load(std::memory_order_relaxed);
    e.seq.store(s + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    __atomic_store_n(&e.key, std::uint64_t{0}, __ATOMIC_RELAXED);
    e.seq.store(s + 2, std::memory_order_release);
    // A segment of ours (alloc_memory) that peers may keep mapped: after
    // the key's clearing, they learn that it is going (peer_segs).
    if (__atomic_load_n(&e.seg, __ATOMIC_RELAXED) != 0)
      self_->hdr()->segs_freed.fetch_add(1, std::memory_order_release);
  }
}

void endpoint_impl::drain(std::uint64_t key) noexcept {
  if (!creator_.is_this_process()) return;  // the access slots are the parent's
  wait_unaccessed(*self_, key);
}

namespace {
// A consistent copy of a peer's table entry (bounded retries: the owner
// rewrites an entry only when a region opens or closes). The first load is
// sequentially consistent: it is the load half of the access-slot protocol.
[[gnu::always_inline]] inline bool read_entry(const mr_entry& e, std::uint64_t& key, std::uint64_t& addr,
                                             std::uint64_t& len, std::uint32_t& acc, std::uint64_t& seg) noexcept {
  for (int i = 0; i < 1000; ++i) {
    const std::uint32_t s1 = const_cast<mr_entry&>(e).seq.load(std::memory_order_seq_cst);
    if (s1 & 1) continue;
    key = __atomic_load_n(&e.key, __ATOMIC_RELAXED);
    addr = __atomic_load_n(&e.addr, __ATOMIC_RELAXED);
    len = __atomic_load_n(&e.len, __ATOMIC_RELAXED);
    acc = __atomic_load_n(&e.access, __ATOMIC_RELAXED);
    seg = __atomic_load_n(&e.seg, __ATOMIC_RELAXED);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (const_cast<mr_entry&>(e).seq.load(std::memory_order_relaxed) == s1) return true;
  }
  return false;
}

// Whether key still names its entry (between two pieces of one access).
bool still_published(const mr_entry* table, std::uint64_t key) noexcept {
  std::uint64_t k = 0, addr, len, seg;
  std::uint32_t acc;
  return read_entry(table[spi::mr_key_slot(key)], k, addr, len, acc, seg) && k == key;
}

// One remote range checked against the published entry of its key.
struct checked_range {
  remote_iov where;        // in the owner's address space
  std::byte* mapped;       // the same bytes in a segment mapped here (alloc_memory), or null
};

[[gnu::always_inline]] inline errc check_range(peer& p, const rma_iov& r, bool write, checked_range& out) noexcept {
  std::uint64_t key = 0, addr = 0, rlen = 0, seg = 0;
  std::uint32_t acc = 0;
  if (r.key == 0 || !read_entry(p.map->mr_table()[spi::mr_key_slot(r.key)], key, addr, rlen, acc, seg) ||
      key != r.key)
    return errc::not_found;
  if (!(acc & (write ? access::remote_write : access::remote_read))) return errc::permission_denied;
  if (r.offset > rlen || r.len > rlen - r.offset) return errc::invalid_argument;
  out.where = remote_iov{addr + r.offset, r.len};
  std::byte* base = seg ? p.segs.get(*p.map, key, seg, rlen) : nullptr;
  out.mapped = base ? base + r.offset : nullptr;
  return errc::ok;
}

errc cma_status(int err) noexcept {
  return err == ESRCH ? errc::peer_dead : err == EFAULT ? errc::not_found : errc::io_error;
}
}  // namespace

// The bytes of one run of ranges (one key, checked: cr) between the local
// iov list (from byte off) and the target, access_piece bytes at a time,
// the key's entry checked again before each piece after the first.
errc endpoint_impl::move_run(peer& p, const rma_desc& d, const rma_iov* rr, const void* checked, std::size_t n,
                             std::size_t off, std::size_t run, bool write) noexcept {
  const auto* cr = static_cast<const checked_range*>(checked);
  bool mapped = true;
  for (std::size_t k = 0; k < n; ++k) mapped = mapped && cr[k].mapped;
  remote_iov riov[max_iov];
  for (std::size_t k = 0; k < n; ++k) riov[k] = cr[k].where;
  for (std::size_t done = 0; done < run;) {
    const std::size_t piece = std::min(access_piece, run - done);
    if (done && !still_published(p.map->mr_table(), rr[0].key))
      return errc::not_found;  // revoked while we copied: the rest is not ours to touch
    if (mapped) {
      std::size_t at = 0, moved = 0;  // at: where range k starts in the run
      for (std::size_t k = 0; k < n && moved < piece; at += rr[k].len, ++k) {
        const std::size_t rl = rr[k].len;
        if (done + moved >= at + rl) continue;
        const std::size_t in = done + moved - at, c = std::min(piece - moved, rl - in);
        if (write) gather(d.iov, d.iov_count, off + done + moved, cr[k].mapped + in, c);
        else scatter(d.iov, d.iov_count, off + done + moved, cr[k].mapped + in, c);
        moved += c;
      }
    } else if (int err = cma_copy_at(!write, static_cast<pid_t>(p.pid), d.iov, d.iov_count, off + done, riov, n,
                                     done, piece)) {
      return cma_status(err);  // read = true copies remote -> local (process_vm_readv)
    }
    done += piece;
  }
  return errc::ok;
}

// A list of ranges: each run of ranges with one key is one access. With
// several keys every range is checked first, so that a wrong key, right or
// bound leaves the target untouched; each run is checked again inside its
// access.
errc endpoint_impl::one_sided_list(peer& p, access_claim& slot, const rma_desc& d, const rma_iov* rr,
                                   std::size_t nr, bool write) noexcept {
  checked_range cr[max_iov];
  errc st = errc::ok;
  bool several = false;
  for (std::size_t i = 1; i < nr; ++i) several = several || rr[i].key != rr[0].key;
  for (std::size_t i = 0; several && i < nr && st == errc::ok; ++i) st = check_range(p, rr[i], write, cr[i]);
  std::size_t off = 0;  // bytes of the local iov list done
  for (std::size_t i = 0; i < nr && st == errc::ok;) {
    std::size_t j = i + 1;
    while (j < nr && rr[j].key == rr[i].key) ++j;
    std::size_t run = 0;
    slot.begin(rr[i].key);
    for (std::size_t k = i; k < j && st == errc::ok; ++k) {
      st = check_range(p, rr[k], write, cr[k]);
      run += rr[k].len;
    }
    if (st == errc::ok) st = move_run(p, d, rr + i, cr + i, j - i, off, run, write);
    slot.end();
    off += run;
    i = j;
  }
  return st;
}

// RMA without the target's help: the initiator checks the published entry
// (key, right, bounds) and copies with process_vm_readv/writev, or with
// loads and stores on a mapped segment; the data is placed when this
// returns, so the operation completes here. An access keeps its key in our
// access slot from before the entry is read until the last byte moved, and
// checks the entry again every access_piece bytes (so a revoking owner waits
// for one piece at most).
errc endpoint_impl::one_sided(peer& p, access_claim& slot, const rma_desc& d, const rma_iov* rr, std::size_t nr,
                              std::size_t len, bool write, bool inject) noexcept {
  if (!txcq_->reserve()) return again(again_reason::cq_full);  // an inject write's failure needs room too
  errc st = errc::ok;
  if (nr == 1) [[likely]] {
    slot.begin(rr[0].key);
    checked_range c;
    st = check_range(p, rr[0], write, c);
    if (st == errc::ok && len) {
      if (c.mapped && len <= access_piece) [[likely]] {  // loads and stores on the target's memory, mapped here
        if (write) gather(d.iov, d.iov_count, 0, c.mapped, len);
        else scatter(d.iov, d.iov_count, 0, c.mapped, len);
      } else {
        st = move_run(p, d, rr, &c, 1, 0, len, write);
      }
    }
    slot.end();
  } else {
    st = one_sided_list(p, slot, d, rr, nr, write);
  }
  spi::count(write ? cntrs_.write.get() : cntrs_.read.get(), st == errc::ok);
  const std::uint64_t f = flag::rma | (write ? flag::write : flag::read);
  const char* why = st == errc::not_found           ? "no memory region with that key at the target (closed, or a wrong key)"
                    : st == errc::permission_denied ? "the target region does not allow this access"
                    : st == errc::invalid_argument  ? "the remote range lies outside the target region"
                    : st == errc::peer_dead          ? "the target process is gone"
                                                     : "the copy into the target failed";
  if (inject) {
    if (st == errc::ok) {
      txcq_->unreserve();
    } else {
      cq_err_entry ee;
      ee.flags = f | flag::inject;
      ee.err = st;
      std::snprintf(ee.msg, sizeof ee.msg, "an injected write failed at the target: %s", why);
      txcq_->push_error(ee);
    }
    return errc::ok;
  }
  complete_now(d.context, f, len, st, why);
  return errc::ok;
}

// A one-sided operation's completion (CQ room reserved by the caller).
void endpoint_impl::complete_now(void* ctx, std::uint64_t f, std::size_t len, errc st, const char* why) noexcept {
  if (st == errc::ok) {
    txcq_->push(cq_entry{ctx, f, len, nullptr, 0, 0, addr_unspec});
    return;
  }
  cq_err_entry ee;
  ee.context = ctx;
  ee.flags = f;
  ee.err = st;
  std::snprintf(ee.msg, sizeof ee.msg, "%s", why);
  txcq_->push_error(ee);
}

// Inlined into atomic(): the whole one-sided path is one function, so the
// access slot's two stores are all it adds to the session-3 path (an
// outlined call here cost more than the slot itself).
[[gnu::always_inline]] inline bool endpoint_impl::atomic_one_sided(peer& p, const atomic_desc& d, std::size_t sz,
                                                                   std::size_t bytes, errc& ret) noexcept {
  access_claim* ac = access_to(p);
  if (!ac || d.key == 0) [[unlikely]]
    return false;  // the target checks (and reports) everything
  if (!txcq_->reserve()) [[unlikely]] {
    ret = again(again_reason::cq_full);
    return true;
  }
  std::uint64_t key = 0, addr = 0, rlen = 0, seg = 0;
  std::uint32_t acc = 0;
  const std::uint64_t need = access::remote_write | (d.result ? access::remote_read : 0);
  errc st = errc::ok;
  ac->begin(d.key);  // before the entry is read: a region closed after this waits for us
  std::byte* base = nullptr;
  if (read_entry(p.map->mr_table()[spi::mr_key_slot(d.key)], key, addr, rlen, acc, seg) && key == d.key &&
      seg != 0) [[likely]] {
    base = p.segs.get(*p.map, key, seg, rlen);
  }
  if (!base) [[unlikely]] {
    ac->end();
    txcq_->unreserve();
    return false;  // not a segment mapped here (or no such key): the target checks and answers
  }
  if ((acc & need) != need) [[unlikely]]
    st = errc::permission_denied;
  else if (d.offset > rlen || bytes > rlen - d.offset || ((addr + d.offset) & (sz - 1)) != 0) [[unlikely]]
    st = errc::invalid_argument;  // sz is a power of two: no division
  else {
    alignas(8) std::byte old[atomic_max_bytes];
    core::apply_atomic(static_cast<atomic_op>(d.op), static_cast<atomic_type>(d.type), base + d.offset,
                       static_cast<const std::byte*>(d.operand), static_cast<const std::byte*>(d.compare), d.count,
                       old);
    if (d.result) std::memcpy(d.result, old, bytes);
  }
  ac->end();
  const std::uint64_t f = flag::atomic | (d.result ? flag::read : flag::write);
  spi::count(cntrs_.write.get(), st == errc::ok);
  complete_now(d.context, f, bytes, st,
               st == errc::permission_denied ? "the target region does not allow this access"
                                             : "the remote range lies outside the target region (or is not "
                                               "aligned for an atomic)");
  ret = errc::ok;
  return true;
}

// Target side of RMA: checked here, in the owner's progress, against the
// region the key names now; the copy is one process_vm_readv/writev.
bool endpoint_impl::handle_rma(const slot_header* h) noexcept {
  auto pr = dom_->peer_by_key(peer_key(h->src_pid, h->src_epid));
  if (!pr) return request_peer_unmapped(pr.error().code);
  const bool write = h->code == op::rma_write;
  std::byte* where = nullptr;
  spi::mr_hold hold;  // the region's close waits for the copy below
  errc st = reg_->find(h->aux, h->tag, h->len, write ? access::remote_write : access::remote_read, where, hold);
  if (st == errc::ok && h->iov_count > max_iov) st = errc::invalid_argument;
  if (st == errc::ok && h->len) {
    ::iovec local{where, h->len};
    const auto* riov = reinterpret_cast<const remote_iov*>(reinterpret_cast<const std::byte*>(h) + sizeof(slot_header));
    if (checked_total(riov, h->iov_count) != h->len) st = errc::invalid_argument;  // overflow-safe
    else if (int err = cma_copy(write, static_cast<pid_t>((*pr)->pid), &local, 1, riov, h->iov_count, 0, h->len))
      st = err == ESRCH ? errc::peer_dead : errc::io_error;
  }
  hold.drop();
  if (st == errc::ok && write && (h->flags & slot_flag::commit))
    st = reg_->commit(commit_event::kind::write, h->aux, h->tag, h->len, flag::commit_complete);
  if (st == errc::ok && write && (h->flags & slot_flag::cq_data)) {
    // The target's completion, with the initiator's data.
    if (rxcq_ && rxcq_->reserve())
      rxcq_->push(cq_entry{nullptr, flag::rma | flag::remote_write | flag::remote_cq_data, h->len, where, h->data, 0,
                           source_of(peer_key(h->src_pid, h->src_epid))});
    else
      st = errc::busy;  // written, but no room to tell the application: the initiator is told to retry
  }
  spi::count(write ? cntrs_.remote_write.get() : cntrs_.remote_read.get(), st == errc::ok);
  answer(*pr, h->cookie, st);
  return true;
}

// Target side of SAVE: every earlier request from this initiator was handled
// already (one request ring, in order), so flushing the region now covers
// every earlier write to it.
bool endpoint_impl::handle_save(const slot_header* h) noexcept {
  auto pr = dom_->peer_by_key(peer_key(h->src_pid, h->src_epid));
  if (!pr) return request_peer_unmapped(pr.error().code);
  const std::uint64_t level = h->data == flag::transmit_complete ? flag::delivery_complete : h->data;
  errc st = level == flag::commit_complete || level == flag::delivery_complete
                ? reg_->commit(commit_event::kind::save, h->aux, 0, 0, level)
                : errc::invalid_argument;
  answer(*pr, h->cookie, st);
  return true;
}

errc endpoint_impl::atomic(const atomic_desc& d) noexcept {
  if (!enabled_) [[unlikely]]
    return spi::not_enabled("atomic");
  if (!cfg_.cma)
    return spi::fail(errc::not_supported, "atomics on shm need cross-memory attach (WEFT_SHM_CMA=0 turns it off)");
  const std::shared_ptr<peer>* pp = av_ ? av_->at(d.addr) : nullptr;
  if (!pp) [[unlikely]]
    return spi::no_peer("atomic", d.addr, av_ != nullptr);
  peer& p = **pp;
  if (p.map->closed()) return spi::peer_gone("atomic", d.addr);
  const std::size_t sz = size_of(static_cast<atomic_type>(d.type));
  const std::size_t bytes = d.count * sz;
  if (!(p.map->hdr()->flags.load(std::memory_order_acquire) & region_flag::two_sided_rma)) [[likely]] {
    errc r = errc::ok;
    if (atomic_one_sided(p, d, sz, bytes, r)) [[likely]]
      return r;
  }
  tx_op* op = nullptr;
  std::byte* s = nullptr;
  std::uint64_t pos = 0;
  if (errc e = begin_request(*pp, d.context, op, s, pos); e != errc::ok) return e;
  op->flags = flag::atomic | (d.result ? flag::read : flag::write);
  op->iov_count = 0;
  op->len = bytes;
  op->p = *pp;
  op->tag = 0;
  auto* h = reinterpret_cast<slot_header*>(s);
  h->src_pid = pid_;
  h->code = op::atomic;
  h->flags = static_cast<std::uint16_t>(static_cast<unsigned>(d.op) | (static_cast<unsigned>(d.type) << 8));
  h->len = static_cast<std::uint32_t>(d.count);
  h->tag = d.offset;
  h->data = reinterpret_cast<std::uint64_t>(d.result);
  h->src_epid = epid_;
  h->cookie = cookie(txp_.index(op), op->gen);
  h->aux = d.key;
  h->iov_count = 0;
  std::memcpy(s + sizeof(slot_header), d.operand, bytes);
  if (d.compare) std::memcpy(s + sizeof(slot_header) + atomic_max_bytes, d.compare, bytes);
  return finish_request(p, p.req, op, pos);
}

// Target side of atomics: checked like RMA, then applied element by element
// in this process with atomic instructions.
bool endpoint_impl::handle_atomic(const slot_header* h) noexcept {
  auto pr = dom_->peer_by_key(peer_key(h->src_pid, h->src_epid));
  if (!pr) return request_peer_unmapped(pr.error().code);
  const bool fetch = h->data != 0;
  errc st = core::check_atomic(h->flags & 0xff, h->flags >> 8, h->len);
  const auto op = static_cast<atomic_op>(h->flags & 0xff);
  const auto type = static_cast<atomic_type>(h->flags >> 8);
  const std::size_t sz = st == errc::ok ? size_of(type) : 1;
  const std::size_t bytes = static_cast<std::size_t>(h->len) * sz;
  std::byte* where = nullptr;
  spi::mr_hold hold;  // the region's close waits for the update below
  if (st == errc::ok)
    st = reg_->find(h->aux, h->tag, bytes, access::remote_write | (fetch ? access::remote_read : 0), where, hold);
  if (st == errc::ok && reinterpret_cast<std::uintptr_t>(where) % sz != 0) st = errc::invalid_argument;
  if (st == errc::ok) {
    const std::byte* operand = reinterpret_cast<const std::byte*>(h) + sizeof(slot_header);
    const std::byte* compare = op == atomic_op::cswap ? operand + atomic_max_bytes : nullptr;
    alignas(8) std::byte old[atomic_max_bytes];
    core::apply_atomic(op, type, where, operand, compare, h->len, old);
    hold.drop();
    if (fetch) {  // old values straight into the initiator's result buffer
      ::iovec local{old, bytes};
      const remote_iov res{h->data, bytes};
      if (int err = cma_copy(false, static_cast<pid_t>((*pr)->pid), &local, 1, &res, 1, 0, bytes))
        st = err == ESRCH ? errc::peer_dead : errc::io_error;
    }
  }
  spi::count(cntrs_.remote_write.get(), st == errc::ok);
  answer(*pr, h->cookie, st);
  return true;
}

}  // namespace weft::prov::shm

#pragma once
// shm RDM endpoint: its operations, the state they keep, and the endpoint
// class whose parts live in endpoint.cpp (setup, sending and receiving
// messages, progress), rndv.cpp (large messages and control replies) and
// rma.cpp (RMA and atomics). docs/wire/shm.md.
#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "prov/shm/liveness.hpp"
#include "prov/shm/shm.hpp"
#include "util/clock.hpp"
#include "util/creator_process.hpp"
#include "util/futex.hpp"
#include "util/match.hpp"
#include "weft/spi/cntr.hpp"

namespace weft::prov::shm {

// Control replies that wait for room in their peer's control ring (ctrl
// entries): every reply the endpoint may still have to send is counted when
// the work that needs it is taken (owed), and work is taken only while the
// pool covers it, so a reply always finds an entry. An rts owes at most two
// replies (cts/split/ack now, ack later); a request (RMA, atomic, SAVE) one,
// and at most request_replies of those wait at a time.
inline constexpr std::size_t request_replies = 256;
inline constexpr std::size_t ctrl_entries = 2 * (rx_size + unexpected_count) + request_replies;
// Large copies move in steps: a chunk of a receive (or of a send helping
// it) is at most copy_piece bytes, and one progress call copies about
// copy_budget bytes, so neither posting a receive nor one CQ read copies a
// large message at once.
inline constexpr std::size_t copy_piece = std::size_t{1} << 20;
inline constexpr std::size_t copy_budget = std::size_t{1} << 20;

inline void wake(peer& p) noexcept {
  auto* h = p.map->hdr();
  if (h->waiting.load(std::memory_order_seq_cst)) {
    h->doorbell.fetch_add(1, std::memory_order_seq_cst);
    util::futex_wake(&h->doorbell);
  }
}

// A message as seen by matching: from a ring slot or from the unexpected list.
struct incoming {
  op code;
  std::uint16_t flags;
  std::uint64_t len;  // message length
  std::uint64_t tag, data, src_key, cookie;
  const std::byte* payload;  // inline
  const remote_iov* riov;    // rts
  std::uint32_t iov_count;
  const char* bad = nullptr;  // malformed: what is wrong (its receive fails with io_error)
};

struct tx_op : util::list_node {
  enum class st : std::uint8_t { idle, wait_reply, streaming } state = st::idle;
  std::uint32_t gen = 0;
  void* ctx = nullptr;
  std::uint64_t flags = 0;
  ::iovec iov[max_iov];
  std::size_t iov_count = 0;
  std::size_t len = 0;
  std::shared_ptr<peer> p;
  std::uint64_t rx_cookie = 0;
  std::size_t accepted = 0, sent = 0;
  std::uint64_t seg_mask = 0;
  std::uint64_t tag = 0, data = 0;
  // RMA: one request per remote range, all answered before it completes
  std::uint32_t parts = 1;
  errc part_err = errc::ok;
  bool completion = true;   // false: inject write (no completion unless it fails; CQ room is reserved for that)
  // the receiver's offer to copy chunks of this send (cooperative copy)
  bool helping = false;
  std::uint32_t help_chunks = 0, help_iov_count = 0;
  std::uint64_t help_aux = 0;  // the receiver's split entry and generation
  std::size_t help_chunk = 0, help_accept = 0;
  remote_iov help_iov[max_iov];
  std::int32_t ibuf = -1;   // inject write: its copy of the data
  std::uint32_t rma_parts = 0;  // counted in the endpoint's rma_parts_ until it completes
};

struct rx_op : util::list_node {
  std::uint32_t gen = 0;
  bool active = false;  // segmented receive or cooperative copy in progress
  bool split = false;   // cooperative copy: waiting for the sender's chunks
  void* ctx = nullptr;
  std::uint64_t flags = 0;
  ::iovec iov[max_iov];
  std::size_t iov_count = 0;
  std::size_t cap = 0;
  std::uint64_t src_filter = util::any_source;
  std::uint64_t tag = 0, ignore = 0;
  // rendezvous in progress
  std::shared_ptr<peer> p;
  std::size_t msg_len = 0, accepted = 0, received = 0;
  std::uint64_t msg_tag = 0, msg_data = 0, src_key = 0, msg_cookie = 0;
  std::uint16_t msg_flags = 0;
  // cooperative copy
  std::uint32_t nchunks = 0;
  std::size_t chunk = 0;
  int split_err = 0;
  remote_iov riov[max_iov];
  std::size_t riov_count = 0;
  std::uint32_t owes = 0;  // control replies still owed for this receive (counted in owed_)
};

struct unexp : util::list_node {
  op code = op::inline_msg;
  std::uint16_t flags = 0;
  std::uint64_t len = 0, tag = 0, data = 0, src_key = 0, cookie = 0;
  std::uint32_t iov_count = 0;
  remote_iov riov[max_iov];
  void* claim_ctx = nullptr;
  std::byte* payload = nullptr;
  std::uint32_t owes = 0;  // rts: control replies owed once matched or discarded (counted in owed_)
  const char* bad = nullptr;
  [[nodiscard]] incoming view() const noexcept {
    return incoming{code, flags, len, tag, data, src_key, cookie, payload, riov, iov_count, bad};
  }
};

struct stuck_state {
  std::uint64_t pos = ~0ull, since = 0;
};

// A control reply. split carries the receive's iov list, taken from the
// receive (aux names it) when the slot is written.
struct ctrl_msg {
  op code = op::ack;
  std::uint64_t cookie = 0, aux = 0, data = 0, tag = 0;
  std::uint32_t len = 0, seg = 0;
};

struct ctrl : util::list_node {
  std::shared_ptr<peer> p;
  ctrl_msg m;
  bool request = false;  // the answer to a request (counted in requests_waiting_)
};

// Hidden: the calls between its parts bind locally (inlined where it pays),
// as when it lived in one file's anonymous namespace.
class [[gnu::visibility("hidden")]] endpoint_impl final : public spi::endpoint,
                                                          public spi::progressable,
                                                          public spi::mr_observer,
                                                          public peer_failure_sink {
 public:
  endpoint_impl(std::shared_ptr<domain_impl> d, const info& i) : dom_(std::move(d)), info_(i), cfg_(dom_->cfg()) {}
  ~endpoint_impl() override;

  result<void> init();
  result<void> bind_cq(std::shared_ptr<spi::cq> q, std::uint64_t flags) override;
  result<void> bind_av(std::shared_ptr<spi::av> a) override;
  result<void> bind_cntr(std::shared_ptr<spi::cntr> c, std::uint64_t flags) override;
  // peer_dead events (liveness.hpp); without an EQ they are CQ error entries
  result<void> bind_eq(std::shared_ptr<spi::eq> q) override;
  void fail_peer(std::uint64_t key, const peer* p, const char* name, const char* why) noexcept override;
  result<void> enable() override;
  [[nodiscard]] address name() const override {
    return address::from_string(addr_format::shm_name, self_->name());
  }
  errc send(const msg_desc& m, std::uint64_t flags) noexcept override;
  errc recv(const msg_desc& m, std::uint64_t flags) noexcept override;
  errc cancel(void* context) noexcept override;
  errc rma(const rma_desc& d, std::uint64_t flags) noexcept override;
  errc atomic(const atomic_desc& d) noexcept override;
  // the domain's regions, published in our region for one-sided access
  void published(std::uint64_t key, std::byte* addr, std::size_t len, std::uint64_t access,
                 std::uint64_t tag) noexcept override;
  void revoked(std::uint64_t key) noexcept override;
  void drain(std::uint64_t key) noexcept override;  // waits for peers inside an access to key
  // Atomics on a target segment mapped here: CPU atomics, no target help. False: not mapped (go two-sided).
  // sz: the element size (a power of two); bytes: sz * count.
  [[nodiscard]] bool atomic_one_sided(peer& p, const atomic_desc& d, std::size_t sz, std::size_t bytes,
                                      errc& ret) noexcept;
  void complete_now(void* ctx, std::uint64_t f, std::size_t len, errc st, const char* why) noexcept;
  [[nodiscard]] errc one_sided(peer& p, access_claim& slot, const rma_desc& d, const rma_iov* rr, std::size_t nr,
                               std::size_t len, bool write, bool inject) noexcept;
  [[nodiscard]] access_claim* access_to(peer& p) noexcept {
    if (p.access.usable()) [[likely]]
      return &p.access;
    return p.access.acquire(*p.map) ? &p.access : nullptr;
  }
  [[nodiscard]] errc move_run(peer& p, const rma_desc& d, const rma_iov* rr, const void* checked, std::size_t n,
                              std::size_t off, std::size_t run, bool write) noexcept;
  [[nodiscard]] errc one_sided_list(peer& p, access_claim& slot, const rma_desc& d, const rma_iov* rr,
                                    std::size_t nr, bool write) noexcept;
  [[nodiscard]] errc begin_request(const std::shared_ptr<peer>& sp, void* ctx, tx_op*& op, std::byte*& slot, std::uint64_t& pos) noexcept;
  // Publishes a claimed slot of ring (the peer's message or control ring) for op.
  [[nodiscard]] errc finish_request(peer& p, util::mpsc_ring& ring, tx_op* op, std::uint64_t pos) noexcept;
  void progress() noexcept override;
  std::atomic<std::uint32_t>* arm() noexcept override {
    self_->hdr()->waiting.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // the ring checks that follow see any publish
    housekeeping();  // a sleeping consumer still recovers stuck slots and drops dead peers
    liveness(util::coarse_now_ns());  // ... and finds dead peers
    return &self_->hdr()->doorbell;
  }
  void disarm() noexcept override { self_->hdr()->waiting.store(0, std::memory_order_relaxed); }
  // room.cpp: peers that refused a post for a full ring, and their room words.
  [[nodiscard]] bool arm_room(const void* queue, std::span<spi::wait_word> words, std::size_t& n) noexcept override;
  [[nodiscard]] bool needs_pulse() const noexcept override;
  [[nodiscard]] bool needs_liveness() const noexcept override { return needs_pulse() || watch_.watching(); }

 private:
  static std::uint64_t cookie(std::uint32_t idx, std::uint32_t gen) noexcept {
    return (std::uint64_t{gen} << 32) | idx;
  }
  template <class T>
  T* by_cookie(util::pool<T>& pl, std::uint64_t c) noexcept {
    T* t = pl.at(static_cast<std::uint32_t>(c));
    return t && t->gen == static_cast<std::uint32_t>(c >> 32) ? t : nullptr;
  }
  void put_tx(tx_op* op) noexcept {
    op->helping = false;
    rma_parts_ -= op->rma_parts;
    op->rma_parts = 0;
    if (op->ibuf >= 0) inject_free_.push_back(static_cast<std::uint32_t>(op->ibuf));
    op->ibuf = -1;
    op->parts = 1;
    op->part_err = errc::ok;
    op->completion = true;
    op->p.reset();
    op->state = tx_op::st::idle;
    ++op->gen;
    txp_.put(op);
  }
  void put_rx(rx_op* r) noexcept {
    forgive(r->owes);
    r->owes = 0;
    r->p.reset();
    r->active = false;
    r->split = false;
    ++r->gen;
    rxp_.put(r);
  }
  [[nodiscard]] fi_addr_t source_of(std::uint64_t key) noexcept {
    if (!source_cap_ || !av_) return addr_unspec;
    bool failed = false;
    const fi_addr_t a = av_->reverse(key, failed);
    if (failed) [[unlikely]]
      watch_.insert_failed(key);  // src is addr_notavail; the reason is reported
    return a;
  }
  [[nodiscard]] bool handle_incoming(const slot_header* h) noexcept;
  void deliver(rx_op* r, const incoming& in) noexcept;
  void complete_rx(rx_op* r, const incoming& in, std::size_t copied) noexcept;
  void complete_rx_error(rx_op* r, errc e, const char* what) noexcept;
  void start_rendezvous(rx_op* r, const incoming& in) noexcept;
  // Reply accounting (see ctrl_entries): owe() when taking work that will
  // need replies, then each reply uses one of them (send_owed) or they are
  // forgiven when the work ends without them.
  [[nodiscard]] bool can_owe(std::size_t n) const noexcept { return ctp_.available() >= owed_ + n; }
  void owe(std::size_t n) noexcept { owed_ += n; }
  void forgive(std::size_t n) noexcept { owed_ -= n; }
  void send_owed(const std::shared_ptr<peer>& p, std::uint32_t& owes, op code, std::uint64_t ck, std::uint64_t aux,
                 std::uint64_t data) noexcept {
    ctrl_msg m;
    m.code = code;
    m.cookie = ck;
    m.aux = aux;
    m.data = data;
    send_owed(p, owes, m);
  }
  void send_owed(const std::shared_ptr<peer>& p, std::uint32_t& owes, const ctrl_msg& m) noexcept {
    if (owes) {
      --owes;
      --owed_;
    }
    send_ctrl(p, m, false);
  }
  // The answer to a request: taken only while can_take_request() held.
  void answer(const std::shared_ptr<peer>& p, std::uint64_t ck, errc st) noexcept;
  [[nodiscard]] bool can_take_request() const noexcept {
    return requests_waiting_ < request_replies && can_owe(1);
  }
  void send_ctrl(const std::shared_ptr<peer>& p, const ctrl_msg& m, bool request) noexcept;
  [[nodiscard]] bool post_ctrl(peer& p, const ctrl_msg& m) noexcept;
  void start_split(rx_op* r, const incoming& in, std::size_t accept) noexcept;
  void copy_chunks(rx_op* r, std::size_t& budget) noexcept;
  void help_split(tx_op* op, std::size_t& budget) noexcept;
  [[nodiscard]] bool finish_split(rx_op* r) noexcept;
  void handle_split(const slot_header* h) noexcept;
  [[nodiscard]] bool handle_rma(const slot_header* h) noexcept;
  [[nodiscard]] bool handle_atomic(const slot_header* h) noexcept;
  [[nodiscard]] bool handle_save(const slot_header* h) noexcept;
  void handle_cts(const slot_header* h) noexcept;
  void handle_ack(const slot_header* h) noexcept;
  // false: the data slot stays in the control ring (its sender cannot be
  // mapped for want of resources now, EMFILE): its segment is given back
  // later, never dropped.
  [[nodiscard]] bool handle_data(const slot_header* h) noexcept;
  void stream(tx_op* op) noexcept;
  void complete_tx(tx_op* op, errc e, const char* what) noexcept;
  void check_peers() noexcept;
  // The liveness schedule (20 ms): finds peers gone, takes in the replies they
  // published before they went (an ack must not turn into peer_dead), then
  // fails what involved them and reports.
  void liveness(std::uint64_t now) noexcept {
    if (!watch_.due(now)) return;
    const bool watch_gone = watch_.probe(now, ring_.claimed());
    const bool ops_gone = probe_op_peers();  // operations with peers the watch does not know (AV entry removed)
    if (watch_gone || ops_gone) drain_control();
    watch_.settle(now, ring_.head(), ring_.claimed());
    if (ops_gone) check_peers();
  }
  [[nodiscard]] bool probe_op_peers() noexcept;
  void drain_control() noexcept;
  void check_stuck_head(util::mpsc_ring& ring, stuck_state& st) noexcept;
  // A post refused for a full ring of peer sp (ring: which): again
  // (peer_busy), and sp is remembered so that a CQ wait sleeps on its room
  // word (room.cpp); peer_dead when its owner is gone.
  [[nodiscard]] errc refused_busy(const std::shared_ptr<peer>& sp, util::mpsc_ring peer::*ring) noexcept {
    if (!sp->map->owner_alive())
      return spi::fail(errc::peer_dead, "the shm peer is gone (its endpoint is closed or its process exited) and "
                                        "its ring is full: remove it from the address vector, or insert its new address");
    std::size_t i = 0;
    while (i < nbusy_ && !(busy_[i].p == sp && busy_[i].ring == ring)) ++i;
    if (i == nbusy_) {
      if (nbusy_ < max_busy) busy_[nbusy_++] = busy_peer{sp, ring};
      else busy_lost_ = true;  // waits keep the pulse instead
    }
    return again(again_reason::peer_busy);
  }
  // A post to p found room: its refusals are answered (a later wait does
  // not return again for them). One load and branch while none is kept.
  void room_found(const peer& p) noexcept {
    if (nbusy_) [[unlikely]]
      forget_busy(p);
  }
  void forget_busy(const peer& p) noexcept;
  // After freeing slots of our rings: a sleeping sender wants room (one
  // plain load here; the sender paid the barrier, docs/wire/shm.md).
  void room_freed() noexcept {
    if (!room_fenced_) std::atomic_thread_fence(std::memory_order_seq_cst);
    else std::atomic_signal_fence(std::memory_order_seq_cst);  // the load stays after the pops (the sender's membarrier orders the CPU)
    if (self_hdr_->room_wanted.load(std::memory_order_relaxed)) [[unlikely]]
      announce_room();
  }
  void announce_room() noexcept;
  void housekeeping() noexcept;
  // false: h stays in the control ring and is handled again later (handle_data).
  [[nodiscard]] bool handle_control(slot_header* h) noexcept;
  // false: the request stays in the ring (its initiator cannot be mapped for
  // want of resources now: answered later, never dropped).
  [[nodiscard]] bool handle_request(slot_header* h) noexcept;
  // A request whose initiator cannot be mapped: dropped (true) only when the
  // initiator is gone, left in the ring (false) when resources lack (EMFILE).
  static bool request_peer_unmapped(errc e) noexcept { return e != errc::no_memory; }
  [[nodiscard]] errc peek_claim(const msg_desc& m, std::uint64_t flags, std::uint64_t src) noexcept;
  void release_unexpected(unexp* u, bool ack_sender) noexcept;
  // Discarding u acknowledges its sender (rts): false while the sender cannot
  // be mapped for want of resources (EMFILE), so the discard is refused with
  // again instead of dropping the ack its live sender waits for.
  [[nodiscard]] bool ack_reachable(const unexp* u) noexcept {
    if (u->code != op::rts) return true;
    auto p = dom_->peer_by_key(u->src_key);
    return p || p.error().code != errc::no_memory;
  }
  rx_op* rx_reachable_or_again(const unexp* u) noexcept { return ack_reachable(u) ? rxp_.get() : nullptr; }

  std::shared_ptr<domain_impl> dom_;
  info info_;
  config cfg_;
  std::unique_ptr<mapping> self_;
  util::mpsc_ring ring_;  // messages: inline and rts
  util::mpsc_ring ctl_;   // control: cts, ack, data, split (never blocked: nothing there needs a reply)
  util::mpsc_ring req_;   // requests: rma_write, rma_read, atomic, save (taken while their answer has room)
  std::uint32_t pid_ = 0, epid_ = 0;
  std::shared_ptr<spi::cq> txcq_, rxcq_;
  spi::endpoint_counters cntrs_;  // counters, if bound
  std::shared_ptr<av_impl> av_;
  bool enabled_ = false;
  bool source_cap_ = false;
  std::uint16_t port_ = 0;
  std::uint32_t inline_max_ = 0;

  util::pool<tx_op> txp_{tx_size};
  util::pool<rx_op> rxp_{rx_size};
  util::pool<unexp> uxp_{unexpected_count};
  util::pool<ctrl> ctp_{ctrl_entries};
  std::size_t owed_ = 0;              // replies owed by work taken (entries held for them)
  std::size_t requests_waiting_ = 0;  // answers to requests among the pending replies
  std::unique_ptr<std::byte[]> ux_storage_;  // not zero-filled: pages are committed on use
  util::ilist<rx_op> posted_msg_, posted_tag_, rx_active_;
  std::uint32_t directed_posted_ = 0;  // posted receives directed at one peer: they need the pulse
  util::ilist<unexp> ux_msg_, ux_tag_, claimed_;
  util::ilist<tx_op> tx_active_;
  util::ilist<ctrl> ctrl_pending_;
  // Data chunks for no active receive whose sender cannot be mapped now
  // (EMFILE, no memory): set aside, so control messages behind them go on;
  // their segments are given back once the mapping works (retry_stale()).
  // Full: the next such chunk waits in the control ring (back-pressure).
  struct stale_chunk {
    std::uint64_t key = 0;  // the sender
    std::uint32_t seg = 0;  // its segment to give back
  };
  static constexpr std::size_t stale_max = 64;
  std::array<stale_chunk, stale_max> stale_{};
  std::size_t nstale_ = 0;
  void retry_stale() noexcept;
  std::uint64_t segs_held_ = 0;
  std::uint32_t splits_pending_ = 0;  // receives copying by chunks (cross-memory attach)
  std::size_t budget_ = 0;            // bytes large copies may still move in this progress call (0 outside)
  std::uint32_t idle_polls_ = 0;
  std::uint32_t busy_polls_ = 0;
  stuck_state stuck_ring_, stuck_ctl_, stuck_req_;
  std::uint64_t level_ = flag::delivery_complete;  // default completion level of RMA
  std::size_t rma_parts_ = 0;  // RMA requests (parts) awaiting their ack
  std::unique_ptr<std::byte[]> inject_bufs_;       // inject writes: the target reads our copy
  std::vector<std::uint32_t> inject_free_;
  std::shared_ptr<spi::mr_registry> reg_;
  bool observing_ = false;
  util::creator_process creator_;  // destroyed in a forked child: nothing shared is written
  std::shared_ptr<spi::eq> eq_;
  peer_watch watch_{*dom_, *this, *this};
  // Peers (and which of their rings) that refused a post: preallocated, no
  // allocation on the data path (refused_busy); forgotten when room appears.
  static constexpr std::size_t max_busy = 8;
  struct busy_peer {
    std::shared_ptr<peer> p;
    util::mpsc_ring peer::*ring = nullptr;
  };
  busy_peer busy_[max_busy];
  std::size_t nbusy_ = 0;
  bool busy_lost_ = false;       // more busy peers than entries: waits on our CQ keep the pulse
  std::uint64_t busy_lost_at_ = 0;  // when a wait first met busy_lost_ (its room return comes a pulse later)
  region_header* self_hdr_ = nullptr;
  bool room_fenced_ = false;     // registered for the senders' barriers (region_flag::fenced_room)
};

}  // namespace weft::prov::shm

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
#include <type_traits>

#include "prov/shm/liveness.hpp"
#include "prov/shm/shm.hpp"
#include "core/atomic_apply.hpp"
#include "core/rma_request.hpp"
#include "weft/atomic.hpp"
#include "util/clock.hpp"
#include "util/futex.hpp"
#include "util/match.hpp"

namespace weft::prov::shm {

namespace {

std::atomic<std::uint32_t> next_epid{1};
constexpr int progress_batch = 64;
constexpr std::uint32_t stuck_check_polls = 4096;  // empty polls between checks (and at every sleep)
constexpr std::size_t ctrl_reserve = 16;  // pending control replies kept free: below it, rts waits
constexpr std::size_t max_chunk = std::size_t{1} << 30;
constexpr std::uint64_t stuck_dead_writer_ns = 1'000'000'000;  // writer known and dead
constexpr std::uint64_t stuck_unknown_writer_ns = 5'000'000'000;  // died before naming itself

std::size_t iov_total(const ::iovec* v, std::size_t n) noexcept {
  std::size_t t = 0;
  for (std::size_t i = 0; i < n; ++i) t += v[i].iov_len;
  return t;
}

// Copies len bytes of src into the iov list, starting at byte offset off.
void scatter(const ::iovec* v, std::size_t n, std::size_t off, const std::byte* src, std::size_t len) noexcept {
  for (std::size_t i = 0; i < n && len; ++i) {
    if (off >= v[i].iov_len) {
      off -= v[i].iov_len;
      continue;
    }
    std::size_t c = std::min(len, v[i].iov_len - off);
    std::memcpy(static_cast<std::byte*>(v[i].iov_base) + off, src, c);
    src += c;
    len -= c;
    off = 0;
  }
}

// Copies len bytes from the iov list, starting at offset off, into dst.
void gather(const ::iovec* v, std::size_t n, std::size_t off, std::byte* dst, std::size_t len) noexcept {
  for (std::size_t i = 0; i < n && len; ++i) {
    if (off >= v[i].iov_len) {
      off -= v[i].iov_len;
      continue;
    }
    std::size_t c = std::min(len, v[i].iov_len - off);
    std::memcpy(dst, static_cast<const std::byte*>(v[i].iov_base) + off, c);
    dst += c;
    len -= c;
    off = 0;
  }
}

// The part [off, off + len) of an iov list, as at most max_iov iovecs.
template <class V>
std::size_t slice(const V* v, std::size_t n, std::size_t off, std::size_t len, ::iovec* out) noexcept {
  std::size_t k = 0;
  for (std::size_t i = 0; i < n && len && k < max_iov; ++i) {
    const std::size_t vl = [&] {
      if constexpr (std::is_same_v<V, ::iovec>) return v[i].iov_len;
      else return static_cast<std::size_t>(v[i].len);
    }();
    if (off >= vl) {
      off -= vl;
      continue;
    }
    std::byte* base = [&] {
      if constexpr (std::is_same_v<V, ::iovec>) return static_cast<std::byte*>(v[i].iov_base);
      else return reinterpret_cast<std::byte*>(v[i].addr);
    }();
    const std::size_t c = std::min(len, vl - off);
    out[k++] = {base + off, c};
    len -= c;
    off = 0;
  }
  return k;
}

// Copies [off, off + len) between a local and a remote iov list with
// process_vm_readv (read = true) or process_vm_writev. 0 or an errno.
int cma_copy(bool read, pid_t pid, const ::iovec* local, std::size_t ln, const remote_iov* remote, std::size_t rn,
             std::size_t off, std::size_t len) noexcept {
  std::size_t done = 0;
  while (done < len) {
    ::iovec l[max_iov], r[max_iov];
    const std::size_t lc = slice(local, ln, off + done, len - done, l);
    const std::size_t rc = slice(remote, rn, off + done, len - done, r);
    const ssize_t n = read ? ::process_vm_readv(pid, l, lc, r, rc, 0) : ::process_vm_writev(pid, l, lc, r, rc, 0);
    if (n <= 0) return n < 0 ? errno : EFAULT;
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

// Takes the next chunk of a cooperative copy, if any is left in this generation.
bool claim_chunk(split_entry& se, std::uint32_t gen, std::uint32_t nchunks, std::uint32_t& chunk) noexcept {
  std::uint64_t w = se.claim.load(std::memory_order_acquire);
  for (;;) {
    if (static_cast<std::uint32_t>(w >> 32) != gen || static_cast<std::uint32_t>(w) >= nchunks) return false;
    if (se.claim.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel)) {
      chunk = static_cast<std::uint32_t>(w);
      return true;
    }
  }
}

void wake(peer& p) noexcept {
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
};

struct unexp : util::list_node {
  op code = op::inline_msg;
  std::uint16_t flags = 0;
  std::uint64_t len = 0, tag = 0, data = 0, src_key = 0, cookie = 0;
  std::uint32_t iov_count = 0;
  remote_iov riov[max_iov];
  void* claim_ctx = nullptr;
  std::byte* payload = nullptr;
  [[nodiscard]] incoming view() const noexcept {
    return incoming{code, flags, len, tag, data, src_key, cookie, payload, riov, iov_count};
  }
};

struct stuck_state {
  std::uint64_t pos = ~0ull, since = 0;
};

struct ctrl_msg {
  op code = op::ack;
  std::uint64_t cookie = 0, aux = 0, data = 0, tag = 0;
  std::uint32_t len = 0, seg = 0, iov_count = 0;
  remote_iov iov[max_iov];
};

struct ctrl : util::list_node {
  std::shared_ptr<peer> p;
  ctrl_msg m;
};

class endpoint_impl final : public spi::endpoint,
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
  // Atomics on a target segment mapped here: CPU atomics, no target help. False: not mapped (go two-sided).
  [[nodiscard]] bool atomic_one_sided(peer& p, const atomic_desc& d, std::size_t bytes, errc& ret) noexcept;
  void complete_now(void* ctx, std::uint64_t f, std::size_t len, errc st, const char* why) noexcept;
  [[nodiscard]] errc one_sided(peer& p, const rma_desc& d, const rma_iov* rr, std::size_t nr, std::size_t len,
                               bool write, bool inject) noexcept;
  [[nodiscard]] errc begin_request(peer& p, void* ctx, tx_op*& op, std::byte*& slot, std::uint64_t& pos) noexcept;
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
  void send_ctrl(const std::shared_ptr<peer>& p, op code, std::uint64_t ck, std::uint64_t aux,
                 std::uint64_t data) noexcept {
    ctrl_msg m;
    m.code = code;
    m.cookie = ck;
    m.aux = aux;
    m.data = data;
    send_ctrl(p, m);
  }
  void send_ctrl(const std::shared_ptr<peer>& p, const ctrl_msg& m) noexcept;
  [[nodiscard]] bool post_ctrl(peer& p, const ctrl_msg& m) noexcept;
  void start_split(rx_op* r, const incoming& in, std::size_t accept) noexcept;
  void copy_chunks(rx_op* r) noexcept;
  [[nodiscard]] bool finish_split(rx_op* r) noexcept;
  void handle_split(const slot_header* h) noexcept;
  void handle_rma(const slot_header* h) noexcept;
  void handle_atomic(const slot_header* h) noexcept;
  void handle_save(const slot_header* h) noexcept;
  void handle_cts(const slot_header* h) noexcept;
  void handle_ack(const slot_header* h) noexcept;
  void handle_data(const slot_header* h) noexcept;
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
  void housekeeping() noexcept;
  void handle_control(slot_header* h) noexcept;
  [[nodiscard]] errc peek_claim(const msg_desc& m, std::uint64_t flags, std::uint64_t src) noexcept;
  void release_unexpected(unexp* u, bool ack_sender) noexcept;

  std::shared_ptr<domain_impl> dom_;
  info info_;
  config cfg_;
  std::unique_ptr<mapping> self_;
  util::mpsc_ring ring_;  // messages: inline and rts
  util::mpsc_ring ctl_;   // control: cts, ack, data, split (never blocked by unexpected messages)
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
  util::pool<ctrl> ctp_{tx_size + rx_size + unexpected_count};
  std::unique_ptr<std::byte[]> ux_storage_;  // not zero-filled: pages are committed on use
  util::ilist<rx_op> posted_msg_, posted_tag_, rx_active_;
  util::ilist<unexp> ux_msg_, ux_tag_, claimed_;
  util::ilist<tx_op> tx_active_;
  util::ilist<ctrl> ctrl_pending_;
  std::uint64_t segs_held_ = 0;
  std::uint32_t splits_pending_ = 0;
  std::uint32_t idle_polls_ = 0;
  std::uint32_t busy_polls_ = 0;
  stuck_state stuck_ring_, stuck_ctl_;
  std::uint64_t level_ = flag::delivery_complete;  // default completion level of RMA
  std::size_t rma_parts_ = 0;  // RMA requests (parts) awaiting their ack
  std::unique_ptr<std::byte[]> inject_bufs_;       // inject writes: the target reads our copy
  std::vector<std::uint32_t> inject_free_;
  std::shared_ptr<spi::mr_registry> reg_;
  bool observing_ = false;
  std::shared_ptr<spi::eq> eq_;
  peer_watch watch_{*dom_, *this, *this};
};

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
  if (observing_) reg_->remove_observer(this);
  // Cooperative copies in progress: close their generations so no sender
  // claims another chunk, and wait (bounded) for chunks already claimed.
  for (rx_op* r = rx_active_.front(); r; r = rx_active_.next(r)) {
    if (!r->split) continue;
    split_entry* se = self_->split(rxp_.index(r));
    std::uint64_t w = se->claim.exchange((std::uint64_t{r->gen} << 32) | r->nchunks, std::memory_order_acq_rel);
    const auto claimed = std::min<std::uint32_t>(static_cast<std::uint32_t>(w), r->nchunks);
    const std::uint64_t deadline = util::now_ns() + 1'000'000'000ull;
    while (se->done.load(std::memory_order_acquire) < claimed && util::now_ns() < deadline &&
           r->p->map->owner_alive()) {
    }
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
    return errc::bad_state;
  if (m.iov_count > max_iov || (!m.iov && m.iov_count)) [[unlikely]]
    return errc::invalid_argument;
  const std::shared_ptr<peer>* pp = av_ ? av_->at(m.addr) : nullptr;
  if (!pp) [[unlikely]]
    return errc::invalid_argument;
  peer& p = **pp;
  if (p.map->closed()) [[unlikely]]
    return errc::peer_dead;  // its endpoint is closed: nothing would read this
  const std::size_t len = iov_total(m.iov, m.iov_count);
  const std::uint16_t sflags = static_cast<std::uint16_t>(((flags & flag::tagged) ? slot_flag::tagged : 0) |
                                                          ((flags & flag::remote_cq_data) ? slot_flag::cq_data : 0));
  const bool inject = flags & flag::inject;
  const std::uint64_t cflags = flag::send | (flags & (flag::msg | flag::tagged));
  std::uint64_t pos;

  if (len <= p.inline_max) {
    if (!inject && !txcq_->reserve()) return errc::again;
    auto* s = p.ring.claim(pos);
    if (!s) [[unlikely]] {
      if (!inject) txcq_->unreserve();
      return p.map->owner_alive() ? errc::again : errc::peer_dead;
    }
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
      return errc::io_error;  // the receiver took us for dead and skipped the slot
    }
    wake(p);
    if (!inject) txcq_->push(cq_entry{m.context, cflags, len, nullptr, 0, m.tag, addr_unspec});
    if (cntrs_.send) cntrs_.send->inc();
    return errc::ok;
  }
  if (inject) return errc::too_big;
  tx_op* op = txp_.get();
  if (!op) return errc::again;
  if (!txcq_->reserve()) {
    txp_.put(op);
    return errc::again;
  }
  auto* s = p.ring.claim(pos);
  if (!s) {
    txcq_->unreserve();
    txp_.put(op);
    return p.map->owner_alive() ? errc::again : errc::peer_dead;
  }
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
  if (static_cast<errc>(h->aux) != errc::ok && op->part_err == errc::ok) op->part_err = static_cast<errc>(h->aux);
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
    const std::size_t chunk = std::min<std::size_t>(self_->seg_size(), op->accepted - op->sent);
    gather(op->iov, op->iov_count, op->sent, self_->segment(seg), chunk);
    hdr->seg_busy[seg].store(1, std::memory_order_release);
    segs_held_ |= 1ull << seg;
    op->seg_mask |= 1ull << seg;
    auto* h = reinterpret_cast<slot_header*>(s);
    h->src_pid = pid_;
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

bool endpoint_impl::post_ctrl(peer& p, const ctrl_msg& m) noexcept {
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
  h->iov_count = m.iov_count;
  h->tag = m.tag;
  std::copy_n(m.iov, m.iov_count, reinterpret_cast<remote_iov*>(s + sizeof(slot_header)));
  (void)p.ctl.publish(pos);  // a refused control slot is a timed-out peer's problem
  wake(p);
  return true;
}

void endpoint_impl::send_ctrl(const std::shared_ptr<peer>& p, const ctrl_msg& m) noexcept {
  if (post_ctrl(*p, m)) return;
  // Its control ring is full: retry from progress. New rendezvous messages
  // are not matched while fewer than ctrl_reserve entries are free, so the
  // replies owed for operations already matched always find one.
  ctrl* c = ctp_.get();
  if (!c) return;  // unreachable while the reserve rule holds
  c->p = p;
  c->m = m;
  ctrl_pending_.push_back(c);
}

// --------------------------------------------------------------- receiving

errc endpoint_impl::recv(const msg_desc& m, std::uint64_t flags) noexcept {
  if (!enabled_) [[unlikely]]
    return errc::bad_state;
  if (m.iov_count > max_iov || (!m.iov && m.iov_count)) [[unlikely]]
    return errc::invalid_argument;
  std::uint64_t src = util::any_source;
  const peer* from = nullptr;
  if (m.addr != addr_unspec) {
    const std::shared_ptr<peer>* pp = av_ ? av_->at(m.addr) : nullptr;
    if (!pp) return errc::invalid_argument;
    src = (*pp)->key;
    from = pp->get();
  }
  const bool tagged = flags & flag::tagged;
  if (flags & (flag::peek | flag::claim | flag::discard)) {
    if (!tagged) return errc::invalid_argument;  // peek and claim are tagged operations
    return peek_claim(m, flags, src);
  }
  rx_op* r = rxp_.get();
  if (!r) return errc::again;
  if (!rxcq_->reserve()) {
    rxp_.put(r);
    return errc::again;
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
  if (u) {
    uxl.erase(u);
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
  return errc::ok;
}

void endpoint_impl::release_unexpected(unexp* u, bool ack_sender) noexcept {
  if (ack_sender && u->code == op::rts) {  // discarded: let the sender complete
    auto p = dom_->peer_by_key(u->src_key);
    if (p) send_ctrl(*p, op::ack, u->cookie, static_cast<std::uint64_t>(errc::ok), 0);
  }
  u->claim_ctx = nullptr;
  uxp_.put(u);
}

errc endpoint_impl::peek_claim(const msg_desc& m, std::uint64_t flags, std::uint64_t src) noexcept {
  if (!rxcq_->reserve()) return errc::again;
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
    return errc::not_found;
  }
  if (flags & flag::discard) {
    claimed_.erase(u);
    rxcq_->push(cq_entry{m.context, cflags, 0, nullptr, u->data, u->tag, source_of(u->src_key)});
    release_unexpected(u, true);
    return errc::ok;
  }
  rx_op* r = rxp_.get();
  if (!r) {
    rxcq_->unreserve();
    return errc::again;
  }
  claimed_.erase(u);
  r->ctx = m.context;
  r->flags = cflags;
  std::copy_n(m.iov, m.iov_count, r->iov);
  r->iov_count = m.iov_count;
  r->cap = iov_total(m.iov, m.iov_count);
  deliver(r, u->view());
  release_unexpected(u, false);
  return errc::ok;
}

errc endpoint_impl::cancel(void* context) noexcept {
  for (auto* l : {&posted_msg_, &posted_tag_}) {
    rx_op* r = l->find([&](const rx_op& x) { return x.ctx == context; });
    if (!r) continue;
    l->erase(r);
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
  return errc::not_found;
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

void endpoint_impl::deliver(rx_op* r, const incoming& in) noexcept {
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
    complete_rx(r, in, 0);
    send_ctrl(p, op::ack, in.cookie, static_cast<std::uint64_t>(errc::ok), 0);
    return;
  }
  if (cfg_.cma && p->cma_ok && cfg_.split_min && accept >= cfg_.split_min && p->coop_ok) {
    r->p = p;
    start_split(r, in, accept);
    return;
  }
  if (cfg_.cma && p->cma_ok) {
    // Single copy: read the sender's buffers directly. A sender whose
    // endpoint closed may have freed them: its state is checked around it.
    int err = p->map->closed() ? ESRCH
                               : cma_copy(true, static_cast<pid_t>(p->pid), r->iov, r->iov_count, in.riov,
                                          in.iov_count, 0, accept);
    if (err == 0 && p->map->closed()) err = ESRCH;
    if (err == 0) {
      complete_rx(r, in, accept);
      send_ctrl(p, op::ack, in.cookie, static_cast<std::uint64_t>(errc::ok), 0);
      return;
    }
    if (err == ESRCH) {
      complete_rx_error(r, errc::peer_dead, "the sender exited during the transfer");
      return;
    }
    if (err == EFAULT) {
      complete_rx_error(r, errc::io_error, "the sender's buffer was not readable (freed before completion?)");
      send_ctrl(p, op::ack, in.cookie, static_cast<std::uint64_t>(errc::io_error), 0);
      return;
    }
    p->cma_ok = false;  // EPERM/ENOSYS: this kernel or policy forbids it; use segments
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
  send_ctrl(p, op::cts, in.cookie, cookie(rxp_.index(r), r->gen), accept);
}

// Cooperative copy: the receiver offers the message as chunks in its
// split_entry, tells the sender (op::split with the receiver's iov list), and
// copies chunks itself; the sender, which polls for its send's completion,
// claims chunks too and writes them with process_vm_writev. The receiver
// completes when every chunk is done and acknowledges the sender. A sender
// that is not progressing simply leaves every chunk to the receiver.
void endpoint_impl::start_split(rx_op* r, const incoming& in, std::size_t accept) noexcept {
  const std::uint32_t idx = rxp_.index(r);
  split_entry* se = self_->split(idx);
  // Quarters of at least 64 KiB: few syscalls, and work for both processes
  // (measured: 1 MiB one-way 34 us with quarters, 42 us with eighths).
  r->chunk = std::min(max_chunk, std::max<std::size_t>(64 * 1024, ((accept / 4) + 4095) & ~std::size_t{4095}));
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
  ctrl_msg m;
  m.code = op::split;
  m.cookie = in.cookie;
  m.aux = (std::uint64_t{r->gen} << 32) | idx;
  m.data = accept;
  m.tag = r->chunk;  // 64-bit
  m.seg = r->nchunks;
  m.iov_count = static_cast<std::uint32_t>(r->iov_count);
  for (std::size_t i = 0; i < r->iov_count; ++i)
    m.iov[i] = remote_iov{reinterpret_cast<std::uint64_t>(r->iov[i].iov_base), r->iov[i].iov_len};
  send_ctrl(r->p, m);
  rx_active_.push_back(r);
  ++splits_pending_;
  copy_chunks(r);
  (void)finish_split(r);
}

void endpoint_impl::copy_chunks(rx_op* r) noexcept {
  split_entry* se = self_->split(rxp_.index(r));
  std::uint32_t c;
  while (claim_chunk(*se, r->gen, r->nchunks, c)) {
    const std::size_t off = c * r->chunk, len = std::min(r->chunk, r->accepted - off);
    if (!r->split_err)
      r->split_err = r->p->map->closed() ? ESRCH
                                          : cma_copy(true, static_cast<pid_t>(r->p->pid), r->iov, r->iov_count,
                                                     r->riov, r->riov_count, off, len);
    se->done.fetch_add(1, std::memory_order_acq_rel);
  }
}

bool endpoint_impl::finish_split(rx_op* r) noexcept {
  split_entry* se = self_->split(rxp_.index(r));
  if (se->done.load(std::memory_order_acquire) < r->nchunks) return false;
  // Close this generation so a late sender cannot claim anything.
  se->claim.store((std::uint64_t{r->gen} << 32) | r->nchunks, std::memory_order_release);
  if (!r->split_err && r->p->map->closed()) r->split_err = ESRCH;  // its buffers may be gone
  if (se->failed.load(std::memory_order_acquire) && !r->split_err) {
    r->p->coop_ok = false;  // the sender cannot write here: read it all ourselves
    r->split_err = cma_copy(true, static_cast<pid_t>(r->p->pid), r->iov, r->iov_count, r->riov, r->riov_count, 0,
                            r->accepted);
  }
  rx_active_.erase(r);
  --splits_pending_;
  r->split = false;
  std::shared_ptr<peer> p = r->p;
  const std::uint64_t ck = r->msg_cookie;
  const int err = r->split_err;
  if (err == 0) {
    incoming in{op::rts, r->msg_flags, r->msg_len, r->msg_tag, r->msg_data, r->src_key, 0, nullptr, nullptr, 0};
    complete_rx(r, in, r->accepted);
    send_ctrl(p, op::ack, ck, static_cast<std::uint64_t>(errc::ok), 0);
  } else if (err == EPERM || err == ENOSYS) {
    // Cross-memory attach refused: stream it through the sender's segments.
    p->cma_ok = false;
    r->received = 0;
    rx_active_.push_back(r);
    send_ctrl(p, op::cts, ck, cookie(rxp_.index(r), r->gen), r->accepted);
  } else if (err == ESRCH) {
    complete_rx_error(r, errc::peer_dead, "the sender exited during the transfer");
  } else {
    complete_rx_error(r, errc::io_error, "the sender's buffer was not readable (freed before completion?)");
    send_ctrl(p, op::ack, ck, static_cast<std::uint64_t>(errc::io_error), 0);
  }
  return true;
}

void endpoint_impl::handle_split(const slot_header* h) noexcept {
  tx_op* op = by_cookie(txp_, h->cookie);
  if (!op || op->state != tx_op::st::wait_reply || h->iov_count > max_iov || h->tag == 0) return;
  peer& p = *op->p;
  split_entry* se = p.map->split(static_cast<std::uint32_t>(h->aux));
  if (!se || p.pid != h->src_pid) return;
  const auto gen = static_cast<std::uint32_t>(h->aux >> 32);
  const std::size_t accept = std::min<std::size_t>(h->data, op->len), chunk = h->tag;
  const auto* riov = reinterpret_cast<const remote_iov*>(reinterpret_cast<const std::byte*>(h) + sizeof(slot_header));
  std::uint32_t c;
  // the receiver's endpoint closing revokes the offer (its buffers may go)
  while (!p.map->closed() && claim_chunk(*se, gen, h->seg, c)) {
    const std::size_t off = std::size_t{c} * chunk;
    const std::size_t len = off < accept ? std::min(chunk, accept - off) : 0;
    if (len && cma_copy(false, static_cast<pid_t>(p.pid), op->iov, op->iov_count, riov, h->iov_count, off, len)) {
      se->failed.store(1, std::memory_order_release);  // the receiver will copy everything itself
      se->done.fetch_add(1, std::memory_order_acq_rel);
      break;
    }
    se->done.fetch_add(1, std::memory_order_acq_rel);
  }
  wake(p);
}

// A request that a peer answers with ack (RMA, atomics): an operation, CQ
// room for its completion and a control slot, or again.
errc endpoint_impl::begin_request(peer& p, void* ctx, tx_op*& op, std::byte*& slot, std::uint64_t& pos) noexcept {
  op = txp_.get();
  if (!op) return errc::again;
  if (!txcq_->reserve()) {
    txp_.put(op);
    return errc::again;
  }
  slot = p.ctl.claim(pos);
  if (!slot) {
    txcq_->unreserve();
    txp_.put(op);
    return p.map->owner_alive() ? errc::again : errc::peer_dead;
  }
  op->state = tx_op::st::wait_reply;
  op->ctx = ctx;
  return errc::ok;
}

errc endpoint_impl::finish_request(peer& p, util::mpsc_ring& ring, tx_op* op, std::uint64_t pos) noexcept {
  if (!ring.publish(pos)) [[unlikely]] {
    txcq_->unreserve();
    op->p.reset();
    txp_.put(op);
    return errc::io_error;
  }
  tx_active_.push_back(op);
  wake(p);
  return errc::ok;
}

errc endpoint_impl::rma(const rma_desc& d, std::uint64_t flags) noexcept {
  if (!enabled_) [[unlikely]]
    return errc::bad_state;
  if (!cfg_.cma) return errc::not_supported;
  const std::shared_ptr<peer>* pp = av_ ? av_->at(d.addr) : nullptr;
  if (!pp) [[unlikely]]
    return errc::invalid_argument;
  peer& p = **pp;
  if (p.map->closed()) return errc::peer_dead;
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
    return one_sided(p, d, rr, nr, len, write, inject);
  // Every part is answered by its own ack: bound what a target may owe us.
  if (rma_parts_ + nr > max_rma_parts) return errc::again;
  tx_op* op = txp_.get();
  if (!op) return errc::again;
  // Room for the completion, or for an inject write's failure: never dropped.
  if (!txcq_->reserve()) {
    txp_.put(op);
    return errc::again;
  }
  if (inject) {
    if (inject_free_.empty()) {
      txcq_->unreserve();
      txp_.put(op);
      return errc::again;
    }
    op->ibuf = static_cast<std::int32_t>(inject_free_.back());
    inject_free_.pop_back();
  }
  // Every part's control slot first, so that a full ring gives nothing away.
  std::byte* slots[max_iov];
  std::uint64_t pos[max_iov];
  for (std::size_t i = 0; i < nr; ++i) {
    slots[i] = p.ctl.claim(pos[i]);
    if (!slots[i]) {
      for (std::size_t j = 0; j < i; ++j) {
        reinterpret_cast<slot_header*>(slots[j])->code = op::nop;
        (void)p.ctl.publish(pos[j]);
      }
      txcq_->unreserve();
      put_tx(op);
      return p.map->owner_alive() ? errc::again : errc::peer_dead;
    }
  }
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
    if (!p.ctl.publish(pos[i])) [[unlikely]]
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

void endpoint_impl::revoked(std::uint64_t key) noexcept {
  mr_entry& e = self_->mr_table()[spi::mr_key_slot(key)];
  if (__atomic_load_n(&e.key, __ATOMIC_RELAXED) != key) return;
  const std::uint32_t s = e.seq.load(std::memory_order_relaxed);
  e.seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(&e.key, std::uint64_t{0}, __ATOMIC_RELAXED);
  e.seq.store(s + 2, std::memory_order_release);
}

namespace {
// A consistent copy of a peer's table entry (bounded retries: the owner
// rewrites an entry only when a region opens or closes).
bool read_entry(const mr_entry& e, std::uint64_t& key, std::uint64_t& addr, std::uint64_t& len,
                std::uint32_t& acc, std::uint64_t& seg) noexcept {
  for (int i = 0; i < 1000; ++i) {
    const std::uint32_t s1 = const_cast<mr_entry&>(e).seq.load(std::memory_order_acquire);
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
}  // namespace

// RMA without the target's help: the initiator checks the published entry
// (key, right, bounds) and copies with one process_vm_readv/writev; the data
// is placed when this returns, so the operation completes here.
errc endpoint_impl::one_sided(peer& p, const rma_desc& d, const rma_iov* rr, std::size_t nr, std::size_t len,
                              bool write, bool inject) noexcept {
  if (!txcq_->reserve()) return errc::again;  // an inject write's failure needs room too
  remote_iov riov[max_iov];
  std::byte* mapped[max_iov];  // the ranges in the target's segments mapped here (alloc_memory)
  bool all_mapped = true;
  errc st = errc::ok;
  const mr_entry* table = p.map->mr_table();
  const auto* ph = p.map->hdr();
  for (std::size_t i = 0; i < nr && st == errc::ok; ++i) {
    std::uint64_t key = 0, addr = 0, rlen = 0, seg = 0;
    std::uint32_t acc = 0;
    if (rr[i].key == 0 || !read_entry(table[spi::mr_key_slot(rr[i].key)], key, addr, rlen, acc, seg) ||
        key != rr[i].key)
      st = errc::not_found;
    else if (!(acc & (write ? access::remote_write : access::remote_read)))
      st = errc::permission_denied;
    else if (rr[i].offset > rlen || rr[i].len > rlen - rr[i].offset)
      st = errc::invalid_argument;
    else {
      riov[i] = remote_iov{addr + rr[i].offset, rr[i].len};
      std::byte* base = seg ? p.segs.get(ph->owner_uid, ph->owner_pid, ph->owner_start, seg, rlen) : nullptr;
      mapped[i] = base ? base + rr[i].offset : nullptr;
      all_mapped = all_mapped && base;
    }
  }
  if (st == errc::ok && len && all_mapped) {
    // loads and stores on the target's memory, mapped here
    std::size_t off = 0;
    for (std::size_t i = 0; i < nr; ++i) {
      if (write) gather(d.iov, d.iov_count, off, mapped[i], rr[i].len);
      else scatter(d.iov, d.iov_count, off, mapped[i], rr[i].len);
      off += rr[i].len;
    }
  } else if (st == errc::ok && len) {
    // read = true copies remote -> local (process_vm_readv)
    if (int err = cma_copy(!write, static_cast<pid_t>(p.pid), d.iov, d.iov_count, riov, nr, 0, len))
      st = err == ESRCH ? errc::peer_dead : err == EFAULT ? errc::not_found : errc::io_error;
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

bool endpoint_impl::atomic_one_sided(peer& p, const atomic_desc& d, std::size_t bytes, errc& ret) noexcept {
  std::uint64_t key = 0, addr = 0, rlen = 0, seg = 0;
  std::uint32_t acc = 0;
  if (d.key == 0 || !read_entry(p.map->mr_table()[spi::mr_key_slot(d.key)], key, addr, rlen, acc, seg) ||
      key != d.key || seg == 0)
    return false;  // the target checks (and reports) everything else
  const auto* ph = p.map->hdr();
  std::byte* base = p.segs.get(ph->owner_uid, ph->owner_pid, ph->owner_start, seg, rlen);
  if (!base) return false;
  if (!txcq_->reserve()) {
    ret = errc::again;
    return true;
  }
  const auto type = static_cast<atomic_type>(d.type);
  const std::size_t sz = size_of(type);
  const std::uint64_t need = access::remote_write | (d.result ? access::remote_read : 0);
  errc st = errc::ok;
  if ((acc & need) != need) st = errc::permission_denied;
  else if (d.offset > rlen || bytes > rlen - d.offset || (addr + d.offset) % sz != 0) st = errc::invalid_argument;
  else {
    alignas(8) std::byte old[atomic_max_bytes];
    core::apply_atomic(static_cast<atomic_op>(d.op), type, base + d.offset,
                       static_cast<const std::byte*>(d.operand), static_cast<const std::byte*>(d.compare), d.count,
                       old);
    if (d.result) std::memcpy(d.result, old, bytes);
  }
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
void endpoint_impl::handle_rma(const slot_header* h) noexcept {
  auto pr = dom_->peer_by_key(peer_key(h->src_pid, h->src_epid));
  if (!pr) return;  // the initiator is gone: nobody to answer
  const bool write = h->code == op::rma_write;
  std::byte* where = nullptr;
  errc st = reg_->find(h->aux, h->tag, h->len, write ? access::remote_write : access::remote_read, where);
  if (st == errc::ok && h->iov_count > max_iov) st = errc::invalid_argument;
  if (st == errc::ok && h->len) {
    ::iovec local{where, h->len};
    const auto* riov = reinterpret_cast<const remote_iov*>(reinterpret_cast<const std::byte*>(h) + sizeof(slot_header));
    std::uint64_t total = 0;
    for (std::uint32_t i = 0; i < h->iov_count; ++i) total += riov[i].len;
    if (total != h->len) st = errc::invalid_argument;
    else if (int err = cma_copy(write, static_cast<pid_t>((*pr)->pid), &local, 1, riov, h->iov_count, 0, h->len))
      st = err == ESRCH ? errc::peer_dead : errc::io_error;
  }
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
  send_ctrl(*pr, op::ack, h->cookie, static_cast<std::uint64_t>(st), 0);
}

// Target side of SAVE: every earlier request from this initiator was handled
// already (one control ring, in order), so flushing the region now covers
// every earlier write to it.
void endpoint_impl::handle_save(const slot_header* h) noexcept {
  auto pr = dom_->peer_by_key(peer_key(h->src_pid, h->src_epid));
  if (!pr) return;
  const std::uint64_t level = h->data == flag::transmit_complete ? flag::delivery_complete : h->data;
  errc st = level == flag::commit_complete || level == flag::delivery_complete
                ? reg_->commit(commit_event::kind::save, h->aux, 0, 0, level)
                : errc::invalid_argument;
  send_ctrl(*pr, op::ack, h->cookie, static_cast<std::uint64_t>(st), 0);
}

errc endpoint_impl::atomic(const atomic_desc& d) noexcept {
  if (!enabled_) [[unlikely]]
    return errc::bad_state;
  if (!cfg_.cma) return errc::not_supported;
  const std::shared_ptr<peer>* pp = av_ ? av_->at(d.addr) : nullptr;
  if (!pp) [[unlikely]]
    return errc::invalid_argument;
  peer& p = **pp;
  if (p.map->closed()) return errc::peer_dead;
  const std::size_t bytes = d.count * size_of(static_cast<atomic_type>(d.type));
  if (!(p.map->hdr()->flags.load(std::memory_order_acquire) & region_flag::two_sided_rma)) {
    errc r = errc::ok;
    if (atomic_one_sided(p, d, bytes, r)) return r;
  }
  tx_op* op = nullptr;
  std::byte* s = nullptr;
  std::uint64_t pos = 0;
  if (errc e = begin_request(p, d.context, op, s, pos); e != errc::ok) return e;
  op->flags = flag::atomic | (d.result ? flag::read : flag::write);
  op->iov_count = 0;
  op->len = bytes;
  op->p = *pp;
  op->tag = 0;
  auto* h = reinterpret_cast<slot_header*>(s);
  h->src_pid = pid_;
  h->code = op::atomic;
  h->flags = static_cast<std::uint16_t>(d.op | (d.type << 8));
  h->len = static_cast<std::uint32_t>(d.count);
  h->tag = d.offset;
  h->data = reinterpret_cast<std::uint64_t>(d.result);
  h->src_epid = epid_;
  h->cookie = cookie(txp_.index(op), op->gen);
  h->aux = d.key;
  h->iov_count = 0;
  std::memcpy(s + sizeof(slot_header), d.operand, bytes);
  if (d.compare) std::memcpy(s + sizeof(slot_header) + atomic_max_bytes, d.compare, bytes);
  return finish_request(p, p.ctl, op, pos);
}

// Target side of atomics: checked like RMA, then applied element by element
// in this process with atomic instructions.
void endpoint_impl::handle_atomic(const slot_header* h) noexcept {
  auto pr = dom_->peer_by_key(peer_key(h->src_pid, h->src_epid));
  if (!pr) return;
  const bool fetch = h->data != 0;
  errc st = core::check_atomic(h->flags & 0xff, h->flags >> 8, h->len);
  const auto op = static_cast<atomic_op>(h->flags & 0xff);
  const auto type = static_cast<atomic_type>(h->flags >> 8);
  const std::size_t sz = st == errc::ok ? size_of(type) : 1;
  const std::size_t bytes = static_cast<std::size_t>(h->len) * sz;
  std::byte* where = nullptr;
  if (st == errc::ok)
    st = reg_->find(h->aux, h->tag, bytes, access::remote_write | (fetch ? access::remote_read : 0), where);
  if (st == errc::ok && reinterpret_cast<std::uintptr_t>(where) % sz != 0) st = errc::invalid_argument;
  if (st == errc::ok) {
    const std::byte* operand = reinterpret_cast<const std::byte*>(h) + sizeof(slot_header);
    const std::byte* compare = op == atomic_op::cswap ? operand + atomic_max_bytes : nullptr;
    alignas(8) std::byte old[atomic_max_bytes];
    core::apply_atomic(op, type, where, operand, compare, h->len, old);
    if (fetch) {  // old values straight into the initiator's result buffer
      ::iovec local{old, bytes};
      const remote_iov res{h->data, bytes};
      if (int err = cma_copy(false, static_cast<pid_t>((*pr)->pid), &local, 1, &res, 1, 0, bytes))
        st = err == ESRCH ? errc::peer_dead : errc::io_error;
    }
  }
  spi::count(cntrs_.remote_write.get(), st == errc::ok);
  send_ctrl(*pr, op::ack, h->cookie, static_cast<std::uint64_t>(st), 0);
}

void endpoint_impl::handle_data(const slot_header* h) noexcept {
  rx_op* r = by_cookie(rxp_, h->aux);
  if (r && r->split) r = nullptr;
  auto pr = r && r->active ? r->p : dom_->peer_by_key(peer_key(h->src_pid, h->src_epid)).value_or(nullptr);
  if (!pr) return;
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
}

bool endpoint_impl::handle_incoming(const slot_header* h) noexcept {
  const bool tagged = h->flags & slot_flag::tagged;
  const std::uint64_t key = peer_key(h->src_pid, h->src_epid);
  watch_.saw(key);  // a sender is a known peer: its death is reported
  incoming in{h->code, h->flags, 0, h->tag, h->data, key, h->cookie,
              reinterpret_cast<const std::byte*>(h) + sizeof(slot_header),
              reinterpret_cast<const remote_iov*>(reinterpret_cast<const std::byte*>(h) + sizeof(slot_header)),
              h->iov_count};
  if (h->code == op::inline_msg) {
    if (h->len > inline_max_) return true;  // malformed: drop
    in.len = h->len;
  } else {
    if (h->iov_count > max_iov) return true;
    if (ctp_.available() < ctrl_reserve) return false;  // replies owed elsewhere: wait
    in.len = h->aux;
  }
  auto& pl = tagged ? posted_tag_ : posted_msg_;
  rx_op* r = pl.find([&](const rx_op& x) {
    return util::source_matches(x.src_filter, key) && (!tagged || util::tag_matches(x.tag, x.ignore, h->tag));
  });
  if (r) {
    pl.erase(r);
    deliver(r, in);
    return true;
  }
  unexp* u = uxp_.get();
  if (!u) return false;  // unexpected buffers full: leave it in the ring (back-pressure)
  u->code = in.code;
  u->flags = in.flags;
  u->len = in.len;
  u->tag = in.tag;
  u->data = in.data;
  u->src_key = key;
  u->cookie = in.cookie;
  u->iov_count = in.code == op::rts ? in.iov_count : 0;
  if (in.code == op::inline_msg) std::memcpy(u->payload, in.payload, in.len);
  else std::copy_n(in.riov, in.iov_count, u->riov);
  (tagged ? ux_tag_ : ux_msg_).push_back(u);
  return true;
}

// ----------------------------------------------------------------- progress

void endpoint_impl::handle_control(slot_header* h) noexcept {
  switch (h->code) {
    case op::cts: handle_cts(h); break;
    case op::ack: handle_ack(h); break;
    case op::data: handle_data(h); break;
    case op::split: handle_split(h); break;
    case op::rma_write:
    case op::rma_read: handle_rma(h); break;
    case op::atomic: handle_atomic(h); break;
    case op::save: handle_save(h); break;
    case op::nop: break;
    default: break;  // not a control code (or a recovered slot): drop
  }
}

void endpoint_impl::progress() noexcept {
  // Control first: it never waits for anything, so it is never blocked.
  int work = 0;
  for (int i = 0; i < progress_batch; ++i, ++work) {
    auto* s = ctl_.peek();
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    handle_control(h);
    h->src_pid = 0;  // the next writer of this slot names itself afresh
    ctl_.pop();
  }
  for (int i = 0; i < progress_batch; ++i, ++work) {
    auto* s = ring_.peek();
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    if ((h->code == op::inline_msg || h->code == op::rts) && !handle_incoming(h)) break;  // back-pressure
    h->src_pid = 0;
    ring_.pop();
  }
  if (work == 0) {
    if (++idle_polls_ >= stuck_check_polls) {
      idle_polls_ = 0;
      housekeeping();
    }
    liveness(util::coarse_now_ns());  // an empty poll: a few loads from the vDSO page
  } else if ((++busy_polls_ & 15) == 0) {
    liveness(util::coarse_now_ns());
  }
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
      ctp_.put(c);
    }
    c = next;
  }
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->state == tx_op::st::streaming) stream(op);
    op = next;
  }
  if (splits_pending_) {
    for (rx_op* r = rx_active_.front(); r;) {
      rx_op* next = rx_active_.next(r);
      if (r->split) (void)finish_split(r);
      r = next;
    }
  }
}

void endpoint_impl::housekeeping() noexcept {
  check_stuck_head(ring_, stuck_ring_);
  check_stuck_head(ctl_, stuck_ctl_);
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

// A peer is gone and every message it sent before is consumed (liveness.cpp):
// receives directed at it can never match, and its transfers cannot finish.
void endpoint_impl::fail_peer(std::uint64_t key, const peer* p, const char* name, const char* why) noexcept {
  char msg[160];
  std::snprintf(msg, sizeof msg, "receive directed at shm peer %s, which %s: it can never match; post it for "
                "another peer", name, why);
  for (auto* l : {&posted_msg_, &posted_tag_}) {
    for (rx_op* r = l->front(); r;) {
      rx_op* next = l->next(r);
      if (r->src_filter == key) {
        l->erase(r);
        r->msg_tag = r->tag;
        complete_rx_error(r, errc::peer_dead, msg);
      }
      r = next;
    }
  }
  if (!p) return;
  std::snprintf(msg, sizeof msg, "shm peer %s %s before the transfer finished", name, why);
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->p.get() == p) complete_tx(op, errc::peer_dead, msg);
    op = next;
  }
  for (rx_op* r = rx_active_.front(); r;) {
    rx_op* next = rx_active_.next(r);
    if (r->p.get() == p) {
      rx_active_.erase(r);
      if (r->split) {
        --splits_pending_;
        r->split = false;
      }
      complete_rx_error(r, errc::peer_dead, msg);
    }
    r = next;
  }
}

// Latches the death of the peers of operations in flight (owner_alive, at
// most one look per 5 ms per peer): true if any is gone.
bool endpoint_impl::probe_op_peers() noexcept {
  bool gone = false;
  for (tx_op* op = tx_active_.front(); op; op = tx_active_.next(op)) gone = !op->p->map->owner_alive() || gone;
  for (rx_op* r = rx_active_.front(); r; r = rx_active_.next(r)) gone = !r->p->map->owner_alive() || gone;
  return gone;
}

// Every reply already given: the control messages published (bounded by the
// ring's size), and segments released by receivers of streamed sends whose
// data is all sent (such a send completes when they are free: no ack).
void endpoint_impl::drain_control() noexcept {
  for (std::uint32_t i = 0; i < ctl_.slot_count(); ++i) {
    auto* s = ctl_.peek();
    if (!s) break;
    auto* h = reinterpret_cast<slot_header*>(s);
    handle_control(h);
    h->src_pid = 0;
    ctl_.pop();
  }
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->state == tx_op::st::streaming && op->sent == op->accepted) stream(op);
    op = next;
  }
}

// Operations whose peer was found gone before the control ring was drained
// (found_gone(), not a fresh look: a peer that acknowledged and then closed
// just now is not failed).
void endpoint_impl::check_peers() noexcept {
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->p->map->found_gone())
      complete_tx(op, errc::peer_dead, "the receiver exited before the transfer finished");
    op = next;
  }
  for (rx_op* r = rx_active_.front(); r;) {
    rx_op* next = rx_active_.next(r);
    if (r->p->map->found_gone()) {
      rx_active_.erase(r);
      if (r->split) {
        --splits_pending_;
        r->split = false;
      }
      complete_rx_error(r, errc::peer_dead, "the sender exited before the transfer finished");
    }
    r = next;
  }
}

}  // namespace

result<std::shared_ptr<spi::endpoint>> domain_impl::open_endpoint(const info& i) {
  if (i.fabric.prov_name != "shm")
    return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not shm");
  auto ep = std::make_shared<endpoint_impl>(shared_from_this(), i);
  if (auto r = ep->init(); !r) return std::unexpected(r.error());
  return ep;
}

}  // namespace weft::prov::shm

#pragma once
// tcp endpoint internals (docs/wire/tcp.md), shared by the files that
// implement it, one responsibility each:
//   endpoint.cpp  setup, binding, progress and timers
//   conn.cpp      connections: open, accept, hello handshake, close, failure
//   tx.cpp        sending: frames, the transmit queue, transmit completions
//   rx.cpp        receiving: frame decoding, matching, unexpected messages
//   rma.cpp       RMA and atomics, initiator and target
//   cm.cpp        MSG endpoints' connection management, passive endpoints
//
//  - Every RDM endpoint listens; its address is the listening address.
//  - The first send to a peer opens a connection (non-blocking connect, then
//    hello / hello_ack); sends queue until it is established.
//  - Two peers that connect to each other at once keep the connection opened
//    by the peer with the smaller address; the other is closed before it
//    carries data, its queued sends move over in order.
//  - A connection idle for WEFT_TCP_IDLE_MS is closed with close_req /
//    close_ack (no message can be in flight on it), and reopened on demand.
//  - Frames are read through a per-connection buffer; the payload of a
//    matched message of 16 KiB or more is read straight into the receive
//    buffer. Unexpected messages up to 8 KiB are buffered (256 of them);
//    larger ones stay in the socket until a receive matches them.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>

#include "prov/tcp/liveness_rule.hpp"
#include "prov/tcp/tcp.hpp"
#include "util/match.hpp"
#include "weft/event.hpp"
#include "weft/spi/progress.hpp"

// Internal to libweft: hidden, so that calls between these functions are
// direct (and inlinable) rather than through the PLT.
#pragma GCC visibility push(hidden)

namespace weft::prov::tcp {

inline constexpr std::size_t rbuf_size = 64 * 1024;
inline constexpr std::size_t direct_read_min = 16 * 1024;
// A poll that follows an empty one within this is the application spinning.
inline constexpr std::uint64_t poll_recent_ns = 1000;
inline constexpr std::size_t bulk_read = 16384;  // read size for the start of a frame after a large one
inline constexpr std::uint64_t tick_ns = 5'000'000;
inline constexpr std::size_t max_handshakes = 256;  // connections accepted but not yet identified
inline constexpr std::uint64_t replace_after_ns = 50'000'000;
inline constexpr std::uint64_t tc_inject_bit = std::uint64_t{1} << 63;  // in an RMA request's id: see rma()
inline constexpr std::uint32_t max_answers = 32;  // RMA answers queued per connection before it stops reading requests
inline constexpr std::size_t small_frame = 512;   // frames up to this size leave in one send() from the stack

// The total of an iov list, or SIZE_MAX when it does not fit in 64 bits (a
// wrapped small sum would pass the length limits, and gather() would then
// copy the whole of a huge entry).
inline std::size_t iov_total(const ::iovec* v, std::size_t n) noexcept {
  std::size_t t = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (__builtin_add_overflow(t, v[i].iov_len, &t)) return SIZE_MAX;
  return t;
}

inline void scatter(const ::iovec* v, std::size_t n, std::size_t off, const std::uint8_t* src, std::size_t len) noexcept {
  for (std::size_t i = 0; i < n && len; ++i) {
    if (off >= v[i].iov_len) {
      off -= v[i].iov_len;
      continue;
    }
    std::size_t c = std::min(len, v[i].iov_len - off);
    std::memcpy(static_cast<std::uint8_t*>(v[i].iov_base) + off, src, c);
    src += c;
    len -= c;
    off = 0;
  }
}

inline void gather(const ::iovec* v, std::size_t n, std::uint8_t* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    if (v[i].iov_len == 0) continue;  // base may be null
    std::memcpy(dst, v[i].iov_base, v[i].iov_len);
    dst += v[i].iov_len;
  }
}

// The part of an iov list from byte offset off (at most max entries).
inline std::size_t slice_from(const ::iovec* v, std::size_t n, std::size_t off, std::size_t len, ::iovec* out,
                       std::size_t max) noexcept {
  std::size_t k = 0;
  for (std::size_t i = 0; i < n && len && k < max; ++i) {
    if (off >= v[i].iov_len) {
      off -= v[i].iov_len;
      continue;
    }
    std::size_t c = std::min(len, v[i].iov_len - off);
    out[k++] = {static_cast<std::uint8_t*>(v[i].iov_base) + off, c};
    len -= c;
    off = 0;
  }
  return k;
}

inline errc errno_to_errc(int e) noexcept {
  switch (e) {
    case ETIMEDOUT: return errc::timed_out;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN: return errc::peer_dead;
    default: return errc::io_error;
  }
}

struct conn;

struct tx_op : util::list_node {
  std::uint32_t gen = 0;
  bool internal = false;    // protocol frame: no completion
  bool completion = false;  // a user operation that reports a completion
  void* ctx = nullptr;
  std::uint64_t flags = 0;
  std::uint64_t tag = 0;
  std::size_t len = 0;  // payload bytes
  wire::frame_header hdr{};
  ::iovec iov[max_iov + 2];  // iov[0] is the header; RMA writes: iov[1] the request
  std::size_t iov_count = 0;
  std::size_t total = 0, sent = 0;
  // RMA and atomics: answered by rma_resp unless a transmit-complete write
  bool await = false;
  bool answer = false;       // an answer we owe (counted in on->answers)
  conn* on = nullptr;        // awaiting the answer on this connection (answer: queued on it)
  tx_op* parent = nullptr;   // a part of a multi-range operation (the parent counts the parts)
  std::uint32_t parts = 1;
  errc part_err = errc::ok;
  char why[112] = {};
  // An RMA read's answer sent straight from the target region (zero copy):
  // zc says so (set and cleared by progress, under zc_mu_); zc_key names the
  // region until it is revoked, which rewrites the answer (zc_mu_ held). See
  // endpoint_impl::drain().
  // Failure slots (endpoint_impl::slots_free_) held: fslot by a part that
  // will be answered only if it fails (until it leaves; then its connection
  // holds the slot), islot by an inject write (until it completes).
  bool fslot = false, islot = false;
  bool retirer = false;  // asks for an answer only to give failure slots back (conn::retirers)
  std::uint64_t tc_mark = 0;  // awaited: its connection's tc_sent when it left
  bool zc = false;
  // The rest of the answer cannot be read from the region (closed and not
  // copied, or its memory unmapped): zeros complete the frame, and its
  // trailer carries the failure (flush, send_poisoned).
  bool poisoned = false;
  // A read answer sent from a region (flag more): its final status follows
  // in this trailer frame (ok, or the failure that cut it short).
  wire::frame_header trailer{};
  bool await_trailer = false;  // initiator: its answer's bytes came (flag more); its trailer ends it
  std::uint64_t zc_key = 0;
  std::byte* own = nullptr;  // the rest of a revoked answer, copied (freed when the operation is recycled)
  ::iovec local[max_iov];    // read / fetch: where the answer goes
  std::size_t local_count = 0, local_len = 0;
  std::uint8_t buf[inject_size + sizeof(wire::hello_body) + wire::max_cm_data];
};

struct rx_op : util::list_node {
  std::uint32_t gen = 0;
  void* ctx = nullptr;
  std::uint64_t flags = 0;
  ::iovec iov[max_iov];
  std::size_t iov_count = 0;
  std::size_t cap = 0;
  fi_addr_t src_filter = util::any_source;
  std::uint64_t tag = 0, ignore = 0;
};

struct conn;

struct unexp : util::list_node {
  std::uint8_t flags = 0;
  std::size_t len = 0;
  std::uint64_t tag = 0, data = 0;
  fi_addr_t src = addr_notavail;
  conn* stalled = nullptr;  // the payload is still in this connection's socket
  void* claim_ctx = nullptr;
  std::uint8_t* payload = nullptr;
};

class endpoint_impl;

struct conn final : handler {
  // closing: we sent close_req; lost: no new data goes out here, it closes
  // once its queue is flushed.
  enum class st : std::uint8_t { connecting, wait_ack, wait_hello, established, closing, lost };
  // stalled: a message waits for a buffer or a receive; answers: an RMA request waits until the
  // answers owed on this connection drain
  enum class rs : std::uint8_t { header, user, unexp, ctrl, discard, stalled, answers };
  endpoint_impl* ep = nullptr;
  int fd = -1;
  st state = st::connecting;
  bool outgoing = false;
  bool dead = false;
  bool close_after_flush = false;
  bool want_out = false;
  bool in_list = false;  // on the stalled list
  bool direct = false;   // read by polling it directly: not in epoll's read interest
  bool bulk = false;     // the last frame received was large: read the next header with a small read
  bool dup_loser = false;  // lost a simultaneous connect; waits for the winner
  bool held = false;       // a new connection waiting for the old one to close
  conn* held_on = nullptr; // ... that one
  bool was_up = false;     // it was established once: its failure is the peer's (liveness.cpp)
  int doom = 0;            // no socket could be made (errno): progress fails it (liveness.cpp)
  // The kernel may hold data for the peer (sent, unacknowledged, or waiting
  // for its window) since kernel_since: tick() watches for its silence
  // (liveness.cpp, watch_in_flight).
  bool in_kernel = false;
  std::uint64_t kernel_since = 0;
  std::uint64_t info_next = 0;  // TCP_INFO (the socket's lock) is read no sooner than this
  watch_state watch{};          // what judge() keeps between readings
  bool user_timeout = false;    // a kernel without tcpi_notsent_bytes (< 4.6): TCP_USER_TIMEOUT set instead
  std::uint32_t events = EPOLLIN;  // epoll interest in force
  std::string key;       // the peer's listening address (once known)
  address peer{};
  fi_addr_t addr = addr_notavail;
  // receive side
  std::unique_ptr<std::uint8_t[]> rbuf{new std::uint8_t[rbuf_size]};
  std::size_t rpos = 0, rend = 0;
  std::uint8_t hdr[sizeof(wire::frame_header)]{};
  std::size_t hdr_got = 0;
  wire::frame_header cur{};
  rs rstage = rs::header;
  rx_op* rx = nullptr;
  unexp* ux = nullptr;
  std::size_t pay_got = 0;
  int lowat = 1;  // SO_RCVLOWAT in force
  std::uint8_t ctrl[sizeof(wire::hello_body) + wire::max_cm_data]{};
  std::size_t ctrl_want = 0;  // bytes of the frame read into ctrl
  // RMA: the payload of a write goes straight into the target region, an
  // answer into the initiator's buffers, both through this receive.
  rx_op sink;
  tx_op* sink_op = nullptr;  // initiator: the operation the answer belongs to
  wire::rma_req sink_req{};  // target: the write being received
  std::uint8_t sink_flags = 0;
  errc sink_err = errc::ok;  // target: the region went away while its bytes arrived
  bool sink_more = false;    // initiator: the answer being received has a trailer (its op ends there)
  std::uint32_t answers = 0;     // answers queued here, not yet sent (bounded: max_answers)
  // Initiator: requests sent here (started) whose answer has not come back.
  // At most max_answers, so the target never owes more than it queues before
  // it stops reading (answer_room): later requests wait in txq (credit_wait:
  // one waits for an answer; answers we owe go ahead of it). tx.cpp, flush.
  std::uint32_t asked = 0;
  bool credit_wait = false;
  // Writes sent here that the target answers only if they fail (transmit-
  // complete): tc_sent counts them as they leave, tc_done those resolved
  // (failure answered, or known to have worked because a later request was
  // answered). Each unresolved one holds a failure slot of the endpoint.
  std::uint64_t tc_sent = 0, tc_done = 0;
  std::uint32_t retirers = 0;  // writes here asking for an answer to give slots back, not yet answered
  // send side
  util::ilist<tx_op> txq;
  util::ilist<tx_op> await;  // requests sent on this connection, waiting for their answer
  std::uint64_t started = 0, last_active = 0;
  // Bytes moved (data path: a count, no clock); tick() turns a change into last_active.
  std::uint64_t activity = 0, activity_seen = 0;
  void on_event(std::uint32_t events) noexcept override;
};

inline bool paused(const conn* c) noexcept {
  return c->rstage == conn::rs::stalled || c->rstage == conn::rs::answers;
}

struct listener final : handler {
  endpoint_impl* ep = nullptr;
  void on_event(std::uint32_t events) noexcept override;
};

class endpoint_impl final : public spi::endpoint, public spi::progressable, public spi::mr_observer, public av_user {
 public:
  endpoint_impl(std::shared_ptr<domain_impl> d, const info& i) : dom_(std::move(d)), info_(i), cfg_(dom_->cfg()) {}
  ~endpoint_impl() override;
  result<void> init();
  result<void> bind_cq(std::shared_ptr<spi::cq> q, std::uint64_t flags) override;
  result<void> bind_eq(std::shared_ptr<spi::eq> q) override;
  result<void> connect(const address& peer, std::span<const std::byte> data) override;
  result<void> accept(std::span<const std::byte> data) override;
  result<void> shutdown() override;
  result<void> bind_av(std::shared_ptr<spi::av> a) override;
  result<void> bind_cntr(std::shared_ptr<spi::cntr> c, std::uint64_t flags) override;
  result<void> enable() override;
  [[nodiscard]] address name() const override { return name_; }
  errc send(const msg_desc& m, std::uint64_t flags) noexcept override;
  errc recv(const msg_desc& m, std::uint64_t flags) noexcept override;
  errc cancel(void* context) noexcept override;
  errc rma(const rma_desc& d, std::uint64_t flags) noexcept override;
  errc atomic(const atomic_desc& d) noexcept override;
  void progress() noexcept override;
  [[nodiscard]] int wait_fd() const noexcept override { return dom_->eng().fd(); }
  void prepare_sleep() noexcept override;
  void leave_direct() noexcept;
  void poll_engine() noexcept;

  void on_conn_event(conn* c, std::uint32_t ev) noexcept;
  void on_accept() noexcept;
  void resume_accepting() noexcept;

  // An event for the bound EQ (RDM without one: a CQ error entry), kept
  // here until it can be delivered (liveness.cpp).
  struct pending_event {
    eq_event::kind kind = eq_event::kind::error;
    errc err = errc::ok;
    address peer{};
    fi_addr_t addr = addr_notavail;
    char msg[160] = {};
    std::uint8_t data[wire::max_cm_data] = {};
    std::uint16_t data_len = 0;
    bool cq_too = false;  // RDM without an EQ: a CQ error entry instead
    // A listener's report (at most one of each kind waits here: the room
    // reserved for it): report_fd, or report_memory / report_watch, whose
    // text is made when it is delivered, with every refusal counted until
    // then (oom_refused_, watch_refused_).
    std::uint8_t report = 0;
  };
  static constexpr std::uint8_t report_fd = 1, report_memory = 2, report_watch = 3;

 private:
  // The connection to a; null: path_err_ says why (peer_dead, or no_memory),
  // and path_why_ in words.
  conn* path(fi_addr_t a) noexcept;
  // When path() found none: path_err_, with the text for last_error_message().
  [[nodiscard]] errc path_failed(const char* op) noexcept;
  errc path_err_ = errc::peer_dead;
  char path_why_[200] = {};
  // Control path (they allocate; bad_alloc propagates to the caller's try):
  // a new connection, with the room it may need later on the data path
  // reserved (the stalled list, a pending event for its failure).
  conn* add_conn(int fd, bool outgoing);
  // Connects to peer; null if no socket could be made for a reason other
  // than running out of descriptors (those give a connection that fails
  // with a clear error at the next progress: conn::doom).
  conn* open_conn(const address& peer, const std::string& key, fi_addr_t a, std::span<const std::byte> cm = {},
                  std::uint8_t hello_flags = 0);
  int open_errno_ = 0;  // why open_conn last returned null (the failing call's errno)
  void index_peer(fi_addr_t a);  // by_addr_ and peer_state_ cover a
  void cm_event(eq_event::kind k, errc e, const char* msg, const std::uint8_t* data, std::size_t len) noexcept;
  void cancel_posted() noexcept;
  void queue_frame(conn* c, wire::op code, std::uint64_t data, const void* payload, std::size_t len,
                   bool front = false, std::uint8_t flags = 0) noexcept;
  void flush(conn* c) noexcept;
  void set_out(conn* c, bool on) noexcept;
  void update_events(conn* c) noexcept;
  bool read_conn(conn* c) noexcept;
  void consume(conn* c) noexcept;
  void on_header(conn* c) noexcept;
  void on_ctrl(conn* c) noexcept;
  void finish_user(conn* c) noexcept;
  void payload_fault(conn* c) noexcept;  // EFAULT writing a frame's payload into our memory (rx.cpp)
  void finish_unexp(conn* c) noexcept;
  bool dispatch_msg(conn* c) noexcept;
  void handle_hello(conn* c) noexcept;
  void handle_hello_ack(conn* c) noexcept;
  void adopt(conn* c, fi_addr_t a);  // allocates: inside a try
  void move_user_ops(conn* from, conn* to) noexcept;
  void close_conn(conn* c) noexcept;
  void abort_receives(conn* c, errc e, const char* why) noexcept;
  void set_lowat(conn* c, int v) noexcept;
  void fail_conn(conn* c, errc e, const char* why) noexcept;
  void complete_tx(tx_op* op, errc e, const char* why) noexcept;
  void end_op(tx_op* op, errc e, const char* why) noexcept;
  void finish_part(tx_op* op, errc e, const char* why) noexcept;
  void recycle(tx_op* op) noexcept;
  void on_sent(conn* c, tx_op* op) noexcept;
  void handle_rma_req(conn* c) noexcept;
  void handle_rma_resp(conn* c) noexcept;
  void sink_done(conn* c) noexcept;
  // Queues an answer (payload up to inject_size is copied; a longer one is
  // sent from where it is) and sends what it can.
  void respond(conn* c, std::uint64_t id, errc st, const void* payload, std::size_t len) noexcept;
  tx_op* answer_op(conn* c, std::uint64_t id, errc st, const void* payload, std::size_t len) noexcept;
  void respond_read(conn* c, const wire::rma_req& q) noexcept;
  void revoke_answer(tx_op* op) noexcept;
  // zc_mu_ held: the rest of a region's read answer cannot be sent (e why).
  void poison_answer(tx_op* op, errc e, const char* why) noexcept;
  // mr_observer: the registry tells us (under its lock, from the thread that
  // closes a region, or the memory monitor's) when a key dies.
  void published(std::uint64_t, std::byte*, std::size_t, std::uint64_t, std::uint64_t) noexcept override {}
  void revoked(std::uint64_t key) noexcept override;
  void drain(std::uint64_t key) noexcept override;  // rewrites the answers from key, waits for an access to it
  void discard_payload(conn* c, std::size_t len) noexcept;
  [[nodiscard]] bool take_ops(std::size_t n, bool completion, tx_op** out) noexcept;
  void complete_rx(rx_op* r, std::size_t copied, std::size_t msg_len, std::uint8_t flags, std::uint64_t tag,
                   std::uint64_t data, fi_addr_t src) noexcept;
  void rx_error(rx_op* r, errc e, const char* why) noexcept;
  void deliver_unexpected(rx_op* r, unexp* u) noexcept;
  void resume_stalled() noexcept;
  errc peek_claim(const msg_desc& m, std::uint64_t flags, fi_addr_t src) noexcept;
  void drop_unexpected(unexp* u) noexcept;
  void tick(std::uint64_t now) noexcept;
  // A connection whose kernel holds data for the peer: the peer is dead
  // when its kernel has answered nothing (no acknowledgement, no answer to
  // two zero-window probes) for WEFT_TCP_TIMEOUT_MS (liveness.cpp). Not
  // TCP_USER_TIMEOUT: Linux applies it to a closed window too, and would
  // cut a live peer that is busy while we do not call in.
  void watch_in_flight(conn* c, std::uint64_t now) noexcept;
  void reap() noexcept;
  [[nodiscard]] fi_addr_t src_of(conn* c) noexcept { return source_cap_ ? c->addr : addr_unspec; }

  // ---- liveness.cpp: peer failure, descriptor exhaustion, pending events
  // A connection failed on its socket (reset, EOF without the close
  // handshake, timeout, refused): when it was the path to a peer that was
  // up (an established connection now or before), the peer is dead: its
  // operations in flight and its directed receives complete with
  // peer_dead, and a peer_dead event is reported once. Otherwise as
  // fail_conn.
  void lose_conn(conn* c, errc e, const char* why) noexcept;
  // The peer of c is gone: it died (reported on the EQ, else as a CQ error
  // entry) or closed its endpoint in order (bye: reported on the EQ only).
  void peer_lost(conn* c, bool died, const char* why) noexcept;
  void say_bye(conn* c) noexcept;  // the endpoint closes: tell the peer, best effort
  void peer_up(conn* c) noexcept;  // established: the peer is alive (again: a new peer)
  [[nodiscard]] bool is_dead(fi_addr_t a) noexcept;
  void sync_av() noexcept;  // an address vector entry was removed: forget what was known per entry
  void av_removed(fi_addr_t h) noexcept override;  // av_user (liveness.cpp)
  void av_inserted(fi_addr_t h, const std::string& key) noexcept override;
  void push_event(eq_event::kind k, errc e, const address& peer, fi_addr_t a, const char* msg,
                  const std::uint8_t* data, std::size_t len, bool cq_too = false, std::uint8_t report = 0) noexcept;
  void deliver_events() noexcept;
  void fail_doomed() noexcept;
  // The listener's accept ran out of descriptors: the waiting connection is
  // refused with a reason (hello_ack no_resources) instead of left hanging,
  // and the application is told once.
  [[nodiscard]] bool refuse_for_descriptors(int err) noexcept;  // false: none waiting, or no spare
  void report_descriptors(int err) noexcept;
  // Out of memory for an accepted connection: the peer gets hello_ack
  // no_resources with the reason, fd is closed, and the refusal is counted:
  // the application gets one error event for all the refusals since the
  // last one it was given (a burst never crowds out other events).
  void refuse_for_memory(int fd) noexcept;
  void count_memory_refusal() noexcept;  // a connection refused for want of memory: reported (counted)
  std::size_t oom_refused_ = 0;  // refusals for want of memory not yet reported
  bool oom_queued_ = false;      // their report waits in events_
  // An accepted connection epoll cannot watch: refused with the reason, and
  // counted like the refusals for want of memory (report_watch: one event
  // for all of them since the last one, in its own reserved place).
  void count_watch_refusal(int err) noexcept;
  std::size_t watch_refused_ = 0;  // refusals for want of epoll watches not yet reported
  int watch_errno_ = 0;            // the last epoll_ctl error among them
  bool watch_queued_ = false;      // their report waits in events_
  [[nodiscard]] std::string my_key(conn* c) const;

  std::shared_ptr<domain_impl> dom_;
  info info_;
  config cfg_;
  int lfd_ = -1;
  bool accept_before_enable_ = false;  // a connection came before enable(): the listener's interest is off
  listener lst_;
  address name_{};
  std::shared_ptr<spi::cq> txcq_, rxcq_;
  spi::endpoint_counters cntrs_;  // counters, if bound
  std::shared_ptr<spi::mr_registry> reg_;
  bool observing_ = false;  // registered as the registry's observer
  util::creator_process creator_;  // destroyed in a forked child: no frame on the parent's sockets
  // Guards the answers sent straight from region memory (tx_op::zc) against
  // drain(), which may run on another thread. Lock order: the registry's
  // lock, then this one; never the other way round.
  std::mutex zc_mu_;
  std::uint32_t zc_live_ = 0;  // answers still naming a region (zc_key != 0), under zc_mu_
  // Every other access of the target to region memory (a small read's copy,
  // each piece of a write, an atomic) runs under zc_mu_ too, and only if
  // drain() has not seen its key die since its find: so once a region's
  // close returns, no access to its memory is under way and none starts
  // (the close may come from another thread: automatic progress, the
  // memory monitor). Under zc_mu_: the key between find and access, and
  // whether it died meanwhile.
  std::uint64_t access_key_ = 0;
  bool access_revoked_ = false;
  // reg_->find, then (ok) zc_mu_ held in lk until the caller has touched the
  // memory; a close in between makes it not_found. Nothing that takes
  // zc_mu_ (flush, recycle, fail_conn...) may run while lk holds it.
  [[nodiscard]] errc find_locked(std::uint64_t key, std::uint64_t offset, std::uint64_t len, std::uint64_t need,
                                 std::byte*& where, std::unique_lock<std::mutex>& lk) noexcept;
  std::uint64_t level_ = flag::delivery_complete;  // default completion level of RMA
  std::size_t rma_reserved_ = 0;  // CQ room held by RMA/atomic operations not yet complete
  std::uint32_t answer_waits_ = 0;  // connections paused in rs::answers
  // Failures nobody reserved CQ room for (transmit-complete and inject
  // writes), waiting for room: pushed in order as soon as the CQ has some.
  //
  // A write that may fail after it gave its completion (or that gives none)
  // takes a slot when it is posted (none free: again), so that its error
  // entry always has a place here: nothing is ever dropped. A failure slot
  // (fslot) per part for a failure the target answers, an inject slot
  // (islot) for an inject write's own failure before it left. Slots come
  // back when the entry reaches the CQ, or when the write is known to have
  // worked: an answer to a later request on the same connection (the target
  // handles and answers in order), or the connection's end. Once fewer than
  // half the failure slots are free, one write at a time per connection asks
  // for an answer (wire flag ack), and below a quarter every write does, so
  // that slots never stay held by writes nobody will answer.
  //
  // The failure slots bound the transmit-complete writes on the wire, so
  // they must cover what the sockets hold (4096 writes of 8 bytes are 150 KB
  // with their headers); a failure the target answers is kept as a compact
  // record (its status and whether it was an inject) and its entry is built
  // when it reaches the CQ. A local failure keeps its whole entry (its text).
  static constexpr std::size_t failure_slots = 4096;
  static constexpr std::size_t inject_slots = 256;
  static constexpr std::uint16_t rec_full = 0x8000, rec_inject = 0x100;
  std::size_t slots_free_ = failure_slots;
  std::size_t islots_free_ = inject_slots;
  std::array<std::uint16_t, failure_slots + inject_slots> pend_rec_{};
  std::array<cq_err_entry, inject_slots> pend_full_{};
  std::size_t pend_head_ = 0, pend_n_ = 0, full_head_ = 0, full_n_ = 0;
  void report_error(const cq_err_entry& ee) noexcept;  // the caller holds an inject slot for it
  void report_answered_failure(errc e, bool inject) noexcept;  // the caller holds a failure slot for it
  void push_record(std::uint16_t rec) noexcept;
  static void push_answered(spi::cq& cq, std::uint16_t rec) noexcept;
  // The transmit-complete writes sent on c before its connection's count
  // reached mark worked (or were answered failed): their slots come back.
  void retire_tc(conn* c, std::uint64_t mark) noexcept {
    if (mark > c->tc_done) {
      slots_free_ += mark - c->tc_done;
      c->tc_done = mark;
    }
  }
  void push_pending_errors() noexcept;
  // An RMA request's id: the operation's pool index and 31 bits of its
  // generation (bit 63 is tc_inject_bit); the answer echoes it.
  [[nodiscard]] std::uint64_t request_id(const tx_op* op) const noexcept {
    return (std::uint64_t{op->gen & 0x7fffffffu} << 32) | txp_.index(op);
  }
  [[nodiscard]] bool answer_room(const conn* c) const noexcept {
    return c->answers < max_answers && txp_.available() > 64;
  }
  void resume_answers() noexcept;
  // Before a piece of n bytes of a write goes into the region: true with
  // lk holding zc_mu_ (copy, then release), false when the region is gone.
  bool sink_check(conn* c, std::size_t n, std::unique_lock<std::mutex>& lk) noexcept;
  std::shared_ptr<av_impl> av_;
  std::shared_ptr<spi::eq> eq_;
  bool enabled_ = false;
  bool source_cap_ = false;
  bool msg_mode_ = false;    // a connected (MSG) endpoint: one connection, no address vector
  conn* single_ = nullptr;   // MSG: its connection (null once closed)
  bool was_connected_ = false;  // MSG: sends after the connection ended are peer_dead

  util::pool<tx_op> txp_{tx_size + 64 + 64};  // + protocol frames + answers owed to peers
  util::pool<rx_op> rxp_{rx_size};
  util::pool<unexp> uxp_{unexpected_count};
  std::unique_ptr<std::uint8_t[]> ux_storage_;
  util::ilist<rx_op> posted_msg_, posted_tag_;
  util::ilist<unexp> ux_msg_, ux_tag_, claimed_;
  std::vector<std::unique_ptr<conn>> conns_;
  std::unordered_map<std::string, conn*> by_key_;
  std::vector<conn*> by_addr_;
  std::uint64_t av_version_ = 0;
  std::vector<conn*> stalled_;  // capacity >= conns_.size(): add_conn reserves it
  // Per address-vector entry: peer_known (a connection to it was up),
  // peer_gone (declared dead, not up since). Sized by index_peer().
  static constexpr std::uint8_t peer_known = 1, peer_gone = 2;
  std::vector<std::uint8_t> peer_state_;
  // Events not yet delivered, in order. capacity >= size + conns_.size() + 2
  // (init and add_conn reserve it): each connection ends in one event at
  // most, and the listener's reports take one place each (report_fd,
  // report_memory, report_watch), however many refusals they count.
  std::vector<pending_event> events_;
  bool need_doom_ = false;     // a connection waits in conn::doom
  bool fd_short_ = false;      // accept is out of descriptors (reported once per episode)
  bool fd_report_ = false;     // ... and the application has not been told yet
  int fd_errno_ = 0;
  std::uint64_t next_tick_ = 0;
  bool need_reap_ = false;
  std::uint32_t direct_polls_ = 0;  // polls of the only connection since the last epoll_wait
  conn* direct_conn_ = nullptr;     // the connection polled directly, out of epoll's read interest
  std::uint64_t last_empty_ns_ = 0;  // when a direct poll last found nothing (0: it found bytes)
  std::uint64_t empty_calls_ = 0;    // spi::thread_progress_calls() at that poll
  std::uint64_t accept_paused_until_ = 0;  // listener out of epoll after EMFILE with no spare descriptor
  bool handshakes_full_ = false;  // max_handshakes wait for their hello: not accepting (resume_accepting)
};


// An address as text (tcp://ip:port), without allocating.
struct addr_text {
  char s[64];
};
[[nodiscard]] addr_text text_of(const address& a) noexcept;

// "out of file descriptors (RLIMIT_NOFILE 1024)" for EMFILE, "the system
// is out of file descriptors" for ENFILE.
void describe_fd_shortage(int err, char* out, std::size_t n) noexcept;

// A connection just accepted that cannot be taken: hello_ack no_resources
// with reason as its payload (at most 256 bytes), then fd is closed.
void refuse_accepted(int fd, const char* reason) noexcept;
// Answers a hello of another wire version (theirs) with a refusal the peer
// can read (a hello_ack no_resources in its version, the reason naming both
// versions), then closes fd's sending side; `why` gets this side's message.
void refuse_version(int fd, std::uint8_t theirs, char (&why)[200]) noexcept;

// Every connection's socket: SO_SNDBUF if configured, TCP_NODELAY,
// keep-alive (no TCP_USER_TIMEOUT: liveness.cpp), and the congestion control for its peer (peer: the
// address connected to; nullptr for an accepted socket, which asks the kernel).
void set_socket_options(int fd, const config& cfg, const sockaddr* peer) noexcept;

}  // namespace weft::prov::tcp

#pragma GCC visibility pop

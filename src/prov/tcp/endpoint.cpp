// tcp RDM endpoint (docs/wire/tcp.md).
//  - Every endpoint listens; its address is the listening address.
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
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <span>

#include "core/atomic_apply.hpp"
#include "core/rma_request.hpp"
#include "prov/tcp/tcp.hpp"
#include "util/clock.hpp"
#include "util/match.hpp"
#include "util/relax.hpp"
#include "weft/spi/progress.hpp"

namespace weft::prov::tcp {

// what last_error_message() says when an unconnected MSG endpoint posts
constexpr const char* not_connected = "a MSG endpoint that is not connected: connect() or accept() first";

namespace {

constexpr std::size_t rbuf_size = 64 * 1024;
constexpr std::size_t direct_read_min = 16 * 1024;
// A poll that follows an empty one within this is the application spinning.
constexpr std::uint64_t poll_recent_ns = 1000;
constexpr std::size_t bulk_read = 16384;  // read size for the start of a frame after a large one
constexpr std::uint64_t tick_ns = 5'000'000;
constexpr std::size_t max_handshakes = 256;  // connections accepted but not yet identified
constexpr std::uint64_t replace_after_ns = 50'000'000;
constexpr std::uint64_t tc_inject_bit = std::uint64_t{1} << 63;  // in an RMA request's id: see rma()
constexpr std::uint32_t max_answers = 32;  // RMA answers queued per connection before it stops reading requests
constexpr std::size_t small_frame = 512;   // frames up to this size leave in one send() from the stack

std::size_t iov_total(const ::iovec* v, std::size_t n) noexcept {
  std::size_t t = 0;
  for (std::size_t i = 0; i < n; ++i) t += v[i].iov_len;
  return t;
}

void scatter(const ::iovec* v, std::size_t n, std::size_t off, const std::uint8_t* src, std::size_t len) noexcept {
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

void gather(const ::iovec* v, std::size_t n, std::uint8_t* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    if (v[i].iov_len == 0) continue;  // base may be null
    std::memcpy(dst, v[i].iov_base, v[i].iov_len);
    dst += v[i].iov_len;
  }
}

// The part of an iov list from byte offset off (at most max entries).
std::size_t slice_from(const ::iovec* v, std::size_t n, std::size_t off, std::size_t len, ::iovec* out,
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

errc errno_to_errc(int e) noexcept {
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
  std::uint32_t answers = 0;     // answers queued here, not yet sent (bounded: max_answers)
  std::uint64_t tc_pending = 0;  // transmit-complete writes sent here that may still be reported failed
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

class endpoint_impl final : public spi::endpoint, public spi::progressable {
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

 private:
  conn* path(fi_addr_t a) noexcept;
  conn* open_conn(const address& peer, const std::string& key, fi_addr_t a, std::span<const std::byte> cm = {},
                  std::uint8_t hello_flags = 0) noexcept;
  void cm_event(eq_event::kind k, errc e, std::string msg, const std::uint8_t* data, std::size_t len) noexcept;
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
  void finish_unexp(conn* c) noexcept;
  bool dispatch_msg(conn* c) noexcept;
  void handle_hello(conn* c) noexcept;
  void handle_hello_ack(conn* c) noexcept;
  void adopt(conn* c, fi_addr_t a) noexcept;
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
  void respond(conn* c, std::uint64_t id, errc st, const void* payload, std::size_t len) noexcept;
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
  void reap() noexcept;
  [[nodiscard]] fi_addr_t src_of(conn* c) noexcept { return source_cap_ ? c->addr : addr_unspec; }
  [[nodiscard]] std::string my_key(conn* c) const;

  std::shared_ptr<domain_impl> dom_;
  info info_;
  config cfg_;
  int lfd_ = -1;
  listener lst_;
  address name_{};
  std::shared_ptr<spi::cq> txcq_, rxcq_;
  spi::endpoint_counters cntrs_;  // counters, if bound
  std::shared_ptr<spi::mr_registry> reg_;
  std::uint64_t level_ = flag::delivery_complete;  // default completion level of RMA
  std::size_t rma_reserved_ = 0;  // CQ room held by RMA/atomic operations not yet complete
  std::uint32_t answer_waits_ = 0;  // connections paused in rs::answers
  // Failures nobody reserved CQ room for (transmit-complete and inject
  // writes), waiting for room: pushed in order as soon as the CQ has some.
  static constexpr std::size_t pending_errors_max = 64;
  std::array<cq_err_entry, pending_errors_max> pend_err_{};
  std::size_t pend_head_ = 0, pend_n_ = 0;
  void report_error(const cq_err_entry& ee) noexcept;
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
  bool sink_check(conn* c, std::size_t n) noexcept;
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
  std::vector<conn*> stalled_;
  std::uint64_t next_tick_ = 0;
  bool need_reap_ = false;
  std::uint32_t direct_polls_ = 0;  // polls of the only connection since the last epoll_wait
  conn* direct_conn_ = nullptr;     // the connection polled directly, out of epoll's read interest
  std::uint64_t last_empty_ns_ = 0;  // when a direct poll last found nothing (0: it found bytes)
  std::uint64_t empty_calls_ = 0;    // spi::thread_progress_calls() at that poll
  std::uint64_t accept_paused_until_ = 0;  // listener out of epoll after EMFILE
};

void conn::on_event(std::uint32_t events) noexcept { ep->on_conn_event(this, events); }
void listener::on_event(std::uint32_t) noexcept { ep->on_accept(); }

bool is_loopback(const sockaddr* sa) noexcept {
  if (sa->sa_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a) ||
           (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
  }
  return false;
}

// The congestion control of a connection: WEFT_TCP_CONGESTION if set; else,
// on loopback, reno: BBR's pacing holds back the tail of every frame larger
// than 64 KiB there (64 KiB RMA writes ran at 1.7 GB/s with BBR, 6.2 without
// pacing, on this project's machines), and loopback loses nothing, so the
// algorithm with the least work per ACK wins (64 B one-way 2.81-2.89 us with
// reno, 2.89-3.04 with cubic); elsewhere the system's default.
void set_congestion(int fd, const sockaddr* peer, const std::string& cc) noexcept {
  const char* name = !cc.empty() ? cc.c_str() : (peer && is_loopback(peer)) ? "reno" : nullptr;
  if (name && std::strcmp(name, "default") != 0)
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, static_cast<socklen_t>(std::strlen(name)));
}

// Every connection's socket: SO_SNDBUF if configured, TCP_NODELAY,
// TCP_USER_TIMEOUT, and the congestion control for its peer (peer: the
// address connected to; nullptr for an accepted socket, which asks the kernel).
void set_socket_options(int fd, const config& cfg, const sockaddr* peer) noexcept {
  int one = 1;
  if (cfg.sndbuf > 0) (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg.sndbuf, sizeof cfg.sndbuf);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  unsigned to = static_cast<unsigned>(cfg.timeout_ms);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &to, sizeof to);
  sockaddr_storage ss{};
  if (!peer) {
    socklen_t l = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &l) == 0) peer = reinterpret_cast<sockaddr*>(&ss);
  }
  set_congestion(fd, peer, cfg.congestion);
}

// ------------------------------------------------------------------ setup

result<void> endpoint_impl::init() {
  msg_mode_ = info_.ep.type == ep_type::msg;
  reg_ = dom_->registry();
  if (std::uint64_t l = info_.tx.op_flags & flag::completion_levels) level_ = l;
  ux_storage_.reset(new std::uint8_t[unexpected_count * inject_size]);
  for (std::uint32_t i = 0; i < unexpected_count; ++i) uxp_.at(i)->payload = ux_storage_.get() + i * inject_size;
  if (msg_mode_) return {};  // connects or accepts; a passive endpoint listens
  address bind_addr;
  if (info_.src_addr) {
    bind_addr = *info_.src_addr;
  } else {
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    bind_addr = from_sockaddr(reinterpret_cast<sockaddr*>(&any));
  }
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(bind_addr, ss, len)) return make_error(errc::invalid_argument, "not a tcp source address");
  lfd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd_ < 0) return make_error(errc::io_error, std::string("socket: ") + std::strerror(errno));
  int one = 1;
  (void)::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(lfd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int e = errno;
    return make_error(e == EADDRINUSE ? errc::address_in_use : errc::io_error,
                      "cannot listen on " + to_string(bind_addr) + ": " + std::strerror(e) +
                          (e == EADDRINUSE ? " (choose another port, or 0 for any)" : ""));
  }
  if (::listen(lfd_, 512) != 0) return make_error(errc::io_error, std::string("listen: ") + std::strerror(errno));
  sockaddr_storage me{};
  socklen_t ml = sizeof me;
  ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&me), &ml);
  name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
  lst_.ep = this;
  if (!dom_->eng().add(lfd_, &lst_, EPOLLIN)) return make_error(errc::io_error, "epoll_ctl failed");
  source_cap_ = (info_.caps & cap::source) != 0;
  return {};
}

endpoint_impl::~endpoint_impl() {
  auto g = dom_->guard();
  dom_->remove_target(this);
  // Give back the CQ room held by operations that will never complete.
  if (rxcq_) {
    for (auto* l : {&posted_msg_, &posted_tag_})
      for (rx_op* r = l->front(); r; r = l->next(r)) rxcq_->unreserve();
    for (auto& c : conns_)
      if (c->rx && c->rx != &c->sink) rxcq_->unreserve();  // the sink reserved nothing
  }
  if (txcq_)
    for (auto& c : conns_)
      for (tx_op* op = c->txq.front(); op; op = c->txq.next(op))
        if (op->completion && !(op->flags & (flag::rma | flag::atomic))) txcq_->unreserve();
  if (txcq_)
    for (std::size_t i = 0; i < rma_reserved_; ++i) txcq_->unreserve();
  for (auto* q : {txcq_.get(), rxcq_ != txcq_ ? rxcq_.get() : nullptr})
    if (q) {
      q->detach(this);
      q->release_lock(dom_->lock());
    }
  {
    for (spi::cntr* c : cntrs_.distinct()) {
      c->detach(this);
      c->release_lock(dom_->lock());
    }
  }
  if (eq_) {
    eq_->detach(this);
    eq_->release_lock(dom_->lock());
  }
  for (auto& c : conns_)
    if (c->fd >= 0) {
      dom_->eng().del(c->fd);
      ::close(c->fd);
    }
  if (lfd_ >= 0) {
    dom_->eng().del(lfd_);
    ::close(lfd_);
  }
}

result<void> endpoint_impl::bind_cq(std::shared_ptr<spi::cq> q, std::uint64_t flags) {
  auto g = dom_->guard();
  if (enabled_) return make_error(errc::bad_state, "bind CQs before enable()");
  if (((flags & flag::transmit) && txcq_) || ((flags & flag::receive) && rxcq_))
    return make_error(errc::bad_state, "a completion queue is already bound for that direction");
  if (!q->set_lock(dom_->lock()))
    return make_error(errc::bad_state, "this completion queue already serves another automatic-progress domain");
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
  auto g = dom_->guard();
  if (enabled_) return make_error(errc::bad_state, "bind counters before enable()");
  if (!c) return make_error(errc::invalid_argument, "no counter to bind");
  const auto mine = cntrs_.distinct();
  const bool known = std::find(mine.begin(), mine.end(), c.get()) != mine.end();
  if (!known && !c->set_lock(dom_->lock()))
    return make_error(errc::bad_state, "this counter already serves another automatic-progress domain");
  auto fresh = cntrs_.bind(c, flags);
  if (!fresh) {
    if (!known) c->release_lock(dom_->lock());
    return std::unexpected(fresh.error());
  }
  if (*fresh) c->attach(this);
  return {};
}

result<void> endpoint_impl::bind_eq(std::shared_ptr<spi::eq> q) {
  auto g = dom_->guard();
  if (!msg_mode_) return make_error(errc::not_supported, "event queues are for MSG endpoints (ep_type::msg)");
  if (eq_) return make_error(errc::bad_state, "an event queue is already bound");
  if (!q->set_lock(dom_->lock()))
    return make_error(errc::bad_state, "this event queue already serves another automatic-progress domain");
  eq_ = std::move(q);
  eq_->attach(this);
  return {};
}

result<void> endpoint_impl::enable() {
  auto g = dom_->guard();
  if (msg_mode_ && !eq_)
    return make_error(errc::bad_state, "bind an event queue before enable(): connection events go there");
  if (!txcq_ || !rxcq_)
    return make_error(errc::bad_state, "bind a completion queue for transmit and receive before enable() "
                                       "(bind(cq) binds both)");
  enabled_ = true;
  if (dom_->automatic()) dom_->add_target(this);
  return {};
}

std::string endpoint_impl::my_key(conn* c) const {
  // Our listening address as the peer sees it: an unspecified listening IP is
  // replaced by this connection's local IP.
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(name_, ss, len)) return {};
  sockaddr_storage local{};
  socklen_t ll = sizeof local;
  if (::getsockname(c->fd, reinterpret_cast<sockaddr*>(&local), &ll) == 0) {
    if (ss.ss_family == AF_INET && reinterpret_cast<sockaddr_in*>(&ss)->sin_addr.s_addr == htonl(INADDR_ANY) &&
        local.ss_family == AF_INET)
      reinterpret_cast<sockaddr_in*>(&ss)->sin_addr = reinterpret_cast<sockaddr_in*>(&local)->sin_addr;
    if (ss.ss_family == AF_INET6 && local.ss_family == AF_INET6 &&
        IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr))
      reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr = reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr;
  }
  return key_of(from_sockaddr(reinterpret_cast<sockaddr*>(&ss)));
}

// ------------------------------------------------------------ connections

conn* endpoint_impl::path(fi_addr_t a) noexcept {
  if (msg_mode_) return single_;
  if (av_->version() != av_version_) {
    std::fill(by_addr_.begin(), by_addr_.end(), nullptr);
    av_version_ = av_->version();
  }
  if (a < by_addr_.size() && by_addr_[a] && !by_addr_[a]->dead) return by_addr_[a];
  const address* pa = av_->at(a);
  if (!pa) return nullptr;
  // First contact with this peer since the path was dropped: control path.
  try {
    std::string k = key_of(*pa);
    conn* c = nullptr;
    if (auto it = by_key_.find(k); it != by_key_.end() && !it->second->dead) c = it->second;
    if (!c) c = open_conn(*pa, k, a);
    if (!c) return nullptr;
    if (a >= by_addr_.size()) by_addr_.resize(a + 1, nullptr);
    by_addr_[a] = c;
    c->addr = a;
    return c;
  } catch (...) {
    return nullptr;
  }
}

conn* endpoint_impl::open_conn(const address& peer, const std::string& key, fi_addr_t a,
                                std::span<const std::byte> cm, std::uint8_t hello_flags) noexcept {
  sockaddr_storage ss;
  socklen_t len;
  if (!to_sockaddr(peer, ss, len)) return nullptr;
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  set_socket_options(fd, cfg_, reinterpret_cast<sockaddr*>(&ss));
  if (!msg_mode_) {  // a specific listening IP is also our source: the peer checks it
    sockaddr_storage me;
    socklen_t ml;
    if (to_sockaddr(name_, me, ml) && me.ss_family == ss.ss_family) {
      bool specific = me.ss_family == AF_INET
                          ? reinterpret_cast<sockaddr_in*>(&me)->sin_addr.s_addr != htonl(INADDR_ANY)
                          : !IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<sockaddr_in6*>(&me)->sin6_addr);
      if (specific) {
        if (me.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&me)->sin_port = 0;
        else reinterpret_cast<sockaddr_in6*>(&me)->sin6_port = 0;
        (void)::bind(fd, reinterpret_cast<sockaddr*>(&me), ml);
      }
    }
  }
  auto c = std::make_unique<conn>();
  c->ep = this;
  c->fd = fd;
  c->outgoing = true;
  c->peer = peer;
  c->key = key;
  c->addr = a;
  c->started = c->last_active = util::now_ns();
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  if (rc != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return nullptr;
  }
  c->state = conn::st::connecting;
  conn* raw = c.get();
  conns_.push_back(std::move(c));
  by_key_[key] = raw;
  dom_->eng().add(fd, raw, EPOLLIN | EPOLLOUT);
  raw->want_out = true;
  // the hello is the first frame on the wire
  wire::hello_body hb{};
  sockaddr_storage me;
  socklen_t ml;
  if (msg_mode_) {  // no listening address: advertise the connection's family only
    me = sockaddr_storage{};
    me.ss_family = ss.ss_family;
  } else if (!to_sockaddr(name_, me, ml)) {
    return nullptr;
  }
  hb.magic = wire::hello_magic;
  hb.ep_type = msg_mode_ ? 1 : 2;
  hb.cm_len = static_cast<std::uint16_t>(cm.size());
  if (me.ss_family == AF_INET) {
    auto* s = reinterpret_cast<sockaddr_in*>(&me);
    hb.family = AF_INET;
    hb.port = s->sin_port;
    std::memcpy(hb.addr, &s->sin_addr, 4);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&me);
    hb.family = AF_INET6;
    hb.port = s->sin6_port;
    std::memcpy(hb.addr, &s->sin6_addr, 16);
  }
  std::uint8_t body[sizeof hb + wire::max_cm_data];
  std::memcpy(body, &hb, sizeof hb);
  if (!cm.empty()) std::memcpy(body + sizeof hb, cm.data(), cm.size());
  queue_frame(raw, wire::op::hello, 0, body, sizeof hb + cm.size(), false, hello_flags);
  return raw;
}

void endpoint_impl::on_accept() noexcept {
  for (int i = 0; i < 64; ++i) {
    int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the listener would stay readable and spin the
        // engine. Stop listening for a while; tick() resumes it.
        dom_->eng().mod(lfd_, &lst_, 0);
        accept_paused_until_ = util::now_ns() + 100'000'000ull;
      }
      return;
    }
    std::size_t unidentified = 0;
    for (auto& x : conns_) unidentified += !x->dead && x->state == conn::st::wait_hello;
    if (unidentified >= max_handshakes) {  // a flood of silent connections: refuse
      ::close(fd);
      continue;
    }
    set_socket_options(fd, cfg_, nullptr);
    auto c = std::make_unique<conn>();
    c->ep = this;
    c->fd = fd;
    c->outgoing = false;
    c->state = conn::st::wait_hello;
    c->started = c->last_active = util::now_ns();
    dom_->eng().add(fd, c.get(), EPOLLIN);
    conns_.push_back(std::move(c));
  }
}

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

void endpoint_impl::on_conn_event(conn* c, std::uint32_t ev) noexcept {
  if (c->dead) return;
  if (c->state == conn::st::connecting) {
    if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t l = sizeof err;
    ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
      char why[160];
      std::snprintf(why, sizeof why, "cannot connect to %s: %s", to_string(c->peer).c_str(), std::strerror(err));
      fail_conn(c, errno_to_errc(err), why);
      return;
    }
    c->state = conn::st::wait_ack;
  }
  if (ev & EPOLLIN) read_conn(c);
  if (c->dead) return;
  if (ev & (EPOLLERR | EPOLLHUP)) {
    int err = 0;
    socklen_t l = sizeof err;
    ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err || !(ev & EPOLLIN)) {
      char why[160];
      std::snprintf(why, sizeof why, "connection to %s lost: %s", to_string(c->peer).c_str(),
                    err ? std::strerror(err) : "closed by the peer");
      fail_conn(c, err ? errno_to_errc(err) : errc::peer_dead, why);
      return;
    }
  }
  if (ev & EPOLLOUT) flush(c);
}

// ------------------------------------------------------------------ sending

void endpoint_impl::flush(conn* c) noexcept {
  while (tx_op* op = c->txq.front()) {
    const bool may_send = op->internal ? c->state != conn::st::connecting
                                       : c->state == conn::st::established;
    if (!may_send) break;
    ::iovec v[max_iov + 2];
    std::size_t n = slice_from(op->iov, op->iov_count, op->sent, op->total - op->sent, v, max_iov + 2);
    msghdr mh{};
    mh.msg_iov = v;
    mh.msg_iovlen = n;
    ssize_t w = ::sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        set_out(c, true);
        return;
      }
      char why[160];
      std::snprintf(why, sizeof why, "send to %s failed: %s", to_string(c->peer).c_str(), std::strerror(errno));
      fail_conn(c, errno_to_errc(errno), why);
      return;
    }
    op->sent += static_cast<std::size_t>(w);
    ++c->activity;
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

// An error entry no operation reserved room for: into the CQ if it has room
// and nothing is waiting before it, else it waits (in order) for room, which
// progress gives it as soon as the application reads the CQ. Only beyond
// pending_errors_max waiting entries is one dropped (the counters still count
// it). Never a pause of the connection: the completions that would free the
// CQ may be behind it in the same stream.
void endpoint_impl::report_error(const cq_err_entry& ee) noexcept {
  if (pend_n_ == 0 && txcq_->reserve()) {
    txcq_->push_error(ee);
    return;
  }
  if (pend_n_ == pending_errors_max) return;  // dropped: the write counter still counts it
  pend_err_[(pend_head_ + pend_n_) % pending_errors_max] = ee;
  ++pend_n_;
}

void endpoint_impl::push_pending_errors() noexcept {
  while (pend_n_ && txcq_->reserve()) {
    txcq_->push_error(pend_err_[pend_head_]);
    pend_head_ = (pend_head_ + 1) % pending_errors_max;
    --pend_n_;
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
  op->await = false;
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
    c->await.push_back(op);
  } else {
    ++c->tc_pending;  // a failure may still be reported
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
  if (!c) return msg_mode_ && !was_connected_ ? spi::fail(errc::bad_state, not_connected) : errc::peer_dead;
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
      if (!inject) txcq_->unreserve();
      op->completion = false;
      op->internal = true;  // recycled: neither a completion nor a count (the caller gets peer_dead)
      complete_tx(op, errc::ok, "");
      char why[160];
      std::snprintf(why, sizeof why, "send to %s failed: %s", to_string(c->peer).c_str(), std::strerror(errno));
      fail_conn(c, errno_to_errc(errno), why);
      return errc::peer_dead;
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
  const std::uint64_t level =
      inject && q.level == flag::delivery_complete && !cntrs_.write ? flag::transmit_complete : q.level;
  const rma_iov* rr = q.ranges();
  const std::size_t nr = q.count;
  conn* c = path(d.addr);
  if (!c) return msg_mode_ && !was_connected_ ? spi::fail(errc::bad_state, not_connected) : errc::peer_dead;
  tx_op* ops[max_iov];
  if (!take_ops(nr, !inject, ops)) return errc::again;
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
    // transmit_complete: no answer unless it fails (tc_pending bounds the
    // failures the peer may report to the writes we actually sent)
    if (write && level != flag::transmit_complete) f |= wire::flag::ack;
    op->await = !write || level != flag::transmit_complete;
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
  if (!c) return msg_mode_ && !was_connected_ ? spi::fail(errc::bad_state, not_connected) : errc::peer_dead;
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
  if (!op && (c->tc_pending == 0 || st == errc::ok)) {
    fail_conn(c, errc::io_error, "protocol error: an RMA answer nobody asked for; connection dropped");
    return;
  }
  if (!op) {
    --c->tc_pending;
    {
      // An error completion without a context.
      cq_err_entry ee;
      ee.err = st;
      if (id & tc_inject_bit) {
        ee.flags = flag::rma | flag::write | flag::inject;
        std::snprintf(ee.msg, sizeof ee.msg, "an injected write failed at the target (%s)", to_string(st));
      } else {
        ee.flags = flag::rma | flag::write;
        std::snprintf(ee.msg, sizeof ee.msg,
                      "a write that completed at transmit failed at the target (%s): use delivery_complete to "
                      "learn which",
                      to_string(st));
      }
      report_error(ee);
      if (cntrs_.write) cntrs_.write->inc_err();
    }
    discard_payload(c, c->cur.len);
    return;
  }
  c->await.erase(op);
  op->on = nullptr;
  if (st != errc::ok) {
    discard_payload(c, c->cur.len);
    const char* why = st == errc::not_found           ? "no memory region with that key at the target (closed, or a wrong key)"
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
bool endpoint_impl::sink_check(conn* c, std::size_t n) noexcept {
  const std::size_t len = std::min(n, c->sink.cap - c->pay_got);
  std::byte* where = nullptr;
  errc st = reg_->find(c->sink_req.key, c->sink_req.offset + c->pay_got, len, access::remote_write, where);
  if (st == errc::ok && where == static_cast<std::byte*>(c->sink.iov[0].iov_base) + c->pay_got) return true;
  c->sink_err = st == errc::ok ? errc::not_found : st;
  c->sink.cap = c->pay_got;  // nothing more is copied
  return false;
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

void endpoint_impl::respond(conn* c, std::uint64_t id, errc st, const void* payload, std::size_t len) noexcept {
  tx_op* op = txp_.get();
  if (!op) {
    fail_conn(c, errc::no_memory, "out of transmit operations for RMA answers");
    return;
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
  c->txq.push_back(op);
  flush(c);
}

void endpoint_impl::handle_rma_req(conn* c) noexcept {
  wire::rma_req q;
  const std::uint8_t code = c->cur.op;
  if (wire::status ws = wire::decode_rma_req(c->ctrl, c->ctrl_want, code, q); ws != wire::status::ok) {
    char why[160];
    std::snprintf(why, sizeof why, "protocol error from %s: %s in an RMA request; connection dropped",
                  to_string(c->peer).c_str(), wire::to_string(ws));
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
    case wire::op::rma_read: {
      std::byte* where = nullptr;
      errc st = reg_->find(q.key, q.offset, q.len, access::remote_read, where);
      spi::count(cntrs_.remote_read.get(), st == errc::ok);
      respond(c, q.id, st, where, st == errc::ok ? q.len : 0);
      return;
    }
    case wire::op::atomic: {
      const bool fetch = c->cur.flags & wire::flag::fetch;
      errc st = core::check_atomic(q.atomic_op, q.atomic_type, q.len);
      const auto op = static_cast<atomic_op>(q.atomic_op);
      const std::size_t sz = st == errc::ok ? size_of(static_cast<atomic_type>(q.atomic_type)) : 1;
      const std::size_t bytes = static_cast<std::size_t>(q.len) * sz;
      if (st == errc::ok && c->ctrl_want != sizeof q + bytes * (op == atomic_op::cswap ? 2 : 1))
        st = errc::invalid_argument;
      std::byte* where = nullptr;
      if (st == errc::ok)
        st = reg_->find(q.key, q.offset, bytes, access::remote_write | (fetch ? access::remote_read : 0), where);
      if (st == errc::ok && reinterpret_cast<std::uintptr_t>(where) % sz != 0) st = errc::invalid_argument;
      alignas(8) std::byte old[atomic_max_bytes];
      if (st == errc::ok) {
        const auto* operand = reinterpret_cast<const std::byte*>(c->ctrl + sizeof q);
        core::apply_atomic(op, static_cast<atomic_type>(q.atomic_type), where, operand,
                           op == atomic_op::cswap ? operand + bytes : nullptr, q.len, old);
      }
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

// ---------------------------------------------------------------- receiving

// Reads what the socket has; true when there were bytes to consume.
bool endpoint_impl::read_conn(conn* c) noexcept {
  bool got = c->rpos != c->rend;  // bytes already buffered count
  for (int rounds = 0; rounds < 16 && !c->dead && !c->held && !paused(c); ++rounds) {
    if (c->rpos == c->rend) {
      c->rpos = c->rend = 0;
      if (c->rstage == conn::rs::user) {
        const std::size_t want = c->cur.len - c->pay_got;
        if (c->rx == &c->sink && !c->sink_op && c->pay_got < c->rx->cap && want >= direct_read_min)
          (void)sink_check(c, std::min<std::size_t>(want, 256 * 1024));
        const std::size_t room = c->pay_got < c->rx->cap ? c->rx->cap - c->pay_got : 0;
        if (want >= direct_read_min && room >= direct_read_min) {
          // large payload: straight into the receive buffer
          ::iovec v[max_iov];
          const std::size_t chunk = (c->rx == &c->sink && !c->sink_op) ? std::min<std::size_t>(256 * 1024, want)
                                                                          : want;
          std::size_t n = slice_from(c->rx->iov, c->rx->iov_count, c->pay_got, std::min(chunk, room), v, max_iov);
          ssize_t r = ::readv(c->fd, v, static_cast<int>(n));
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
          fail_conn(c, r == 0 ? errc::peer_dead : errno_to_errc(errno),
                    r == 0 ? "connection closed by the peer in the middle of a message" : "receive failed");
          return got;
        }
      }
      // After a large frame the next is likely large too: read its start
      // only, so that its payload goes straight into place, not via rbuf.
      const std::size_t want = c->bulk ? bulk_read : rbuf_size;
      ssize_t r = ::recv(c->fd, c->rbuf.get(), want, MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return got;
        char why[160];
        std::snprintf(why, sizeof why, "receive from %s failed: %s", to_string(c->peer).c_str(), std::strerror(errno));
        fail_conn(c, errno_to_errc(errno), why);
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
        else fail_conn(c, errc::peer_dead, clean ? "the peer closed the connection" :
                                                   "the peer closed the connection in the middle of a message");
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
        if (c->rx == &c->sink && !c->sink_op && c->pay_got < c->rx->cap) (void)sink_check(c, take);
        if (c->pay_got < c->rx->cap)
          scatter(c->rx->iov, c->rx->iov_count, c->pay_got, p, std::min(take, c->rx->cap - c->pay_got));
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
  if (s != wire::status::ok) {
    char why[160];
    std::snprintf(why, sizeof why, "protocol error from %s: %s; connection dropped",
                  c->key.empty() ? "an unidentified peer" : to_string(c->peer).c_str(), wire::to_string(s));
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
      if (c->state == conn::st::closing) {
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
      stalled_.push_back(c);
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
  if (msg_mode_ && was_connected_ && !single_) return errc::peer_dead;  // the connection has ended
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

// --------------------------------------------------------- hello handshake

void endpoint_impl::on_ctrl(conn* c) noexcept {
  const auto code = static_cast<wire::op>(c->cur.op);
  if (code == wire::op::hello) handle_hello(c);
  else if (code == wire::op::hello_ack) handle_hello_ack(c);
  else handle_rma_req(c);
}

void endpoint_impl::handle_hello(conn* c) noexcept {
  wire::hello_body hb;
  if (wire::decode_hello(c->ctrl, c->cur.len, hb) != wire::status::ok || hb.ep_type != 2) {
    queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::bad_request), nullptr, 0);
    c->close_after_flush = true;
    c->state = conn::st::lost;
    flush(c);
    return;
  }
  // The peer's listening address; an unspecified IP is the connection's source.
  sockaddr_storage peer{};
  socklen_t pl = sizeof peer;
  ::getpeername(c->fd, reinterpret_cast<sockaddr*>(&peer), &pl);
  sockaddr_storage lis{};
  bool spoofed = false;
  if (hb.family == AF_INET) {
    auto* s = reinterpret_cast<sockaddr_in*>(&lis);
    s->sin_family = AF_INET;
    s->sin_port = hb.port;
    std::memcpy(&s->sin_addr, hb.addr, 4);
    if (s->sin_addr.s_addr == htonl(INADDR_ANY) && peer.ss_family == AF_INET)
      s->sin_addr = reinterpret_cast<sockaddr_in*>(&peer)->sin_addr;
    else if (peer.ss_family != AF_INET ||
             s->sin_addr.s_addr != reinterpret_cast<sockaddr_in*>(&peer)->sin_addr.s_addr)
      spoofed = true;
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&lis);
    s->sin6_family = AF_INET6;
    s->sin6_port = hb.port;
    std::memcpy(&s->sin6_addr, hb.addr, 16);
    if (IN6_IS_ADDR_UNSPECIFIED(&s->sin6_addr) && peer.ss_family == AF_INET6)
      s->sin6_addr = reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr;
    else if (peer.ss_family != AF_INET6 ||
             std::memcmp(&s->sin6_addr, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, 16) != 0)
      spoofed = true;
  }
  if (spoofed) {  // claims an address it does not connect from
    queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::bad_request), nullptr, 0);
    c->close_after_flush = true;
    c->state = conn::st::lost;
    flush(c);
    return;
  }
  c->peer = from_sockaddr(reinterpret_cast<sockaddr*>(&lis));
  try {
    c->key = key_of(c->peer);
    const fi_addr_t a = av_ ? av_->reverse(c->peer) : addr_notavail;
    conn* existing = nullptr;
    if (auto it = by_key_.find(c->key); it != by_key_.end() && it->second != c && !it->second->dead)
      existing = it->second;
    if (c->key == my_key(c)) {
      // Sending to ourselves: this is the receiving half of our own
      // connection; the sending half stays the path.
      c->state = conn::st::established;
      c->addr = a;
      queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), nullptr, 0, true);
      flush(c);
      return;
    }
    if (existing && (c->cur.flags & wire::flag::replace)) {
      // The peer has no live connection to us any more: ours is stale.
      adopt(c, a);
      queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), nullptr, 0, true);
      move_user_ops(existing, c);
      fail_conn(existing, errc::peer_dead, "replaced by a new connection from the peer");
      flush(c);
      return;
    }
    const bool ours_pending = existing && existing->outgoing &&
                              (existing->state == conn::st::connecting || existing->state == conn::st::wait_ack);
    if ((ours_pending && my_key(c) < c->key) || (existing && existing->state == conn::st::established)) {
      // Both connected at once and ours wins, or this is the other side's
      // losing connection arriving late: the peer uses the existing one.
      queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::duplicate), nullptr, 0);
      c->state = conn::st::lost;
      c->close_after_flush = true;
      flush(c);
      return;
    }
    if (existing && !existing->dup_loser &&
        (existing->state == conn::st::closing || existing->state == conn::st::lost)) {
      // The old connection is still closing: read this one only after it, so
      // that no message overtakes an older one.
      c->held = true;
      c->held_on = existing;
      update_events(c);
      return;
    }
    adopt(c, a);
    queue_frame(c, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), nullptr, 0, true);
    if (existing) {
      // Ours lost the simultaneous connect: its queued messages move over, in
      // order; it closes without carrying data (nor its hello, if unsent).
      move_user_ops(existing, c);
      existing->state = conn::st::lost;
      if (tx_op* h = existing->txq.front(); h && h->internal && h->sent == 0) {
        existing->txq.erase(h);
        complete_tx(h, errc::ok, "");
      }
      if (existing->txq.empty()) close_conn(existing);
      else existing->close_after_flush = true;
    }
    flush(c);
  } catch (...) {
    fail_conn(c, errc::no_memory, "out of memory accepting a connection");
  }
}

void endpoint_impl::handle_hello_ack(conn* c) noexcept {
  const auto st = static_cast<wire::hello_status>(c->cur.data);
  if (msg_mode_) {
    if (st == wire::hello_status::ok) {
      c->state = conn::st::established;
      sockaddr_storage me{};
      socklen_t ml = sizeof me;
      if (::getsockname(c->fd, reinterpret_cast<sockaddr*>(&me), &ml) == 0)
        name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
      cm_event(eq_event::kind::connected, errc::ok, "", c->ctrl, c->cur.len);
      flush(c);
    } else {
      const bool rej = st == wire::hello_status::rejected;
      cm_event(eq_event::kind::error, rej ? errc::permission_denied : errc::io_error,
               rej ? "the listener rejected the connection (its data is attached)"
                   : "the listener refused the connection request as malformed",
               c->ctrl, c->cur.len);
      c->state = conn::st::lost;
      close_conn(c);
    }
    return;
  }
  if (st == wire::hello_status::ok) {
    c->state = conn::st::established;
    flush(c);
    return;
  }
  if (st == wire::hello_status::duplicate) {
    // The peer's connection to us wins; our messages go there once it is known.
    c->state = conn::st::lost;
    c->dup_loser = true;
    auto it = by_key_.find(c->key);
    if (it != by_key_.end() && it->second != c && !it->second->dead) {
      move_user_ops(c, it->second);
      flush(it->second);
    } else {
      // The winner has not been accepted yet: keep the queue until it is
      // (handle_hello moves it), the connect timeout bounds the wait.
      c->started = util::now_ns();
      return;
    }
    close_conn(c);
    return;
  }
  fail_conn(c, errc::io_error, "the peer refused the connection (bad hello)");
}

void endpoint_impl::adopt(conn* c, fi_addr_t a) noexcept {
  c->state = conn::st::established;
  c->addr = a;
  by_key_[c->key] = c;
  if (a != addr_notavail && a != addr_unspec) {
    if (a >= by_addr_.size()) by_addr_.resize(a + 1, nullptr);
    by_addr_[a] = c;
  }
}

void endpoint_impl::move_user_ops(conn* from, conn* to) noexcept {
  for (tx_op* op = from->txq.front(); op;) {
    tx_op* next = from->txq.next(op);
    if (!op->internal && op->sent == 0) {
      from->txq.erase(op);
      to->txq.push_back(op);
    }
    op = next;
  }
  set_out(to, !to->txq.empty());
}

// ------------------------------------------------------------- teardown

// Whatever a connection was receiving ends with it: the receive being filled
// completes with an error, buffers and list entries pointing at it go away.
void endpoint_impl::abort_receives(conn* c, errc e, const char* why) noexcept {
  if (c->rstage == conn::rs::user && c->rx == &c->sink) {
    if (c->sink_op) finish_part(c->sink_op, e, why);  // an answer cut short
    c->sink_op = nullptr;
    c->rx = nullptr;
  } else if (c->rstage == conn::rs::user && c->rx) {
    rx_error(c->rx, e, why);
    c->rx = nullptr;
  }
  // requests sent here will never be answered
  while (tx_op* op = c->await.front()) {
    c->await.erase(op);
    op->on = nullptr;
    finish_part(op, e == errc::canceled ? errc::peer_dead : e,
                "the connection to the target was lost before it answered (the operation may or may not have "
                "taken effect)");
  }
  if (c->rstage == conn::rs::unexp && c->ux) {
    uxp_.put(c->ux);
    c->ux = nullptr;
  }
  for (auto* l : {&ux_msg_, &ux_tag_, &claimed_}) {
    for (unexp* u = l->front(); u;) {
      unexp* next = l->next(u);
      if (u->stalled == c) {  // a large message still in this socket is gone
        l->erase(u);
        u->stalled = nullptr;
        u->claim_ctx = nullptr;
        uxp_.put(u);
      }
      u = next;
    }
  }
  c->rstage = conn::rs::header;
  set_lowat(c, 1);
}

void endpoint_impl::close_conn(conn* c) noexcept {
  if (c->dead) return;
  abort_receives(c, errc::canceled, "the connection was closed while this message was arriving");
  // user messages still queued (deferred during an idle close) get a new path
  util::ilist<tx_op> keep;
  for (tx_op* op = c->txq.front(); op;) {
    tx_op* next = c->txq.next(op);
    c->txq.erase(op);
    if (!op->internal && op->sent == 0) keep.push_back(op);
    else end_op(op, op->internal ? errc::ok : errc::peer_dead, "connection closed before the message left");
    op = next;
  }
  c->dead = true;
  need_reap_ = true;
  if (c == single_) single_ = nullptr;  // freed by reap(): never used again
  if (c == direct_conn_) direct_conn_ = nullptr;
  if (c->fd >= 0) {
    dom_->eng().del(c->fd);
    ::close(c->fd);
    c->fd = -1;
  }
  if (auto it = by_key_.find(c->key); it != by_key_.end() && it->second == c) by_key_.erase(it);
  if (c->addr < by_addr_.size() && by_addr_[c->addr] == c) by_addr_[c->addr] = nullptr;
  // a new connection from the same peer waited for this one: take it now
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conn* h = conns_[i].get();
    if (h->held && !h->dead && h->held_on == c) {
      h->held = false;
      h->held_on = nullptr;
      update_events(h);
      handle_hello(h);
      if (!h->dead && !paused(h)) {
        consume(h);
        if (!h->dead) read_conn(h);
      }
      break;
    }
  }
  if (!keep.empty() && msg_mode_) {  // a MSG connection is never reopened behind the user's back
    while (tx_op* op = keep.front()) {
      keep.erase(op);
      end_op(op, errc::canceled, "the connection was closed before the message left");
    }
  }
  if (!keep.empty()) {
    conn* n = nullptr;
    if (auto it = by_key_.find(c->key); it != by_key_.end() && !it->second->dead) n = it->second;
    if (!n && !c->key.empty()) {
      try {
        n = open_conn(c->peer, c->key, c->addr);
      } catch (...) {
        n = nullptr;
      }
    }
    while (tx_op* op = keep.front()) {
      keep.erase(op);
      if (n) n->txq.push_back(op);
      else end_op(op, errc::peer_dead, "cannot reconnect to the peer");
    }
    if (n) set_out(n, true);
  }
}

void endpoint_impl::fail_conn(conn* c, errc e, const char* why) noexcept {
  if (c->dead) return;
  if (msg_mode_ && c == single_) {
    if (c->state == conn::st::connecting || c->state == conn::st::wait_ack) {
      cm_event(eq_event::kind::error, e, why, nullptr, 0);
    } else if (c->state == conn::st::established) {
      cm_event(eq_event::kind::shutdown, e, why, nullptr, 0);
      cancel_posted();
    }
  }
  while (tx_op* op = c->txq.front()) {
    c->txq.erase(op);
    end_op(op, e, why);
  }
  abort_receives(c, e, why);
  close_conn(c);
}

void endpoint_impl::reap() noexcept {
  need_reap_ = false;
  std::erase_if(stalled_, [](conn* c) { return c->dead; });
  std::erase_if(conns_, [](const std::unique_ptr<conn>& c) { return c->dead; });
}

void endpoint_impl::tick(std::uint64_t now) noexcept {
  if (accept_paused_until_ && now >= accept_paused_until_) {
    accept_paused_until_ = 0;
    dom_->eng().mod(lfd_, &lst_, EPOLLIN);
  }
  const std::uint64_t to = static_cast<std::uint64_t>(cfg_.timeout_ms) * 1'000'000ull;
  const std::uint64_t idle = static_cast<std::uint64_t>(cfg_.idle_ms) * 1'000'000ull;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    conn* c = conns_[i].get();
    if (c->dead) continue;
    if (c->activity != c->activity_seen) {
      c->activity_seen = c->activity;
      c->last_active = std::max(c->last_active, now);
    }
    if (c->dup_loser && !c->txq.empty() && now - c->started > replace_after_ns) {
      // No winner appeared: the peer holds a stale connection to us.
      // Connect again, telling it to drop the old one.
      conn* n = open_conn(c->peer, c->key, c->addr, {}, wire::flag::replace);
      if (n) {
        move_user_ops(c, n);
        close_conn(c);
        continue;
      }
    }
    const bool handshaking = c->state == conn::st::connecting || c->state == conn::st::wait_ack ||
                             c->state == conn::st::wait_hello || c->state == conn::st::closing ||
                             c->state == conn::st::lost || c->held || (c->dup_loser && !c->txq.empty());
    if (handshaking && now - std::max(c->started, c->last_active) > to) {
      char why[160];
      std::snprintf(why, sizeof why, "connection to %s timed out after %d ms",
                    c->key.empty() ? "a peer" : to_string(c->peer).c_str(), cfg_.timeout_ms);
      fail_conn(c, errc::timed_out, why);
      continue;
    }
    if (idle && !msg_mode_ && c->state == conn::st::established && c->txq.empty() && c->await.empty() &&
        c->rstage == conn::rs::header &&
        c->hdr_got == 0 && c->rpos == c->rend && now - c->last_active > idle) {
      c->state = conn::st::closing;  // new sends queue here, then move to a new connection
      queue_frame(c, wire::op::close_req, 0, nullptr, 0);
      flush(c);
    }
  }
}

// epoll_wait (without waiting) and the timers (at most every tick_ns).
void endpoint_impl::poll_engine() noexcept {
  dom_->eng().poll();
  const std::uint64_t now = util::now_ns();
  if (now >= next_tick_) {
    next_tick_ = now + tick_ns;
    tick(now);
  }
}

void endpoint_impl::progress() noexcept {
  auto g = dom_->guard();
  // One established connection with nothing to write, polled by the
  // application: read it directly and take it out of epoll's read interest
  // (no wake-up callback on every packet); epoll_wait runs one poll in
  // direct_polls + 1 for everything else (a new connection, timers).
  conn* only = conns_.size() == 1 ? conns_.front().get() : nullptr;
  const bool direct_ok = only && !only->dead && only->state == conn::st::established && only->txq.empty() &&
                         !paused(only) && !only->held && cfg_.direct_polls > 0 && !dom_->automatic();
  if (direct_conn_ && (!direct_ok || direct_conn_ != only)) leave_direct();
  if (direct_ok) {
    if (!only->direct) {
      only->direct = true;
      direct_conn_ = only;
      update_events(only);
    }
    if (++direct_polls_ > static_cast<std::uint32_t>(cfg_.direct_polls)) {
      direct_polls_ = 0;
      poll_engine();
    }
    if (!only->dead && only->direct) {
      // Busy polling. A receive takes the socket's lock, which the kernel
      // needs to deliver the very packet we wait for, and a tight loop of
      // system calls starves whatever shares the core: when the application
      // comes straight back after an empty poll (within poll_recent_ns, having
      // driven nothing else), wait poll_pause_ns with cpu_relax() before the
      // next receive (docs/design.md, "Busy polling a socket").
      const std::uint64_t calls = spi::thread_progress_calls();
      if (cfg_.poll_pause_ns > 0 && last_empty_ns_ != 0 && calls == empty_calls_ + 1) {
        const std::uint64_t now = util::now_ns();
        if (now - last_empty_ns_ < poll_recent_ns)
          util::relax_until(now + static_cast<std::uint64_t>(cfg_.poll_pause_ns));
      }
      const bool got = read_conn(only);
      last_empty_ns_ = got || cfg_.poll_pause_ns <= 0 ? 0 : util::now_ns();
      empty_calls_ = calls;
    }
  } else {
    direct_polls_ = 0;
    poll_engine();
  }
  if (answer_waits_) resume_answers();
  if (pend_n_) push_pending_errors();
  if (need_reap_) reap();
}

// Back into epoll's read interest (before sleeping on it, or when another
// connection or pending output needs epoll).
void endpoint_impl::leave_direct() noexcept {
  conn* c = direct_conn_;
  direct_conn_ = nullptr;
  last_empty_ns_ = 0;
  if (!c || c->dead) return;
  c->direct = false;
  update_events(c);
}

void endpoint_impl::prepare_sleep() noexcept {
  auto g = dom_->guard();
  if (direct_conn_) leave_direct();
}

// --------------------------------------------------- connection management

void endpoint_impl::cm_event(eq_event::kind k, errc e, std::string msg, const std::uint8_t* data,
                             std::size_t len) noexcept {
  if (!eq_) return;
  try {
    eq_event ev;
    ev.type = k;
    ev.context = context;
    ev.err = e;
    ev.message = std::move(msg);
    if (len) ev.data.assign(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + len);
    eq_->push(std::move(ev));
  } catch (...) {
  }
}

void endpoint_impl::cancel_posted() noexcept {
  for (auto* l : {&posted_msg_, &posted_tag_})
    while (rx_op* r = l->front()) {
      l->erase(r);
      rx_error(r, errc::canceled, "the connection was shut down");
    }
}

result<void> endpoint_impl::connect(const address& peer, std::span<const std::byte> data) {
  auto g = dom_->guard();
  if (!msg_mode_) return make_error(errc::not_supported, "connect is for MSG endpoints (ep_type::msg)");
  if (!enabled_) return make_error(errc::bad_state, "enable() the endpoint before connect()");
  if (single_) return make_error(errc::bad_state, "this endpoint is already connected or connecting");
  if (data.size() > wire::max_cm_data)
    return make_error(errc::too_big, "connection data is limited to 256 bytes");
  std::string k = key_of(peer);
  if (k.empty()) return make_error(errc::invalid_argument, to_string(peer).append(" is not a tcp address"));
  conn* c = open_conn(peer, k, addr_unspec, data);
  if (!c) return make_error(errc::io_error, "cannot open a socket to " + to_string(peer));
  by_key_.erase(k);  // MSG connections are not shared
  single_ = c;
  was_connected_ = true;
  return {};
}

struct pending;
result<void> take_pending(const info& i, int& fd, address& peer);

result<void> endpoint_impl::accept(std::span<const std::byte> data) {
  auto g = dom_->guard();
  if (!msg_mode_) return make_error(errc::not_supported, "accept is for MSG endpoints");
  if (!enabled_) return make_error(errc::bad_state, "enable() the endpoint before accept()");
  if (single_) return make_error(errc::bad_state, "this endpoint is already connected");
  if (data.size() > wire::max_cm_data)
    return make_error(errc::too_big, "connection data is limited to 256 bytes");
  int fd = -1;
  address peer;
  if (auto r = take_pending(info_, fd, peer); !r) return r;
  auto c = std::make_unique<conn>();
  c->ep = this;
  c->fd = fd;
  c->outgoing = false;
  c->peer = peer;
  c->started = c->last_active = util::now_ns();
  c->state = conn::st::established;
  conn* raw = c.get();
  conns_.push_back(std::move(c));
  dom_->eng().add(fd, raw, EPOLLIN);
  single_ = raw;
  was_connected_ = true;
  sockaddr_storage me{};
  socklen_t ml = sizeof me;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &ml) == 0)
    name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
  queue_frame(raw, wire::op::hello_ack, static_cast<std::uint64_t>(wire::hello_status::ok), data.data(),
              data.size());
  flush(raw);
  cm_event(eq_event::kind::connected, errc::ok, "", nullptr, 0);
  return {};
}

result<void> endpoint_impl::shutdown() {
  auto g = dom_->guard();
  if (!msg_mode_) return make_error(errc::not_supported, "shutdown is for MSG endpoints");
  if (!single_) return make_error(errc::bad_state, "the endpoint is not connected");
  flush(single_);  // what could leave without waiting leaves; the rest is canceled
  conn* c = single_;
  while (tx_op* op = c->txq.front()) {
    c->txq.erase(op);
    end_op(op, errc::canceled, "canceled by shutdown()");
  }
  cancel_posted();
  // Graceful: our FIN follows everything written; unread input is drained
  // first, since closing with unread data would reset the connection and
  // the peer could lose messages it has not read yet.
  ::shutdown(c->fd, SHUT_WR);
  char sink[4096];
  for (int i = 0; i < 256 && ::recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  close_conn(c);
  return {};
}

// A connection accepted by a passive endpoint, waiting for its hello and
// then for accept() or reject().
struct pending final : handler {
  int fd = -1;
  engine* eng = nullptr;
  bool registered = false;
  bool complete = false, bad = false;
  std::uint8_t buf[sizeof(wire::frame_header) + sizeof(wire::hello_body) + wire::max_cm_data]{};
  std::size_t got = 0, need = sizeof(wire::frame_header);
  wire::hello_body hello{};
  address peer{};
  std::uint64_t started = 0;
  std::function<void(pending*)> on_complete;
  ~pending() override {
    if (registered) eng->del(fd);
    if (fd >= 0) ::close(fd);
  }
  void on_event(std::uint32_t) noexcept override {
    while (!complete && !bad) {
      ssize_t n = ::recv(fd, buf + got, need - got, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) {
        bad = true;
        break;
      }
      got += static_cast<std::size_t>(n);
      if (got < need) continue;
      if (need == sizeof(wire::frame_header)) {
        wire::frame_header h;
        if (wire::decode_header(buf, got, max_msg_size, h) != wire::status::ok ||
            h.op != static_cast<std::uint8_t>(wire::op::hello)) {
          bad = true;
          break;
        }
        need += h.len;
        continue;
      }
      if (wire::decode_hello(buf + sizeof(wire::frame_header), got - sizeof(wire::frame_header), hello) !=
              wire::status::ok ||
          hello.ep_type != 1) {
        bad = true;
        break;
      }
      complete = true;
    }
    if (registered) {  // the endpoint that accepts registers the socket again
      eng->del(fd);
      registered = false;
    }
    if (on_complete) on_complete(this);
  }
};

class passive_impl final : public spi::passive_endpoint, public spi::progressable, public handler {
 public:
  passive_impl(std::shared_ptr<domain_impl> d, const info& i) : dom_(std::move(d)), info_(i) {}
  ~passive_impl() override {
    auto g = dom_->guard();  // the progress thread must not see any of this half-gone
    dom_->remove_target(this);
    if (eq_) {
      eq_->detach(this);
      eq_->release_lock(dom_->lock());
    }
    if (lfd_ >= 0) {
      dom_->eng().del(lfd_);
      ::close(lfd_);
    }
    for (auto& p : waiting_) p->on_complete = nullptr;
    waiting_.clear();  // pending connections leave epoll here, under the lock
  }
  result<void> init() {
    address a;
    if (info_.src_addr) {
      a = *info_.src_addr;
    } else {
      sockaddr_in any{};
      any.sin_family = AF_INET;
      a = from_sockaddr(reinterpret_cast<sockaddr*>(&any));
    }
    sockaddr_storage ss;
    socklen_t len;
    if (!to_sockaddr(a, ss, len)) return make_error(errc::invalid_argument, "not a tcp listening address");
    lfd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    (void)::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd_ < 0 || ::bind(lfd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(lfd_, 512) != 0) {
      int e = errno;
      return make_error(e == EADDRINUSE ? errc::address_in_use : errc::io_error,
                        "cannot listen on " + to_string(a) + ": " + std::strerror(e));
    }
    sockaddr_storage me{};
    socklen_t ml = sizeof me;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&me), &ml);
    name_ = from_sockaddr(reinterpret_cast<sockaddr*>(&me));
    dom_->eng().add(lfd_, this, EPOLLIN);
    return {};
  }
  result<void> bind_eq(std::shared_ptr<spi::eq> q) override {
    auto g = dom_->guard();
    if (eq_) return make_error(errc::bad_state, "an event queue is already bound");
    if (!q->set_lock(dom_->lock()))
      return make_error(errc::bad_state, "this event queue already serves another automatic-progress domain");
    eq_ = std::move(q);
    eq_->attach(this);
    if (dom_->automatic()) dom_->add_target(this);
    return {};
  }
  [[nodiscard]] address name() const override { return name_; }
  result<void> reject(const info& req, std::span<const std::byte> data) override {
    auto g = dom_->guard();
    auto p = std::static_pointer_cast<pending>(req.handle);
    if (!p || p->fd < 0 || !p->complete)
      return make_error(errc::invalid_argument, "reject() takes the info of a connreq event not yet answered");
    if (data.size() > wire::max_cm_data) return make_error(errc::too_big, "reject data is limited to 256 bytes");
    std::uint8_t frame[sizeof(wire::frame_header) + wire::max_cm_data];
    wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::hello_ack), 0, 0,
                         data.size(), 0, static_cast<std::uint64_t>(wire::hello_status::rejected)};
    std::memcpy(frame, &h, sizeof h);
    if (!data.empty()) std::memcpy(frame + sizeof h, data.data(), data.size());
    (void)::send(p->fd, frame, sizeof h + data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);  // fits the socket buffer
    ::close(p->fd);
    p->fd = -1;
    return {};
  }
  void on_event(std::uint32_t) noexcept override {
    for (int i = 0; i < 64; ++i) {
      int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      if (waiting_.size() >= max_handshakes) {  // too many silent connections: refuse this one
        ::close(fd);
        continue;
      }
      set_socket_options(fd, dom_->cfg(), nullptr);
      try {
        auto p = std::make_shared<pending>();
        p->fd = fd;
        p->eng = &dom_->eng();
        p->started = util::now_ns();
        sockaddr_storage peer{};
        socklen_t pl = sizeof peer;
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl);
        p->peer = from_sockaddr(reinterpret_cast<sockaddr*>(&peer));
        p->on_complete = [this](pending* x) { completed(x); };
        p->registered = dom_->eng().add(fd, p.get(), EPOLLIN);
        waiting_.push_back(std::move(p));
      } catch (...) {
        ::close(fd);
      }
    }
  }
  void progress() noexcept override {
    auto g = dom_->guard();
    dom_->eng().poll();
    // hellos that never come are dropped after the timeout
    const std::uint64_t now = util::now_ns();
    const std::uint64_t to = static_cast<std::uint64_t>(dom_->cfg().timeout_ms) * 1'000'000ull;
    std::erase_if(waiting_, [&](const std::shared_ptr<pending>& p) { return !p->complete && now - p->started > to; });
  }
  [[nodiscard]] int wait_fd() const noexcept override { return dom_->eng().fd(); }

 private:
  void completed(pending* x) noexcept {
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](auto& p) { return p.get() == x; });
    if (it == waiting_.end()) return;
    std::shared_ptr<pending> p = *it;
    waiting_.erase(it);
    if (p->bad || !eq_) return;  // garbage or nobody listening: dropped (closing the socket)
    try {
      eq_event ev;
      ev.type = eq_event::kind::connreq;
      ev.context = context;
      ev.req = info_;
      ev.req.ep.type = ep_type::msg;
      ev.req.caps = cap::msg | cap::tagged | cap::remote_cq_data | cap::local_comm | cap::remote_comm | cap::rma |
                    cap::atomic | cap::pmem;
      ev.req.src_addr.reset();
      ev.req.dest_addr = p->peer;
      ev.req.handle = p;
      const std::uint8_t* cm = p->buf + sizeof(wire::frame_header) + sizeof(wire::hello_body);
      ev.data.assign(reinterpret_cast<const std::byte*>(cm), reinterpret_cast<const std::byte*>(cm) + p->hello.cm_len);
      eq_->push(std::move(ev));
    } catch (...) {
    }
  }

  std::shared_ptr<domain_impl> dom_;
  info info_;
  int lfd_ = -1;
  address name_{};
  std::shared_ptr<spi::eq> eq_;
  std::vector<std::shared_ptr<pending>> waiting_;
};

result<void> take_pending(const info& i, int& fd, address& peer) {
  auto p = std::static_pointer_cast<pending>(i.handle);
  if (!p || !p->complete || p->fd < 0)
    return make_error(errc::invalid_argument,
                      "accept() needs an endpoint opened from the info of a connreq event not yet answered");
  if (p->registered) {
    p->eng->del(p->fd);
    p->registered = false;
  }
  fd = p->fd;
  p->fd = -1;
  peer = p->peer;
  return {};
}

}  // namespace

result<std::shared_ptr<spi::passive_endpoint>> domain_impl::open_passive_endpoint(const info& i) {
  if (i.fabric.prov_name != "tcp")
    return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not tcp");
  auto p = std::make_shared<passive_impl>(shared_from_this(), i);
  if (auto r = p->init(); !r) return std::unexpected(r.error());
  return p;
}

result<std::shared_ptr<spi::endpoint>> domain_impl::open_endpoint(const info& i) {
  if (i.fabric.prov_name != "tcp")
    return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not tcp");
  auto ep = std::make_shared<endpoint_impl>(shared_from_this(), i);
  if (auto r = ep->init(); !r) return std::unexpected(r.error());
  return ep;
}

}  // namespace weft::prov::tcp

#include "util/uffd_monitor.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <new>
#include <string>
#include <system_error>
#include <thread>

namespace weft {

const char* to_string(watch_mode m) noexcept {
  switch (m) {
    case watch_mode::notified: return "notified";
    case watch_mode::checked: return "checked";
  }
  return "unknown";
}

}  // namespace weft

namespace weft::util {
namespace {

constexpr std::size_t k_ring = 1024;       // events read but not yet applied
constexpr std::size_t k_read_batch = 32;   // uffd_msg per read()

std::string errno_text(int e) {
  return std::string(::strerrordesc_np(e) != nullptr ? ::strerrordesc_np(e) : "unknown error");
}

struct raw_event {
  std::uintptr_t lo = 0;  // memory that went away: [lo, hi)
  std::uintptr_t hi = 0;
  std::uintptr_t to_lo = 0;  // mremap destination, still registered with us
  std::uintptr_t to_hi = 0;
};

// Set by a uffd_core destroyed on its own dispatcher thread, which then must
// not touch the core again.
thread_local bool t_core_destroyed_here = false;

}  // namespace

// ---------------------------------------------------------------------------
// uffd_core: the process-wide userfaultfd shared by all uffd_monitor objects.
//
// Locks: mu_ (subscriptions, clients, notes) then q_mu_ (the event ring).
// The reader thread takes q_mu_ only, around a non-blocking read() and copies
// into the fixed ring, and never allocates: a thread that munmaps registered
// memory (maybe inside free(), holding a malloc arena lock, or holding mu_)
// waits until the reader has read the event. Holders of mu_ may allocate,
// free and make system calls since the reader never needs mu_.
class uffd_core {
 public:
  struct private_tag {
    explicit private_tag() = default;
  };
  explicit uffd_core(private_tag) {}
  uffd_core(const uffd_core&) = delete;
  uffd_core& operator=(const uffd_core&) = delete;
  ~uffd_core();

  static result<std::shared_ptr<uffd_core>> acquire();

  result<std::uint64_t> add_client(memory_monitor::notify_fn notify);
  void remove_client(std::uint64_t id) noexcept;
  result<watch_mode> subscribe(std::uint64_t id, std::uintptr_t lo, std::uintptr_t hi);
  void unsubscribe(std::uint64_t id, std::uintptr_t lo, std::uintptr_t hi) noexcept;
  bool valid(std::uint64_t id, std::uintptr_t lo, std::uintptr_t hi) noexcept;

  [[nodiscard]] uffd_support support() const noexcept { return support_; }
  [[nodiscard]] bool forked() const noexcept { return forked_.load(std::memory_order_acquire); }
  // In the child of fork() (one thread, registry lock held): the threads,
  // locks and mm of this core belong to the parent. Close our copies of the
  // fds (a child holding the userfaultfd open would make the parent's munmap
  // of registered memory wait forever once the parent stops reading it) and
  // keep the core alive forever (its condition variables cannot be
  // destroyed here).
  void forget_after_fork() noexcept;

 private:
  struct key {
    std::uintptr_t lo;
    std::uintptr_t hi;
    std::uint64_t client;
    friend auto operator<=>(const key&, const key&) = default;
  };
  struct record {
    std::uint32_t refs = 0;
    bool registered = false;          // with UFFDIO_REGISTER; else checked mode
    bool invalid = false;             // an event covered part of it
    std::vector<map_piece> identity;  // checked mode only
  };
  struct client_state {
    memory_monitor::notify_fn notify;
  };
  struct note {
    std::uint64_t client;
    std::uintptr_t lo;
    std::uintptr_t hi;
  };
  using rec_map = std::map<key, record>;

  result<void> open();
  void reader_loop() noexcept;
  void read_events(std::array<uffd_msg, k_read_batch>& msgs) noexcept;
  void push_locked(const raw_event& e) noexcept;
  void resolve_fault(const uffd_msg& m) noexcept;
  void dispatcher_loop() noexcept;
  void deliver(const note& n) noexcept;
  void wake_dispatcher() noexcept;
  bool drain_locked() noexcept;
  void invalidate_locked(std::uintptr_t lo, std::uintptr_t hi) noexcept;
  void unregister_gaps_locked(std::uintptr_t lo, std::uintptr_t hi) noexcept;
  void unregister(std::uintptr_t lo, std::uintptr_t hi) noexcept;
  rec_map::iterator first_overlap(std::uintptr_t lo) noexcept;
  result<record> make_record_locked(std::uintptr_t lo, std::uintptr_t hi);

  int fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the reader to exit
  bool started_ = false;
  uffd_support support_{};
  std::atomic<bool> forked_{false};
  std::weak_ptr<uffd_core> self_;
  std::shared_ptr<uffd_core> self_keep_;  // set only after fork, in the child
  std::thread reader_;
  std::thread dispatcher_;
  std::thread::id dispatcher_id_;

  std::mutex q_mu_;
  std::condition_variable q_cv_;  // wakes the dispatcher
  std::array<raw_event, k_ring> ring_{};
  std::size_t ring_count_ = 0;
  bool ring_overflow_ = false;  // ring full: further events merged into one range
  std::uintptr_t overflow_lo_ = 0;
  std::uintptr_t overflow_hi_ = 0;
  bool notes_pending_ = false;
  bool stopping_ = false;

  std::mutex mu_;
  std::condition_variable mu_cv_;  // delivering_ changed
  std::array<raw_event, k_ring> scratch_{};
  rec_map recs_;
  std::uintptr_t max_len_ = 0;  // longest record ever: bounds overlap searches
  std::map<std::uint64_t, std::shared_ptr<client_state>> clients_;
  std::uint64_t next_client_ = 1;
  std::uint64_t delivering_ = 0;  // client whose notify runs now
  std::vector<note> notes_;
  bool notes_lost_ = false;  // out of memory: deliver [lost_lo_, lost_hi_) to everyone
  std::uintptr_t lost_lo_ = 0;
  std::uintptr_t lost_hi_ = 0;
};

namespace {

struct core_registry {
  std::mutex mu;  // also held across fork() (atfork handlers)
  std::weak_ptr<uffd_core> current;
  std::vector<uffd_core*> live;  // cores whose fds are open
};

core_registry& registry() noexcept {
  static auto* const r = new core_registry();  // never destroyed: used by atfork handlers and at exit
  return *r;
}

}  // namespace

// Held by the dispatcher while it delivers (it allocates, and notify may),
// and across fork(): a child must not inherit an allocator lock that the
// dispatcher held at that instant (taken before registry().mu, which the
// dispatcher never takes while delivering).
std::mutex& fork_quiesce() noexcept {
  static auto* const m = new std::mutex();
  return *m;
}

namespace {

void atfork_prepare() noexcept {
  fork_quiesce().lock();
  registry().mu.lock();
}
void atfork_parent() noexcept {
  registry().mu.unlock();
  fork_quiesce().unlock();
}
void atfork_child() noexcept {
  core_registry& reg = registry();
  for (uffd_core* c : reg.live) c->forget_after_fork();
  reg.live.clear();
  reg.mu.unlock();
  fork_quiesce().unlock();
}

}  // namespace

void uffd_core::forget_after_fork() noexcept {
  ::close(fd_);
  ::close(stop_fd_);
  self_keep_ = self_.lock();
  forked_.store(true, std::memory_order_release);
}

result<std::shared_ptr<uffd_core>> uffd_core::acquire() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)registry();
    ::pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  });
  core_registry& reg = registry();
  std::lock_guard lk(reg.mu);
  if (auto c = reg.current.lock(); c && !c->forked()) return c;
  reg.live.reserve(reg.live.size() + 1);
  auto c = std::make_shared<uffd_core>(private_tag{});
  c->self_ = c;
  if (auto r = c->open(); !r) return std::unexpected(std::move(r.error()));
  reg.live.push_back(c.get());
  reg.current = c;
  return c;
}

result<void> uffd_core::open() {
  const int fd = open_configured(support_);
  if (fd < 0) {
    const int e = support_.open_errno;
    return make_error(e == EPERM || e == EACCES ? errc::permission_denied : errc::not_supported,
                      "userfaultfd: " + errno_text(e));
  }
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    const int e = errno;
    ::close(fd);
    return make_error(errc::io_error, "userfaultfd monitor: eventfd: " + errno_text(e));
  }
  fd_ = fd;
  stop_fd_ = efd;
  // Our threads start with every signal blocked: user handlers never run
  // there (glibc keeps its internal setxid/cancel signals deliverable).
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    reader_ = std::thread([this] { reader_loop(); });
    dispatcher_ = std::thread([this] { dispatcher_loop(); });
  } catch (const std::system_error& e) {
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    {
      std::lock_guard q(q_mu_);
      stopping_ = true;
    }
    q_cv_.notify_all();
    const std::uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
    if (reader_.joinable()) reader_.join();
    ::close(fd_);
    ::close(stop_fd_);
    fd_ = stop_fd_ = -1;
    return make_error(errc::no_memory, std::string("userfaultfd monitor: cannot start threads: ") + e.what());
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  dispatcher_id_ = dispatcher_.get_id();
  started_ = true;
  return {};
}

uffd_core::~uffd_core() {
  if (!started_) return;  // open() failed and cleaned up
  {
    std::lock_guard q(q_mu_);
    stopping_ = true;
  }
  q_cv_.notify_all();
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  reader_.join();
  if (dispatcher_.get_id() == std::this_thread::get_id()) {
    // the last reference went away inside a notify call: the dispatcher
    // returns as soon as it sees t_core_destroyed_here
    dispatcher_.detach();
    t_core_destroyed_here = true;
  } else {
    dispatcher_.join();
  }
  // No subscriptions remain (every client removed its records); closing the
  // fd releases whatever the kernel still has registered with it (mremap'ed
  // or grown areas) and wakes any thread waiting for an event to be read.
  core_registry& reg = registry();
  std::lock_guard lk(reg.mu);
  ::close(fd_);
  ::close(stop_fd_);
  std::erase(reg.live, this);
}

// --- reader thread ---------------------------------------------------------

void uffd_core::reader_loop() noexcept {
  ::pthread_setname_np(::pthread_self(), "weft-uffd-read");
  std::array<uffd_msg, k_read_batch> msgs;
  for (;;) {
    std::array<pollfd, 2> p{{{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}}};
    const int n = ::poll(p.data(), p.size(), 1000);
    read_events(msgs);
    if (n > 0 && (p[1].revents & POLLIN) != 0) return;
  }
}

void uffd_core::read_events(std::array<uffd_msg, k_read_batch>& msgs) noexcept {
  for (int round = 0; round < 64; ++round) {
    ssize_t got = 0;
    int err = 0;
    {
      std::lock_guard lk(q_mu_);
      got = ::read(fd_, msgs.data(), sizeof msgs);
      err = errno;
      for (ssize_t i = 0; got > 0 && i < got / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
        const uffd_msg& m = msgs[static_cast<std::size_t>(i)];
        switch (m.event) {
          case UFFD_EVENT_UNMAP:
          case UFFD_EVENT_REMOVE:
            push_locked(raw_event{m.arg.remove.start, m.arg.remove.end, 0, 0});
            break;
          case UFFD_EVENT_REMAP:
            push_locked(raw_event{m.arg.remap.from, m.arg.remap.from + m.arg.remap.len, m.arg.remap.to,
                                  m.arg.remap.to + m.arg.remap.len});
            break;
          default: break;
        }
      }
    }
    if (got < 0 && err == EINTR) continue;
    if (got <= 0) return;
    q_cv_.notify_one();
    for (ssize_t i = 0; i < got / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
      if (msgs[static_cast<std::size_t>(i)].event == UFFD_EVENT_PAGEFAULT) resolve_fault(msgs[static_cast<std::size_t>(i)]);
    }
  }
}

void uffd_core::push_locked(const raw_event& e) noexcept {
  if (ring_count_ < ring_.size()) {
    ring_[ring_count_++] = e;
    return;
  }
  // Full (nobody applied events for a while): over-approximate. The mremap
  // destination stays registered, which only costs a round trip per munmap.
  if (!ring_overflow_) {
    ring_overflow_ = true;
    overflow_lo_ = e.lo;
    overflow_hi_ = e.hi;
  } else {
    overflow_lo_ = std::min(overflow_lo_, e.lo);
    overflow_hi_ = std::max(overflow_hi_, e.hi);
  }
}

// Never expected: nothing is registered in MISSING mode and nothing is ever
// write-protected. Resolve anyway so that no thread can wait on us.
void uffd_core::resolve_fault(const uffd_msg& m) noexcept {
  const std::uintptr_t ps = page_size();
  const std::uintptr_t page = m.arg.pagefault.address & ~(ps - 1);
  int rc = -1;
  if ((m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) != 0) {
    uffdio_writeprotect wp{};
    wp.range.start = page;
    wp.range.len = ps;
    wp.mode = 0;  // un-protect and wake
    rc = ::ioctl(fd_, UFFDIO_WRITEPROTECT, &wp);
  } else {
    uffdio_zeropage z{};
    z.range.start = page;
    z.range.len = ps;
    z.mode = 0;
    rc = ::ioctl(fd_, UFFDIO_ZEROPAGE, &z);
  }
  if (rc != 0) {
    uffdio_range r{page, ps};
    ::ioctl(fd_, UFFDIO_WAKE, &r);  // the thread retries its fault
  }
}

// --- applying events (mu_ held) ---------------------------------------------

uffd_core::rec_map::iterator uffd_core::first_overlap(std::uintptr_t lo) noexcept {
  return recs_.lower_bound(key{lo > max_len_ ? lo - max_len_ : 0, 0, 0});
}

bool uffd_core::drain_locked() noexcept {
  std::size_t n = 0;
  bool overflow = false;
  std::uintptr_t olo = 0, ohi = 0;
  {
    std::lock_guard q(q_mu_);
    n = ring_count_;
    std::copy_n(ring_.begin(), n, scratch_.begin());
    ring_count_ = 0;
    overflow = ring_overflow_;
    olo = overflow_lo_;
    ohi = overflow_hi_;
    ring_overflow_ = false;
  }
  const std::size_t notes_before = notes_.size();
  const bool lost_before = notes_lost_;
  for (std::size_t i = 0; i < n; ++i) {
    const raw_event& e = scratch_[i];
    invalidate_locked(e.lo, e.hi);
    // mremap keeps our registration on the moved area: drop what no
    // subscription covers there.
    if (e.to_hi > e.to_lo) unregister_gaps_locked(e.to_lo, e.to_hi);
  }
  if (overflow) invalidate_locked(olo, ohi);
  return notes_.size() != notes_before || notes_lost_ != lost_before;
}

void uffd_core::invalidate_locked(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  const std::size_t first = notes_.size();  // one note per client: the hull of its overlaps
  for (auto it = first_overlap(lo); it != recs_.end() && it->first.lo < hi; ++it) {
    if (it->first.hi <= lo) continue;
    it->second.invalid = true;
    const std::uintptr_t a = std::max(lo, it->first.lo);
    const std::uintptr_t b = std::min(hi, it->first.hi);
    bool merged = false;
    for (std::size_t i = first; i < notes_.size(); ++i) {
      if (notes_[i].client == it->first.client) {
        notes_[i].lo = std::min(notes_[i].lo, a);
        notes_[i].hi = std::max(notes_[i].hi, b);
        merged = true;
        break;
      }
    }
    if (merged) continue;
    try {
      notes_.push_back(note{it->first.client, a, b});
    } catch (...) {
      lost_lo_ = notes_lost_ ? std::min(lost_lo_, a) : a;
      lost_hi_ = notes_lost_ ? std::max(lost_hi_, b) : b;
      notes_lost_ = true;
    }
  }
}

void uffd_core::unregister(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  // Best effort: EINVAL when the area is gone or now holds a mapping
  // userfaultfd refuses. A leftover registration only costs a round trip per
  // munmap until the fd is closed.
  uffdio_range r{lo, hi - lo};
  ::ioctl(fd_, UFFDIO_UNREGISTER, &r);
}

// Unregisters the parts of [lo, hi) that no registered record covers.
void uffd_core::unregister_gaps_locked(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  std::uintptr_t cur = lo;
  for (auto it = first_overlap(lo); it != recs_.end() && it->first.lo < hi && cur < hi; ++it) {
    if (!it->second.registered || it->first.hi <= cur) continue;
    if (it->first.lo > cur) unregister(cur, it->first.lo);
    cur = std::max(cur, it->first.hi);
  }
  if (cur < hi) unregister(cur, hi);
}

result<uffd_core::record> uffd_core::make_record_locked(std::uintptr_t lo, std::uintptr_t hi) {
  record r;
  r.refs = 1;
  uffdio_register reg{};
  reg.range.start = lo;
  reg.range.len = hi - lo;
  reg.mode = UFFDIO_REGISTER_MODE_WP;  // never write-protected: no fault ever waits for us
  if (::ioctl(fd_, UFFDIO_REGISTER, &reg) == 0) {
    // Registration skips holes: make sure the whole range is there (a later
    // munmap is reported).
    switch (classify_mapping(lo, hi)) {
      case range_kind::mapped:
        r.registered = true;
        return r;
      case range_kind::hole:
        unregister_gaps_locked(lo, hi);
        return make_error(errc::invalid_argument, "memory monitor: range is not mapped");
      case range_kind::sysv_shm:
      case range_kind::unknown:  // the mapping could not be read: it may be a segment
        unregister_gaps_locked(lo, hi);
        break;
    }
  }
  // EBUSY (another userfaultfd owns it), EINVAL (memory type refused, e.g. a
  // file mapping without UFFD_FEATURE_WP_ASYNC, VM_PFNMAP), EPERM (mapping
  // that may never be written), ENOMEM (vm.max_map_count), a System V
  // segment (shmdt is not reported), or nobody could tell: checked mode.
  auto identity = map_identity(lo, hi);
  if (identity) {
    r.identity = std::move(*identity);
  } else if (identity.error().code != errc::not_supported) {
    return std::unexpected(std::move(identity.error()));
  }  // else unreadable just now: no identity, so valid() answers false until subscribed again
  return r;
}

// --- control path -----------------------------------------------------------

result<std::uint64_t> uffd_core::add_client(memory_monitor::notify_fn notify) {
  if (forked()) return make_error(errc::bad_state, "memory monitor: created before fork(); make a new one");
  auto st = std::make_shared<client_state>(client_state{std::move(notify)});
  std::lock_guard lk(mu_);
  const std::uint64_t id = next_client_++;
  clients_.emplace(id, std::move(st));
  return id;
}

void uffd_core::remove_client(std::uint64_t id) noexcept {
  if (forked()) return;
  std::shared_ptr<client_state> st;  // destroyed after mu_ is released (user captures)
  std::unique_lock lk(mu_);
  const auto it = clients_.find(id);
  if (it == clients_.end()) return;
  st = std::move(it->second);
  clients_.erase(it);
  for (auto r = recs_.begin(); r != recs_.end();) {
    if (r->first.client != id) {
      ++r;
      continue;
    }
    const key k = r->first;
    const bool reg = r->second.registered;
    r = recs_.erase(r);
    if (reg) unregister_gaps_locked(k.lo, k.hi);
  }
  // From inside a notify call, nothing else is being delivered.
  if (std::this_thread::get_id() != dispatcher_id_) mu_cv_.wait(lk, [&] { return delivering_ != id; });
  lk.unlock();
}

result<watch_mode> uffd_core::subscribe(std::uint64_t id, std::uintptr_t lo, std::uintptr_t hi) {
  if (forked()) return make_error(errc::bad_state, "memory monitor: created before fork(); make a new one");
  bool queued = false;
  result<watch_mode> out = watch_mode::notified;
  {
    std::lock_guard lk(mu_);
    if (!clients_.contains(id)) return make_error(errc::bad_state, "memory monitor is stopped");
    // Events queued before now are about earlier mappings of these
    // addresses: read and apply them before the new subscription can be hit
    // by them. (munmap queues its event just after releasing the address, so
    // another thread's event may still land on a new mapping: a spurious,
    // safe invalidation.)
    std::array<uffd_msg, k_read_batch> msgs;
    read_events(msgs);
    queued = drain_locked();
    const key k{lo, hi, id};
    const auto it = recs_.find(k);
    if (it != recs_.end()) {
      record& r = it->second;
      if (r.refs == UINT32_MAX) {
        out = make_error(errc::too_big, "memory monitor: too many subscriptions of one range");
      } else if (!r.invalid && (r.registered || identity_matches(r.identity, lo, hi))) {
        ++r.refs;
        out = r.registered ? watch_mode::notified : watch_mode::checked;
      } else if (auto fresh = make_record_locked(lo, hi); !fresh) {
        out = std::unexpected(std::move(fresh.error()));
      } else {  // stale: the newest subscription wins
        fresh->refs = r.refs + 1;
        r = std::move(*fresh);
        out = r.registered ? watch_mode::notified : watch_mode::checked;
      }
    } else if (auto fresh = make_record_locked(lo, hi); !fresh) {
      out = std::unexpected(std::move(fresh.error()));
    } else {
      const bool reg = fresh->registered;
      try {
        recs_.emplace(k, std::move(*fresh));
        max_len_ = std::max(max_len_, hi - lo);
        out = reg ? watch_mode::notified : watch_mode::checked;
      } catch (const std::bad_alloc&) {
        if (reg) unregister_gaps_locked(lo, hi);
        out = make_error(errc::no_memory, "memory monitor: out of memory");
      }
    }
  }
  if (queued) wake_dispatcher();
  return out;
}

void uffd_core::unsubscribe(std::uint64_t id, std::uintptr_t lo, std::uintptr_t hi) noexcept {
  if (forked()) return;
  std::lock_guard lk(mu_);
  if (!clients_.contains(id)) return;
  const auto it = recs_.find(key{lo, hi, id});
  if (it == recs_.end() || --it->second.refs != 0) return;
  const bool reg = it->second.registered;
  recs_.erase(it);
  if (reg) unregister_gaps_locked(lo, hi);
}

bool uffd_core::valid(std::uint64_t id, std::uintptr_t lo, std::uintptr_t hi) noexcept {
  if (forked()) return false;
  std::vector<candidate> cands;
  bool queued = false;
  bool fast = false;
  try {
    std::lock_guard lk(mu_);
    if (!clients_.contains(id)) return false;
    // A munmap that returned was read by the reader: apply it first.
    queued = drain_locked();
    const auto exact = recs_.find(key{lo, hi, id});
    if (exact != recs_.end() && exact->second.registered && !exact->second.invalid) {
      fast = true;
    } else {
      for (auto it = first_overlap(lo); it != recs_.end() && it->first.lo < hi; ++it) {
        if (it->first.client != id || it->first.hi <= lo || it->second.invalid) continue;
        candidate c;
        c.lo = it->first.lo;
        c.hi = it->first.hi;
        c.ok = it->second.registered;
        if (!c.ok) c.identity = it->second.identity;
        cands.push_back(std::move(c));
      }
    }
  } catch (...) {
    cands.clear();
  }
  if (queued) wake_dispatcher();
  if (fast) return true;
  for (candidate& c : cands) {
    if (!c.ok) c.ok = identity_matches(c.identity, c.lo, c.hi);
  }
  return covered(cands, lo, hi);
}

// --- dispatcher thread ------------------------------------------------------

void uffd_core::wake_dispatcher() noexcept {
  {
    std::lock_guard q(q_mu_);
    notes_pending_ = true;
  }
  q_cv_.notify_one();
}

void uffd_core::dispatcher_loop() noexcept {
  ::pthread_setname_np(::pthread_self(), "weft-uffd-note");
  std::vector<note> batch;
  for (;;) {
    {
      std::unique_lock q(q_mu_);
      q_cv_.wait(q, [&] { return stopping_ || ring_count_ != 0 || ring_overflow_ || notes_pending_; });
      if (stopping_) return;
      notes_pending_ = false;
    }
    std::lock_guard fq(fork_quiesce());  // no fork() while delivering
    std::shared_ptr<uffd_core> keep;  // the last monitor may go away inside notify
    note lost_note{0, 0, 0};
    std::vector<std::uint64_t> everyone;
    {
      std::lock_guard lk(mu_);
      keep = self_.lock();
      if (!keep) return;  // being destroyed on another thread, which joins us
      drain_locked();
      batch.swap(notes_);
      if (notes_lost_) {
        lost_note = note{0, lost_lo_, lost_hi_};
        notes_lost_ = false;
        try {
          for (const auto& c : clients_) everyone.push_back(c.first);
        } catch (...) {
        }
      }
    }
    for (const note& n : batch) deliver(n);
    for (const std::uint64_t id : everyone) deliver(note{id, lost_note.lo, lost_note.hi});
    batch.clear();
    keep.reset();
    if (t_core_destroyed_here) return;  // `this` is gone
  }
}

void uffd_core::deliver(const note& n) noexcept {
  std::shared_ptr<client_state> st;
  {
    std::lock_guard lk(mu_);
    const auto it = clients_.find(n.client);
    if (it == clients_.end()) return;  // stopped meanwhile
    st = it->second;
    delivering_ = n.client;
  }
  try {
    st->notify(reinterpret_cast<const void*>(n.lo), n.hi - n.lo);
  } catch (...) {
    // a throwing notify must not take the monitor down
  }
  st.reset();
  {
    std::lock_guard lk(mu_);
    delivering_ = 0;
  }
  mu_cv_.notify_all();
}

// --- uffd_monitor -----------------------------------------------------------

uffd_monitor::uffd_monitor(std::shared_ptr<uffd_core> core) noexcept : core_(std::move(core)) {}

uffd_monitor::~uffd_monitor() { stop(); }

result<std::unique_ptr<uffd_monitor>> uffd_monitor::create() {
  auto core = uffd_core::acquire();
  if (!core) return std::unexpected(std::move(core.error()));
  return std::unique_ptr<uffd_monitor>(new uffd_monitor(std::move(*core)));
}

result<void> uffd_monitor::start(notify_fn notify) {
  if (!notify) return make_error(errc::invalid_argument, "memory monitor: empty notify function");
  if (client_.load() != 0) return make_error(errc::bad_state, "memory monitor is already started");
  auto id = core_->add_client(std::move(notify));
  if (!id) return std::unexpected(std::move(id.error()));
  std::uint64_t expected = 0;
  if (!client_.compare_exchange_strong(expected, *id)) {
    core_->remove_client(*id);
    return make_error(errc::bad_state, "memory monitor is already started");
  }
  return {};
}

void uffd_monitor::stop() noexcept {
  const std::uint64_t id = client_.exchange(0);
  if (id != 0) core_->remove_client(id);
}

result<watch_mode> uffd_monitor::subscribe(const void* addr, std::size_t len) {
  std::uintptr_t lo = 0, hi = 0;
  if (!page_round(addr, len, lo, hi)) return make_error(errc::invalid_argument, "memory monitor: empty range");
  const std::uint64_t id = client_.load();
  if (id == 0) return make_error(errc::bad_state, "memory monitor is not started");
  return core_->subscribe(id, lo, hi);
}

void uffd_monitor::unsubscribe(const void* addr, std::size_t len) noexcept {
  std::uintptr_t lo = 0, hi = 0;
  const std::uint64_t id = client_.load();
  if (id != 0 && page_round(addr, len, lo, hi)) core_->unsubscribe(id, lo, hi);
}

bool uffd_monitor::valid(const void* addr, std::size_t len) noexcept {
  std::uintptr_t lo = 0, hi = 0;
  const std::uint64_t id = client_.load();
  return id != 0 && page_round(addr, len, lo, hi) && core_->valid(id, lo, hi);
}

uffd_support uffd_monitor::support() const noexcept { return core_->support(); }

}  // namespace weft::util

namespace weft {

result<std::shared_ptr<memory_monitor>> make_default_monitor() {
  if (auto m = util::uffd_monitor::create()) return std::shared_ptr<memory_monitor>(std::move(*m));
  return std::shared_ptr<memory_monitor>(std::make_shared<util::maps_monitor>());
}

}  // namespace weft

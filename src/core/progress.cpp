#include "weft/spi/progress.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "util/clock.hpp"
#include "util/creator_process.hpp"
#include "util/futex.hpp"

namespace weft::spi {

namespace {
// Read on every poll: libweft is built with TLS descriptors (CMakeLists.txt),
// so this costs no __tls_get_addr call, and dlopen() still works.
thread_local std::uint64_t progress_calls_tl = 0;
}  // namespace

std::uint64_t thread_progress_calls() noexcept { return progress_calls_tl; }

void progress_group::attach(progressable* p) {
  auto h = hold();
  if (std::find(sources_.begin(), sources_.end(), p) == sources_.end()) sources_.push_back(p);
  posted();  // a wait asleep before the source came arms it too
}

void progress_group::wake_sleepers() noexcept {
  util::futex_wake_all(&posted_);
  // ... or asleep in poll() on a descriptor (manual tcp): the eventfd, as
  // detach() does (not from a forked child: the parent's eventfd).
  const int f = wake_fd_.load(std::memory_order_seq_cst);
  if (f >= 0 && util::fork_generation() == creator_gen_) {
    const std::uint64_t one = 1;
    (void)!::write(f, &one, sizeof one);
  }
}

namespace {
// util::creator_process's generation, kept out of the spi header (which
// includes nothing of util/).
std::uint32_t this_generation() noexcept {
  util::count_forks();
  return util::fork_generation();
}
}  // namespace

progress_group::progress_group() noexcept : creator_gen_(this_generation()) {}

progress_group::~progress_group() {
  if (const int f = wake_fd_.load(std::memory_order_relaxed); f >= 0) ::close(f);
}

void progress_group::detach(progressable* p) noexcept {
  const bool child = util::fork_generation() != creator_gen_;
  {
    // Not in a forked child: a parent thread inside a wait at fork() left
    // the lock held, with no owner here, and the child's only thread is the
    // one closing what it inherited.
    std::unique_lock<std::recursive_mutex> h;
    if (!child) h = hold();
    std::erase(sources_, p);
    detached_.fetch_add(1, std::memory_order_seq_cst);
  }
  util::futex_wake_all(&detached_);  // a wait asleep on p's words wakes, and arms again without it
  // ... or asleep in poll() on its descriptor; not in a forked child, where
  // the eventfd is the parent's too (and no wait of the child's sleeps: its
  // only thread is the one closing).
  const int f = wake_fd_.load(std::memory_order_seq_cst);
  if (f >= 0 && !child) {
    const std::uint64_t one = 1;
    (void)!::write(f, &one, sizeof one);
  }
}

// Not under hold(): one thread at a time per domain (threading::domain), so
// a plain read cannot meet a close; blocking waits, which may (another
// thread closing an endpoint to end a wait), take hold() around their
// progress. An uncontended lock here cost shm ping-pong 5% (A/B).
void progress_group::progress() noexcept {
  auto g = guard();
  if (in_progress_) return;  // re-entry from a callback is refused
  in_progress_ = true;
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    ++progress_calls_tl;
    sources_[i]->progress();
  }
  in_progress_ = false;
}

bool progress_group::set_lock(std::recursive_mutex* m) noexcept {
  if (!m) return true;
  if (lock_ && lock_ != m) return false;
  lock_ = m;
  ++lock_users_;
  return true;
}

void progress_group::release_lock(std::recursive_mutex* m) noexcept {
  if (m && lock_ == m && --lock_users_ == 0) lock_ = nullptr;
}

}  // namespace weft::spi

namespace weft::spi {

namespace {
std::atomic<bool> pulse_on{true};

std::atomic<bool> fallback_forced{false};
std::atomic<std::uint64_t> fallback_count{0};
}  // namespace

void set_wait_pulse(bool on) noexcept { pulse_on.store(on, std::memory_order_relaxed); }
void set_wait_fallback(bool on) noexcept { fallback_forced.store(on, std::memory_order_relaxed); }
std::uint64_t fallback_sleeps() noexcept { return fallback_count.load(std::memory_order_relaxed); }

void progress_group::arm_all(armed& a, bool room, bool liveness, bool posted) noexcept {
  auto g = guard();
  auto h = hold();
  a.n = 0;
  a.room = a.pulse = a.wordless = false;
  a.fd = -1;
  for (auto* s : sources_) {
    if (auto* w = s->arm()) {
      if (a.n < max_wait_words - 2) a.words[a.n++] = wait_word{w, w->load(std::memory_order_seq_cst)};
      else a.wordless = true;  // more doorbells than words (one is the detach word): slices, which drive every source
    } else if (const int fd = s->wait_fd(); fd >= 0) {
      if (a.fd >= 0 && a.fd != fd) a.wordless = true;  // two descriptors: slices
      a.fd = fd;
    } else {
      a.wordless = true;
    }
    if (liveness ? s->needs_liveness() : s->needs_pulse()) a.pulse = true;
  }
  a.doorbells = a.n;
  a.sources = sources_.size();
  a.detach_seen = detached_.load(std::memory_order_seq_cst);
  if (a.fd >= 0 && wake_fd_.load(std::memory_order_relaxed) < 0) {
    // The first sleep on a descriptor: the eventfd a detach() writes.
    const int f = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int none = -1;
    if (f >= 0 && !wake_fd_.compare_exchange_strong(none, f)) ::close(f);
  }
  if (room)
    for (auto* s : sources_)
      if (s->arm_room(this, std::span<wait_word>(a.words, max_wait_words - 2), a.n)) a.room = true;
  // Automatic progress: posted_ instead of the descriptor (arm_all()'s comment).
  if (posted && lock_ != nullptr && a.fd >= 0) {
    a.fd = -1;
    a.pulse = false;
  }
  // Taken after the eventfd is made: a posted() that found no eventfd yet
  // came before, and its bump is in this value.
  a.posted_seen = posted_.load(std::memory_order_seq_cst);
  a.own = 0;
  // Words are slept on (or there is nothing else to sleep on): so are
  // posted_ and detached_, so that a posted() or a detach() ends the sleep.
  if (a.n > 0 || (posted && a.fd < 0)) {
    if (posted) {
      a.words[a.n++] = wait_word{&posted_, a.posted_seen};
      ++a.own;
    }
    a.words[a.n++] = wait_word{&detached_, detached_.load(std::memory_order_seq_cst)};
    ++a.own;
  }
}

void progress_group::disarm_all() noexcept {
  auto g = guard();
  auto h = hold();
  for (auto* s : sources_) s->disarm();
}

progress_group::woke progress_group::sleep_armed(const armed& a, std::uint64_t deadline) noexcept {
  const woke w = sleep_uncounted(a, deadline);
  if (w == woke::word) word_wakes_.fetch_add(1, std::memory_order_relaxed);
  else if (w == woke::timer) timer_wakes_.fetch_add(1, std::memory_order_relaxed);
  return w;
}

progress_group::woke progress_group::sleep_uncounted(const armed& a, std::uint64_t deadline) const noexcept {
  static std::atomic<bool> no_waitv{false};  // the kernel answered ENOSYS (Linux < 5.16)
  const std::uint64_t now = util::now_ns();
  if (now >= deadline) return woke::deadline;
  // Words and a descriptor cannot be slept on at once, nor sources with
  // neither: short slices, as every source is driven at each.
  // A descriptor (tcp) is polled as before: with the pulse, in 1 ms slices
  // when it serves several sources (a progress thread may take its events).
  const bool slices = a.wordless || (a.fd >= 0 && (a.n > 0 || a.sources > 1));
  std::uint64_t until = deadline;
  if (slices) until = std::min(until, now + 1'000'000);
  else if (a.pulse && pulse_on.load(std::memory_order_relaxed)) until = std::min(until, now + pulse_ns);
  const woke late = until == deadline ? woke::deadline : woke::timer;
  auto ms_left = [&](int cap) {
    const std::uint64_t left = (until - now + 999'999) / 1'000'000;
    return static_cast<int>(std::clamp<std::uint64_t>(left, 1, static_cast<std::uint64_t>(cap)));
  };
  if (a.n > 0 && !slices) {
    if (!no_waitv.load(std::memory_order_relaxed) && !fallback_forced.load(std::memory_order_relaxed)) {
      const int r = util::futex_waitv(a.words, static_cast<unsigned>(a.n), until);
      if (r >= 0 || r == -EINTR) return woke::word;
      if (r == -ETIMEDOUT) return late;
      if (r == -ENOSYS) no_waitv.store(true, std::memory_order_relaxed);
    }
    // No futex_waitv: the first doorbell, in bounded slices (room words are
    // checked again at each slice).
    // The words are not read here: their source may be gone (detach());
    // the kernel answers for them.
    fallback_count.fetch_add(1, std::memory_order_relaxed);
    const int ms = ms_left(a.n > a.own + 1 ? 1 : 10);
    return util::futex_wait(a.words[0].word, a.words[0].seen, ms) == -ETIMEDOUT ? woke::timer : woke::word;
  }
  {
    // The domain's lock first, as in every other path: tcp's prepare_sleep
    // takes it, and a closing endpoint holds it while it takes our sources
    // lock (the other order deadlocked cq_wait_close on tcp_auto under load).
    auto g = guard();
    auto h = hold();
    for (auto* s : sources_) s->prepare_sleep();
  }
  if (a.fd >= 0) {
    // With the detach eventfd: a close of an endpoint ends the sleep. Its
    // count is taken here, then detached_ is checked: a detach after the
    // check finds the sleep in poll(). A detach seen here had its count
    // taken from another waiter's poll: it is put back for that waiter.
    const int wfd = wake_fd_.load(std::memory_order_seq_cst);
    if (wfd >= 0) {
      std::uint64_t cnt = 0;
      const bool took = ::read(wfd, &cnt, sizeof cnt) == static_cast<ssize_t>(sizeof cnt);
      if (detached_.load(std::memory_order_seq_cst) != a.detach_seen ||
          posted_.load(std::memory_order_seq_cst) != a.posted_seen) {
        if (took) {
          const std::uint64_t one = 1;
          (void)!::write(wfd, &one, sizeof one);
        }
        return woke::word;
      }
    } else if (!slices) {
      until = std::min(until, now + pulse_ns);  // no eventfd: look every pulse_ns
    }
    const woke late_fd = until == deadline ? woke::deadline : woke::timer;
    pollfd p[2] = {{a.fd, POLLIN, 0}, {wfd, POLLIN, 0}};
    const int r = ::poll(p, wfd >= 0 ? 2 : 1, until == ~0ull ? -1 : ms_left(slices ? 1 : INT32_MAX));
    return r > 0 ? woke::word : (slices ? woke::timer : late_fd);
  }
  timespec ts{0, 200000};
  nanosleep(&ts, nullptr);
  return woke::timer;
}

}  // namespace weft::spi

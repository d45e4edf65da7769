#pragma once
// What CQs, EQs and counters have in common: the objects whose progress
// reading them drives, the refusal to re-enter progress, and the lock of an
// automatic-progress domain they may share.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "weft/types.hpp"

namespace weft::spi {

// A futex word a blocking wait sleeps on, and its value when the waiter last
// checked for what it waits for (the sleep ends as soon as it differs).
struct wait_word {
  std::atomic<std::uint32_t>* word = nullptr;
  std::uint32_t seen = 0;
};
// The most words one wait sleeps on (futex_waitv takes up to 128).
inline constexpr std::size_t max_wait_words = 64;
// The pulse of a wait whose sources need one (dead-peer checks).
inline constexpr std::uint64_t pulse_ns = 10'000'000;

// Test hook: false turns the pulse off (waits then wake only by a word, a
// descriptor or their deadline), so that a test can tell a wake-up from a
// pulse. Process-wide; true by default.
void set_wait_pulse(bool on) noexcept;
// Test hook: true makes waits take the path of a kernel without
// futex_waitv (ENOSYS): the first word, in bounded slices. Process-wide;
// false by default. fallback_sleeps() counts the sleeps taken that way.
void set_wait_fallback(bool on) noexcept;
[[nodiscard]] std::uint64_t fallback_sleeps() noexcept;

// Something a queue drives when it is read (an endpoint's progress engine).
class progressable {
 public:
  virtual ~progressable() = default;
  virtual void progress() noexcept = 0;
  // Blocking waits: arm() asks peers to ring a doorbell and returns the
  // futex word to sleep on (nullptr if it cannot); disarm() undoes it.
  virtual std::atomic<std::uint32_t>* arm() noexcept { return nullptr; }
  virtual void disarm() noexcept {}
  // Or a file descriptor that polls readable when progress has work (epoll).
  [[nodiscard]] virtual int wait_fd() const noexcept { return -1; }
  // Called before a queue sleeps on wait_fd(): every event must reach it.
  virtual void prepare_sleep() noexcept {}
  // Blocking waits on queue, a CQ (after arm()); where it is the CQ of this
  // source's sends,
  // peers that refused a post for a full ring (again_reason::peer_busy) are
  // told that a sender wants room, and their room words are appended to
  // words[n..] (up to words.size()). True when room is already there (the
  // wait returns again: retry the post); the source then forgets those peers.
  [[nodiscard]] virtual bool arm_room(const void* queue, std::span<wait_word> words, std::size_t& n) noexcept {
    (void)queue;
    (void)words;
    (void)n;
    return false;
  }
  // Whether a sleeping wait must wake every pulse_ns to drive this source
  // (dead-peer checks while operations are outstanding). A source without
  // a word or a descriptor always needs it.
  [[nodiscard]] virtual bool needs_pulse() const noexcept { return true; }
  // Whether a wait on an event queue bound to this source must pulse: the
  // source's liveness checks, which report dead peers there, have peers to
  // watch (or needs_pulse()). Otherwise an EQ wait sleeps on its words only.
  [[nodiscard]] virtual bool needs_liveness() const noexcept { return needs_pulse(); }
};

// How many sources this thread has driven so far, through any queue of any
// provider (counted before each call). A source that finds the count one
// above what it saw at its previous call knows that the application came
// straight back to it and polled nothing else in between.
[[nodiscard]] std::uint64_t thread_progress_calls() noexcept;

class progress_group {
 public:
  progress_group() noexcept;
  progress_group(const progress_group&) = delete;
  progress_group& operator=(const progress_group&) = delete;
  ~progress_group();
  void attach(progressable* p);
  void detach(progressable* p) noexcept;
  // Drives every attached source once; re-entry (from a callback) is refused.
  void progress() noexcept;
  // Objects of an automatic-progress domain share its lock with the queues
  // they are bound to. A queue serves one such domain at most: false if it
  // already belongs to another. release_lock() when such an object unbinds.
  [[nodiscard]] bool set_lock(std::recursive_mutex* m) noexcept;
  void release_lock(std::recursive_mutex* m) noexcept;
  [[nodiscard]] bool lock_in_use() const noexcept { return lock_ != nullptr; }
  // The lock of the sources list, held while sources are driven, armed and
  // disarmed (never while a wait sleeps). A source that goes away holds it
  // from its first teardown step to its detach(), so that no wait on
  // another thread drives or arms it half-destroyed.
  [[nodiscard]] std::unique_lock<std::recursive_mutex> hold() const noexcept {
    return std::unique_lock<std::recursive_mutex>(sources_mu_);
  }

 protected:
  [[nodiscard]] std::unique_lock<std::recursive_mutex> guard() const noexcept {
    return lock_ ? std::unique_lock<std::recursive_mutex>(*lock_) : std::unique_lock<std::recursive_mutex>();
  }
  // How a blocking wait slept (wait.cpp): what it armed, and why it woke.
  struct armed {
    wait_word words[max_wait_words];
    std::size_t n = 0;       // words to sleep on (doorbells, then room words)
    std::size_t doorbells = 0;  // words[0, doorbells) are the sources' own doorbells
    bool room = false;       // room appeared at a busy peer: return again
    bool pulse = false;      // a source needs the pulse
    bool wordless = false;   // a source has neither a word nor a descriptor
    int fd = -1;             // a source's descriptor (tcp)
    bool fd_too = false;     // sources with words and one with a descriptor: slices
    std::size_t sources = 0;  // how many sources were armed
    std::uint32_t detach_seen = 0;  // detached_ when armed (a sleep on fd ends when it changes)
    std::uint32_t posted_seen = 0;  // posted_ when armed (likewise)
    std::size_t own = 0;            // words of this group's own at the end (posted_, detached_)
  };
  enum class woke : std::uint8_t { word, timer, deadline };
  // Arms every source (arm(), then arm_room() when room counts), as one wait
  // does. liveness: an EQ wait, whose pulse follows needs_liveness().
  // posted: the sleep also ends when posted() is called (posted_ changes).
  // In an automatic-progress domain (lock_in_use()) a source's descriptor is
  // not polled: the domain's thread drains it, and could take its events
  // between the waiter's check and its poll() (a wake-up lost until the
  // pulse). The wait sleeps on posted_ instead, which that thread bumps
  // whenever it pushes what the wait waits for; the pulse goes too (that
  // thread runs the dead-peer checks). Call between begin_sleeps() and
  // end_sleeps() when posted is true.
  void arm_all(armed& a, bool room, bool liveness = false, bool posted = false) noexcept;
  // A wait that may sleep on posted_ counts itself while it may (posted()
  // wakes only when someone sleeps: no system call on the data path else).
  void begin_sleeps() noexcept { sleepers_.fetch_add(1, std::memory_order_seq_cst); }
  void end_sleeps() noexcept { sleepers_.fetch_sub(1, std::memory_order_seq_cst); }
  // What a wait waits for was pushed or changed (a completion, an event, a
  // counter's value): a wait asleep on this group wakes. From any thread.
  void posted() noexcept {
    posted_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst)) wake_sleepers();
  }
  void disarm_all() noexcept;
  // Sleeps until deadline (absolute, now_ns() clock; ~0 none), a word of a
  // changes, a source is detached (detached_), or the pulse is due. It
  // dereferences no source: the words are read by the kernel only (a word
  // of a source freed meanwhile reads as changed, or fails: a wake-up). Falls back to slices where futex_waitv is
  // missing (ENOSYS) or words and a descriptor must be watched together.
  // Counts the wake-up (wake_stats()).
  woke sleep_armed(const armed& a, std::uint64_t deadline) noexcept;
  // Sleeps of this group's waits woken by a word, and by the pulse or a slice.
  [[nodiscard]] sleep_stats wake_stats() const noexcept {
    return sleep_stats{word_wakes_.load(std::memory_order_relaxed), timer_wakes_.load(std::memory_order_relaxed), 0};
  }
  // How many sources were detached so far (a wait that sees it change
  // returns: an endpoint it waited for was closed meanwhile).
  [[nodiscard]] std::uint32_t detach_count() const noexcept { return detached_.load(std::memory_order_seq_cst); }
  std::vector<progressable*> sources_;  // under sources_mu_

 private:
  mutable std::recursive_mutex sources_mu_;
  // Bumped (and woken) by detach(): a wait armed before sleeps on it too, so
  // it leaves a sleep on the words of a source that is going away.
  std::atomic<std::uint32_t> detached_{0};
  // An eventfd that detach() writes, polled with a source's descriptor: a
  // wait asleep in poll() (tcp) wakes when an endpoint is closed. Made at the
  // first wait that sleeps on a descriptor (-1 before, or if it could not be:
  // such a sleep then wakes every pulse_ns to look).
  std::atomic<int> wake_fd_{-1};
  // The process that made this queue (its fork generation, see
  // progress.cpp): after fork() the eventfd is shared with it, and a forked
  // child's detach() (its teardown of the copies it inherited) must not
  // write it (the parent's wait would wake for nothing).
  std::uint32_t creator_gen_;
  std::atomic<std::uint64_t> word_wakes_{0}, timer_wakes_{0};
  // Bumped by posted(); waits between begin_sleeps() and end_sleeps().
  std::atomic<std::uint32_t> posted_{0};
  std::atomic<std::uint32_t> sleepers_{0};
  void wake_sleepers() noexcept;  // futex wake on posted_, and the eventfd
  woke sleep_uncounted(const armed& a, std::uint64_t deadline) const noexcept;
  std::recursive_mutex* lock_ = nullptr;
  int lock_users_ = 0;
  bool in_progress_ = false;
};

}  // namespace weft::spi

// Access slots (docs/wire/shm.md, "Access slots"): claiming one in a peer's
// region, giving it back, and the owner's wait when it revokes a key.
#include "prov/shm/access.hpp"

#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

#include "prov/shm/region.hpp"
#include "util/clock.hpp"
#include "util/relax.hpp"

namespace weft::prov::shm {

namespace {

constexpr std::uint64_t retry_claim_ns = 100'000'000;  // none free: try again after this
constexpr int spin_rounds = 2000;                      // then sleep between rounds
constexpr long max_pause_ns = 1'000'000;
// A holder whose liveness cannot be proven (/proc unreadable, its pid taken)
// is waited for this long, then taken as dead.
constexpr std::uint64_t unproven_holder_ns = 2'000'000'000;

// State and start time of a process (/proc/PID/stat, read through the
// reserve descriptor when none is left: region.cpp read_proc_stat). 1: read;
// 0: no such process; -1: cannot tell (e.g. hidepid); errno says why.
int read_stat(pid_t pid, char& state, std::uint64_t& start) noexcept {
  proc_stat st;
  const int e = read_proc_stat(pid, st);
  if (e == 0) {
    state = st.state;
    start = st.start;
    return 1;
  }
  if (e == ENOENT || e == ESRCH) return 0;
  errno = e;
  return -1;
}

// What holder words say about this process: (pid << 32) | low bits of its
// start time (0 if that cannot be read).
std::uint64_t self_word() noexcept {
  const pid_t pid = ::getpid();
  char state;
  std::uint64_t start = 0;
  if (read_stat(pid, state, start) != 1) return 0;
  return (std::uint64_t{static_cast<std::uint32_t>(pid)} << 32) | (start & 0xffffffffu);
}

// Whether the process a holder word names still runs: proven alive (its pid
// runs with its start time), proven dead (no such process, a zombie, or a
// new process with its pid and another start time), or unknown (/proc
// cannot be read, e.g. no descriptor left or hidepid, and a process with
// the pid exists: it may be a new one, so a reused pid proves nothing).
enum class holder_state : std::uint8_t { alive, dead, unknown };
holder_state holder_liveness(std::uint64_t w) noexcept {
  const auto pid = static_cast<pid_t>(w >> 32);
  char state = 0;
  std::uint64_t start = 0;
  switch (read_stat(pid, state, start)) {
    case 0: return holder_state::dead;
    case 1:
      return state != 'Z' && state != 'X' && (start & 0xffffffffu) == (w & 0xffffffffu) ? holder_state::alive
                                                                                         : holder_state::dead;
    default: {
      const int proc_err = errno;  // why /proc said nothing (kept for the caller's report)
      const bool none = ::kill(pid, 0) != 0 && errno == ESRCH;
      errno = proc_err;
      return none ? holder_state::dead : holder_state::unknown;
    }
  }
}
// Claiming a slot: one whose holder is not proven dead stays its holder's.
bool holder_alive(std::uint64_t w) noexcept { return holder_liveness(w) != holder_state::dead; }

int membarrier(int cmd) noexcept { return static_cast<int>(::syscall(SYS_membarrier, cmd, 0, 0)); }

// Registered (in this process generation) to receive the owners' barriers.
std::atomic<std::uint32_t> fence_generation{~0u};
bool registered_for_fences(std::uint32_t gen) noexcept {
  if (fence_generation.load(std::memory_order_relaxed) == gen) return true;
  if (membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0) return false;
  fence_generation.store(gen, std::memory_order_relaxed);
  return true;
}

}  // namespace

bool access_claim::acquire(mapping& m) noexcept {
  util::count_forks();
  const std::uint32_t gen = util::fork_generation();
  if (slot_ && generation_ == gen) return true;
  if (generation_ != gen) {  // claimed by the process we were forked from: not ours to use or give back
    slot_ = nullptr;
    generation_ = gen;
    retry_ns_ = 0;
  }
  const std::uint64_t now = util::now_ns();
  if (now < retry_ns_) return false;
  retry_ns_ = now + retry_claim_ns;
  const std::uint64_t me = self_word();
  if (me == 0) return false;
  access_slot* s = m.access_slots();
  const std::uint32_t n = m.access_count();
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t i = 0; i < n; ++i) {
      std::uint64_t w = s[i].holder.load(std::memory_order_acquire);
      // first pass: free slots; second: slots of dead holders
      if (pass == 0 ? w != 0 : (w == 0 || holder_alive(w))) continue;
      if (!s[i].holder.compare_exchange_strong(w, me, std::memory_order_acq_rel)) continue;
      s[i].key.store(0, std::memory_order_relaxed);
      // Make the owner scan this slot from now on (before our first access).
      std::uint32_t used = m.hdr()->access_used.load(std::memory_order_relaxed);
      while (used < i + 1 &&
             !m.hdr()->access_used.compare_exchange_weak(used, i + 1, std::memory_order_seq_cst)) {
      }
      slot_ = &s[i];
      light_ = (m.hdr()->flags.load(std::memory_order_acquire) & region_flag::fenced_access) &&
               registered_for_fences(gen);
      word_ = me;
      retry_ns_ = 0;
      return true;
    }
  }
  return false;
}

void access_claim::release() noexcept {
  if (!slot_ || generation_ != util::fork_generation()) return;
  slot_->key.store(0, std::memory_order_release);
  std::uint64_t w = word_;
  (void)slot_->holder.compare_exchange_strong(w, 0, std::memory_order_acq_rel);
  slot_ = nullptr;
}

void wait_unaccessed(const mapping& self, std::uint64_t key) noexcept {
  // The entry was cleared before this fence; a peer that announced key in
  // its slot before reading the entry is seen below, any later one sees
  // the cleared entry.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (self.access_used() == 0) return;  // no peer ever claimed a slot (one that does now sees the entry)
  // Holders that announce with plain stores: a barrier in each of their
  // running threads, so that their announcement is visible below or their
  // read of the entry comes after our clearing of it.
  if ((self.hdr()->flags.load(std::memory_order_relaxed) & region_flag::fenced_access) &&
      membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0)
    (void)membarrier(MEMBARRIER_CMD_GLOBAL);  // slower, needs no registration
  access_slot* s = self.access_slots();
  long pause_ns = 10'000;
  std::uint64_t doubt_since = 0;  // when a holder's liveness was first unknown (0: not yet)
  for (int round = 0;; ++round) {
    const std::uint32_t used = self.access_used();
    bool busy = false, doubted = false;
    for (std::uint32_t i = 0; i < used; ++i) {
      if (s[i].key.load(std::memory_order_acquire) != key) continue;
      std::uint64_t w = s[i].holder.load(std::memory_order_acquire);
      if (w == 0) continue;  // a stale key in a free slot
      if (round >= spin_rounds) {
        const holder_state hs = holder_liveness(w);
        bool gone = hs == holder_state::dead;
        if (hs == holder_state::unknown) {
          doubted = true;
          const std::uint64_t now = util::now_ns();
          if (doubt_since == 0) doubt_since = now;
          if (now - doubt_since >= unproven_holder_ns) {
            // Not proven alive for that long: a reused pid would keep us here
            // for ever. Taken as dead, and said so.
            std::fprintf(stderr,
                         "weft shm: closing memory region key %llu: access slot %u holder pid %u could not be "
                         "proven alive for %llu ms (/proc/%u/stat unreadable: %s); taking it as dead (a holder "
                         "that still runs must not touch the region any more)\n",
                         static_cast<unsigned long long>(key), i, static_cast<unsigned>(w >> 32),
                         static_cast<unsigned long long>(unproven_holder_ns / 1'000'000),
                         static_cast<unsigned>(w >> 32), std::strerror(errno));
            gone = true;
          }
        }
        if (gone) {
          (void)s[i].holder.compare_exchange_strong(w, 0, std::memory_order_acq_rel);  // free it for others
          continue;
        }
      }
      busy = true;
    }
    if (!busy) return;
    if (!doubted) doubt_since = 0;  // the doubt is about a holder unknown without a break
    if (round < spin_rounds) {
      util::cpu_relax();
      continue;
    }
    // A holder still copying a piece, or stopped (a debugger, SIGSTOP)
    // inside an access: wait for it to end its access or to die.
    timespec ts{0, pause_ns};
    ::nanosleep(&ts, nullptr);
    pause_ns = std::min(pause_ns * 2, max_pause_ns);
  }
}

void advertise_fences(mapping& self) noexcept {
  keep_proc_reserve();
  const int cmds = membarrier(MEMBARRIER_CMD_QUERY);
  if (cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED))
    self.hdr()->flags.fetch_or(region_flag::fenced_access, std::memory_order_release);
}

}  // namespace weft::prov::shm

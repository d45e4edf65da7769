#pragma once
// Test hooks of the tcp provider: fault injection for tests (exported from
// libweft; never set in production, where each is a relaxed load of zero).
#include <atomic>
#include <cstdint>

namespace weft::prov::tcp::test_hooks {

// The next n connreq events of passive endpoints fail to allocate (as if
// the event queue were out of memory).
extern std::atomic<int> fail_connreq_events;
// The next n connections accepted by a listener (RDM endpoint or passive
// endpoint) fail to allocate their state (as if out of memory).
extern std::atomic<int> fail_accepts;
// The next n hellos an RDM endpoint receives fail to allocate what taking
// the connection needs (as if out of memory).
extern std::atomic<int> fail_hellos;

// Called by av_impl::insert once it holds the domain's lock, before it
// changes the table (a test holds an insert open there).
extern std::atomic<void (*)()> av_insert_hook;
// Counts av_impl::reverse calls (a connection's hello looking its peer up).
extern std::atomic<int> av_reverses;

// Iterations of the automatic-progress threads' loops (each: one poll()).
extern std::atomic<std::uint64_t> progress_loops;

// The next n engine::add calls (epoll_ctl ADD) fail with ENOSPC.
extern std::atomic<int> fail_epoll_adds;

// When non-zero, the next send of a read answer sent from a region's
// memory (or of its poisoned rest) takes at most that many bytes, and the
// hook goes back to zero (a partial send, as a full socket buffer makes).
extern std::atomic<int> answer_send_cap;
// The next n copies revoke_answer makes of a read answer's unsent rest
// fail to allocate (as if out of memory).
extern std::atomic<int> fail_revoke_copies;
// Called by engine::poll while it holds the dispatch lock, before it
// dispatches (a test parks a thread there, holding the lock).
extern std::atomic<void (*)()> dispatch_hook;

// Take one failure from a hook's count: true if the caller should fail.
inline bool take(std::atomic<int>& n) noexcept {
  int v = n.load(std::memory_order_relaxed);
  while (v > 0)
    if (n.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) return true;
  return false;
}

}  // namespace weft::prov::tcp::test_hooks

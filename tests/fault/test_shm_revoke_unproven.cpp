// shm: closing a memory region waits for the peers' access slots that hold
// its key (docs/wire/shm.md "Access slots"). A holder is known by its pid and
// start time; when /proc cannot be read (here: no descriptor left) and the
// pid is taken by another process (here: the test's own parent, or pid 1),
// the owner reads /proc through a descriptor it keeps in reserve, so a
// holder is still proven alive or dead: a reused pid frees the slot at once,
// and a live holder is waited for. Only when /proc cannot tell at all (e.g.
// hidepid) is such a holder taken as dead after a while (and said so on
// stderr), instead of the close waiting for ever.
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "common/limited_child.hpp"
#include "common/shm_view.hpp"
#include "fault/shm_peer.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// The holder word of a running process: pid and the low bits of its start
// time (field 22 of /proc/PID/stat), as access slots hold it.
std::uint64_t holder_word_of(pid_t pid) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char buf[1024] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* q = std::strrchr(buf, ')');
  if (!q) return 0;
  q += 2;
  for (int field = 3; field < 22 && *q; ++q)
    if (*q == ' ') ++field;
  const std::uint64_t start = std::strtoull(q, nullptr, 10);
  return (std::uint64_t{static_cast<std::uint32_t>(pid)} << 32) | (start & 0xffffffffu);
}

// Runs in a forked child (descriptors are exhausted). holder_pid: a live
// process that is not the holder; word: the holder word to plant (0: one with
// holder_pid and a start time that does not match). With a matching word,
// the holder is alive: close must wait until the slot is given back.
std::string unproven_scenario(pid_t holder_pid, std::uint64_t planted = 0) {
  ::setenv("WEFT_SHM_CMA", "1", 1);
  ::setenv("WEFT_SHM_SLOTS", "16", 1);
  if (!limit_descriptors(64)) return "setrlimit failed";
  node t = open_node("shm", cap::msg);
  if (!(t.inf.caps & cap::rma)) return "skip";
  static std::uint64_t mem[8];
  auto m = t.dom.register_memory(mem, sizeof mem, access::remote_write | access::remote_read);
  if (!m) return "register: " + m.error().message;
  auto key = m->key();
  if (!key) return "no key";
  hostile_view v(*t.ep.name());
  if (!v.ok() || v.h->access_count == 0) return "cannot map the region's access slots";
  // A holder that claimed slot 0 and is inside an access to the key: its pid
  // now runs another process (the start time does not match).
  auto* slots = reinterpret_cast<weft::prov::shm::access_slot*>(static_cast<std::byte*>(v.base) + v.h->access_offset);
  const std::uint64_t word =
      planted ? planted : (std::uint64_t{static_cast<std::uint32_t>(holder_pid)} << 32) | 0x5eed1234u;
  slots[0].holder.store(word);
  slots[0].key.store(*key);
  std::uint32_t used = v.h->access_used.load();
  while (used < 1 && !v.h->access_used.compare_exchange_weak(used, 1)) {
  }
  if (!warm_up({&t})) return "cancel of nothing";
  // ... and the pairs a region's close meets (UBSan's vptr check, see
  // warm_up): close another region once, with the planted slot in place.
  static std::uint64_t other[8];
  auto warm = t.dom.register_memory(other, sizeof other, access::remote_write | access::remote_read);
  if (!warm) return "register: " + warm.error().message;
  warm->close();
  std::string out;
  if (planted) {
    // A live holder: close waits for it, however long, until it gives the
    // slot back (before the reserve descriptor: taken as dead after 2 s).
    // The closing thread starts before descriptors run out and ends after
    // they are back (UBSan's vptr check of the thread's state needs one).
    std::mutex mu;
    std::condition_variable cv;
    bool go = false, closed = false, released = false, released_at_close = false, may_end = false;
    std::thread closer([&] {
      {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return go; });
      }
      m->close();
      std::unique_lock lk(mu);
      closed = true;
      released_at_close = released;
      cv.notify_all();
      cv.wait(lk, [&] { return may_end; });  // its end, too, is checked by UBSan: after the descriptors are back
    });
    bool exhausted = false;
    std::vector<int> filler = use_up_descriptors(exhausted);
    {
      std::unique_lock lk(mu);
      go = true;
      cv.notify_all();
      if (exhausted)
        cv.wait_for(lk, std::chrono::seconds(4), [&] { return closed; });  // a close that wrongly returns
      released = true;
    }
    slots[0].holder.store(0);  // the holder ends its access
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return closed; });
    }
    give_back(filler);
    {
      std::lock_guard lk(mu);
      may_end = true;
      cv.notify_all();
    }
    closer.join();
    if (!exhausted) return "descriptors not exhausted with EMFILE";
    if (!released_at_close) out += "close returned while a live holder was inside an access\n";
    return out.empty() ? "ok" : out;
  }
  bool exhausted = false;
  std::vector<int> filler = use_up_descriptors(exhausted);
  if (!exhausted) return "descriptors not exhausted with EMFILE";
  m->close();  // before the fix: waits for ever (the run's deadline kills it)
  give_back(filler);
  if (slots[0].holder.load() != 0) out += "the unproven holder's slot was not freed\n";
  return out.empty() ? "ok" : out;
}

void check(pid_t holder_pid, std::uint64_t planted = 0) {
  const child_verdict v =
      run_in_child([holder_pid, planted] { return unproven_scenario(holder_pid, planted); }, std::chrono::seconds(30));
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe()
                                    << " (a close that waits for ever for a holder it cannot prove alive)";
  if (v.text == "skip") GTEST_SKIP() << "no RMA on shm here (cross-memory attach unavailable)";
  EXPECT_EQ(v.text, "ok");
}

}  // namespace

TEST(shm_revoke_unproven, close_returns_when_a_holder_pid_runs_another_process_and_proc_is_unreadable) {
  check(::getpid());  // the child's parent: alive, same user, not the holder
}

TEST(shm_revoke_unproven, close_returns_when_a_holder_pid_is_pid_1_and_proc_is_unreadable) {
  check(1);  // alive, another user's (kill answers EPERM), not the holder
}

TEST(shm_revoke_unproven, close_waits_for_a_live_holder_when_no_descriptor_is_left) {
  const std::uint64_t w = holder_word_of(::getpid());  // the child's parent: alive, and this is its word
  ASSERT_NE(w, 0u) << "cannot read this process's /proc entry";
  check(::getpid(), w);
}

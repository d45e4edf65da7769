#pragma once
// Memory regions (cf. fi_mr(3)): a buffer registered with access rights and
// an unpredictable 64-bit key that peers name in RMA operations; the
// per-domain registry behind them (keys, the registration cache, the memory
// monitor, persistent regions and the commit handler). docs/rma.md.
#include <cstddef>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "weft/error.hpp"
#include "weft/monitor.hpp"
#include "weft/mr.hpp"
#include "weft/pmem.hpp"
#include "weft/types.hpp"

namespace weft {

namespace spi {

class mr_registry;

// Live keys per domain; a key's low bits name its slot (0 .. mr_key_slots-1),
// so a provider can publish regions in a table peers index directly.
inline constexpr std::uint32_t mr_key_slots = 16384;
[[nodiscard]] constexpr std::uint32_t mr_key_slot(std::uint64_t key) noexcept {
  return static_cast<std::uint32_t>(key & (mr_key_slots - 1));
}

// Told (under the registry's lock, so in order) when a key becomes usable
// and when it is revoked (region closed, or its memory went away); then,
// outside the lock, asked to wait for the accesses that found the key
// before (drain()): a slow peer access holds up the region's close, never
// another registration, lookup or close of the process.
class mr_observer {
 public:
  virtual ~mr_observer() = default;
  // tag: what the provider attached at registration (0: nothing)
  virtual void published(std::uint64_t key, std::byte* addr, std::size_t len, std::uint64_t access,
                         std::uint64_t tag) noexcept = 0;
  // Under the lock: no access may find key from now on (quick, no waiting).
  virtual void revoked(std::uint64_t key) noexcept = 0;
  // Without the lock, after revoked(key): returns once no access that found
  // key before is under way. The observer is not removed meanwhile.
  virtual void drain(std::uint64_t key) noexcept { (void)key; }
};

class mr {
 public:
  mr() = default;
  mr(const mr&) = delete;
  mr& operator=(const mr&) = delete;
  virtual ~mr();
  [[nodiscard]] std::uint64_t key() const noexcept { return key_; }
  [[nodiscard]] std::byte* addr() const noexcept { return addr_; }
  [[nodiscard]] std::size_t len() const noexcept { return len_; }
  [[nodiscard]] std::uint64_t access() const noexcept { return access_; }
  [[nodiscard]] flush_method persist() const noexcept { return persist_; }
  [[nodiscard]] bool cache_hit() const noexcept { return hit_; }
  // Memory the region owns (domain::alloc_memory): released after the key is revoked.
  void own(std::shared_ptr<void> memory) noexcept { owned_ = std::move(memory); }

 private:
  friend class mr_registry;
  std::shared_ptr<void> owned_;  // declared first: released after the destructor revoked the key
  std::shared_ptr<mr_registry> reg_;
  std::uint64_t key_ = 0;
  std::byte* addr_ = nullptr;
  std::size_t len_ = 0;
  std::uint64_t access_ = 0;
  flush_method persist_ = flush_method::none;
  bool hit_ = false;
};

// A region as a local memory descriptor (memory_region::desc()) and back,
// for providers that need registered local buffers (info.domain.mr_local):
// such a provider checks that each desc of an operation names a live region
// of its domain that covers the buffer with the right local access.
[[nodiscard]] inline mr_desc to_desc(const mr* m) noexcept {
  return static_cast<mr_desc>(reinterpret_cast<std::uintptr_t>(m));
}
[[nodiscard]] inline const mr* from_desc(mr_desc d) noexcept {
  return reinterpret_cast<const mr*>(static_cast<std::uintptr_t>(d));
}

// A target's use of the memory find() returned, for a copy made without the
// registry's lock: the region's close waits until it is dropped (at the
// latest when the hold goes). Move-only; no allocation.
class mr_hold {
 public:
  mr_hold() = default;
  mr_hold(const mr_hold&) = delete;
  mr_hold& operator=(const mr_hold&) = delete;
  ~mr_hold() { drop(); }
  void drop() noexcept;

 private:
  friend class mr_registry;
  mr_registry* reg_ = nullptr;
  void* entry_ = nullptr;
  std::uint32_t gen_ = 0;  // util::fork_generation() when taken: a forked child's copy is not its hold
};

// One per domain. Registration and monitor calls are the control path;
// find() and commit() are the target's data path (a mutex, no allocation).
class mr_registry : public std::enable_shared_from_this<mr_registry> {
 public:
  mr_registry();
  ~mr_registry();
  mr_registry(const mr_registry&) = delete;
  mr_registry& operator=(const mr_registry&) = delete;

  // tag: provider data published with the key (0: none); part of the cache match.
  result<std::shared_ptr<mr>> register_memory(void* buf, std::size_t len, std::uint64_t access,
                                              std::uint64_t tag = 0);
  // Replaces the monitor for this domain (the default one otherwise starts
  // at the first registration). Cached entries are subscribed again.
  result<void> import_monitor(std::shared_ptr<memory_monitor> m);
  void set_commit_handler(commit_handler h);
  [[nodiscard]] mr_cache_stats stats() const;
  [[nodiscard]] std::string monitor_name() const;

  // Target side: the memory a remote access of len bytes at offset of the
  // region named by key may touch, if the region grants every right in need.
  // not_found (no such key, closed, or its memory went away),
  // permission_denied, invalid_argument (outside the region).
  [[nodiscard]] errc find(std::uint64_t key, std::uint64_t offset, std::uint64_t len, std::uint64_t need,
                          std::byte*& where) noexcept;
  // The same, for a copy made after the lookup: on ok, hold keeps the
  // region's close from returning until hold.drop() (keep the copy bounded).
  [[nodiscard]] errc find(std::uint64_t key, std::uint64_t offset, std::uint64_t len, std::uint64_t need,
                          std::byte*& where, mr_hold& hold) noexcept;
  // Target side of a commit: flushes [offset, offset + len) of a persistent
  // region (a SAVE: the whole region) and asks the handler. ok, the
  // handler's answer, not_found, or io_error when flushing failed.
  [[nodiscard]] errc commit(commit_event::kind what, std::uint64_t key, std::uint64_t offset, std::uint64_t len,
                            std::uint64_t level) noexcept;

  // from the monitor: memory in [addr, addr + len) went away
  void notify(const void* addr, std::size_t len) noexcept;

  // An observer is told about every live key at once, then about changes.
  void add_observer(mr_observer* o);
  void remove_observer(mr_observer* o) noexcept;
  // Both return once no close is draining o on another thread.
  // An observer that published keys where others use them (shm: its
  // region's table): told that every live key is revoked (under one hold
  // of the lock) and drained, then removed; a region closed meanwhile on
  // another thread still drains through it, so that close returns only
  // once no access to its key is under way.
  void withdraw_observer(mr_observer* o) noexcept;

 private:
  struct entry;
  friend class mr;
  friend class mr_hold;
  struct observer_use {
    mr_observer* o = nullptr;
    std::uint32_t pins = 0;    // closes draining it outside the lock, in fork generation pins_gen
    std::uint32_t pins_gen = 0;  // a forked child's copy counts its parent's pins: not to be waited for
    bool withdrawn = false;    // being withdrawn: no more published()
  };
  void unhold(void* e) noexcept;
  void release(mr& m) noexcept;
  // With mu_ held: every observer's revoked(key), and a pin on each (the
  // ones to drain); then each drained without the lock and unpinned (with
  // it) as soon as its own drain returned: drain_pinned().
  void revoke_and_pin(std::uint64_t key, std::vector<mr_observer*>& pinned) noexcept;
  void drain_pinned(std::unique_lock<std::mutex>& lk, std::uint64_t key,
                    const std::vector<mr_observer*>& pinned) noexcept;
  static void pin(observer_use& u) noexcept;
  void unpin(mr_observer* o) noexcept;
  [[nodiscard]] static bool pinned_here(const observer_use& u) noexcept;
  void remove_when_unpinned(std::unique_lock<std::mutex>& lk, mr_observer* o) noexcept;
  result<void> ensure_monitor();  // with mu_ held
  void trim() noexcept;           // with mu_ held: bounds the idle entries

  mutable std::mutex mu_;
  std::condition_variable unheld_;  // a hold of a closing entry was dropped, or a pin of an observer
  std::unordered_map<std::uint64_t, std::shared_ptr<entry>> by_key_;  // live keys
  std::vector<std::shared_ptr<entry>> entries_;                     // every cached entry
  std::shared_ptr<memory_monitor> monitor_;
  bool monitor_started_ = false;
  std::shared_ptr<const commit_handler> handler_;
  mr_cache_stats stats_;
  std::size_t max_idle_ = 256;
  std::uint64_t clock_ = 0;  // for least-recently-used eviction
  std::vector<std::uint32_t> free_slots_;
  std::vector<observer_use> observers_;
};

}  // namespace spi
}  // namespace weft

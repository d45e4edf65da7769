// The per-domain memory registration registry: random keys, a registration
// cache whose entries a memory monitor invalidates, persistent regions and
// the commit handler (docs/rma.md).
#include <sys/random.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "util/creator_process.hpp"
#include "util/persist.hpp"
#include <sys/mman.h>
#include <unistd.h>

#include "weft/spi/mr.hpp"
#include "weft/spi/provider.hpp"

namespace weft::spi {

// A cached registration: the classification of its memory and its monitor
// subscription outlive the regions using it; the key does not (closing the
// last region revokes it at once; a later hit draws a new one).
struct mr_registry::entry {
  std::byte* addr = nullptr;
  std::size_t len = 0;
  std::uint64_t access = 0;
  flush_method persist = flush_method::none;
  std::uint64_t key = 0;   // 0 while no region uses the entry
  std::size_t users = 0;   // regions (handles) using the key
  bool valid = true;       // false once the monitor said the memory went away
  bool subscribed = false;
  std::uint64_t last_use = 0;
  std::uint64_t tag = 0;
  std::uint32_t holds = 0;  // copies under way (find() with a hold), taken in fork generation holds_gen
  std::uint32_t holds_gen = 0;  // a forked child's copy counts its parent's holds: not to be waited for
  bool closing = false;     // its last region's close waits for holds to end
};

mr::~mr() {
  if (reg_) reg_->release(*this);
}

mr_registry::mr_registry() {
  util::count_forks();  // holds remember the process (generation) that took them
  if (const char* v = std::getenv("WEFT_MR_CACHE_MAX")) max_idle_ = std::strtoull(v, nullptr, 10);
  free_slots_.reserve(mr_key_slots);
  for (std::uint32_t i = mr_key_slots; i-- > 0;) free_slots_.push_back(i);
}

mr_registry::~mr_registry() {
  // stop() drops every subscription and waits for a notify in progress (which
  // takes mu_): after it, nothing touches entries_ any more.
  if (monitor_ && monitor_started_) monitor_->stop();
}

namespace {
std::uint64_t draw_key() noexcept {
  std::uint64_t k = 0;
  if (::getrandom(&k, sizeof k, 0) != static_cast<ssize_t>(sizeof k)) return 0;
  return k;
}
}  // namespace

result<void> mr_registry::ensure_monitor() {
  if (monitor_started_) return {};
  if (!monitor_) {
    auto m = make_default_monitor();
    if (!m) return std::unexpected(m.error());
    monitor_ = std::move(*m);
  }
  // The registry outlives nothing it hands out: regions hold it alive, and
  // the destructor stops the monitor before the registry goes.
  auto r = monitor_->start([this](const void* a, std::size_t l) { notify(a, l); });
  if (!r) return r;
  monitor_started_ = true;
  return {};
}

result<std::shared_ptr<mr>> mr_registry::register_memory(void* buf, std::size_t len, std::uint64_t acc,
                                                         std::uint64_t tag) {
  auto* a = static_cast<std::byte*>(buf);
  std::lock_guard lk(mu_);
  ++clock_;
  std::shared_ptr<entry> e;
  // Only an entry the monitor watches can be reused: without a
  // subscription nothing says the memory is still the same.
  for (auto& x : entries_)
    if (x->addr == a && x->len == len && x->access == acc && x->tag == tag && x->valid && x->subscribed &&
        !x->closing && monitor_started_) {
      e = x;
      break;
    }
  if (e && !monitor_->valid(a, len)) {
    // changed behind our back (a range the monitor checks rather than watches)
    e->valid = false;
    ++stats_.invalidations;
    if (e->users == 0) {
      monitor_->unsubscribe(e->addr, e->len);
      std::erase(entries_, e);
    }
    e.reset();
  }
  bool hit = e != nullptr;
  if (!e) {
    e = std::make_shared<entry>();
    e->addr = a;
    e->len = len;
    e->access = acc;
    e->tag = tag;
    if (acc & access::persistent) {
      auto m = util::classify_range(buf, len);
      if (!m) return std::unexpected(m.error());
      e->persist = *m;
    }
    // live entries are watched even without caching: the monitor also
    // revokes keys whose memory went away
    if (auto r = ensure_monitor(); r) e->subscribed = monitor_->subscribe(buf, len).has_value();
    entries_.push_back(e);
    ++stats_.misses;
  } else {
    ++stats_.hits;
  }
  if (e->key == 0) {
    std::uint64_t k = 0;
    if (!free_slots_.empty()) {
      // random high bits, the slot in the low ones (never 0)
      const std::uint64_t slot = free_slots_.back();
      for (int i = 0; i < 16 && (k == 0 || by_key_.count(k)); ++i) {
        const std::uint64_t r = draw_key() << 14;
        k = r ? (r | slot) : 0;
      }
    }
    if (k == 0 || by_key_.count(k)) {
      if (free_slots_.empty()) {
        if (!hit) {
          if (e->subscribed) monitor_->unsubscribe(e->addr, e->len);
          entries_.pop_back();
        }
        return make_error(errc::no_memory, "too many live memory regions in this domain (" +
                                               std::to_string(mr_key_slots) + "): close some");
      }
      if (!hit) {
        if (e->subscribed) monitor_->unsubscribe(e->addr, e->len);
        entries_.pop_back();
      }
      return make_error(errc::io_error, "cannot draw a random key (getrandom failed)");
    }
    e->key = k;
    free_slots_.pop_back();
    by_key_[k] = e;
    for (auto& u : observers_)
      if (!u.withdrawn) u.o->published(k, e->addr, e->len, e->access, e->tag);
  }
  ++e->users;
  e->last_use = clock_;
  auto m = std::make_shared<mr>();
  m->reg_ = shared_from_this();
  m->key_ = e->key;
  m->addr_ = a;
  m->len_ = len;
  m->access_ = acc;
  m->persist_ = e->persist;
  m->hit_ = hit;
  trim();
  return m;
}

void mr_registry::revoke_and_pin(std::uint64_t key, std::vector<mr_observer*>& pinned) noexcept {
  try {
    pinned.reserve(observers_.size());
  } catch (...) {
    // No memory for the list: every observer drains under the lock (slow
    // accesses then hold up the process's registrations, never a close).
    for (auto& u : observers_) {
      u.o->revoked(key);
      u.o->drain(key);
    }
    return;
  }
  for (auto& u : observers_) {
    u.o->revoked(key);
    pin(u);
    pinned.push_back(u.o);
  }
}

// A pin is taken by a thread of this process: a forked child, where the
// parent's draining threads do not exist, counts its own pins only (the
// first one resets the count), and waits for none of its parent's.
void mr_registry::pin(observer_use& u) noexcept {
  const std::uint32_t gen = util::fork_generation();
  if (u.pins_gen != gen) {
    u.pins_gen = gen;
    u.pins = 0;
  }
  ++u.pins;
}

bool mr_registry::pinned_here(const observer_use& u) noexcept {
  return u.pins != 0 && u.pins_gen == util::fork_generation();
}

void mr_registry::unpin(mr_observer* o) noexcept {
  for (auto& u : observers_)
    if (u.o == o && pinned_here(u) && --u.pins == 0) unheld_.notify_all();
}

// Each observer is unpinned as soon as its own drain returned: a close of
// its endpoint (which holds that endpoint's queues meanwhile) waits for the
// accesses through it only, not for those through another endpoint that a
// stopped peer holds up.
void mr_registry::drain_pinned(std::unique_lock<std::mutex>& lk, std::uint64_t key,
                               const std::vector<mr_observer*>& pinned) noexcept {
  for (auto* o : pinned) {
    lk.unlock();
    o->drain(key);
    lk.lock();
    unpin(o);
  }
}

void mr_registry::release(mr& m) noexcept {
  std::unique_lock lk(mu_);
  auto it = by_key_.find(m.key_);
  if (it == by_key_.end()) return;
  auto e = it->second;
  if (--e->users > 0) return;
  by_key_.erase(it);  // invalid at once
  // Meanwhile no registration reuses the entry, its key's slot stays taken
  // and no trim or monitor report erases it.
  e->closing = true;
  // The observers forget the key under the lock; the accesses that found it
  // before (a peer inside a one-sided copy, however slow) are waited for
  // without it, so that they hold up this close only. The observers are
  // pinned meanwhile: none is removed (its endpoint closed) under the wait.
  std::vector<mr_observer*> pinned;
  revoke_and_pin(e->key, pinned);
  drain_pinned(lk, e->key, pinned);
  // Copies that found it before (two-sided accesses, made without the lock,
  // each bounded): the memory is the application's again only after them.
  // Only those of this process: in a forked child, the holds counted are
  // its parent's, taken by threads that do not exist here, and the child's
  // copy of the memory is its own.
  const std::uint32_t gen = util::fork_generation();
  unheld_.wait(lk, [&] { return e->holds == 0 || e->holds_gen != gen; });
  e->closing = false;
  free_slots_.push_back(mr_key_slot(e->key));
  e->key = 0;
  e->last_use = ++clock_;
  // Memory the region owns (alloc_memory) is unmapped as soon as this
  // returns: its entry is not cached, and its subscription goes first, so
  // that the monitor's report of that unmap (which comes a little later)
  // meets no subscription and cannot revoke a new region at that address.
  const bool owned = m.owned_ != nullptr;
  if (!e->valid || max_idle_ == 0 || !e->subscribed || owned) {
    if (e->subscribed && monitor_) monitor_->unsubscribe(e->addr, e->len);
    std::erase(entries_, e);
  }
  trim();
}

void mr_registry::trim() noexcept {
  std::size_t idle = 0;
  for (auto& e : entries_) idle += e->users == 0;
  while (idle > max_idle_) {
    auto victim = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if ((*it)->users == 0 && !(*it)->closing &&
          (victim == entries_.end() || (*it)->last_use < (*victim)->last_use))
        victim = it;
    if (victim == entries_.end()) break;
    if ((*victim)->subscribed && monitor_) monitor_->unsubscribe((*victim)->addr, (*victim)->len);
    entries_.erase(victim);
    --idle;
  }
}

void mr_registry::notify(const void* addr, std::size_t len) noexcept {
  const auto* lo = static_cast<const std::byte*>(addr);
  const auto* hi = lo + len;
  std::unique_lock lk(mu_);
  // The memory is gone already: the observers forget the keys on it under
  // the lock; the accesses under way to them (rare) are waited for without
  // it, each observer pinned meanwhile, as a close does (release()).
  std::vector<std::uint64_t> keys;
  std::vector<mr_observer*> pinned;
  bool listed = true;
  try {
    keys.reserve(entries_.size());
    pinned.reserve(observers_.size());
  } catch (...) {
    listed = false;  // no memory for the lists: drained under the lock
  }
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto& e = *it;
    if (e->valid && e->addr < hi && lo < e->addr + e->len) {
      e->valid = false;  // live regions on it answer not_found from now on
      if (e->key) {
        for (auto& u : observers_) {
          u.o->revoked(e->key);
          if (!listed) u.o->drain(e->key);
        }
        if (listed) keys.push_back(e->key);
      }
      ++stats_.invalidations;
      if (e->users == 0 && !e->closing) {  // a closing one is its close's to erase
        if (e->subscribed && monitor_) monitor_->unsubscribe(e->addr, e->len);
        it = entries_.erase(it);
        continue;
      }
    }
    ++it;
  }
  if (keys.empty()) return;
  for (auto& u : observers_) {
    pin(u);
    pinned.push_back(u.o);
  }
  for (auto* o : pinned) {
    lk.unlock();
    for (const std::uint64_t k : keys) o->drain(k);
    lk.lock();
    unpin(o);
  }
}

result<void> mr_registry::import_monitor(std::shared_ptr<memory_monitor> m) {
  if (!m) return make_error(errc::invalid_argument, "import a monitor object (not null)");
  std::shared_ptr<memory_monitor> old;
  result<void> r;
  {
    std::lock_guard lk(mu_);  // one critical section: no registration sees a half-swapped monitor
    if (monitor_started_) old = monitor_;
    monitor_ = std::move(m);
    monitor_started_ = false;
    r = ensure_monitor();
    if (!r) monitor_.reset();
    for (auto& e : entries_) e->subscribed = r && monitor_->subscribe(e->addr, e->len).has_value();
  }
  if (old) old->stop();  // outside the lock: its thread may be waiting for it in notify(); drops its subscriptions
  return r;
}

void mr_registry::add_observer(mr_observer* o) {
  std::lock_guard lk(mu_);
  observers_.push_back(observer_use{.o = o});
  for (auto& [k, e] : by_key_)
    if (e->valid) o->published(k, e->addr, e->len, e->access, e->tag);
}

void mr_registry::remove_when_unpinned(std::unique_lock<std::mutex>& lk, mr_observer* o) noexcept {
  // a close draining o on another thread (outside the lock) finishes first
  unheld_.wait(lk, [&] {
    for (auto& u : observers_)
      if (u.o == o) return !pinned_here(u);
    return true;
  });
  std::erase_if(observers_, [&](const observer_use& u) { return u.o == o; });
}

void mr_registry::remove_observer(mr_observer* o) noexcept {
  std::unique_lock lk(mu_);
  remove_when_unpinned(lk, o);
}

void mr_registry::withdraw_observer(mr_observer* o) noexcept {
  std::unique_lock lk(mu_);
  observer_use* me = nullptr;
  for (auto& u : observers_)
    if (u.o == o) me = &u;
  if (!me) return;
  // Every live key out of o's table at once (invalid ones were revoked
  // when the monitor said so), then the accesses to them drained outside
  // the lock, o pinned and told of no new key meanwhile.
  std::vector<std::uint64_t> keys;
  try {
    keys.reserve(by_key_.size());
  } catch (...) {
    keys.clear();
  }
  const bool listed = keys.capacity() >= by_key_.size();
  for (auto& [k, e] : by_key_)
    if (e->valid) {
      o->revoked(k);
      if (listed) keys.push_back(k);
      else o->drain(k);  // no memory for the list: drained here, under the lock
    }
  me->withdrawn = true;
  pin(*me);
  lk.unlock();
  for (const std::uint64_t k : keys) o->drain(k);
  lk.lock();
  unpin(o);
  remove_when_unpinned(lk, o);
}

void mr_registry::set_commit_handler(commit_handler h) {
  auto p = h ? std::make_shared<const commit_handler>(std::move(h)) : nullptr;
  std::lock_guard lk(mu_);
  handler_ = std::move(p);
}

mr_cache_stats mr_registry::stats() const {
  std::lock_guard lk(mu_);
  mr_cache_stats s = stats_;
  s.active = by_key_.size();
  s.cached = 0;
  for (auto& e : entries_) s.cached += e->users == 0;
  return s;
}

std::string mr_registry::monitor_name() const {
  std::lock_guard lk(mu_);
  return monitor_ ? monitor_->name() : "none (no registration yet)";
}

errc mr_registry::find(std::uint64_t key, std::uint64_t offset, std::uint64_t len, std::uint64_t need,
                       std::byte*& where) noexcept {
  std::lock_guard lk(mu_);
  auto it = by_key_.find(key);
  if (key == 0 || it == by_key_.end() || !it->second->valid) return errc::not_found;
  const entry& e = *it->second;
  if ((e.access & need) != need) return errc::permission_denied;
  if (offset > e.len || len > e.len - offset) return errc::invalid_argument;
  where = e.addr + offset;
  return errc::ok;
}

errc mr_registry::find(std::uint64_t key, std::uint64_t offset, std::uint64_t len, std::uint64_t need,
                       std::byte*& where, mr_hold& hold) noexcept {
  hold.drop();
  std::lock_guard lk(mu_);
  auto it = by_key_.find(key);
  if (key == 0 || it == by_key_.end() || !it->second->valid) return errc::not_found;
  entry& e = *it->second;
  if ((e.access & need) != need) return errc::permission_denied;
  if (offset > e.len || len > e.len - offset) return errc::invalid_argument;
  where = e.addr + offset;
  const std::uint32_t gen = util::fork_generation();
  if (e.holds_gen != gen) {  // the first hold in a forked child: its parent's are not counted here
    e.holds_gen = gen;
    e.holds = 0;
  }
  ++e.holds;
  hold.reg_ = this;
  hold.entry_ = &e;
  hold.gen_ = gen;
  return errc::ok;
}

void mr_registry::unhold(void* p) noexcept {
  std::lock_guard lk(mu_);
  auto* e = static_cast<entry*>(p);
  if (--e->holds == 0 && e->closing) unheld_.notify_all();
}

void mr_hold::drop() noexcept {
  if (!reg_) return;
  // A hold copied into a forked child is its parent's: the child's entry
  // never counted it (and may be gone).
  if (gen_ == util::fork_generation()) reg_->unhold(entry_);
  reg_ = nullptr;
  entry_ = nullptr;
}

errc mr_registry::commit(commit_event::kind what, std::uint64_t key, std::uint64_t offset, std::uint64_t len,
                         std::uint64_t level) noexcept {
  std::shared_ptr<const commit_handler> h;
  commit_event ev;
  {
    // The flush runs under the lock: a close of the region (release(), from
    // any thread) waits for it, and its memory may be unmapped as soon as
    // the close returns. Flushing after the lookup but outside the lock
    // raced such a close: msync or a cache flush on memory that went away.
    std::lock_guard lk(mu_);
    auto it = by_key_.find(key);
    if (key == 0 || it == by_key_.end() || !it->second->valid) return errc::not_found;
    const entry& e = *it->second;
    if (what == commit_event::kind::save) {
      if (!(e.access & access::remote_write)) return errc::permission_denied;  // only writers may force flushes
      offset = 0;
      len = e.len;
    } else if (offset > e.len || len > e.len - offset) {
      return errc::invalid_argument;
    }
    ev = commit_event{.key = key,
                      .addr = e.addr + offset,
                      .offset = offset,
                      .len = len,
                      .level = op_flags{level},
                      .what = what,
                      .flags = e.persist != flush_method::none ? commit_flag::persistent : commit_flags{}};
    if (e.persist != flush_method::none && level == flag::commit_complete && len > 0)
      if (errc r = util::persist_range(ev.addr, len, e.persist); r != errc::ok) return r;
    h = handler_;
  }
  // The handler runs outside the lock (it may register or close regions);
  // ev.addr is valid for it only while the application keeps the region open.
  if (!h) return errc::ok;
  try {
    return (*h)(ev);
  } catch (...) {
    // An application's exception must not cross the provider (this is
    // noexcept: it would end the process); the initiator learns that the
    // commit failed.
    return errc::io_error;
  }
}

result<std::shared_ptr<mr>> domain::alloc_memory(std::size_t len, std::uint64_t access) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t n = (len + page - 1) / page * page;
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return make_error(errc::no_memory, "cannot allocate " + std::to_string(len) + " bytes");
  auto m = register_memory(p, len, access);
  if (!m) {
    ::munmap(p, n);
    return m;
  }
  (*m)->own(std::shared_ptr<void>(p, [n](void* q) { ::munmap(q, n); }));
  return m;
}

}  // namespace weft::spi

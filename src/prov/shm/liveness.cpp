// Peer liveness of an shm endpoint: see liveness.hpp and docs/design.md
// "Peer failure". Runs from progress on a 20 ms schedule (and each time a
// blocking wait goes to sleep), never per message.
#include "prov/shm/liveness.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "util/clock.hpp"
#include "weft/event.hpp"

namespace weft::prov::shm {

namespace {
constexpr std::uint64_t drain_limit_ns = 2'000'000'000;  // a gone peer's messages wait at most this long
constexpr std::uint64_t remap_period_ns = 100'000'000;   // an unmapped peer: next try to map it

// A missing peer: its region is gone (closed and unlinked) or its process is.
bool is_gone(const error& e) noexcept { return e.code == errc::peer_dead || e.code == errc::not_found; }
}  // namespace

void peer_name(std::uint64_t key, char (&out)[48]) noexcept {
  std::snprintf(out, sizeof out, "weft.%u.%u.%u", static_cast<unsigned>(::getuid()),
                static_cast<unsigned>(key >> 32), static_cast<unsigned>(key & 0xffffffffu));
}

peer_watch::known* peer_watch::lookup(std::uint64_t key) noexcept {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &known_[it->second];
}

peer_watch::known* peer_watch::add(std::uint64_t key, std::shared_ptr<peer> p) noexcept {
  try {
    if (known_.size() == known_.capacity()) known_.reserve(std::max<std::size_t>(16, known_.size() * 2));
    index_.emplace(key, static_cast<std::uint32_t>(known_.size()));
  } catch (...) {
    return nullptr;  // not watched for now: a later message or AV scan tries again
  }
  known k;
  k.key = key;
  k.p = std::move(p);
  known_.push_back(std::move(k));
  return &known_.back();
}

void peer_watch::erase_at(std::size_t i) noexcept {
  index_.erase(known_[i].key);
  if (i + 1 != known_.size()) {
    known_[i] = std::move(known_.back());
    index_[known_[i].key] = static_cast<std::uint32_t>(i);  // the key is there: no allocation
  }
  known_.pop_back();
}

void peer_watch::first_contact(std::uint64_t key) noexcept {
  if (known* k = lookup(key)) {
    // alive and mapped: remember it; dying or dead: messages it sent before it went
    if (k->state == fate::alive && k->p) seen_[slot(key)] = key;
    return;
  }
  std::shared_ptr<peer> p;
  bool gone = false;
  try {
    auto r = dom_.peer_by_key(key);
    if (r) p = std::move(*r);
    else gone = is_gone(r.error());  // else resources: probed by pid, mapped later
  } catch (...) {
    return;  // not watched this time: the next message tries again
  }
  known* k = add(key, std::move(p));
  if (!k) return;
  if (gone) {
    // It sent this and went: failed and reported once its messages are consumed.
    k->state = fate::dying;
    k->since = util::coarse_now_ns();
    k->drain_to = ~0ull;  // the next tick sets our ring's tail then
    ++owed_;
  } else if (k->p) {
    seen_[slot(key)] = key;
  } else {
    k->since = util::coarse_now_ns() + remap_period_ns;
  }
}

void peer_watch::insert_failed(std::uint64_t key) noexcept {
  known* k = lookup(key);
  if (!k) {
    first_contact(key);
    k = lookup(key);
  }
  if (k && !k->insert_notice) {
    k->insert_notice = true;
    ++owed_;
    next_tick_ = 0;  // report at the next poll
  }
}

void peer_watch::scan_av() noexcept {
  av_version_ = av_->version();
  try {
    av_->for_each([&](fi_addr_t, const std::shared_ptr<peer>& p) {
      if (!lookup(p->key)) (void)add(p->key, p);
    });
  } catch (...) {
    av_version_ = ~0ull;  // try again at the next tick
  }
}

void peer_watch::mark_gone(known& k, bool cleanly, std::uint64_t now, std::uint64_t ring_tail) noexcept {
  k.state = fate::dying;
  k.cleanly = cleanly;
  k.since = now;
  k.drain_to = ring_tail;
  if (seen_[slot(k.key)] == k.key) seen_[slot(k.key)] = ~0ull;
  ++owed_;
}

void peer_watch::probe_one(known& k, std::uint64_t now, std::uint64_t ring_tail) noexcept {
  if (k.state != fate::alive) return;
  if (k.p) {
    if (!k.p->map->owner_alive()) mark_gone(k, k.p->map->closed_cleanly(), now, ring_tail);
    return;
  }
  // Not mapped (the mapping failed for want of resources): its pid tells
  // death; mapping it is tried again every 100 ms.
  if (probe_process(static_cast<pid_t>(k.key >> 32), 0, false, false) == liveness::dead) {
    mark_gone(k, false, now, ring_tail);
    return;
  }
  if (now < k.since) return;
  k.since = now + remap_period_ns;
  try {
    auto r = dom_.peer_by_key(k.key);
    if (r) {
      k.p = std::move(*r);
      seen_[slot(k.key)] = k.key;
    } else if (is_gone(r.error())) {
      mark_gone(k, true, now, ring_tail);
    }
  } catch (...) {
  }
}

peer_watch::fate peer_watch::fate_of(std::uint64_t key, std::uint64_t ring_tail) noexcept {
  known* k = lookup(key);
  if (!k) {
    first_contact(key);
    k = lookup(key);
    if (!k) return fate::dying;  // post it; the next tick learns of it through the AV
  }
  if (k->state == fate::alive) {
    const bool cleanly = k->p && !k->p->map->owner_alive() && k->p->map->closed_cleanly();
    mark_gone(*k, cleanly, util::coarse_now_ns(), ring_tail);
    next_tick_ = 0;
  }
  return k->state;
}

bool peer_watch::probe(std::uint64_t now, std::uint64_t ring_tail) noexcept {
  next_tick_ = now + liveness_period_ns;
  if (av_ && av_->version() != av_version_) {
    forget_removed();  // dead peers whose AV entry went: a message from the address maps it afresh
    scan_av();
  }
  // Probe a bounded number of peers per period, round robin.
  const std::size_t n = std::min(known_.size(), peers_per_tick);
  bool dying = false;
  for (std::size_t i = 0; i < n; ++i) {
    if (next_probe_ >= known_.size()) next_probe_ = 0;
    known& k = known_[next_probe_++];
    probe_one(k, now, ring_tail);
    dying = dying || k.state == fate::dying;
  }
  return dying || owed_;
}

void peer_watch::settle(std::uint64_t now, std::uint64_t ring_head, std::uint64_t ring_tail) noexcept {
  if (!owed_) return;
  std::size_t owed = 0;
  for (std::size_t i = 0; i < known_.size();) {
    known& k = known_[i];
    if (k.state == fate::dying) {
      if (k.drain_to == ~0ull) k.drain_to = ring_tail;
      // Every message it published before it went is consumed (or it has
      // waited long enough behind back-pressure): fail what involves it.
      if (static_cast<std::int64_t>(ring_head - k.drain_to) >= 0 || now - k.since >= drain_limit_ns) {
        k.state = fate::dead;
        k.notice = true;
        char name[48];
        peer_name(k.key, name);
        sink_.fail_peer(k.key, k.p.get(), name, k.cleanly ? "closed its endpoint" : "died");
      }
    }
    if (k.notice && report_dead(k)) k.notice = false;
    if (k.insert_notice && report_insert_failure(k)) k.insert_notice = false;
    if (k.state == fate::dead && !k.notice && !k.insert_notice && (!av_ || av_->find(k.key) == addr_notavail)) {
      // Not in the AV (any more): nothing can be directed at it. Forget it,
      // so the domain can drop its mapping.
      erase_at(i);
      continue;
    }
    // A dead peer still in the AV costs nothing from here on: it is not
    // probed again nor counted as owed (so no tick drains the control ring
    // for it), and it is forgotten when its AV entry goes (forget_removed).
    if (k.state == fate::dying || k.notice || k.insert_notice) ++owed;
    ++i;
  }
  owed_ = owed;
}

bool peer_watch::watching() const noexcept {
  if (owed_ || (av_ && av_->version() != av_version_)) return true;
  return std::any_of(known_.begin(), known_.end(), [](const known& k) { return k.state != fate::dead; });
}

void peer_watch::forget_removed() noexcept {
  for (std::size_t i = 0; i < known_.size();) {
    const known& k = known_[i];
    if (k.state == fate::dead && !k.notice && !k.insert_notice && (!av_ || av_->find(k.key) == addr_notavail)) {
      erase_at(i);
      continue;
    }
    ++i;
  }
}

bool peer_watch::report_dead(const known& k) noexcept {
  char name[48];
  peer_name(k.key, name);
  const fi_addr_t a = av_ ? av_->find(k.key) : addr_notavail;
  char where[40] = " (not in the address vector)";
  if (a != addr_notavail) std::snprintf(where, sizeof where, " (fi_addr %llu)", static_cast<unsigned long long>(a));
  const char* what = k.cleanly ? "closed its endpoint" : "died (its process is gone)";
  if (eq_) {
    try {
      eq_event e;
      e.type = eq_event::kind::peer_dead;
      e.context = ep_.context;
      e.err = errc::peer_dead;
      e.peer = address::from_string(addr_format::shm_name, name);
      e.addr = a;
      e.message = std::string("shm peer ") + name + where + " " + what +
                  ": its directed receives and operations in flight completed with peer_dead and sends to it "
                  "fail with peer_dead; remove it from the address vector (a restarted peer has a new address)";
      eq_->push_locked(std::move(e));
      return true;
    } catch (...) {
      return false;  // no memory for the event now: the next tick tries again
    }
  }
  // Closing is not dying: without an EQ, a peer that simply finished is no
  // error (as on tcp); what was directed at it has failed all the same.
  if (k.cleanly) return true;
  if (!cq_ || !cq_->reserve()) return false;  // the CQ is full: reported once the application reads it
  cq_err_entry ee;
  ee.flags = flag::recv;
  ee.err = errc::peer_dead;
  ee.data = a;
  std::snprintf(ee.msg, sizeof ee.msg, "shm peer %s%s %s: operations with it fail with peer_dead; remove it from the AV",
                name, where, what);
  cq_->push_error(ee);
  return true;
}

bool peer_watch::report_insert_failure(const known& k) noexcept {
  if (av_ && av_->find(k.key) != addr_notavail) return true;  // a later try worked
  char name[48];
  peer_name(k.key, name);
  const error* err = av_ ? av_->insert_failure(k.key) : nullptr;
  const errc code = err ? err->code : errc::no_memory;
  const char* why = err ? err->message.c_str() : "out of memory";
  if (eq_) {
    try {
      eq_event e;
      e.type = eq_event::kind::error;
      e.context = ep_.context;
      e.err = code;
      e.peer = address::from_string(addr_format::shm_name, name);
      e.addr = addr_notavail;
      e.message = std::string("sender ") + name + " could not be added to the address vector: " + why +
                  "; its messages complete with src = addr_notavail and sends to addr_notavail fail with "
                  "invalid_argument: insert event.peer yourself once the cause is fixed (its next message "
                  "tries again)";
      eq_->push_locked(std::move(e));
      return true;
    } catch (...) {
      return false;
    }
  }
  if (!cq_ || !cq_->reserve()) return false;
  // The cause without the "cannot open '/dev/shm/NAME': " that names the peer again.
  if (const char* tail = std::strstr(why, "': ")) why = tail + 3;
  cq_err_entry ee;
  ee.flags = flag::recv;
  ee.err = code;
  ee.data = addr_notavail;
  std::snprintf(ee.msg, sizeof ee.msg, "sender %s not added to the AV (src = addr_notavail): %s", name, why);
  cq_->push_error(ee);
  return true;
}

}  // namespace weft::prov::shm

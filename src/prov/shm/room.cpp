// Room at a busy peer (docs/wire/shm.md, "Room"): a sender refused for a
// full ring sleeps on the peer's room word, and the peer, after freeing
// slots, wakes it. A Dekker handshake in which the consumer's side is a
// plain load: the sleeping sender pays the barrier.
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "prov/shm/access.hpp"
#include "prov/shm/endpoint.hpp"

namespace weft::prov::shm {

namespace {
int membarrier(int cmd) noexcept { return static_cast<int>(::syscall(SYS_membarrier, cmd, 0, 0)); }
}  // namespace

bool advertise_room_fences(mapping& self) noexcept {
  const int cmds = membarrier(MEMBARRIER_CMD_QUERY);
  if (cmds <= 0 || !(cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) ||
      membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0)
    return false;
  self.hdr()->flags.fetch_or(region_flag::fenced_room, std::memory_order_release);
  return true;
}

void room_barrier() noexcept {
  if (membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0) (void)membarrier(MEMBARRIER_CMD_GLOBAL);
}

// Owner: a sender announced that it sleeps until room appears; slots were
// just freed. Taking the announcement back first: a sender announcing
// again after this reads the new room_seq, or sees the room.
void endpoint_impl::announce_room() noexcept {
  if (!self_hdr_->room_wanted.exchange(0, std::memory_order_seq_cst)) return;
  self_hdr_->room_seq.fetch_add(1, std::memory_order_seq_cst);
  util::futex_wake_all(&self_hdr_->room_seq);
}

void endpoint_impl::forget_busy(const peer& p) noexcept {
  for (std::size_t i = 0; i < nbusy_;) {
    if (busy_[i].p.get() == &p) {
      busy_[i] = std::move(busy_[--nbusy_]);
      busy_[nbusy_].p.reset();
    } else {
      ++i;
    }
  }
}

// Sender, about to sleep in a wait on its CQ: for each busy peer, the room
// word's value, then the announcement, then the barrier, then the check of
// room. Either the peer's load after its pop sees the announcement (and it
// bumps the word, which ends our sleep), or our check sees the freed slot.
bool endpoint_impl::arm_room(const void* queue, std::span<spi::wait_word> words, std::size_t& n) noexcept {
  if ((nbusy_ == 0 && !busy_lost_) || !txcq_ || queue != static_cast<const spi::progress_group*>(txcq_.get()))
    return false;
  bool barrier = false;
  for (std::size_t i = 0; i < nbusy_; ++i) {
    region_header* h = busy_[i].p->map->hdr();
    if (n < words.size()) words[n++] = spi::wait_word{&h->room_seq, h->room_seq.load(std::memory_order_seq_cst)};
    else busy_lost_ = true;
    h->room_wanted.store(1, std::memory_order_seq_cst);
    barrier = barrier || (h->flags.load(std::memory_order_relaxed) & region_flag::fenced_room);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);  // owners that fence themselves
  if (barrier) room_barrier();
  // Some refusals were not remembered (more busy peers than entries): the
  // wait returns room a pulse later, so that a post-and-wait loop over many
  // full peers retries every pulse instead of spinning.
  bool room = false;
  if (busy_lost_) {
    const std::uint64_t now = util::coarse_now_ns();
    if (busy_lost_at_ == 0) busy_lost_at_ = now;
    room = now - busy_lost_at_ >= spi::pulse_ns;
  }
  for (std::size_t i = 0; i < nbusy_ && !room; ++i) {
    peer& p = *busy_[i].p;
    room = (p.*busy_[i].ring).room() || !p.map->owner_alive();  // a dead peer: the retry says peer_dead
  }
  if (room) {
    for (std::size_t i = 0; i < nbusy_; ++i) busy_[i].p.reset();
    nbusy_ = 0;
    busy_lost_ = false;
    busy_lost_at_ = 0;
  }
  return room;
}

// The pulse (liveness checks) is needed only while something involves a
// peer: operations outstanding, replies waiting for room, slots claimed in
// our rings but not yet published (a writer may die there), busy peers,
// data chunks set aside until their sender can be mapped (stale_), receives
// directed at a peer (they end with peer_dead if it dies).
bool endpoint_impl::needs_pulse() const noexcept {
  return !tx_active_.empty() || !rx_active_.empty() || !ctrl_pending_.empty() || rma_parts_ != 0 || nstale_ != 0 ||
         directed_posted_ != 0 ||
         nbusy_ != 0 || busy_lost_ || ring_.claimed() != ring_.head() || ctl_.claimed() != ctl_.head() ||
         req_.claimed() != req_.head();
}

}  // namespace weft::prov::shm

#pragma once
// Access slots: how a region's owner knows that no peer's one-sided access
// to a key is under way once it revoked that key (docs/wire/shm.md,
// "Access slots"). The initiator's side is three memory operations per
// access; the owner's side runs when a key is revoked.
#include <atomic>
#include <cstdint>

#include "prov/shm/layout.hpp"
#include "util/creator_process.hpp"

namespace weft::prov::shm {

class mapping;


// One domain's access slot in a peer's region.
class access_claim {
 public:
  access_claim() = default;
  access_claim(const access_claim&) = delete;
  access_claim& operator=(const access_claim&) = delete;
  ~access_claim() { release(); }

  // Whether this process holds a slot (data path: two loads). A claim made
  // before a fork (util::fork_generation()) belongs to the parent: the
  // child claims a slot of its own.
  [[nodiscard]] bool usable() const noexcept { return slot_ && generation_ == util::fork_generation(); }
  // Around each one-sided access: announce the key before the entry is read
  // (ordered before that read: by the owner's membarrier when the claim is
  // light, else by a locked exchange), withdraw it once the bytes moved.
  void begin(std::uint64_t key) noexcept {
    if (light_) [[likely]] {
      slot_->key.store(key, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      (void)slot_->key.exchange(key, std::memory_order_seq_cst);
    }
  }
  void end() noexcept { slot_->key.store(0, std::memory_order_release); }
  // Claims a free slot of m, or one whose holder is dead. False when none is
  // free (the caller goes two-sided); then it tries again at most every
  // 100 ms. A few system calls: the first one-sided access to a peer.
  bool acquire(mapping& m) noexcept;
  // Gives the slot back (only the process that claimed it does).
  void release() noexcept;

 private:
  access_slot* slot_ = nullptr;
  bool light_ = false;            // the owner fences (region_flag::fenced_access) and we are registered
  std::uint64_t word_ = 0;        // what holder says: this process
  std::uint32_t generation_ = ~0u;
  std::uint64_t retry_ns_ = 0;
};

// Owner, after clearing key's entry: returns once no live holder's slot
// holds key, so no peer's access to it is under way or can start. Spins a
// little, then sleeps in short steps; a slot whose holder died is freed. An
// access holds its slot for one piece of at most access_piece bytes.
void wait_unaccessed(const mapping& self, std::uint64_t key) noexcept;

// Owner, once: says in the region whether it will fence with membarrier.
void advertise_fences(mapping& self) noexcept;
// Registers this process for membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) and,
// if that works, sets region_flag::fenced_room in self: senders then fence
// for us (room.cpp). False: we fence ourselves after freeing ring slots.
[[nodiscard]] bool advertise_room_fences(mapping& self) noexcept;
// The barrier a sender runs after announcing room_wanted at an owner whose
// region says fenced_room (falls back to the slower MEMBARRIER_CMD_GLOBAL).
void room_barrier() noexcept;

// One-sided copies move at most this much between two checks of the entry,
// which bounds how long a revoking owner waits for a running peer.
inline constexpr std::size_t access_piece = std::size_t{1} << 20;

}  // namespace weft::prov::shm

#pragma once
// The shm region layout (docs/wire/shm.md). Every field's offset is fixed by
// static_asserts: two weft builds with the same layout_version interoperate.
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "util/ring.hpp"

namespace weft::prov::shm {

inline constexpr std::uint64_t region_magic = 0x314d485354464557ull;  // "WEFTSHM1"
inline constexpr std::uint32_t layout_version = 3;
inline constexpr std::uint32_t max_segments = 64;
inline constexpr std::uint32_t max_slot_iov = 16;
// A slot must hold a header and a full iov list (rts, split).
inline constexpr std::uint32_t min_slot_size = 64 + max_slot_iov * 16;

enum class region_state : std::uint32_t { init = 0, ready = 1, closed = 2 };

struct region_header {
  std::uint64_t magic;          // 0
  std::uint32_t version;        // 8
  std::uint32_t header_size;    // 12
  std::uint32_t owner_pid;      // 16
  std::uint32_t owner_uid;      // 20
  std::uint64_t owner_start;    // 24: owner's start time (/proc/PID/stat field 22)
  std::uint32_t slot_count;     // 32
  std::uint32_t slot_size;      // 36
  std::uint32_t seg_count;      // 40
  std::uint32_t seg_size;       // 44
  std::uint64_t ring_offset;    // 48
  std::uint64_t seg_offset;     // 56
  std::uint64_t total_size;     // 64
  std::atomic<std::uint32_t> state;  // 72: region_state
  std::uint32_t epid;           // 76
  std::uint64_t split_offset;   // 80: split_entry array (one per receive operation)
  std::uint32_t split_count;    // 88
  std::uint32_t ctl_count;      // 92: control ring slots (power of two)
  std::uint64_t ctl_offset;     // 96: control ring (cts, ack, data, split)
  std::uint32_t ctl_slot_size;  // 104
  std::uint32_t mrt_count;      // 108: entries of the memory-region table
  std::uint64_t mrt_offset;     // 112: the table (mr_entry[mrt_count]), indexed by key slot
  std::atomic<std::uint32_t> flags;  // 120: region_flag
  std::byte pad0_[128 - 124];
  util::ring_tail tail;                  // 128: producers' claim counter
  alignas(64) std::atomic<std::uint32_t> doorbell;  // 192: futex word
  std::atomic<std::uint32_t> waiting;    // 196: consumer sleeps: ring the doorbell
  std::atomic<std::uint32_t> room_wanted;  // 200: a sender refused for a full ring sleeps: announce room
  std::atomic<std::uint32_t> room_seq;     // 204: futex word: the owner increments it when it frees slots
  std::byte pad1_[256 - 208];
  std::atomic<std::uint32_t> seg_busy[max_segments];  // 256: 1 = holds data for a peer
  util::ring_tail ctl_tail;              // 512: producers' claim counter of the control ring
  util::ring_tail req_tail;              // 576: producers' claim counter of the request ring
  std::uint64_t req_offset;              // 640: request ring (rma_write, rma_read, atomic, save)
  std::uint32_t req_count;               // 648: request ring slots (power of two)
  std::uint32_t req_slot_size;           // 652
  std::uint64_t access_offset;           // 656: access_slot[access_count]
  std::uint32_t access_count;            // 664
  std::atomic<std::uint32_t> access_used;  // 668: slots [0, access_used) were ever claimed
  std::atomic<std::uint32_t> segs_freed;   // 672: the owner bumps it when it revokes a key on an alloc_memory segment
  std::byte pad2_[704 - 676];
};
static_assert(offsetof(region_header, owner_pid) == 16);
static_assert(offsetof(region_header, owner_start) == 24);
static_assert(offsetof(region_header, slot_count) == 32);
static_assert(offsetof(region_header, ring_offset) == 48);
static_assert(offsetof(region_header, total_size) == 64);
static_assert(offsetof(region_header, state) == 72);
static_assert(offsetof(region_header, split_offset) == 80);
static_assert(offsetof(region_header, split_count) == 88);
static_assert(offsetof(region_header, mrt_count) == 108);
static_assert(offsetof(region_header, mrt_offset) == 112);
static_assert(offsetof(region_header, flags) == 120);
static_assert(offsetof(region_header, tail) == 128);
static_assert(offsetof(region_header, doorbell) == 192);
static_assert(offsetof(region_header, waiting) == 196);
static_assert(offsetof(region_header, room_wanted) == 200);
static_assert(offsetof(region_header, room_seq) == 204);
static_assert(offsetof(region_header, ctl_count) == 92);
static_assert(offsetof(region_header, ctl_offset) == 96);
static_assert(offsetof(region_header, ctl_slot_size) == 104);
static_assert(offsetof(region_header, seg_busy) == 256);
static_assert(offsetof(region_header, ctl_tail) == 512);
static_assert(offsetof(region_header, req_tail) == 576);
static_assert(offsetof(region_header, req_offset) == 640);
static_assert(offsetof(region_header, req_count) == 648);
static_assert(offsetof(region_header, req_slot_size) == 652);
static_assert(offsetof(region_header, access_offset) == 656);
static_assert(offsetof(region_header, access_count) == 664);
static_assert(offsetof(region_header, access_used) == 668);
static_assert(offsetof(region_header, segs_freed) == 672);
static_assert(sizeof(region_header) == 704);

namespace region_flag {
// The owner counts peers' accesses (remote counters bound): RMA goes through
// its control ring, not straight into its memory.
inline constexpr std::uint32_t two_sided_rma = 1;
// The owner runs membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) before it scans
// the access slots: a holder registered for those barriers may announce its
// key with a plain store (no locked instruction on its data path).
inline constexpr std::uint32_t fenced_access = 2;
// The owner is registered for membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED):
// after freeing ring slots it reads room_wanted with a plain load, and a
// sender announcing room_wanted runs that barrier before it re-checks room.
inline constexpr std::uint32_t fenced_room = 4;
}  // namespace region_flag

// The owner's live memory regions, published for one-sided RMA: peers find a
// key's entry at its slot, check it, and copy with process_vm_readv/writev
// themselves. A seqlock: seq is odd while the owner rewrites the entry.
struct mr_entry {
  std::atomic<std::uint32_t> seq;  // 0
  std::uint32_t access;            // 4: weft::access bits
  std::uint64_t key;               // 8: 0 = empty
  std::uint64_t addr;              // 16: in the owner's address space
  std::uint64_t len;               // 24
  std::uint64_t seg;               // 32: memory from domain::alloc_memory: the shm file
                                   //     weft.UID.PID.mem.START.SEG (peers map it); 0 otherwise
  std::byte pad_[64 - 40];
};
static_assert(sizeof(mr_entry) == 64);
static_assert(offsetof(mr_entry, seg) == 32);
static_assert(offsetof(mr_entry, key) == 8);

// One-sided access in progress (docs/wire/shm.md, "Access slots"). A peer
// process claims one slot of the owner's region per domain (holder); before
// each one-sided access it stores the key it is about to use into its slot,
// then reads and checks the key's mr_entry, copies, and stores 0. The owner,
// revoking a key, clears the entry, then waits until no slot of a live
// holder holds that key: either the peer sees the cleared entry, or the
// owner sees the key in the slot (both sides order store before load).
struct access_slot {
  std::atomic<std::uint64_t> holder;  // 0: free; (pid << 32) | (start time & 0xffffffff) of the claimer
  std::atomic<std::uint64_t> key;     // the key being accessed now; 0 none
  std::byte pad_[64 - 16];
};
static_assert(offsetof(access_slot, holder) == 0);
static_assert(offsetof(access_slot, key) == 8);
static_assert(sizeof(access_slot) == 64);
inline constexpr std::uint32_t max_access_slots = 4096;

// Cooperative copy of one large message (receiver's region, indexed by the
// receiver's operation): both processes claim chunks and copy them.
struct split_entry {
  std::atomic<std::uint64_t> claim;   // 0: (generation << 32) | next chunk to copy
  std::atomic<std::uint32_t> done;    // 8: chunks copied
  std::atomic<std::uint32_t> failed;  // 12: the sender could not write: the receiver copies all
  std::byte pad_[64 - 16];
};
static_assert(offsetof(split_entry, done) == 8);
static_assert(offsetof(split_entry, failed) == 12);
static_assert(sizeof(split_entry) == 64);

enum class op : std::uint16_t {
  inline_msg = 1,  // payload in the slot
  rts = 2,         // rendezvous: the slot carries the sender's iov list
  cts = 3,         // receiver -> sender: stream it through your segments
  data = 4,        // sender -> receiver: a chunk in the sender's segment
  ack = 5,         // receiver -> sender: rendezvous finished (aux = status)
  split = 6,       // receiver -> sender: help copy; the slot carries the receiver's iov list
  rma_write = 7,   // initiator -> target: copy my iov list into your region (aux key, tag offset, len)
  rma_read = 8,    // initiator -> target: copy your region into my iov list
  atomic = 9,      // initiator -> target: apply (flags: op | type << 8) at offset; data: result address
  save = 10,       // initiator -> target: make earlier writes to the region (aux key) durable (data: level)
  nop = 11,        // a claimed slot given back (ignored)
};

namespace slot_flag {
inline constexpr std::uint16_t tagged = 1;
inline constexpr std::uint16_t cq_data = 2;
inline constexpr std::uint16_t commit = 4;  // rma_write: flush the range before the ack (commit_complete)
}  // namespace slot_flag

struct slot_header {
  std::atomic<std::uint64_t> seq;  // 0: ring sequence word
  op code;                         // 8
  std::uint16_t flags;             // 10
  std::uint32_t len;               // 12: inline bytes, or message length (rts/cts/data)
  std::uint64_t tag;               // 16: tag; data: offset in the message
  std::uint64_t data;              // 24: remote CQ data; cts: bytes accepted
  std::uint32_t src_pid;           // 32
  std::uint32_t src_epid;          // 36
  std::uint64_t cookie;            // 40: sender's operation id
  std::uint64_t aux;               // 48: receiver's operation id; ack: status (errc)
  std::uint32_t seg;               // 56: data: segment index
  std::uint32_t iov_count;         // 60: rts: remote iov entries following
};
static_assert(offsetof(slot_header, code) == 8);
static_assert(offsetof(slot_header, len) == 12);
static_assert(offsetof(slot_header, tag) == 16);
static_assert(offsetof(slot_header, data) == 24);
static_assert(offsetof(slot_header, src_pid) == 32);
static_assert(offsetof(slot_header, cookie) == 40);
static_assert(offsetof(slot_header, aux) == 48);
static_assert(offsetof(slot_header, seg) == 56);
static_assert(offsetof(slot_header, iov_count) == 60);
static_assert(sizeof(slot_header) == 64);

struct remote_iov {
  std::uint64_t addr;
  std::uint64_t len;
};
static_assert(sizeof(remote_iov) == 16);

}  // namespace weft::prov::shm

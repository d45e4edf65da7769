#pragma once
// Data-path types shared by the public API and the provider interface.
//
// Their layout is fixed (docs/abi.md), for a C wrapper (the libfabric API)
// to pass them as they are: no bool, no implicit padding (reserved bytes,
// zero, where alignment leaves a gap), the layout pinned below each struct
// by static_asserts. New fields go at the end or into reserved bytes;
// moving a field fails the build.
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "weft/atomic.hpp"
#include "weft/error.hpp"
#include "weft/flags.hpp"

namespace weft {

// The layouts below are those of an LP64 target (x86-64, aarch64).
static_assert(sizeof(void*) == 8 && sizeof(std::size_t) == 8 && sizeof(int) == 4,
              "weft's public layouts (docs/abi.md) are defined for LP64 targets");

using fi_addr_t = std::uint64_t;
inline constexpr fi_addr_t addr_unspec = ~0ull;    // any source / no address
inline constexpr fi_addr_t addr_notavail = ~1ull;  // source not in the address vector

// Why a post answered errc::again (endpoint::again_reason()), and what to
// do before retrying. Meaningful right after a call returned again.
enum class again_reason : std::uint8_t {
  none,       // no again so far
  cq_full,    // no room in the completion queue for this operation's completion:
              // read the CQ (that frees room and drives progress), then retry
  tx_full,    // operations in flight fill the transmit queue: read the CQ (their
              // completions free it), then retry
  rx_full,    // posted receives fill the receive queue: read the CQ (or cancel one), then retry
  peer_busy,  // the peer has not yet consumed what was sent to it (its ring is full):
              // wait on the CQ (cq.wait() returns again, with no entries, as soon as
              // room appears at that peer), then retry; the peer must progress
  no_resources,  // a system resource is short for now (shm: no file descriptor left to
                 // map the peer): free some, or retry later; nothing was lost
};
[[nodiscard]] const char* to_string(again_reason r) noexcept;

// Operation and completion flags (cf. fi_cq(3), fi_msg(3), fi_tagged(3)).
namespace flag {
inline constexpr op_flags send{1ull << 0};
inline constexpr op_flags recv{1ull << 1};
inline constexpr op_flags msg{1ull << 2};
inline constexpr op_flags tagged{1ull << 3};
inline constexpr op_flags remote_cq_data{1ull << 4};
inline constexpr op_flags inject{1ull << 5};       // buffer reusable on return, no completion
inline constexpr op_flags peek{1ull << 6};         // look for a matching message
inline constexpr op_flags claim{1ull << 7};        // with peek: reserve it; alone: receive it
inline constexpr op_flags discard{1ull << 8};      // with peek|claim or claim: drop it
inline constexpr op_flags completion{1ull << 9};
inline constexpr op_flags transmit{1ull << 10};    // cq binding: transmit side
inline constexpr op_flags receive{1ull << 11};     // cq binding: receive side
inline constexpr op_flags rma{1ull << 12};         // completion of an RMA operation
inline constexpr op_flags read{1ull << 13};        // ... a read
inline constexpr op_flags write{1ull << 14};       // ... a write
inline constexpr op_flags atomic{1ull << 15};      // completion of an atomic operation
inline constexpr op_flags remote_read{1ull << 16};  // counter binding: peers read our regions
inline constexpr op_flags remote_write{1ull << 17}; // counter binding: peers wrote our regions (atomics too)
// Completion levels (cf. fi_cq(3)), per operation or as endpoint defaults
// (info.tx.op_flags): when an RMA/atomic operation may complete.
inline constexpr op_flags transmit_complete{1ull << 18};  // the data left this process
inline constexpr op_flags delivery_complete{1ull << 19};  // the data is placed in the target's memory
inline constexpr op_flags commit_complete{1ull << 20};    // ... and durable there (persistent regions)
inline constexpr op_flags save{1ull << 21};               // completion of a SAVE
inline constexpr op_flags completion_levels = transmit_complete | delivery_complete | commit_complete;
}  // namespace flag

// How blocking waits on a completion queue or counter slept (wait_stats()):
// each sleep ends by a word (a doorbell rung by a peer, room announced by a
// busy peer, a descriptor), by the liveness pulse (or a fallback slice), or
// at the wait's deadline. A lost wake-up shows as a timer wake, never hides.
struct sleep_stats {
  std::uint64_t word_wakes = 0;    // woken by a doorbell, a room word or a descriptor
  std::uint64_t timer_wakes = 0;   // woken by the pulse or a slice (no word changed)
  std::uint64_t room_returns = 0;  // waits that returned again: room appeared at a busy peer
};
static_assert(sizeof(sleep_stats) == 24 && alignof(sleep_stats) == 8 && offsetof(sleep_stats, word_wakes) == 0 &&
              offsetof(sleep_stats, timer_wakes) == 8 && offsetof(sleep_stats, room_returns) == 16 &&
              std::is_standard_layout_v<sleep_stats> && std::is_trivially_copyable_v<sleep_stats>);
static_assert(std::has_unique_object_representations_v<sleep_stats>, "no padding");

struct cq_entry {
  void* context = nullptr;
  std::uint64_t flags = 0;
  std::size_t len = 0;
  void* buf = nullptr;
  std::uint64_t data = 0;
  std::uint64_t tag = 0;
  fi_addr_t src = addr_unspec;  // filled when the endpoint has cap::source
};
static_assert(sizeof(cq_entry) == 56 && alignof(cq_entry) == 8);
static_assert(offsetof(cq_entry, context) == 0 && offsetof(cq_entry, flags) == 8 && offsetof(cq_entry, len) == 16 &&
              offsetof(cq_entry, buf) == 24 && offsetof(cq_entry, data) == 32 && offsetof(cq_entry, tag) == 40 &&
              offsetof(cq_entry, src) == 48);
static_assert(std::is_standard_layout_v<cq_entry> && std::is_trivially_copyable_v<cq_entry>);
static_assert(std::has_unique_object_representations_v<cq_entry>, "no padding");

struct cq_err_entry {
  void* context = nullptr;
  std::uint64_t flags = 0;
  std::size_t len = 0;    // bytes placed in the buffer
  void* buf = nullptr;
  std::uint64_t data = 0;
  std::uint64_t tag = 0;
  std::size_t olen = 0;   // bytes that did not fit (truncation)
  errc err = errc::ok;    // (4 bytes)
  std::int32_t prov_errno = 0;
  char msg[160] = {};     // what happened and what to do
};
static_assert(sizeof(errc) == 4);
static_assert(sizeof(cq_err_entry) == 224 && alignof(cq_err_entry) == 8);
static_assert(offsetof(cq_err_entry, context) == 0 && offsetof(cq_err_entry, flags) == 8 &&
              offsetof(cq_err_entry, len) == 16 && offsetof(cq_err_entry, buf) == 24 &&
              offsetof(cq_err_entry, data) == 32 && offsetof(cq_err_entry, tag) == 40 &&
              offsetof(cq_err_entry, olen) == 48 && offsetof(cq_err_entry, err) == 56 &&
              offsetof(cq_err_entry, prov_errno) == 60 && offsetof(cq_err_entry, msg) == 64);
static_assert(std::is_standard_layout_v<cq_err_entry> && std::is_trivially_copyable_v<cq_err_entry>);
static_assert(std::has_unique_object_representations_v<cq_err_entry>, "no padding");

// A local memory descriptor (cf. fi_mr_desc(3), UCX's memh): names, for the
// provider, the registered region a local buffer lies in. Opaque; it comes
// from memory_region::desc() and is valid while that region is open.
// mr_desc::none: the buffer is not registered (or the caller does not say).
// shm and tcp need no registration of local buffers and ignore it; a
// provider that does (FI_MR_LOCAL semantics, info.domain.mr_local) requires
// the region of every local buffer and refuses an operation without it.
enum class mr_desc : std::uintptr_t { none = 0 };
static_assert(sizeof(mr_desc) == 8);

// A message description for the *msg() forms.
struct msg_desc {
  const ::iovec* iov = nullptr;
  std::size_t iov_count = 0;
  fi_addr_t addr = addr_unspec;  // destination (send) or source filter (recv)
  std::uint64_t tag = 0;
  std::uint64_t ignore = 0;      // receive: tag bits that need not match
  std::uint64_t data = 0;        // remote CQ data (with flag::remote_cq_data)
  void* context = nullptr;
  const mr_desc* desc = nullptr;  // null, or one per iov entry: the region each buffer lies in
};
static_assert(sizeof(msg_desc) == 64 && alignof(msg_desc) == 8);
static_assert(offsetof(msg_desc, iov) == 0 && offsetof(msg_desc, iov_count) == 8 && offsetof(msg_desc, addr) == 16 &&
              offsetof(msg_desc, tag) == 24 && offsetof(msg_desc, ignore) == 32 && offsetof(msg_desc, data) == 40 &&
              offsetof(msg_desc, context) == 48 && offsetof(msg_desc, desc) == 56);
static_assert(std::is_standard_layout_v<msg_desc> && std::is_trivially_copyable_v<msg_desc>);
static_assert(std::has_unique_object_representations_v<msg_desc>, "no padding");

// One remote range: len bytes at offset of the peer's region named by key.
struct rma_iov {
  std::uint64_t offset = 0;
  std::size_t len = 0;
  std::uint64_t key = 0;
};
static_assert(sizeof(rma_iov) == 24 && alignof(rma_iov) == 8 && offsetof(rma_iov, offset) == 0 &&
              offsetof(rma_iov, len) == 8 && offsetof(rma_iov, key) == 16 && std::is_standard_layout_v<rma_iov> &&
              std::is_trivially_copyable_v<rma_iov>);
static_assert(std::has_unique_object_representations_v<rma_iov>, "no padding");

// An RMA operation: local buffers, the peer, and the remote range, given as
// an offset into the peer's memory region named by its key, or as a list of
// remote ranges (rma_iov) the local bytes fill in order.
struct rma_desc {
  const ::iovec* iov = nullptr;
  std::size_t iov_count = 0;
  fi_addr_t addr = addr_unspec;
  std::uint64_t offset = 0;  // from the start of the remote region
  std::uint64_t key = 0;
  void* context = nullptr;
  std::uint64_t data = 0;    // remote CQ data (with flag::remote_cq_data)
  const rma_iov* rma = nullptr;  // when rma_count > 0: the remote ranges (offset and key above unused)
  std::size_t rma_count = 0;
  const mr_desc* desc = nullptr;  // null, or one per iov entry: the region each local buffer lies in
};
static_assert(sizeof(rma_desc) == 80 && alignof(rma_desc) == 8);
static_assert(offsetof(rma_desc, iov) == 0 && offsetof(rma_desc, iov_count) == 8 && offsetof(rma_desc, addr) == 16 &&
              offsetof(rma_desc, offset) == 24 && offsetof(rma_desc, key) == 32 && offsetof(rma_desc, context) == 40 &&
              offsetof(rma_desc, data) == 48 && offsetof(rma_desc, rma) == 56 && offsetof(rma_desc, rma_count) == 64 &&
              offsetof(rma_desc, desc) == 72);
static_assert(std::is_standard_layout_v<rma_desc> && std::is_trivially_copyable_v<rma_desc>);
static_assert(std::has_unique_object_representations_v<rma_desc>, "no padding");

// An atomic operation on count elements at offset of the peer's region.
// op and type (one byte each) come last, with reserved bytes after them, so
// that no padding hides between the 8-byte fields; designated initialisers
// read best: atomic_desc{.operand = &x, .addr = peer, .key = k, .op =
// atomic_op::sum, .type = atomic_type::u64}.
struct atomic_desc {
  const void* operand = nullptr;  // count elements
  const void* compare = nullptr;  // cswap: count elements
  void* result = nullptr;         // fetch forms: receives the old values
  std::size_t count = 1;
  fi_addr_t addr = addr_unspec;
  std::uint64_t offset = 0;
  std::uint64_t key = 0;
  void* context = nullptr;
  // Local memory descriptors (as msg_desc::desc and rma_desc::desc; cf.
  // fi_atomicmsg's desc, fi_compare_atomicmsg's compare_desc and
  // result_desc): the region each local buffer lies in, or mr_desc::none.
  mr_desc desc = mr_desc::none;          // operand
  mr_desc compare_desc = mr_desc::none;  // compare (cswap)
  mr_desc result_desc = mr_desc::none;   // result (fetch forms, cswap)
  atomic_op op = atomic_op::sum;
  atomic_type type = atomic_type::i8;
  // Zero; room for later one-byte fields. (Spelled {0, ...}, not {}: with
  // an empty list GCC clears the whole struct with rep stos before filling
  // it, on every post; with the zeros it stores each field once.)
  std::uint8_t reserved[6] = {0, 0, 0, 0, 0, 0};
};
static_assert(sizeof(atomic_op) == 1 && sizeof(atomic_type) == 1);
static_assert(sizeof(atomic_desc) == 96 && alignof(atomic_desc) == 8);
static_assert(offsetof(atomic_desc, operand) == 0 && offsetof(atomic_desc, compare) == 8 &&
              offsetof(atomic_desc, result) == 16 && offsetof(atomic_desc, count) == 24 &&
              offsetof(atomic_desc, addr) == 32 && offsetof(atomic_desc, offset) == 40 &&
              offsetof(atomic_desc, key) == 48 && offsetof(atomic_desc, context) == 56 &&
              offsetof(atomic_desc, desc) == 64 && offsetof(atomic_desc, compare_desc) == 72 &&
              offsetof(atomic_desc, result_desc) == 80 && offsetof(atomic_desc, op) == 88 &&
              offsetof(atomic_desc, type) == 89 && offsetof(atomic_desc, reserved) == 90);
static_assert(std::is_standard_layout_v<atomic_desc> && std::is_trivially_copyable_v<atomic_desc>);
static_assert(std::has_unique_object_representations_v<atomic_desc>, "no padding");

}  // namespace weft

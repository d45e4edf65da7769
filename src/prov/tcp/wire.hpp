#pragma once
// tcp wire format (docs/wire/tcp.md). Pure data and decoding, no weft types,
// so that the decoder can be fuzzed on its own (tests/fuzz).
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace weft::prov::tcp::wire {

inline constexpr std::uint8_t magic = 0x57;  // 'W'
// Bumped by every change a peer of the previous version would misread (new
// flags, ops or fields): peers of different versions refuse each other at
// the hello with a message naming both (docs/wire/tcp.md, "Versions").
// 2: rma_resp flags more and trailer (read answers with a final status).
inline constexpr std::uint8_t version = 2;
inline constexpr std::uint64_t hello_magic = 0x4f4c4c4548544657ull;  // "WFTHELLO"
inline constexpr std::size_t max_cm_data = 256;

enum class op : std::uint8_t {
  hello = 1,      // first frame on a connection, from the connecting side
  hello_ack = 2,  // the accepting side's answer (status in header.data)
  msg = 3,        // a message: len payload bytes follow
  close_req = 4,  // idle close: stop sending on this connection (data 1: bye, the endpoint closes)
  close_ack = 5,  // nothing more will be sent on this connection
  rma_write = 6,  // payload: rma_req, then the bytes to write
  rma_read = 7,   // payload: rma_req (its len: bytes wanted)
  atomic = 8,     // payload: rma_req, operand (and compare) elements
  save = 9,       // payload: rma_req (len 0): make earlier writes to the region durable
  rma_resp = 10,  // answer: tag = the request's id, data = status; payload: read bytes / old values
};

namespace flag {
inline constexpr std::uint8_t tagged = 1;   // msg
inline constexpr std::uint8_t cq_data = 2;  // msg
inline constexpr std::uint8_t replace = 1;  // hello: the sender has no live connection to you: drop yours
inline constexpr std::uint8_t commit = 4;   // rma_write: flush the range before answering (commit_complete)
inline constexpr std::uint8_t ack = 8;      // rma_write: answer success too (otherwise only failures)
inline constexpr std::uint8_t fetch = 16;   // atomic: answer with the old values
inline constexpr std::uint8_t revoked = 32; // rma_resp (status not_found): the region was closed while the read was in flight
inline constexpr std::uint8_t more = 64;     // rma_resp (status ok, payload): the answer's final status follows (trailer)
inline constexpr std::uint8_t trailer = 128; // rma_resp (len 0): the final status of the answer flagged more just before
}  // namespace flag

// First bytes of the payload of rma_write, rma_read, atomic and save.
struct rma_req {
  std::uint64_t key;        // 0: the target region's key
  std::uint64_t offset;     // 8: from the start of the region
  std::uint64_t id;         // 16: the initiator's operation id, echoed in rma_resp.tag
  std::uint32_t len;        // 24: rma_read: bytes; atomic: elements; rma_write, save: 0
  std::uint8_t atomic_op;   // 28
  std::uint8_t atomic_type; // 29
  std::uint8_t level;       // 30: save: 1 transmit, 2 delivery, 3 commit; zero otherwise
  std::uint8_t reserved;    // 31: zero
};
static_assert(sizeof(rma_req) == 32);
static_assert(offsetof(rma_req, id) == 16);
static_assert(offsetof(rma_req, len) == 24);
inline constexpr std::size_t max_atomic_payload = 128;  // operand + compare

// hello_ack status
enum class hello_status : std::uint64_t {
  ok = 0,
  duplicate = 1,  // both sides connected at once: use the other connection
  rejected = 2,   // MSG: the listener rejected (its data follows)
  bad_request = 3,
  no_resources = 4,  // the acceptor is out of descriptors, memory or epoll watches (its reason follows, as text)
};

struct frame_header {
  std::uint8_t magic;      // 0: 'W'
  std::uint8_t version;    // 1
  std::uint8_t op;         // 2
  std::uint8_t flags;      // 3
  std::uint32_t reserved;  // 4: zero
  std::uint64_t len;       // 8: payload bytes after this header
  std::uint64_t tag;       // 16
  std::uint64_t data;      // 24: remote CQ data, or hello_ack status
};
static_assert(sizeof(frame_header) == 32);
static_assert(offsetof(frame_header, len) == 8);
static_assert(offsetof(frame_header, tag) == 16);
static_assert(offsetof(frame_header, data) == 24);

// Payload of hello: who is connecting (its listening address for RDM).
struct hello_body {
  std::uint64_t magic;       // 0: hello_magic
  std::uint16_t ep_type;     // 8: 1 msg, 2 rdm
  std::uint16_t family;      // 10: AF_INET or AF_INET6 (host order)
  std::uint16_t port;        // 12: listening port, network order (0: none)
  std::uint16_t cm_len;      // 14: connection data bytes after this body (MSG)
  std::uint8_t addr[16];     // 16: listening address, network order
};
static_assert(sizeof(hello_body) == 32);
static_assert(offsetof(hello_body, addr) == 16);

enum class status {
  ok,
  need_more,    // not enough bytes yet
  bad_magic,
  bad_version,
  bad_op,
  bad_field,    // reserved bits, flags or a field out of range
  too_long,     // payload longer than the receiver accepts
};

[[nodiscard]] const char* to_string(status s) noexcept;

// Decodes a frame header from n bytes at p. max_len bounds msg payloads.
[[nodiscard]] status decode_header(const std::uint8_t* p, std::size_t n, std::uint64_t max_len,
                                   frame_header& out) noexcept;
// Decodes the rma_req at the start of a request's payload (op: the frame's op).
[[nodiscard]] status decode_rma_req(const std::uint8_t* p, std::size_t n, std::uint8_t op, rma_req& out) noexcept;
// Decodes a hello payload (the frame's len bytes).
[[nodiscard]] status decode_hello(const std::uint8_t* p, std::size_t n, hello_body& out) noexcept;

}  // namespace weft::prov::tcp::wire

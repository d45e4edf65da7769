// libFuzzer target for the tcp wire decoder: every byte string must decode to
// a status without crashing, reading out of bounds or tripping UBSan, and an
// accepted header must satisfy the documented bounds.
#include <cstdint>
#include <cstdlib>

#include "prov/tcp/wire.hpp"

using namespace weft::prov::tcp::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  frame_header h;
  const std::uint64_t max_len = std::uint64_t{1} << 32;
  const bool header_ok = decode_header(data, size, max_len, h) == status::ok;
  if (header_ok) {
    if (h.magic != magic || h.version != version || h.reserved != 0) std::abort();
    if (h.op == static_cast<std::uint8_t>(op::msg) && h.len > max_len) std::abort();
    if (h.op == static_cast<std::uint8_t>(op::hello) && h.len > sizeof(hello_body) + max_cm_data) std::abort();
    if ((h.op == static_cast<std::uint8_t>(op::close_req) || h.op == static_cast<std::uint8_t>(op::close_ack)) &&
        h.len != 0)
      std::abort();
    // the payload of a hello, if the input carries one
    if (h.op == static_cast<std::uint8_t>(op::hello) && size >= sizeof h + h.len) {
      hello_body b;
      if (decode_hello(data + sizeof h, h.len, b) == status::ok && sizeof b + b.cm_len != h.len) std::abort();
    }
  }
  // RMA requests: the rma_req at the start of a payload
  if (header_ok && h.op >= static_cast<std::uint8_t>(op::rma_write) && h.op <= static_cast<std::uint8_t>(op::save) &&
      size >= sizeof h + sizeof(rma_req)) {
    if (h.len < sizeof(rma_req)) std::abort();
    rma_req r;
    if (decode_rma_req(data + sizeof h, size - sizeof h, h.op, r) == status::ok) {
      if (r.reserved != 0) std::abort();
      if (h.op == static_cast<std::uint8_t>(op::save) && (r.level < 1 || r.level > 3)) std::abort();
      if (h.op == static_cast<std::uint8_t>(op::atomic) && h.len > sizeof(rma_req) + max_atomic_payload) std::abort();
    }
  }
  hello_body b;
  if (decode_hello(data, size, b) == status::ok) {
    if (b.magic != hello_magic || b.cm_len > max_cm_data || sizeof b + b.cm_len != size) std::abort();
  }
  (void)to_string(static_cast<status>(size % 8));
  return 0;
}

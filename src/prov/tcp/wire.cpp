#include "prov/tcp/wire.hpp"

namespace weft::prov::tcp::wire {

const char* to_string(status s) noexcept {
  switch (s) {
    case status::ok: return "ok";
    case status::need_more: return "incomplete frame";
    case status::bad_magic: return "not a weft tcp frame (bad magic)";
    case status::bad_version: return "unsupported weft tcp wire version";
    case status::bad_op: return "unknown frame type";
    case status::bad_field: return "malformed frame field";
    case status::too_long: return "frame length exceeds the limit";
  }
  return "unknown";
}

status decode_header(const std::uint8_t* p, std::size_t n, std::uint64_t max_len, frame_header& out) noexcept {
  if (n < sizeof(frame_header)) return status::need_more;
  std::memcpy(&out, p, sizeof out);
  if (out.magic != magic) return status::bad_magic;
  if (out.version != version) return status::bad_version;
  if (out.reserved != 0) return status::bad_field;
  const bool tagged_op = out.op == static_cast<std::uint8_t>(op::msg) || out.op == static_cast<std::uint8_t>(op::rma_resp);
  if (!tagged_op && out.tag != 0) return status::bad_field;  // only messages and answers carry a tag
  switch (static_cast<op>(out.op)) {
    case op::hello:
      if (out.flags & ~flag::replace || out.data != 0) return status::bad_field;
      if (out.len < sizeof(hello_body) || out.len > sizeof(hello_body) + max_cm_data) return status::too_long;
      break;
    case op::hello_ack:
      if (out.flags != 0) return status::bad_field;
      if (out.len > max_cm_data) return status::too_long;
      if (out.data > static_cast<std::uint64_t>(hello_status::no_resources)) return status::bad_field;
      break;
    case op::msg:
      if (out.flags & ~(flag::tagged | flag::cq_data)) return status::bad_field;
      if (out.len > max_len) return status::too_long;
      break;
    case op::close_req:  // data: 0 idle close, 1 bye (the sender's endpoint is closing)
      if (out.len != 0 || out.data > 1 || out.flags != 0) return status::bad_field;
      break;
    case op::close_ack:  // data: 0 agreed, 1 refused (the peer has data queued)
      if (out.len != 0 || out.data > 1 || out.flags != 0) return status::bad_field;
      break;
    case op::rma_write:
      if (out.flags & ~(flag::cq_data | flag::commit | flag::ack)) return status::bad_field;
      if (out.len < sizeof(rma_req)) return status::bad_field;
      if (out.len - sizeof(rma_req) > max_len) return status::too_long;
      break;
    case op::rma_read:
    case op::save:
      if (out.flags != 0 || out.data != 0) return status::bad_field;
      if (out.len != sizeof(rma_req)) return status::bad_field;
      break;
    case op::atomic:
      if (out.flags & ~flag::fetch || out.data != 0) return status::bad_field;
      if (out.len < sizeof(rma_req) || out.len > sizeof(rma_req) + max_atomic_payload) return status::bad_field;
      break;
    case op::rma_resp:
      if (out.flags & ~(flag::revoked | flag::more | flag::trailer)) return status::bad_field;
      if (__builtin_popcount(out.flags) > 1) return status::bad_field;  // one of them at most
      if ((out.flags & flag::revoked) && (out.len != 0 || out.data != 5)) return status::bad_field;  // 5: not_found
      if ((out.flags & flag::more) && (out.len == 0 || out.data != 0)) return status::bad_field;
      if ((out.flags & flag::trailer) && out.len != 0) return status::bad_field;
      if (out.len > max_len) return status::too_long;
      break;
    default: return status::bad_op;
  }
  return status::ok;
}

status decode_rma_req(const std::uint8_t* p, std::size_t n, std::uint8_t code, rma_req& out) noexcept {
  if (n < sizeof(rma_req)) return status::need_more;
  std::memcpy(&out, p, sizeof out);
  if (out.reserved != 0) return status::bad_field;
  const auto o = static_cast<op>(code);
  if (o == op::save) {
    if (out.level < 1 || out.level > 3 || out.len != 0 || out.atomic_op || out.atomic_type) return status::bad_field;
  } else if (out.level != 0) {
    return status::bad_field;
  }
  if (o != op::atomic && (out.atomic_op || out.atomic_type)) return status::bad_field;
  if (o == op::rma_write && out.len != 0) return status::bad_field;
  return status::ok;
}

status decode_hello(const std::uint8_t* p, std::size_t n, hello_body& out) noexcept {
  if (n < sizeof(hello_body)) return status::need_more;
  std::memcpy(&out, p, sizeof out);
  if (out.magic != hello_magic) return status::bad_magic;
  if (out.ep_type != 1 && out.ep_type != 2) return status::bad_field;
  if (out.family != 2 && out.family != 10) return status::bad_field;  // AF_INET, AF_INET6
  if (out.cm_len > max_cm_data || sizeof(hello_body) + out.cm_len != n) return status::bad_field;
  return status::ok;
}

}  // namespace weft::prov::tcp::wire

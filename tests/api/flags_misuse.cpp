// Typed flag sets (weft/flags.hpp). tests/api/CMakeLists.txt compiles this
// file once per WEFT_MISUSE_* macro, and each of those must NOT compile, with
// the error on the line right after its #elif and for a type mismatch
// (compile_check.cmake checks both);
// without a macro it must (the right forms), so a failure above is the
// misuse's and not a broken file's.
#include "weft/weft.hpp"

void use([[maybe_unused]] weft::domain& d, [[maybe_unused]] weft::endpoint& ep, [[maybe_unused]] weft::counter& c,
         [[maybe_unused]] weft::completion_queue& q, [[maybe_unused]] const weft::msg_desc& m,
         [[maybe_unused]] const weft::rma_desc& r) {
#if defined(WEFT_MISUSE_COUNTER_WITH_ACCESS)
  (void)ep.bind(c, weft::access::remote_write);  // an access right is not an operation kind
#elif defined(WEFT_MISUSE_COUNTER_WITH_RAW_BITS)
  (void)ep.bind(c, 2);  // raw bits become flags only explicitly
#elif defined(WEFT_MISUSE_COUNTER_WITH_MIXED_SET)
  (void)ep.bind(c, weft::flag::recv | weft::access::remote_write);
#elif defined(WEFT_MISUSE_REGISTER_WITH_OP_FLAGS)
  (void)d.register_memory(nullptr, 8, weft::flag::recv);
#elif defined(WEFT_MISUSE_ALLOC_WITH_OP_FLAGS)
  (void)d.alloc_memory(8, weft::flag::remote_write);
#elif defined(WEFT_MISUSE_SENDMSG_WITH_ACCESS)
  (void)ep.sendmsg(m, weft::access::send);
#elif defined(WEFT_MISUSE_WRITEMSG_WITH_ACCESS)
  (void)ep.writemsg(r, weft::access::write);
#elif defined(WEFT_MISUSE_MIXED_COMPARE)
  (void)(weft::flag::recv == weft::access::remote_write);  // true through the raw bits
#elif defined(WEFT_MISUSE_MIXED_NOT_EQUAL)
  (void)(weft::access::remote_write != weft::flag::recv);
#elif defined(WEFT_MISUSE_MIXED_AND)
  (void)(weft::flag::recv & weft::access::remote_write);  // a non-zero integer
#else
  (void)ep.bind(c, weft::flag::remote_write);
  (void)ep.bind(c, weft::flag::send | weft::flag::recv);
  (void)ep.bind(c, weft::op_flags{1ull << 1});  // explicit: raw bits named as operation flags
  (void)ep.bind(q, weft::flag::transmit);
  (void)d.register_memory(nullptr, 8, weft::access::remote_write | weft::access::recv);
  (void)d.alloc_memory(8, weft::access::remote_read);
  (void)ep.sendmsg(m, weft::flag::inject);
  (void)ep.writemsg(r, {});
  // the raw bits stay available to integer code
  constexpr std::uint64_t raw = weft::flag::send | weft::flag::recv;
  static_assert(raw == 3 && (weft::flag::recv & weft::flag::send) == weft::op_flags{});
  static_assert((~weft::flag::send & weft::flag::recv) == weft::flag::recv);
  static_assert(weft::access::all.all(weft::access::persistent) && !weft::access::read.any(weft::access::write));
#endif
}

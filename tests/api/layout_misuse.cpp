// The fixed layouts (docs/abi.md) and their initialisation. tests/api/
// CMakeLists.txt compiles this file once per WEFT_MISUSE_* macro, and each
// of those must NOT compile (the error on the line right after its #elif,
// for a type mismatch); without a macro it must (the right forms).
#include "weft/weft.hpp"

void use([[maybe_unused]] weft::endpoint& ep, [[maybe_unused]] const void* p,
         [[maybe_unused]] weft::commit_event& ev) {
#if defined(WEFT_MISUSE_ATOMIC_DESC_OLD_ORDER)
  (void)ep.atomicmsg(weft::atomic_desc{p, nullptr, nullptr, 1, weft::atomic_op::sum, weft::atomic_type::u64, 0, 0, 7});
#elif defined(WEFT_MISUSE_COMMIT_FLAGS_WITH_OP_FLAGS)
  (void)(weft::commit_flag::persistent | weft::flag::commit_complete);  // different kinds of flags
#elif defined(WEFT_MISUSE_COMMIT_FLAGS_FROM_BOOL)
  ev.flags = true;  // a yes/no is a named flag, not a bool
#else
  // an initialisation written before op and type moved to the end does not
  // compile (above); the designated form names what it sets
  (void)ep.atomicmsg(weft::atomic_desc{.operand = p, .count = 1, .addr = 0, .offset = 0, .key = 7,
                                       .op = weft::atomic_op::sum, .type = weft::atomic_type::u64});
  ev.flags = weft::commit_flag::persistent;
  ev.flags |= weft::commit_flags{};
  [[maybe_unused]] const bool persistent = ev.persistent();
#endif
}

#pragma once
// Atomic operations and datatypes (cf. fi_atomic(3)).
#include <cstddef>
#include <cstdint>

namespace weft {

enum class atomic_op : std::uint8_t { sum, min, max, band, bor, bxor, swap, cswap };
enum class atomic_type : std::uint8_t { i8, u8, i16, u16, i32, u32, i64, u64, f32, f64 };

[[nodiscard]] constexpr std::size_t size_of(atomic_type t) noexcept {
  switch (t) {
    case atomic_type::i8:
    case atomic_type::u8: return 1;
    case atomic_type::i16:
    case atomic_type::u16: return 2;
    case atomic_type::i32:
    case atomic_type::u32:
    case atomic_type::f32: return 4;
    default: return 8;
  }
}

// Whether op is defined on type (bitwise operations are not defined on
// floating point; everything else is).
[[nodiscard]] constexpr bool atomic_valid(atomic_op op, atomic_type t) noexcept {
  const bool fp = t == atomic_type::f32 || t == atomic_type::f64;
  return !(fp && (op == atomic_op::band || op == atomic_op::bor || op == atomic_op::bxor));
}

// Elements one atomic operation may carry (operand bytes at most 64).
inline constexpr std::size_t atomic_max_bytes = 64;

}  // namespace weft

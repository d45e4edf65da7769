#pragma once
// The target side of atomics, shared by the providers: validation and
// element-by-element application with atomic instructions, so that an
// operation is atomic with respect to every other weft atomic on that memory
// (and to the owner's own std::atomic_ref / __atomic operations).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "weft/atomic.hpp"
#include "weft/error.hpp"

namespace weft::core {

namespace detail {
// One element: returns the value before the operation.
template <class T>
T apply_one(atomic_op op, T* where, T v, T cmp) noexcept {
  std::atomic_ref<T> a(*where);
  switch (op) {
    case atomic_op::sum: return a.fetch_add(v);
    case atomic_op::swap: return a.exchange(v);
    case atomic_op::cswap: {
      T expected = cmp;
      a.compare_exchange_strong(expected, v);
      return expected;  // the old value whether or not it matched
    }
    case atomic_op::min:
    case atomic_op::max: {
      T old = a.load();
      while ((op == atomic_op::min ? v < old : v > old) && !a.compare_exchange_weak(old, v)) {
      }
      return old;
    }
    default:
      if constexpr (std::is_integral_v<T>) {
        if (op == atomic_op::band) return a.fetch_and(v);
        if (op == atomic_op::bor) return a.fetch_or(v);
        return a.fetch_xor(v);
      } else {
        return a.load();  // refused before we get here
      }
  }
}

template <class T>
void apply_all(atomic_op op, std::byte* target, const std::byte* operand, const std::byte* compare, std::size_t n,
               std::byte* old) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    T v, c{};
    std::memcpy(&v, operand + i * sizeof(T), sizeof(T));
    if (compare) std::memcpy(&c, compare + i * sizeof(T), sizeof(T));
    T o = apply_one(op, reinterpret_cast<T*>(target) + i, v, c);
    std::memcpy(old + i * sizeof(T), &o, sizeof(T));
  }
}
}  // namespace detail

// Whether raw op/type bytes from the wire name a valid operation on count
// elements: invalid_argument otherwise.
[[nodiscard]] inline errc check_atomic(std::uint32_t op, std::uint32_t type, std::uint64_t count) noexcept {
  if (op > static_cast<unsigned>(atomic_op::cswap) || type > static_cast<unsigned>(atomic_type::f64))
    return errc::invalid_argument;
  const auto t = static_cast<atomic_type>(type);
  if (!atomic_valid(static_cast<atomic_op>(op), t) || count == 0 || count > atomic_max_bytes / size_of(t))
    return errc::invalid_argument;
  return errc::ok;
}

// Applies op to count elements at where (naturally aligned: checked by the
// caller); old receives the values before (count elements).
inline void apply_atomic(atomic_op op, atomic_type type, std::byte* where, const std::byte* operand,
                         const std::byte* compare, std::size_t count, std::byte* old) noexcept {
  using detail::apply_all;
  switch (type) {
    case atomic_type::i8: apply_all<std::int8_t>(op, where, operand, compare, count, old); break;
    case atomic_type::u8: apply_all<std::uint8_t>(op, where, operand, compare, count, old); break;
    case atomic_type::i16: apply_all<std::int16_t>(op, where, operand, compare, count, old); break;
    case atomic_type::u16: apply_all<std::uint16_t>(op, where, operand, compare, count, old); break;
    case atomic_type::i32: apply_all<std::int32_t>(op, where, operand, compare, count, old); break;
    case atomic_type::u32: apply_all<std::uint32_t>(op, where, operand, compare, count, old); break;
    case atomic_type::i64: apply_all<std::int64_t>(op, where, operand, compare, count, old); break;
    case atomic_type::u64: apply_all<std::uint64_t>(op, where, operand, compare, count, old); break;
    case atomic_type::f32: apply_all<float>(op, where, operand, compare, count, old); break;
    case atomic_type::f64: apply_all<double>(op, where, operand, compare, count, old); break;
  }
}

}  // namespace weft::core

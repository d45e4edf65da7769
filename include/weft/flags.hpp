#pragma once
// Typed flag sets: the operation flags (weft::flag::, op_flags) and the
// access rights of memory regions (weft::access::, access_flags) are
// different types, so passing one where the other is expected does not
// compile (endpoint::bind(counter, access::remote_write) is an error, not a
// receive counter). A set converts implicitly to its raw bits (a
// std::uint64_t), for code that stores or tests them as integers; raw bits
// become a set only explicitly: op_flags{bits}.
#include <cstdint>
#include <type_traits>

namespace weft {

template <class Tag>
class flag_set {
 public:
  constexpr flag_set() noexcept = default;
  constexpr explicit flag_set(std::uint64_t bits) noexcept : bits_(bits) {}
  // The raw bits (implicit, so that integer code keeps working).
  constexpr operator std::uint64_t() const noexcept { return bits_; }
  [[nodiscard]] constexpr std::uint64_t bits() const noexcept { return bits_; }
  // Whether any of, or all of, the flags of f are in this set.
  [[nodiscard]] constexpr bool any(flag_set f) const noexcept { return (bits_ & f.bits_) != 0; }
  [[nodiscard]] constexpr bool all(flag_set f) const noexcept { return (bits_ & f.bits_) == f.bits_; }

  [[nodiscard]] friend constexpr flag_set operator|(flag_set a, flag_set b) noexcept {
    return flag_set(a.bits_ | b.bits_);
  }
  [[nodiscard]] friend constexpr flag_set operator&(flag_set a, flag_set b) noexcept {
    return flag_set(a.bits_ & b.bits_);
  }
  [[nodiscard]] friend constexpr flag_set operator^(flag_set a, flag_set b) noexcept {
    return flag_set(a.bits_ ^ b.bits_);
  }
  [[nodiscard]] constexpr flag_set operator~() const noexcept { return flag_set(~bits_); }
  constexpr flag_set& operator|=(flag_set b) noexcept {
    bits_ |= b.bits_;
    return *this;
  }
  constexpr flag_set& operator&=(flag_set b) noexcept {
    bits_ &= b.bits_;
    return *this;
  }
  constexpr flag_set& operator^=(flag_set b) noexcept {
    bits_ ^= b.bits_;
    return *this;
  }
  [[nodiscard]] friend constexpr bool operator==(flag_set a, flag_set b) noexcept { return a.bits_ == b.bits_; }

 private:
  std::uint64_t bits_ = 0;
};

// Sets of different kinds do not mix: op_flags | access_flags (and &, ^, ==,
// !=) does not compile, instead of comparing or combining their raw bits
// through the implicit conversion (flag::recv == access::remote_write would
// be true).
template <class A, class B>
  requires(!std::is_same_v<A, B>)
void operator|(flag_set<A>, flag_set<B>) = delete;
template <class A, class B>
  requires(!std::is_same_v<A, B>)
void operator&(flag_set<A>, flag_set<B>) = delete;
template <class A, class B>
  requires(!std::is_same_v<A, B>)
void operator^(flag_set<A>, flag_set<B>) = delete;
template <class A, class B>
  requires(!std::is_same_v<A, B>)
bool operator==(flag_set<A>, flag_set<B>) = delete;

// Operation, completion and binding flags: the constants of weft::flag (types.hpp).
using op_flags = flag_set<struct op_flag_tag>;
// Access rights of a memory region: the constants of weft::access (mr.hpp).
using access_flags = flag_set<struct access_tag>;

}  // namespace weft

#pragma once
// Typed flag sets: the operation flags (weft::flag::, op_flags) and the
// access rights of memory regions (weft::access::, access_flags) are
// different types, so passing one where the other is expected does not
// compile (endpoint::bind(counter, access::remote_write) is an error, not a
// receive counter). A set converts implicitly to its raw bits (a
// std::uint64_t), for code that stores or tests them as integers; raw bits
// become a set only explicitly: op_flags{bits}.
//
// A set is exactly its bits (Bits, 64 by default; 8 for the small sets
// carried inside public structs, e.g. commit_flags): standard layout and
// trivially copyable, so it lays out in a struct as the integer would
// (docs/abi.md).
#include <cstdint>
#include <type_traits>

namespace weft {

template <class Tag, class Bits = std::uint64_t>
class flag_set {
  static_assert(std::is_unsigned_v<Bits>, "a flag set's bits are an unsigned integer");

 public:
  using bits_type = Bits;
  constexpr flag_set() noexcept = default;
  constexpr explicit flag_set(Bits bits) noexcept : bits_(bits) {}
  // The raw bits (implicit, so that integer code keeps working).
  constexpr operator Bits() const noexcept { return bits_; }
  [[nodiscard]] constexpr Bits bits() const noexcept { return bits_; }
  // Whether any of, or all of, the flags of f are in this set.
  [[nodiscard]] constexpr bool any(flag_set f) const noexcept { return (bits_ & f.bits_) != 0; }
  [[nodiscard]] constexpr bool all(flag_set f) const noexcept { return (bits_ & f.bits_) == f.bits_; }

  [[nodiscard]] friend constexpr flag_set operator|(flag_set a, flag_set b) noexcept {
    return flag_set(static_cast<Bits>(a.bits_ | b.bits_));
  }
  [[nodiscard]] friend constexpr flag_set operator&(flag_set a, flag_set b) noexcept {
    return flag_set(static_cast<Bits>(a.bits_ & b.bits_));
  }
  [[nodiscard]] friend constexpr flag_set operator^(flag_set a, flag_set b) noexcept {
    return flag_set(static_cast<Bits>(a.bits_ ^ b.bits_));
  }
  [[nodiscard]] constexpr flag_set operator~() const noexcept { return flag_set(static_cast<Bits>(~bits_)); }
  constexpr flag_set& operator|=(flag_set b) noexcept {
    bits_ = static_cast<Bits>(bits_ | b.bits_);
    return *this;
  }
  constexpr flag_set& operator&=(flag_set b) noexcept {
    bits_ = static_cast<Bits>(bits_ & b.bits_);
    return *this;
  }
  constexpr flag_set& operator^=(flag_set b) noexcept {
    bits_ = static_cast<Bits>(bits_ ^ b.bits_);
    return *this;
  }
  [[nodiscard]] friend constexpr bool operator==(flag_set a, flag_set b) noexcept { return a.bits_ == b.bits_; }

 private:
  Bits bits_ = 0;
};

// Sets of different kinds do not mix: op_flags | access_flags (and &, ^, ==,
// !=) does not compile, instead of comparing or combining their raw bits
// through the implicit conversion (flag::recv == access::remote_write would
// be true).
template <class A, class AB, class B, class BB>
  requires(!std::is_same_v<A, B>)
void operator|(flag_set<A, AB>, flag_set<B, BB>) = delete;
template <class A, class AB, class B, class BB>
  requires(!std::is_same_v<A, B>)
void operator&(flag_set<A, AB>, flag_set<B, BB>) = delete;
template <class A, class AB, class B, class BB>
  requires(!std::is_same_v<A, B>)
void operator^(flag_set<A, AB>, flag_set<B, BB>) = delete;
template <class A, class AB, class B, class BB>
  requires(!std::is_same_v<A, B>)
bool operator==(flag_set<A, AB>, flag_set<B, BB>) = delete;

// Operation, completion and binding flags: the constants of weft::flag (types.hpp).
using op_flags = flag_set<struct op_flag_tag>;
// Access rights of a memory region: the constants of weft::access (mr.hpp).
using access_flags = flag_set<struct access_tag>;
// What a commit handler is told about the range (commit_event::flags): the constants of weft::commit_flag (mr.hpp).
using commit_flags = flag_set<struct commit_flag_tag, std::uint8_t>;

static_assert(sizeof(op_flags) == 8 && alignof(op_flags) == 8 && std::is_standard_layout_v<op_flags> &&
              std::is_trivially_copyable_v<op_flags>);
static_assert(sizeof(access_flags) == 8 && alignof(access_flags) == 8);
static_assert(sizeof(commit_flags) == 1 && alignof(commit_flags) == 1 && std::is_standard_layout_v<commit_flags> &&
              std::is_trivially_copyable_v<commit_flags>);

}  // namespace weft

#pragma once
// Tag matching rules shared by every provider (cf. fi_tagged(3)).
#include <cstdint>

namespace weft::util {

inline constexpr std::uint64_t any_source = ~0ull;

// A posted receive (tag, ignore, source filter) matches a message (tag, source)
// when every tag bit not ignored is equal and the source filter is "any" or equal.
[[nodiscard]] constexpr bool tag_matches(std::uint64_t posted_tag, std::uint64_t ignore,
                                         std::uint64_t msg_tag) noexcept {
  return ((posted_tag ^ msg_tag) & ~ignore) == 0;
}
[[nodiscard]] constexpr bool source_matches(std::uint64_t filter, std::uint64_t src) noexcept {
  return filter == any_source || filter == src;
}

}  // namespace weft::util

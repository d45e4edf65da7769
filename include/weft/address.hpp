#pragma once
// A provider address: opaque bytes of bounded size, trivially copyable so it
// can travel on the data path without allocation.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace weft {

enum class addr_format : std::uint8_t { unspec, shm_name, inet, inet6 };

struct address {
  static constexpr std::size_t max_size = 64;
  addr_format format = addr_format::unspec;
  std::uint8_t size = 0;
  std::array<std::byte, max_size> bytes{};

  [[nodiscard]] static address from_string(addr_format f, std::string_view s) noexcept {
    address a;
    a.format = f;
    a.size = static_cast<std::uint8_t>(s.size() < max_size ? s.size() : max_size);
    std::memcpy(a.bytes.data(), s.data(), a.size);
    return a;
  }
  [[nodiscard]] std::string_view view() const noexcept {
    return {reinterpret_cast<const char*>(bytes.data()), size};
  }
  friend bool operator==(const address& a, const address& b) noexcept {
    return a.format == b.format && a.size == b.size &&
           std::memcmp(a.bytes.data(), b.bytes.data(), a.size) == 0;
  }
};

static_assert(sizeof(addr_format) == 1);
static_assert(sizeof(address) == 66 && alignof(address) == 1 && offsetof(address, format) == 0 &&
              offsetof(address, size) == 1 && offsetof(address, bytes) == 2 && std::is_standard_layout_v<address> &&
              std::is_trivially_copyable_v<address>);
static_assert(std::has_unique_object_representations_v<address>, "no padding");

// Printable form: "shm://weft.0.1234.1" etc.
[[nodiscard]] std::string to_string(const address& a);

}  // namespace weft

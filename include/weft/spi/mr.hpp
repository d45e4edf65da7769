#pragma once
// Memory regions (cf. fi_mr(3)): a buffer registered with access rights and
// an unpredictable 64-bit key that peers name in RMA operations.
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace weft {

namespace access {
inline constexpr std::uint64_t remote_read = 1ull << 0;   // peers may read it (RMA read)
inline constexpr std::uint64_t remote_write = 1ull << 1;  // peers may write it (RMA write)
}  // namespace access

namespace spi {

class mr {
 public:
  virtual ~mr() = default;
  [[nodiscard]] std::uint64_t key() const noexcept { return key_; }
  [[nodiscard]] std::byte* addr() const noexcept { return addr_; }
  [[nodiscard]] std::size_t len() const noexcept { return len_; }
  [[nodiscard]] std::uint64_t access() const noexcept { return access_; }

 protected:
  std::uint64_t key_ = 0;
  std::byte* addr_ = nullptr;
  std::size_t len_ = 0;
  std::uint64_t access_ = 0;
};

}  // namespace spi
}  // namespace weft

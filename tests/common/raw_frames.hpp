// Reading weft tcp frames from a raw socket (tests that speak the wire
// protocol themselves, docs/wire/tcp.md).
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>

#include "prov/tcp/wire.hpp"

namespace weft::test {

// The next frame header on s; nullopt at EOF or after timeout_ms. drive()
// is called meanwhile (the endpoint under test progresses).
template <class F>
std::optional<prov::tcp::wire::frame_header> read_frame(int s, F drive, int timeout_ms = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::uint8_t buf[sizeof(prov::tcp::wire::frame_header)];
  std::size_t got = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    drive();
    pollfd p{s, POLLIN, 0};
    if (::poll(&p, 1, 1) != 1) continue;
    const ssize_t r = ::recv(s, buf + got, sizeof buf - got, MSG_DONTWAIT);
    if (r <= 0) return std::nullopt;
    got += static_cast<std::size_t>(r);
    if (got == sizeof buf) {
      prov::tcp::wire::frame_header h;
      std::memcpy(&h, buf, sizeof h);
      return h;
    }
  }
  return std::nullopt;
}

}  // namespace weft::test

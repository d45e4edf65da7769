// Raw TCP peers of a weft tcp listener (tests that speak the wire protocol
// themselves, docs/wire/tcp.md), and what the kernel says about a listener.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>

#include "prov/tcp/wire.hpp"

namespace weft::test {

// A blocking TCP connection to sa (-1 on failure, errno set).
inline int raw_connect(const sockaddr_in& sa) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  if (::connect(s, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

// 127.0.0.1:port.
inline sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// A blocking TCP connection to 127.0.0.1:port (-1 on failure, errno set).
inline int raw_connect(std::uint16_t port) { return raw_connect(loopback(port)); }

// A connection to `to` that sends its hello at once (ep_type 1 msg, 2 rdm),
// with no connection data, claiming the listening address my_addr:my_port
// (unspecified unless given).
inline int raw_hello(const sockaddr_in& to, std::uint16_t ep_type, std::uint16_t my_port, in_addr my_addr = {}) {
  namespace wire = prov::tcp::wire;
  const int s = raw_connect(to);
  if (s < 0) return -1;
  std::uint8_t frame[sizeof(wire::frame_header) + sizeof(wire::hello_body)]{};
  const wire::frame_header h{wire::magic, wire::version, static_cast<std::uint8_t>(wire::op::hello), 0, 0,
                             sizeof(wire::hello_body), 0, 0};
  wire::hello_body hb{};
  hb.magic = wire::hello_magic;
  hb.ep_type = ep_type;
  hb.family = AF_INET;
  hb.port = htons(my_port);
  std::memcpy(hb.addr, &my_addr, 4);
  std::memcpy(frame, &h, sizeof h);
  std::memcpy(frame + sizeof h, &hb, sizeof hb);
  if (::send(s, frame, sizeof frame, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof frame)) {
    ::close(s);
    return -1;
  }
  return s;
}

// The same to 127.0.0.1:port, claiming port my_port (0 unless given).
inline int raw_hello(std::uint16_t port, std::uint16_t ep_type, std::uint16_t my_port = 0) {
  return raw_hello(loopback(port), ep_type, my_port);
}

// s was closed by the other side (EOF or reset) with nothing to read.
inline bool closed_silently(int s) {
  pollfd p{s, POLLIN, 0};
  if (::poll(&p, 1, 0) != 1) return false;
  char c;
  const ssize_t r = ::recv(s, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return r <= 0;
}

// The listener on 127.0.0.1:port: its accept queue's length (nullopt: not
// found). A listening socket's rx_queue in /proc/net/tcp is its accept queue.
inline std::optional<unsigned> accept_queue(std::uint16_t port) {
  FILE* f = std::fopen("/proc/net/tcp", "r");
  if (!f) return std::nullopt;
  char line[512];
  std::optional<unsigned> out;
  (void)std::fgets(line, sizeof line, f);  // header
  while (std::fgets(line, sizeof line, f)) {
    unsigned sl, laddr, lport, raddr, rport, st, txq, rxq;
    if (std::sscanf(line, " %u: %x:%x %x:%x %x %x:%x", &sl, &laddr, &lport, &raddr, &rport, &st, &txq, &rxq) != 8)
      continue;
    if (lport == port && st == 0x0A) out = rxq;
  }
  std::fclose(f);
  return out;
}

}  // namespace weft::test

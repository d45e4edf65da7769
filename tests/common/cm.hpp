// Helpers for tests of connected (MSG) endpoints over tcp: an info for one
// side, a side's objects, an endpoint bound and enabled, the next event.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace weft::test {

inline std::vector<std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size()};
}
inline std::string text(const std::vector<std::byte>& v) { return {reinterpret_cast<const char*>(v.data()), v.size()}; }

// The port of a tcp endpoint's (IPv4) address, e.g. a passive endpoint's name.
inline std::uint16_t port_of(const address& a) {
  sockaddr_in sa{};
  std::memcpy(&sa, a.bytes.data(), sizeof sa);
  return ntohs(sa.sin_port);
}

// A tcp MSG info: the listening side (source) or a connecting one (port: the
// server's).
inline info msg_info(bool source, std::uint16_t port = 0, const std::string& node = "127.0.0.1") {
  hints h;
  h.provider = "tcp";
  h.type = ep_type::msg;
  h.node = node;
  h.port = port;
  h.source = source;
  auto r = get_info(h);
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  return r ? r->front() : info{};
}

struct side {
  fabric fab;
  domain dom;
  event_queue eq;
  completion_queue cq;
  endpoint ep;
  info inf;
};

inline side open_side(const info& i) {
  side s;
  s.inf = i;
  s.fab = std::move(*fabric::open(i));
  s.dom = std::move(*s.fab.open_domain(i));
  s.eq = std::move(*s.dom.open_eq());
  s.cq = std::move(*s.dom.open_cq(256));
  return s;
}

inline result<endpoint> make_ep(side& s, const info& i) {
  auto e = s.dom.open_endpoint(i);
  if (!e) return e;
  if (auto r = e->bind(s.cq); !r) return std::unexpected(r.error());
  if (auto r = e->bind(s.eq); !r) return std::unexpected(r.error());
  if (auto r = e->enable(); !r) return std::unexpected(r.error());
  return e;
}

// The next event on q within timeout_ms, driving the others; nullopt if none.
inline std::optional<eq_event> poll_event(event_queue& q, const std::vector<side*>& others = {},
                                          int timeout_ms = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  eq_event e;
  while (std::chrono::steady_clock::now() < deadline) {
    if (q.read(e) == errc::ok) return e;
    for (auto* o : others) (void)o->cq.progress();
  }
  return std::nullopt;
}

}  // namespace weft::test

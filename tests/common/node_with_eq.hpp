#pragma once
// An endpoint with its own fabric, domain, CQ, AV and EQ, all bound: for
// tests that read events (peer deaths, closes) on the EQ. shm: node_with_eq;
// tcp: a harness node with an EQ beside it (tcp_node_with_eq).
#include <gtest/gtest.h>

#include <utility>

#include "harness.hpp"
#include "weft/weft.hpp"

namespace weft::test {

// Declared in the order they are opened (and so closed in reverse).
struct node_with_eq {
  fabric fab;
  domain dom;
  completion_queue cq;
  address_vector av;
  event_queue eq;
  endpoint ep;
};

// An shm rdm endpoint (msg, tagged) with CQ, AV and EQ bound, enabled.
inline node_with_eq open_shm_node_with_eq() {
  hints h;
  h.provider = "shm";
  h.type = ep_type::rdm;
  h.caps = cap::msg | cap::tagged;
  auto infos = get_info(h);
  EXPECT_TRUE(infos) << (infos ? "" : infos.error().message);
  node_with_eq n;
  if (!infos) return n;
  n.fab = std::move(*fabric::open(infos->front()));
  n.dom = std::move(*n.fab.open_domain(infos->front()));
  n.cq = std::move(*n.dom.open_cq(1024));
  n.av = std::move(*n.dom.open_av(av_attr{}));
  n.eq = std::move(*n.dom.open_eq());
  n.ep = std::move(*n.dom.open_endpoint(infos->front()));
  EXPECT_TRUE(n.ep.bind(n.cq));
  EXPECT_TRUE(n.ep.bind(n.av));
  auto b = n.ep.bind(n.eq);
  EXPECT_TRUE(b) << (b ? "" : b.error().message);
  EXPECT_TRUE(n.ep.enable());
  return n;
}

// A tcp node (msg, tagged, source, directed_recv on 127.0.0.1, any port)
// and, with_eq, an EQ bound to its endpoint before enable.
struct tcp_node_with_eq {
  node n;
  event_queue eq;
};

inline tcp_node_with_eq open_tcp_node_with_eq(bool with_eq = true, bool auto_insert = false) {
  tcp_node_with_eq x;
  hints h;
  h.provider = "tcp";
  h.type = ep_type::rdm;
  h.caps = cap::msg | cap::tagged | cap::source | cap::directed_recv;
  h.node = "127.0.0.1";
  h.source = true;
  h.port = 0;
  auto infos = get_info(h);
  EXPECT_TRUE(infos) << (infos ? "" : infos.error().message);
  if (!infos) return x;
  x.n.inf = infos->front();
  x.n.fab = std::move(*fabric::open(x.n.inf));
  x.n.dom = std::move(*x.n.fab.open_domain(x.n.inf));
  x.n.cq = std::move(*x.n.dom.open_cq(64));
  av_attr aa;
  aa.auto_insert = auto_insert;
  x.n.av = std::move(*x.n.dom.open_av(aa));
  auto e = x.n.dom.open_endpoint(x.n.inf);
  EXPECT_TRUE(e) << (e ? "" : e.error().message);
  if (!e) return x;
  x.n.ep = std::move(*e);
  EXPECT_TRUE(x.n.ep.bind(x.n.cq));
  EXPECT_TRUE(x.n.ep.bind(x.n.av));
  if (with_eq) {
    auto q = x.n.dom.open_eq();
    EXPECT_TRUE(q);
    x.eq = std::move(*q);
    auto b = x.n.ep.bind(x.eq);
    EXPECT_TRUE(b) << (b ? "" : b.error().message);
  }
  EXPECT_TRUE(x.n.ep.enable());
  return x;
}

}  // namespace weft::test

#pragma once
// An endpoint with its own fabric, domain, CQ, AV and EQ, all bound: for
// tests that read events (peer deaths, closes) on the EQ.
#include <gtest/gtest.h>

#include <utility>

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

}  // namespace weft::test

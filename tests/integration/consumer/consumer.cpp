// A minimal program built against an installed weft: one message over shm.
#include <cstdio>
#include <cstring>

#include "weft/weft.hpp"

int main() {
  weft::hints h;
  h.provider = "shm";
  h.caps = weft::cap::msg;
  auto infos = weft::get_info(h);
  if (!infos) return std::fprintf(stderr, "%s\n", infos.error().message.c_str()), 1;
  auto fab = weft::fabric::open(infos->front());
  auto dom = fab->open_domain(infos->front());
  auto cq = dom->open_cq();
  auto av = dom->open_av();
  auto a = dom->open_endpoint(infos->front());
  auto b = dom->open_endpoint(infos->front());
  if (!a || !b || !cq || !av) return 1;
  for (auto* ep : {&*a, &*b}) {
    if (!ep->bind(*cq) || !ep->bind(*av) || !ep->enable()) return 1;
  }
  auto to_b = av->insert(*b->name());
  if (!to_b) return 1;
  char got[6] = {};
  if (b->recv(got, 5) != weft::errc::ok || a->send("hello", 5, *to_b) != weft::errc::ok) return 1;
  weft::cq_entry e[2];
  int n = 0;
  for (int i = 0; i < 1000000 && n < 2; ++i) {
    std::size_t k = 0;
    if (cq->read(e, k) == weft::errc::ok) n += static_cast<int>(k);
  }
  if (n != 2 || std::strcmp(got, "hello") != 0) return 1;
  std::puts("consumer: ok");
  return 0;
}

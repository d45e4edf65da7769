// Micro-benchmarks of the shm fast path (Google Benchmark):
//   build/release/bench/micro_shm
#include <benchmark/benchmark.h>

#include <vector>

#include "util/ring.hpp"
#include "weft/weft.hpp"

namespace {

struct slot {
  std::atomic<std::uint64_t> seq;
  char payload[56];
};

void ring_claim_publish_pop(benchmark::State& st) {
  alignas(64) weft::util::ring_tail t;
  std::vector<slot> mem(256);
  weft::util::mpsc_ring r(&t, reinterpret_cast<std::byte*>(mem.data()), 256, sizeof(slot));
  r.format();
  for (auto _ : st) {
    std::uint64_t pos = 0;
    auto* s = r.claim(pos);
    benchmark::DoNotOptimize(s);
    r.publish(pos);
    benchmark::DoNotOptimize(r.peek());
    r.pop();
  }
}
BENCHMARK(ring_claim_publish_pop);

struct pair_nodes {
  weft::fabric fab;
  weft::domain dom;
  weft::completion_queue cq;
  weft::address_vector av;
  weft::endpoint a, b;
  weft::fi_addr_t to_b = 0;
  pair_nodes() {
    weft::hints h;
    h.provider = "shm";
    auto infos = weft::get_info(h);
    fab = std::move(*weft::fabric::open(infos->front()));
    dom = std::move(*fab.open_domain(infos->front()));
    cq = std::move(*dom.open_cq(1024));
    av = std::move(*dom.open_av());
    a = std::move(*dom.open_endpoint(infos->front()));
    b = std::move(*dom.open_endpoint(infos->front()));
    for (auto* e : {&a, &b}) {
      (void)e->bind(cq);
      (void)e->bind(av);
      (void)e->enable();
    }
    to_b = *av.insert(*b.name());
  }
};

// One message through the ring: post receive, send, read both completions.
void send_recv_same_process(benchmark::State& st) {
  pair_nodes p;
  const auto size = static_cast<std::size_t>(st.range(0));
  std::vector<char> src(size, 'x'), dst(size);
  weft::cq_entry e[2];
  for (auto _ : st) {
    if (p.b.recv(dst.data(), size) != weft::errc::ok || p.a.send(src.data(), size, p.to_b) != weft::errc::ok) {
      st.SkipWithError("post failed");
      break;
    }
    std::size_t got = 0;
    while (got < 2) {
      std::size_t n = 0;
      if (p.cq.read({e, 2}, n) == weft::errc::ok) got += n;
    }
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * size));
}
BENCHMARK(send_recv_same_process)->Arg(8)->Arg(64)->Arg(1024)->Arg(4000)->Arg(65536)->Arg(1 << 20);

}  // namespace

BENCHMARK_MAIN();

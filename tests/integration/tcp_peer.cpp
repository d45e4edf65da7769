// tcp_peer: a test peer for the network-namespace tests.
//   tcp_peer server --bind IP --port P --count N [--stay]
//       receives N messages, checks order and checksums, prints a verdict;
//       --stay: then keeps its endpoint open (driving it, sending nothing)
//       until the timeout
//   tcp_peer client --bind IP --server IP --port P --count N [--large] [--then-wait]
//       sends N messages of mixed sizes (a window of 32 in flight); exits 3
//       with the error text when a send completes with an error;
//       --then-wait: then waits on a receive directed at the server (which
//       sends nothing) and exits 3 with its error text when it fails
// Every wait is bounded (WEFT_PEER_TIMEOUT_S, default 120).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "weft/weft.hpp"

namespace {
using clk = std::chrono::steady_clock;

struct msg_head {
  std::uint64_t seq, len, sum;
};

std::size_t size_of(std::uint64_t seq, bool large) {
  if (large) return 256 * 1024;
  if (seq % 100 == 99) return 70000;
  switch (seq % 3) {
    case 0: return 24;
    case 1: return 1000;
    default: return 9000;
  }
}

std::uint64_t fill(std::vector<unsigned char>& b, std::uint64_t seq, std::size_t len) {
  std::uint64_t sum = 0;
  for (std::size_t i = sizeof(msg_head); i < len; ++i) {
    b[i] = static_cast<unsigned char>(seq * 7 + i);
    sum += b[i];
  }
  msg_head h{seq, len, sum};
  std::memcpy(b.data(), &h, sizeof h);
  return sum;
}

[[noreturn]] void fail(int code, const std::string& s) {
  std::fprintf(stderr, "tcp_peer: %s\n", s.c_str());
  std::fflush(stderr);
  std::_Exit(code);
}

struct node {
  weft::fabric fab;
  weft::domain dom;
  weft::completion_queue cq;
  weft::address_vector av;
  weft::endpoint ep;
};

node open(const std::string& bind, std::uint16_t port, bool server) {
  weft::hints h;
  h.provider = "tcp";
  h.type = weft::ep_type::rdm;
  h.caps = weft::cap::msg | weft::cap::directed_recv | (server ? weft::cap::source : 0);
  h.node = bind;
  h.port = port;
  h.source = true;
  auto infos = weft::get_info(h);
  if (!infos) fail(2, infos.error().message);
  node n;
  n.fab = std::move(*weft::fabric::open(infos->front()));
  n.dom = std::move(*n.fab.open_domain(infos->front()));
  n.cq = std::move(*n.dom.open_cq(1024));
  weft::av_attr aa;
  aa.auto_insert = server;
  n.av = std::move(*n.dom.open_av(aa));
  auto ep = n.dom.open_endpoint(infos->front());
  if (!ep) fail(2, ep.error().message);
  n.ep = std::move(*ep);
  if (!n.ep.bind(n.cq) || !n.ep.bind(n.av) || !n.ep.enable()) fail(2, "endpoint setup failed");
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0) {
    std::puts("usage: tcp_peer server --bind IP --port P --count N [--stay]\n"
              "       tcp_peer client --bind IP --server IP --port P --count N [--large] [--then-wait]");
    return argc < 2 ? 2 : 0;
  }
  std::string mode = argv[1], bind = "0.0.0.0", server_ip;
  std::uint16_t port = 0;
  std::uint64_t count = 1000;
  bool large = false, stay = false, then_wait = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : (fail(2, a + " needs a value"), ""); };
    if (a == "--bind") bind = next();
    else if (a == "--server") server_ip = next();
    else if (a == "--port") port = static_cast<std::uint16_t>(std::stoul(next()));
    else if (a == "--count") count = std::stoull(next());
    else if (a == "--large") large = true;
    else if (a == "--stay") stay = true;
    else if (a == "--then-wait") then_wait = true;
    else fail(2, "unknown option " + a);
  }
  const char* t = std::getenv("WEFT_PEER_TIMEOUT_S");
  const auto deadline = clk::now() + std::chrono::seconds(t ? std::atoi(t) : 120);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  if (mode == "server") {
    node n = open(bind, port, true);
    constexpr int window = 32;
    std::vector<std::vector<unsigned char>> bufs(window, std::vector<unsigned char>(256 * 1024));
    std::vector<int> free_slots;
    for (int k = window - 1; k >= 0; --k) free_slots.push_back(k);
    std::uint64_t next = 0;
    std::puts("server: listening");
    while (next < count) {
      if (clk::now() > deadline) fail(4, "timed out after " + std::to_string(next) + " messages");
      while (!free_slots.empty()) {
        int k = free_slots.back();
        if (n.ep.recv(bufs[k].data(), bufs[k].size(), weft::addr_unspec, reinterpret_cast<void*>(std::intptr_t{k})) !=
            weft::errc::ok)
          break;
        free_slots.pop_back();
      }
      weft::cq_entry e;
      weft::errc r = n.cq.wait(e, 100);
      if (r == weft::errc::error_available) {
        weft::cq_err_entry ee;
        (void)n.cq.read_error(ee);
        fail(3, std::string("receive error: ") + ee.msg);
      }
      if (r != weft::errc::ok) continue;
      const int k = static_cast<int>(reinterpret_cast<std::intptr_t>(e.context));
      msg_head h;
      std::memcpy(&h, bufs[k].data(), sizeof h);
      if (h.seq != next) fail(5, "out of order: got " + std::to_string(h.seq) + ", expected " + std::to_string(next));
      if (h.len != e.len) fail(5, "message " + std::to_string(h.seq) + " has the wrong length");
      std::uint64_t sum = 0;
      for (std::size_t i = sizeof h; i < e.len; ++i) sum += bufs[k][i];
      if (sum != h.sum) fail(5, "message " + std::to_string(h.seq) + " is corrupted");
      ++next;
      free_slots.push_back(k);
    }
    std::printf("server: %llu messages intact and in order\n", static_cast<unsigned long long>(count));
    if (stay) {
      while (clk::now() < deadline) {
        weft::cq_entry e;
        (void)n.cq.wait(e, 100);
      }
      return 0;
    }
    // let the client's last sends complete before this endpoint closes
    auto linger = clk::now() + std::chrono::milliseconds(500);
    while (clk::now() < linger) n.cq.progress();
    return 0;
  }
  if (mode == "client") {
    node n = open(bind, 0, false);
    weft::hints h;
    h.provider = "tcp";
    h.node = server_ip;
    h.port = port;
    auto infos = weft::get_info(h);
    if (!infos) fail(2, infos.error().message);
    auto dst = n.av.insert(*infos->front().dest_addr);
    if (!dst) fail(2, dst.error().message);
    constexpr int window = 32;
    std::vector<std::vector<unsigned char>> bufs(window, std::vector<unsigned char>(256 * 1024));
    std::vector<int> free_slots;
    for (int k = window - 1; k >= 0; --k) free_slots.push_back(k);
    std::uint64_t sent = 0, done = 0;
    const auto start = clk::now();
    auto last_report = start;
    while (done < count) {
      if (clk::now() > deadline) fail(4, "timed out after " + std::to_string(done) + " messages");
      while (sent < count && !free_slots.empty()) {
        int k = free_slots.back();
        std::size_t len = size_of(sent, large);
        fill(bufs[k], sent, len);
        weft::errc r = n.ep.send(bufs[k].data(), len, *dst, reinterpret_cast<void*>(std::intptr_t{k}));
        if (r == weft::errc::again) break;
        if (r != weft::errc::ok) fail(3, std::string("send failed: ") + weft::to_string(r));
        free_slots.pop_back();
        ++sent;
      }
      weft::cq_entry e;
      weft::errc r = n.cq.wait(e, 100);
      if (r == weft::errc::error_available) {
        weft::cq_err_entry ee;
        (void)n.cq.read_error(ee);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clk::now() - start).count();
        std::printf("client: send error after %lld ms, %llu messages completed: %s\n", static_cast<long long>(ms),
                    static_cast<unsigned long long>(done), ee.msg);
        std::fflush(stdout);
        std::_Exit(3);
      }
      if (r != weft::errc::ok) continue;
      free_slots.push_back(static_cast<int>(reinterpret_cast<std::intptr_t>(e.context)));
      ++done;
      if (clk::now() - last_report > std::chrono::seconds(2)) {
        last_report = clk::now();
        std::printf("client: %llu/%llu sent\n", static_cast<unsigned long long>(done),
                    static_cast<unsigned long long>(count));
      }
    }
    std::printf("client: %llu messages sent\n", static_cast<unsigned long long>(count));
    if (!then_wait) return 0;
    std::uint64_t none = 0;
    if (n.ep.recv(&none, sizeof none, *dst) != weft::errc::ok) fail(2, "cannot post the directed receive");
    std::puts("client: waiting on a receive from the server");
    const auto posted = clk::now();
    while (clk::now() < deadline) {
      weft::cq_entry e;
      weft::errc r = n.cq.wait(e, 100);
      if (r == weft::errc::ok) fail(5, "the server sent nothing, yet the receive completed");
      if (r != weft::errc::error_available) continue;
      weft::cq_err_entry ee;
      (void)n.cq.read_error(ee);
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clk::now() - posted).count();
      std::printf("client: receive error after %lld ms: %s: %s\n", static_cast<long long>(ms),
                  weft::to_string(ee.err), ee.msg);
      std::fflush(stdout);
      std::_Exit(3);
    }
    fail(4, "timed out waiting on the receive");
  }
  fail(2, "mode is server or client");
}

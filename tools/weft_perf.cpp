// weft_perf: ping-pong latency, streaming bandwidth and message rate between
// a server and a client (or both from one command with --spawn).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"
#include "weft/weft.hpp"

namespace {

using clk = std::chrono::steady_clock;
constexpr std::uint32_t plan_magic = 0x57505246;  // "WPRF"
constexpr std::size_t max_sizes = 64;

struct plan {
  std::uint32_t magic;
  std::uint32_t nsizes;
  std::uint32_t window;
  std::uint32_t verify;
  std::uint32_t tests;  // bit 0: latency, bit 1: bandwidth
  std::uint32_t pad;
  std::uint64_t sizes[max_sizes];
  std::uint64_t lat_iters[max_sizes];
  std::uint64_t bw_rounds[max_sizes];
};

struct options {
  enum class mode { server, client, spawn } m = mode::spawn;
  std::string provider = "shm";
  std::string node = "localhost";
  std::uint16_t port = 0;
  std::vector<std::size_t> sizes;
  std::size_t iters = 10000;
  std::uint32_t window = 64;
  bool verify = false;
  bool json = false;
  bool quiet = false;
  std::uint32_t tests = 3;
  int timeout_s = 30;
};

pid_t spawned_server = 0;  // stopped by die() so no process outlives the command

struct fatal {
  std::string what;
};
[[noreturn]] void die(const std::string& s) { throw fatal{s}; }

void stop_server() {
  if (spawned_server > 0) {
    ::kill(spawned_server, SIGKILL);
    ::waitpid(spawned_server, nullptr, 0);
    spawned_server = 0;
  }
}

void check_server() {
  int st;
  if (spawned_server > 0 && ::waitpid(spawned_server, &st, WNOHANG) == spawned_server) {
    spawned_server = 0;
    die("the server process exited early (see its message above)");
  }
}

void usage() {
  std::puts(
      "usage: weft_perf [--spawn | --server | --client] [options]\n"
      "  --spawn              run server and client from this command (default)\n"
      "  --server             wait for a client\n"
      "  --client             connect to a server at --node/--port\n"
      "  -p, --provider NAME  provider (default shm)\n"
      "  -n, --node HOST      server host (default localhost)\n"
      "  -P, --port N         integer service port (default: 7471, or a free one with --spawn)\n"
      "  -s, --size SPEC      a size (64, 4K, 1M) or a range A:B of powers of two; repeatable\n"
      "                       (default 1:4M)\n"
      "  -i, --iters N        latency iterations for small sizes (default 10000; fewer for big sizes)\n"
      "  -w, --window N       messages in flight in the bandwidth test (default 64)\n"
      "  -t, --test LIST      lat, bw or lat,bw (default); in lat, messages up to the provider's\n"
      "                       inject_size are injected (no send completion), as fi_pingpong does\n"
      "      --verify         check every byte received\n"
      "      --json           print one JSON object\n"
      "      --timeout S      give up when the peer is silent for S seconds (default 30)\n"
      "  -q, --quiet          no progress lines on stderr\n"
      "Latency is one-way: round trip / 2, as fi_pingpong reports it.");
}

std::size_t parse_size(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  std::size_t mul = 1;
  if (end && *end) {
    switch (*end) {
      case 'k': case 'K': mul = 1024; break;
      case 'm': case 'M': mul = 1024 * 1024; break;
      case 'g': case 'G': mul = 1024ull * 1024 * 1024; break;
      default: die("bad size '" + s + "' (use 64, 4K, 1M)");
    }
  }
  if (v < 0) die("bad size '" + s + "'");
  return static_cast<std::size_t>(v * static_cast<double>(mul));
}

void add_sizes(options& o, const std::string& spec) {
  auto c = spec.find(':');
  if (c == std::string::npos) {
    o.sizes.push_back(parse_size(spec));
    return;
  }
  std::size_t a = parse_size(spec.substr(0, c)), b = parse_size(spec.substr(c + 1));
  if (a == 0) {
    o.sizes.push_back(0);
    a = 1;
  }
  for (std::size_t s = a; s <= b; s *= 2) o.sizes.push_back(s);
}

struct conn {
  weft::fabric fab;
  weft::domain dom;
  weft::completion_queue cq;
  weft::address_vector av;
  weft::endpoint ep;
  weft::fi_addr_t peer = weft::addr_unspec;
  int timeout_s = 30;
  std::size_t inject_size = 0;  // ping-pong messages up to this size are injected (no send completion)
};

// Busy-polls the CQ for one completion; dies on an error entry or silence.
weft::cq_entry wait_one(conn& c) {
  weft::cq_entry e;
  weft::tools::spin_deadline dl(c.timeout_s, 1024);
  for (;;) {
    weft::errc r = c.cq.read(e);
    if (r == weft::errc::ok) return e;
    if (r == weft::errc::error_available) {
      weft::cq_err_entry ee;
      if (c.cq.read_error(ee) == weft::errc::ok)
        die(std::string("operation failed: ") + weft::to_string(ee.err) + ": " + ee.msg);
    }
    if (dl.due()) {  // not on every spin: keep syscalls out of timed loops
      check_server();
      if (dl.over())
        die("the peer has been silent for " + std::to_string(c.timeout_s) + " s (is it running?)");
    }
  }
}

// Posts, driving progress while the provider says "again". Completions read
// meanwhile go to seen() when given.
template <class Post, class Seen = void (*)(const weft::cq_entry&)>
void post_retry(conn& c, Post&& post, Seen seen = [](const weft::cq_entry&) {}) {
  weft::tools::spin_deadline dl(c.timeout_s, 1024);
  for (;;) {
    weft::errc r = post();
    if (r == weft::errc::ok) return;
    if (r != weft::errc::again)
      die(std::string("post failed: ") + weft::to_string(r) + ": " + weft::last_error_message());
    weft::cq_entry e;
    weft::errc q = c.cq.read(e);
    if (q == weft::errc::ok) seen(e);
    if (q == weft::errc::error_available) wait_one(c);  // reports and dies
    if (dl.due() && dl.over())
      die(std::string("back-pressure did not clear (is the peer running?): ") +
          weft::to_string(c.ep.again_reason()));
  }
}

void fill(std::byte* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((seed * 131 + i * 7) & 0xff);
}
void check(const std::byte* p, std::size_t n, std::uint64_t seed, const char* what) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != static_cast<std::byte>((seed * 131 + i * 7) & 0xff))
      die(std::string("data verification failed (") + what + ") at byte " + std::to_string(i) + " of " +
          std::to_string(n));
}

conn open_conn(const options& o, bool server) {
  weft::hints h;
  h.provider = o.provider;
  h.type = weft::ep_type::rdm;
  h.caps = weft::cap::msg | (server ? weft::cap::source : 0);
  h.node = o.node;
  h.port = o.port;
  h.source = server;
  weft::result<std::vector<weft::info>> infos = std::unexpected(weft::error{});
  auto deadline = clk::now() + std::chrono::seconds(o.timeout_s);
  for (;;) {  // the server may not be listening yet
    infos = weft::get_info(h);
    if (infos || server || clk::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!infos) die(infos.error().message);
  const weft::info& inf = infos->front();
  conn c;
  c.timeout_s = o.timeout_s;
  c.inject_size = inf.tx.inject_size;
  auto f = weft::fabric::open(inf);
  if (!f) die(f.error().message);
  c.fab = std::move(*f);
  auto d = c.fab.open_domain(inf);
  if (!d) die(d.error().message);
  c.dom = std::move(*d);
  auto q = c.dom.open_cq(4096);
  if (!q) die(q.error().message);
  c.cq = std::move(*q);
  weft::av_attr aa;
  aa.auto_insert = server;
  auto a = c.dom.open_av(aa);
  if (!a) die(a.error().message);
  c.av = std::move(*a);
  auto e = c.dom.open_endpoint(inf);
  if (!e) die(e.error().message);
  c.ep = std::move(*e);
  if (auto r = c.ep.bind(c.cq); !r) die(r.error().message);
  if (auto r = c.ep.bind(c.av); !r) die(r.error().message);
  if (auto r = c.ep.enable(); !r) die(r.error().message);
  if (!server) {
    if (!inf.dest_addr) die("get_info did not resolve the server's address");
    auto p = c.av.insert(*inf.dest_addr);
    if (!p) die(p.error().message);
    c.peer = *p;
  }
  return c;
}

std::uint64_t lat_iters(std::size_t size, std::size_t base) {
  std::size_t cap = std::max<std::size_t>(20, (std::size_t{1} << 28) / std::max<std::size_t>(size, 1));
  return std::min(base, cap);
}
std::uint64_t bw_rounds(std::size_t size, std::uint32_t window) {
  std::size_t per = std::max<std::size_t>(size, 64) * window;
  return std::clamp<std::size_t>((std::size_t{1} << 30) / per, 5, 400);
}

// ---- server

int run_server(const options& o) {
  conn c = open_conn(o, true);
  if (!o.quiet) std::fprintf(stderr, "weft_perf: server on %s port %u (%s)\n", o.provider.c_str(), o.port,
                             weft::to_string(*c.ep.name()).c_str());
  plan pl{};
  post_retry(c, [&] { return c.ep.recv(&pl, sizeof pl); });
  c.timeout_s = 3600;  // wait for a client as long as needed
  weft::cq_entry e = wait_one(c);
  c.timeout_s = o.timeout_s;
  if (pl.magic != plan_magic || pl.nsizes > max_sizes) die("the client sent an invalid plan");
  c.peer = e.src;
  if (c.peer == weft::addr_notavail || c.peer == weft::addr_unspec) die("cannot tell who the client is");
  std::size_t maxsz = 1;
  for (std::uint32_t i = 0; i < pl.nsizes; ++i) maxsz = std::max<std::size_t>(maxsz, pl.sizes[i]);
  weft::tools::page_bytes buf(maxsz), buf2(maxsz), sbuf(maxsz), vbuf;
  char ack = 1;
  post_retry(c, [&] { return c.ep.send(&ack, 1, c.peer); });
  wait_one(c);
  for (std::uint32_t s = 0; s < pl.nsizes; ++s) {
    const std::size_t size = pl.sizes[s];
    if (pl.tests & 1) {
      // Two receive buffers: ping i+1 lands in one while pong i leaves. The
      // pong echoes the ping only with --verify; otherwise it leaves from a
      // separate buffer, as fi_pingpong and ucx_perftest do (echoing adds the
      // cost of reading cache lines the other core has just written).
      const std::uint64_t n = pl.lat_iters[s] + 10;
      std::byte* b[2] = {buf.data(), buf2.data()};
      std::uint64_t recvs = 0, sends = 0;
      auto account = [&](const weft::cq_entry& x) { (x.flags & weft::flag::recv) ? ++recvs : ++sends; };
      post_retry(c, [&] { return c.ep.recv(b[0], size); });
      for (std::uint64_t i = 0; i < n; ++i) {
        while (recvs <= i) account(wait_one(c));
        if (pl.verify) check(b[i % 2], size, size ^ i, "ping");
        // the pong first, then the next receive: posting it is not on the
        // critical path (a ping that came first would wait as unexpected)
        std::byte* pong = pl.verify ? b[i % 2] : sbuf.data();
        const bool injected = size <= c.inject_size;
        if (injected) {
          post_retry(c, [&] { return c.ep.inject(pong, size, c.peer); });
          ++sends;
        } else {
          post_retry(c, [&] { return c.ep.send(pong, size, c.peer); });
        }
        if (i + 1 < n) post_retry(c, [&] { return c.ep.recv(b[(i + 1) % 2], size); });
        if (!injected)
          while (sends <= i) account(wait_one(c));
      }
    }
    if (pl.tests & 2) {
      const std::uint64_t rounds = pl.bw_rounds[s] + 1;
      // Verification needs a buffer per message in flight (one progress call
      // may deliver several); plain runs reuse one buffer.
      if (pl.verify && vbuf.size() < pl.window * size) vbuf.resize(pl.window * size);
      // Receives stay pre-posted: each is re-posted as soon as it completes,
      // before the round's acknowledgement lets the client send again.
      auto dst_of = [&](std::uint64_t w) { return pl.verify ? vbuf.data() + w * size : buf.data(); };
      auto post_recv = [&](std::uint64_t w) {
        void* ctx = reinterpret_cast<void*>(static_cast<std::uintptr_t>(w + 1));
        post_retry(c, [&] { return c.ep.recv(dst_of(w), size, weft::addr_unspec, ctx); });
      };
      for (std::uint32_t w = 0; w < pl.window; ++w) post_recv(w);
      bool ack_pending = false;
      for (std::uint64_t r = 0; r < rounds; ++r) {
        for (std::uint32_t got = 0; got < pl.window;) {
          weft::cq_entry x = wait_one(c);
          if (x.context == &ack) {  // the previous round's acknowledgement left
            ack_pending = false;
            continue;
          }
          const auto w = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(x.context)) - 1;
          if (pl.verify) check(dst_of(w), size, size ^ (r * pl.window + w), "stream");
          ++got;
          if (r + 1 < rounds) post_recv(w);
        }
        if (ack_pending) {
          while (wait_one(c).context != &ack) die("protocol error: unexpected completion");
        }
        post_retry(c, [&] { return c.ep.send(&ack, 1, c.peer, &ack); });
        ack_pending = true;
      }
      while (ack_pending) ack_pending = wait_one(c).context != &ack;
    }
  }
  // final handshake: wait for "done"
  post_retry(c, [&] { return c.ep.recv(&ack, 1); });
  wait_one(c);
  return 0;
}

// ---- client

struct row {
  std::size_t size;
  double median = -1, p99 = -1, bw = -1, rate = -1;
};

int run_client(const options& o) {
  conn c = open_conn(o, false);
  plan pl{};
  pl.magic = plan_magic;
  pl.nsizes = static_cast<std::uint32_t>(o.sizes.size());
  pl.window = o.window;
  pl.verify = o.verify;
  pl.tests = o.tests;
  std::size_t maxsz = 1;
  for (std::size_t i = 0; i < o.sizes.size(); ++i) {
    pl.sizes[i] = o.sizes[i];
    pl.lat_iters[i] = lat_iters(o.sizes[i], o.iters);
    pl.bw_rounds[i] = bw_rounds(o.sizes[i], o.window);
    maxsz = std::max(maxsz, o.sizes[i]);
  }
  weft::tools::page_bytes sbuf(maxsz), rbuf(maxsz);
  char ack = 0;
  post_retry(c, [&] { return c.ep.recv(&ack, 1); });
  // The server may not be listening yet (tcp cannot tell before connecting):
  // retry a refused first contact until the timeout.
  auto deadline = clk::now() + std::chrono::seconds(o.timeout_s);
  bool send_plan = true;
  for (int got = 0; got < 2;) {
    if (send_plan) post_retry(c, [&] { return c.ep.send(&pl, sizeof pl, c.peer, &pl); });
    send_plan = false;
    weft::cq_entry e;
    weft::errc r = c.cq.read(e);
    if (r == weft::errc::ok) {
      ++got;
      continue;
    }
    if (r == weft::errc::error_available) {
      weft::cq_err_entry ee;
      (void)c.cq.read_error(ee);
      if (ee.context == &pl && ee.err == weft::errc::peer_dead && clk::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        send_plan = true;
        continue;
      }
      die(std::string("cannot reach the server: ") + ee.msg);
    }
    if (clk::now() > deadline) die("the server did not answer within the timeout");
  }
  std::vector<row> rows;
  for (std::uint32_t s = 0; s < pl.nsizes; ++s) {
    const std::size_t size = pl.sizes[s];
    row rw{size};
    if (pl.tests & 1) {
      const std::uint64_t iters = pl.lat_iters[s], warm = 10;
      std::vector<double> samples;
      samples.reserve(iters);
      for (std::uint64_t i = 0; i < iters + warm; ++i) {
        if (pl.verify) fill(sbuf.data(), size, size ^ i);
        post_retry(c, [&] { return c.ep.recv(rbuf.data(), size, weft::addr_unspec, &rbuf); });
        auto t0 = clk::now();
        if (size <= c.inject_size) {  // as fi_pingpong: small messages are injected
          post_retry(c, [&] { return c.ep.inject(sbuf.data(), size, c.peer); });
        } else {
          post_retry(c, [&] { return c.ep.send(sbuf.data(), size, c.peer, &sbuf); });
          wait_one(c);
        }
        wait_one(c);
        auto t1 = clk::now();
        if (pl.verify) check(rbuf.data(), size, size ^ i, "pong");
        if (i >= warm) samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / 2);
      }
      std::sort(samples.begin(), samples.end());
      rw.median = samples[samples.size() / 2];
      rw.p99 = samples[std::min(samples.size() - 1, static_cast<std::size_t>(std::ceil(samples.size() * 0.99)) - 1)];
    }
    if (pl.tests & 2) {
      const std::uint64_t rounds = pl.bw_rounds[s] + 1;
      clk::time_point t0{};
      for (std::uint64_t r = 0; r < rounds; ++r) {
        if (r == 1) t0 = clk::now();  // round 0 warms up
        std::uint64_t sends = 0, acks = 0;
        auto account = [&](const weft::cq_entry& x) { x.context == &ack ? ++acks : ++sends; };
        post_retry(c, [&] { return c.ep.recv(&ack, 1, weft::addr_unspec, &ack); });
        for (std::uint32_t w = 0; w < pl.window; ++w) {
          if (pl.verify) fill(sbuf.data(), size, size ^ (r * pl.window + w));
          post_retry(c, [&] { return c.ep.send(sbuf.data(), size, c.peer, &sbuf); }, account);
          // verification rewrites the buffer: wait until this send completed
          while (pl.verify && sends <= w) account(wait_one(c));
        }
        while (sends < pl.window || acks < 1) account(wait_one(c));
      }
      double secs = std::chrono::duration<double>(clk::now() - t0).count();
      double msgs = static_cast<double>(pl.bw_rounds[s]) * pl.window;
      rw.bw = msgs * static_cast<double>(size) / secs / 1e6;
      rw.rate = msgs / secs;
    }
    if (!o.quiet)
      std::fprintf(stderr, "weft_perf: %zu bytes done (%u/%u)\n", size, s + 1, pl.nsizes);
    rows.push_back(rw);
  }
  ack = 2;
  post_retry(c, [&] { return c.ep.send(&ack, 1, c.peer); });
  wait_one(c);

  if (o.json) {
    std::printf("{\"provider\": \"%s\", \"results\": [", o.provider.c_str());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      auto& r = rows[i];
      std::printf("%s\n  {\"size\": %zu", i ? "," : "", r.size);
      if (r.median >= 0) std::printf(", \"latency_us\": {\"median\": %.3f, \"p99\": %.3f}", r.median, r.p99);
      if (r.bw >= 0) std::printf(", \"bandwidth_MBps\": %.1f, \"msg_rate\": %.0f", r.bw, r.rate);
      std::printf("}");
    }
    std::printf("\n]}\n");
  } else {
    std::printf("weft_perf: provider %s; latency is one-way (round trip / 2)\n", o.provider.c_str());
    std::printf("%10s %14s %12s %16s %14s\n", "size", "lat med (us)", "lat p99 (us)", "bandwidth (MB/s)", "msg/s");
    for (auto& r : rows) {
      char a[32] = "-", b[32] = "-", d[32] = "-", e[32] = "-";
      if (r.median >= 0) {
        std::snprintf(a, sizeof a, "%.3f", r.median);
        std::snprintf(b, sizeof b, "%.3f", r.p99);
      }
      if (r.bw >= 0) {
        std::snprintf(d, sizeof d, "%.1f", r.bw);
        std::snprintf(e, sizeof e, "%.0f", r.rate);
      }
      std::printf("%10zu %14s %12s %16s %14s\n", r.size, a, b, d, e);
    }
  }
  return 0;
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const fatal& f) {
    std::fprintf(stderr, "weft_perf: %s\n", f.what.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft_perf: bad argument (%s); see --help\n", e.what());
  }
  stop_server();
  return 1;
}

int run(int argc, char** argv) {
  options o;
  bool port_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value (see --help)");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else if (a == "--server") o.m = options::mode::server;
    else if (a == "--client") o.m = options::mode::client;
    else if (a == "--spawn") o.m = options::mode::spawn;
    else if (a == "-p" || a == "--provider") o.provider = next();
    else if (a == "-n" || a == "--node") o.node = next();
    else if (a == "-P" || a == "--port") {
      o.port = static_cast<std::uint16_t>(std::stoul(next()));
      port_set = true;
    } else if (a == "-s" || a == "--size") add_sizes(o, next());
    else if (a == "-i" || a == "--iters") o.iters = std::max<std::size_t>(1, std::stoull(next()));
    else if (a == "-w" || a == "--window") o.window = std::max<std::uint32_t>(1, static_cast<std::uint32_t>(std::stoul(next())));
    else if (a == "-t" || a == "--test") {
      std::string t = next();
      o.tests = (t.find("lat") != std::string::npos ? 1u : 0u) | (t.find("bw") != std::string::npos ? 2u : 0u);
      if (!o.tests) die("--test takes lat, bw or lat,bw");
    } else if (a == "--verify") o.verify = true;
    else if (a == "--json") o.json = true;
    else if (a == "--timeout") o.timeout_s = std::max(1, std::stoi(next()));
    else if (a == "-q" || a == "--quiet") o.quiet = true;
    else die("unknown option '" + a + "' (see --help)");
  }
  if (o.sizes.empty()) add_sizes(o, "1:4M");
  if (o.sizes.size() > max_sizes) die("at most 64 sizes per run");
  if (o.window > 256) die("--window is at most 256 (the receive queue depth)");
  if (!port_set) o.port = o.m == options::mode::spawn ? static_cast<std::uint16_t>(20000 + ::getpid() % 20000) : 7471;
  try {
    if (o.m == options::mode::server) return run_server(o);
    if (o.m == options::mode::client) return run_client(o);
  } catch (const fatal& f) {
    std::fprintf(stderr, "weft_perf: %s\n", f.what.c_str());
    return 1;
  }

  // spawn: a server child, then the client here.
  std::string port = std::to_string(o.port);
  std::string timeout = std::to_string(o.timeout_s);
  pid_t child = ::fork();
  if (child < 0) die("fork failed");
  if (child == 0) {
    std::vector<const char*> args{"weft_perf", "--server", "-q", "-p", o.provider.c_str(), "-P", port.c_str(),
                                  "--timeout", timeout.c_str(), nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(args.data()));
    std::_Exit(127);
  }
  spawned_server = child;
  int rc = 0;
  try {
    rc = run_client(o);
  } catch (const fatal& f) {
    std::fprintf(stderr, "weft_perf: %s\n", f.what.c_str());
    stop_server();
    return 1;
  }
  if (spawned_server == 0) return rc;
  int st = 0;
  for (int i = 0; i < 500; ++i) {  // give the server 5 s to finish
    if (::waitpid(child, &st, WNOHANG) == child) return rc != 0 ? rc : (WIFEXITED(st) ? WEXITSTATUS(st) : 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, &st, 0);
  return rc != 0 ? rc : 1;
}

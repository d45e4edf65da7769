// weft_rma_perf: RMA and atomic performance between two processes (this
// command forks the target), in the manner of ucx_perftest's ucp_put_lat,
// ucp_put_bw, ucp_get and ucp_add:
//   put_lat  ping-pong of writes: each side writes the other's region and
//            polls its own memory for the last byte; one-way = half the round trip
//   put_bw   writes of SIZE with a window in flight; MB/s and Mops (writes up
//            to tx.inject_size are injected: no completion each, as UCX
//            completes small puts in place; a delivery-complete write ends the run)
//   get_lat  one read at a time; the time to its completion
//   get_bw   reads with a window in flight
//   atomic   non-fetching 64-bit atomic adds with a window (Mops), and the
//            latency of one fetch-and-add at a time
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"
#include "weft/weft.hpp"

namespace {

using clk = std::chrono::steady_clock;

struct options {
  std::string provider = "shm";
  std::vector<std::size_t> sizes;
  std::vector<std::string> tests{"put_lat", "put_bw", "get_lat", "get_bw", "atomic"};
  std::size_t iters = 10000;
  std::uint32_t window = 64;
  bool json = false;
  bool quiet = false;
  bool verify = false;
  int timeout_s = 30;
  weft::op_flags level = weft::flag::transmit_complete;  // of the writes (put_lat, put_bw)
  bool registered = false;  // RMA targets: the application's memory, registered (default: domain::alloc_memory)
};

// Shared between the two processes (MAP_SHARED, made before fork).
struct control {
  std::atomic<std::uint32_t> gen{0}, ready{0}, stop{0};
  std::atomic<std::uint32_t> size{0};
  std::atomic<std::uint32_t> pong{0};  // 1: the target answers put_lat pings
  std::atomic<std::uint64_t> iters{0};
  std::uint64_t key = 0;
  char name[128] = {};
  std::size_t name_len = 0;
  std::uint64_t client_key = 0;
  char client_name[128] = {};
  std::size_t client_name_len = 0;
  std::atomic<std::uint32_t> target_up{0}, client_up{0};
  char error[256] = {};
};

pid_t target_pid = 0;

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "weft_rma_perf: %s\n", m.c_str());
  if (target_pid > 0) {
    ::kill(target_pid, SIGKILL);
    ::waitpid(target_pid, nullptr, 0);
  }
  std::exit(1);
}

void usage() {
  std::puts(
      "usage: weft_rma_perf [options]\n"
      "RMA and atomic performance between this process and a target it forks.\n"
      "  -p, --provider NAME  shm or tcp (loopback) (default shm)\n"
      "  -s, --size SPEC      a size (8, 4K, 1M) or a range A:B of powers of two; repeatable\n"
      "                       (default 8:1M)\n"
      "  -t, --test LIST      put_lat,put_bw,get_lat,get_bw,atomic (default: all)\n"
      "  -i, --iters N        latency iterations for small sizes (default 10000; fewer for big sizes)\n"
      "  -w, --window N       operations in flight in bandwidth and rate tests (default 64); put_bw\n"
      "                       injects writes up to tx.inject_size at transmit level (no completion\n"
      "                       each, as UCX completes small puts in place) and ends with a\n"
      "                       delivery-complete write that waits for them all\n"
      "      --level L        completion level of the writes: transmit (default, as UCX's puts\n"
      "                       complete locally), delivery or commit\n"
      "      --register       RMA into the application's own (registered) memory instead of memory\n"
      "                       from domain::alloc_memory (which shm peers map: loads and stores, as\n"
      "                       UCX's ucp_mem_map'd memory)\n"
      "      --verify         check the bytes of every put_lat round\n"
      "      --json           print one JSON object\n"
      "      --timeout S      give up after S seconds without progress (default 30)\n"
      "  -q, --quiet          no progress lines on stderr\n"
      "  -h, --help           this text\n"
      "Latency is one-way for put_lat (half the round trip, as ucp_put_lat) and the\n"
      "time to completion for get_lat and the fetching atomic; bandwidth in MB/s (10^6).");
}

std::size_t parse_size(const std::string& s) {
  std::size_t pos = 0;
  unsigned long long v = std::stoull(s, &pos);
  std::string suf = s.substr(pos);
  if (suf == "K" || suf == "k") v <<= 10;
  else if (suf == "M" || suf == "m") v <<= 20;
  else if (!suf.empty()) die("bad size '" + s + "' (e.g. 64, 4K, 1M)");
  return v;
}

struct node {
  weft::fabric fab;
  weft::domain dom;
  weft::completion_queue cq;
  weft::address_vector av;
  weft::endpoint ep;
  weft::info inf;
  weft::memory_region mr;
  weft::tools::page_bytes own;  // --register: the application's memory
  std::byte* buf = nullptr;
  std::size_t len = 0;
};

node open_node(const options& o, std::size_t buf_len) {
  weft::hints h;
  h.provider = o.provider;
  h.type = weft::ep_type::rdm;
  h.caps = weft::cap::rma | weft::cap::atomic;
  if (o.provider == "tcp") {
    h.node = "127.0.0.1";
    h.port = 0;
    h.source = true;
  }
  auto infos = weft::get_info(h);
  if (!infos) die(infos.error().message);
  node n;
  n.inf = infos->front();
  auto f = weft::fabric::open(n.inf);
  if (!f) die(f.error().message);
  n.fab = std::move(*f);
  auto d = n.fab.open_domain(n.inf);
  if (!d) die(d.error().message);
  n.dom = std::move(*d);
  auto q = n.dom.open_cq(4096);
  if (!q) die(q.error().message);
  n.cq = std::move(*q);
  auto a = n.dom.open_av();
  if (!a) die(a.error().message);
  n.av = std::move(*a);
  auto e = n.dom.open_endpoint(n.inf);
  if (!e) die(e.error().message);
  n.ep = std::move(*e);
  if (auto r = n.ep.bind(n.cq); !r) die(r.error().message);
  if (auto r = n.ep.bind(n.av); !r) die(r.error().message);
  if (auto r = n.ep.enable(); !r) die(r.error().message);
  const weft::access_flags acc = weft::access::remote_read | weft::access::remote_write;
  if (o.registered) {
    n.own.assign(buf_len, std::byte{0});
    auto m = n.dom.register_memory(n.own.data(), n.own.size(), acc);
    if (!m) die(m.error().message);
    n.mr = std::move(*m);
  } else {
    auto m = n.dom.alloc_memory(buf_len, acc);
    if (!m) die(m.error().message);
    n.mr = std::move(*m);
  }
  n.buf = static_cast<std::byte*>(*n.mr.addr());
  n.len = buf_len;
  return n;
}

std::byte tag_of(std::uint64_t i) { return static_cast<std::byte>((i % 127) + 1); }

// ---- target: serves accesses; answers put_lat pings
int run_target(const options& o, control* ctl, std::size_t buf_len) {
  node n = open_node(o, buf_len);
  auto nm = *n.ep.name();
  ctl->key = *n.mr.key();
  ctl->name_len = std::min(nm.view().size(), sizeof ctl->name);
  std::memcpy(ctl->name, nm.view().data(), ctl->name_len);
  ctl->target_up.store(1, std::memory_order_release);
  auto deadline = clk::now() + std::chrono::seconds(o.timeout_s);
  while (!ctl->client_up.load(std::memory_order_acquire)) {
    if (clk::now() > deadline || ctl->stop.load()) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto peer = n.av.insert(weft::address::from_string(n.inf.format, std::string(ctl->client_name, ctl->client_name_len)));
  if (!peer) {
    std::snprintf(ctl->error, sizeof ctl->error, "target: %s", peer.error().message.c_str());
    return 1;
  }
  std::uint32_t seen_gen = 0;
  std::uint64_t i = 0;
  std::size_t size = 0;
  bool pong = false;
  volatile std::byte* b = n.buf;
  // The pong leaves from a buffer of its own (as ucp_put_lat does), not
  // from the region the ping just wrote: that would add the cost of pulling
  // the ping's cache lines from the other core.
  weft::tools::page_bytes pong_src(buf_len);
  weft::cq_entry e;
  while (!ctl->stop.load(std::memory_order_acquire)) {
    if (n.cq.read(e) == weft::errc::error_available) {  // drives progress
      weft::cq_err_entry ee;
      (void)n.cq.read_error(ee);
      std::snprintf(ctl->error, sizeof ctl->error, "target: %s", ee.msg);
      return 1;
    }
    const std::uint32_t g = ctl->gen.load(std::memory_order_acquire);
    if (g != seen_gen) {
      seen_gen = g;
      size = ctl->size.load();
      pong = ctl->pong.load() != 0;
      i = 0;
      std::memset(n.buf, 0, std::min(n.len, size + 64));
      ctl->ready.store(g, std::memory_order_release);
      continue;
    }
    if (pong && size && b[size - 1] == tag_of(i + 1)) {
      ++i;
      if (o.verify) std::memcpy(pong_src.data(), n.buf, size);  // echo what came
      pong_src[size - 1] = tag_of(i);
      weft::errc r;
      do {
        ::iovec v{pong_src.data(), size};
        r = n.ep.writemsg(weft::rma_desc{&v, 1, *peer, 0, ctl->client_key, nullptr}, o.level);
        if (r == weft::errc::again) {
          n.cq.progress();
          while (n.cq.read(e) == weft::errc::ok) {
          }
        }
      } while (r == weft::errc::again && !ctl->stop.load());
      if (r != weft::errc::ok && r != weft::errc::again) {
        std::snprintf(ctl->error, sizeof ctl->error, "target: write failed: %s: %s", weft::to_string(r),
                      weft::last_error_message());
        return 1;
      }
    }
  }
  return 0;
}

// ---- initiator
struct result_row {
  std::string test;
  std::size_t size;
  double lat_us = 0, mbps = 0, mops = 0;
};

struct initiator {
  const options& o;
  control* ctl;
  node n;
  weft::fi_addr_t peer = weft::addr_unspec;
  std::uint64_t inflight = 0;

  weft::errc put(const void* buf, std::size_t size) {
    ::iovec v{const_cast<void*>(buf), size};
    return n.ep.writemsg(weft::rma_desc{&v, 1, peer, 0, ctl->key, nullptr}, o.level);
  }
  void fail_entry() {
    weft::cq_err_entry ee;
    (void)n.cq.read_error(ee);
    die(std::string("operation failed: ") + weft::to_string(ee.err) + ": " + ee.msg);
  }
  void check_target() {
    int st = 0;
    if (target_pid > 0 && ::waitpid(target_pid, &st, WNOHANG) == target_pid) {
      target_pid = 0;
      die(std::string("the target exited") + (ctl->error[0] ? std::string(": ") + ctl->error : std::string()));
    }
  }
  // reaps what is there; returns how many completed
  std::uint64_t reap() {
    static weft::cq_entry reaped[64];  // not on the stack: 64 entries to initialise per call
    std::size_t k = 0;
    weft::errc r = n.cq.read(reaped, k);
    if (r == weft::errc::error_available) fail_entry();
    if (r == weft::errc::ok) {
      inflight -= k;
      return k;
    }
    return 0;
  }
  // The clock is read only once a wait has lasted a while, not per operation.
  void wait_all() {
    weft::tools::spin_deadline dl(o.timeout_s, 4096);
    while (inflight) {
      reap();
      if (dl.due()) {
        check_target();
        if (dl.over()) die("operations did not complete (is the target alive?)");
      }
    }
  }
  // counted: the operation gives a completion (not an inject)
  template <class Post>
  void post(Post&& p, bool counted = true) {
    weft::tools::spin_deadline dl(o.timeout_s, 4096);
    for (;;) {
      weft::errc r = p();
      if (r == weft::errc::ok) {
        if (counted) ++inflight;
        return;
      }
      if (r != weft::errc::again)
        die(std::string("post failed: ") + weft::to_string(r) + ": " + weft::last_error_message());
      reap();
      if (dl.due()) {
        check_target();
        if (dl.over()) die(std::string("back-pressure did not clear: ") + weft::to_string(n.ep.again_reason()));
      }
    }
  }
  void phase(std::size_t size, bool pong) {
    ctl->size.store(static_cast<std::uint32_t>(size));
    ctl->pong.store(pong ? 1 : 0);
    const std::uint32_t g = ctl->gen.fetch_add(1) + 1;
    std::memset(n.buf, 0, std::min(n.len, size + 64));
    auto deadline = clk::now() + std::chrono::seconds(o.timeout_s);
    while (ctl->ready.load(std::memory_order_acquire) != g) {
      reap();
      check_target();
      if (clk::now() > deadline) die("the target does not answer");
    }
  }
  std::uint64_t lat_iters(std::size_t size) const {
    return std::min<std::uint64_t>(o.iters, std::max<std::uint64_t>(50, (std::uint64_t{1} << 27) / std::max<std::size_t>(size, 1)));
  }
  std::uint64_t bw_ops(std::size_t size) const {
    return std::clamp<std::uint64_t>((std::uint64_t{1} << 30) / std::max<std::size_t>(size, 64), 2000, 200000);
  }

  result_row put_lat(std::size_t size) {
    phase(size, true);
    const std::uint64_t it = lat_iters(size), warm = std::min<std::uint64_t>(it / 10, 100);
    volatile std::byte* b = n.buf;
    weft::tools::page_bytes src(size);
    clk::time_point t0;
    auto deadline = clk::now() + std::chrono::seconds(o.timeout_s);
    for (std::uint64_t i = 1; i <= it + warm; ++i) {
      if (i == warm + 1) t0 = clk::now();
      if (o.verify) std::fill(src.begin(), src.end(), tag_of(i));
      src[size - 1] = tag_of(i);
      post([&] { return put(src.data(), size); });
      for (std::uint64_t s = 0; b[size - 1] != tag_of(i); ++s) {
        reap();
        if ((s & 65535) == 65535) {
          check_target();
          if (clk::now() > deadline) die("put_lat: no answer from the target");
        }
      }
      if (o.verify)
        for (std::size_t k = 0; k < size; ++k)
          if (b[k] != tag_of(i)) die("put_lat: verification failed at byte " + std::to_string(k));
    }
    const double us = std::chrono::duration<double, std::micro>(clk::now() - t0).count();
    wait_all();
    return {"put_lat", size, us / static_cast<double>(it) / 2, 0, 0};
  }

  // Injected operations give no completion: the run ends with a
  // delivery-complete write, which completes after every earlier one landed.
  void wait_injected(const void* src) {
    post([&] {
      ::iovec v{const_cast<void*>(src), 1};
      return n.ep.writemsg(weft::rma_desc{&v, 1, peer, 0, ctl->key, nullptr}, weft::flag::delivery_complete);
    });
    wait_all();
  }
  template <class Post>
  result_row stream(const char* name, std::size_t size, Post&& p, const void* injected_src = nullptr) {
    phase(size, false);
    const std::uint64_t ops = bw_ops(size);
    const bool counted = injected_src == nullptr;
    for (std::uint64_t i = 0; i < std::min<std::uint64_t>(ops / 10, 200); ++i) {  // warm-up
      post(p, counted);
      while (inflight >= o.window) reap();
    }
    if (!counted) wait_injected(injected_src);
    wait_all();
    auto t0 = clk::now();
    for (std::uint64_t i = 0; i < ops; ++i) {
      while (inflight >= o.window) reap();
      post(p, counted);
    }
    if (!counted) wait_injected(injected_src);
    wait_all();
    const double s = std::chrono::duration<double>(clk::now() - t0).count();
    return {name, size, s * 1e6 / static_cast<double>(ops), static_cast<double>(ops * size) / s / 1e6,
            static_cast<double>(ops) / s / 1e6};
  }

  result_row get_lat(std::size_t size) {
    phase(size, false);
    weft::tools::page_bytes dst(size);
    const std::uint64_t it = lat_iters(size), warm = std::min<std::uint64_t>(it / 10, 100);
    clk::time_point t0;
    for (std::uint64_t i = 0; i < it + warm; ++i) {
      if (i == warm) t0 = clk::now();
      post([&] { return n.ep.read(dst.data(), size, peer, 0, ctl->key); });
      wait_all();
    }
    const double us = std::chrono::duration<double, std::micro>(clk::now() - t0).count();
    return {"get_lat", size, us / static_cast<double>(it), 0, 0};
  }

  result_row atomic_lat() {
    phase(8, false);
    std::uint64_t one = 1, old = 0;
    const std::uint64_t it = o.iters, warm = std::min<std::uint64_t>(it / 10, 100);
    clk::time_point t0;
    for (std::uint64_t i = 0; i < it + warm; ++i) {
      if (i == warm) t0 = clk::now();
      post([&] {
        return n.ep.fetch_atomic(weft::atomic_op::sum, weft::atomic_type::u64, &one, &old, 1, peer, 0, ctl->key);
      });
      wait_all();
    }
    const double us = std::chrono::duration<double, std::micro>(clk::now() - t0).count();
    return {"fetch_add_lat", 8, us / static_cast<double>(it), 0, 0};
  }
};

bool wants(const options& o, const char* t) { return std::find(o.tests.begin(), o.tests.end(), t) != o.tests.end(); }

}  // namespace

int main(int argc, char** argv) try {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value (see --help)");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else if (a == "-p" || a == "--provider") o.provider = next();
    else if (a == "-s" || a == "--size") {
      std::string s = next();
      if (auto c = s.find(':'); c != std::string::npos) {
        std::size_t lo = parse_size(s.substr(0, c)), hi = parse_size(s.substr(c + 1));
        if (lo == 0 || lo > hi) die("bad size range '" + s + "'");
        for (std::size_t v = lo; v <= hi; v *= 2) o.sizes.push_back(v);
      } else {
        o.sizes.push_back(parse_size(s));
      }
    } else if (a == "-t" || a == "--test") {
      o.tests.clear();
      std::string s = next();
      for (std::size_t p = 0; p <= s.size();) {
        std::size_t c = s.find(',', p);
        if (c == std::string::npos) c = s.size();
        std::string t = s.substr(p, c - p);
        if (t != "put_lat" && t != "put_bw" && t != "get_lat" && t != "get_bw" && t != "atomic")
          die("unknown test '" + t + "' (put_lat, put_bw, get_lat, get_bw, atomic)");
        o.tests.push_back(t);
        p = c + 1;
      }
    } else if (a == "-i" || a == "--iters") o.iters = std::max<std::size_t>(1, std::stoull(next()));
    else if (a == "-w" || a == "--window") o.window = std::clamp<std::uint32_t>(static_cast<std::uint32_t>(std::stoul(next())), 1, 1024);
    else if (a == "--level") {
      std::string l = next();
      if (l == "transmit") o.level = weft::flag::transmit_complete;
      else if (l == "delivery") o.level = weft::flag::delivery_complete;
      else if (l == "commit") o.level = weft::flag::commit_complete;
      else die("--level is transmit, delivery or commit");
    } else if (a == "--register") o.registered = true;
    else if (a == "--verify") o.verify = true;
    else if (a == "--json") o.json = true;
    else if (a == "--timeout") o.timeout_s = std::max(1, std::stoi(next()));
    else if (a == "-q" || a == "--quiet") o.quiet = true;
    else die("unknown option '" + a + "' (see --help)");
  }
  if (o.sizes.empty())
    for (std::size_t v = 8; v <= (1u << 20); v *= 2) o.sizes.push_back(v);
  for (std::size_t s : o.sizes)
    if (s == 0 || s > (std::size_t{1} << 30)) die("sizes are 1 byte to 1 GiB");
  const std::size_t buf_len = *std::max_element(o.sizes.begin(), o.sizes.end()) + 64;

  void* shared = ::mmap(nullptr, sizeof(control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) die("mmap of the control block failed");
  auto* ctl = new (shared) control();
  target_pid = ::fork();
  if (target_pid < 0) die("fork failed");
  if (target_pid == 0) {
    int rc = run_target(o, ctl, buf_len);
    ::_exit(rc);
  }
  initiator in{o, ctl, open_node(o, buf_len)};
  auto deadline = clk::now() + std::chrono::seconds(o.timeout_s);
  while (!ctl->target_up.load(std::memory_order_acquire)) {
    in.check_target();
    if (clk::now() > deadline) die("the target did not start");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto nm = *in.n.ep.name();
  ctl->client_key = *in.n.mr.key();
  ctl->client_name_len = std::min(nm.view().size(), sizeof ctl->client_name);
  std::memcpy(ctl->client_name, nm.view().data(), ctl->client_name_len);
  auto p = in.n.av.insert(weft::address::from_string(in.n.inf.format, std::string(ctl->name, ctl->name_len)));
  if (!p) die(p.error().message);
  in.peer = *p;
  ctl->client_up.store(1, std::memory_order_release);

  std::vector<result_row> rows;
  weft::tools::page_bytes src(buf_len, std::byte{0x42}), dst(buf_len);
  auto progress = [&](const result_row& r) {
    if (!o.quiet)
      std::fprintf(stderr, "weft_rma_perf: %-13s %8zu B  lat %9.3f us  %10.1f MB/s  %8.3f Mops\n", r.test.c_str(),
                   r.size, r.lat_us, r.mbps, r.mops);
    rows.push_back(r);
  };
  for (std::size_t size : o.sizes) {
    if (wants(o, "put_lat")) progress(in.put_lat(size));
    if (wants(o, "put_bw")) {
      if (size <= in.n.inf.tx.inject_size && o.level == weft::flag::transmit_complete)
        progress(in.stream("put_bw", size, [&] { return in.n.ep.inject_write(src.data(), size, in.peer, 0, ctl->key); },
                           src.data()));
      else
        progress(in.stream("put_bw", size, [&] { return in.put(src.data(), size); }));
    }
    if (wants(o, "get_lat")) progress(in.get_lat(size));
    if (wants(o, "get_bw"))
      progress(in.stream("get_bw", size, [&] { return in.n.ep.read(dst.data(), size, in.peer, 0, ctl->key); }));
  }
  if (wants(o, "atomic")) {
    std::uint64_t one = 1;
    progress(in.stream("atomic_add", 8, [&] {
      return in.n.ep.atomic(weft::atomic_op::sum, weft::atomic_type::u64, &one, 1, in.peer, 0, ctl->key);
    }));
    progress(in.atomic_lat());
  }
  ctl->stop.store(1, std::memory_order_release);
  int st = 0;
  auto until = clk::now() + std::chrono::seconds(5);
  while (::waitpid(target_pid, &st, WNOHANG) == 0) {
    if (clk::now() > until) {
      ::kill(target_pid, SIGKILL);
      ::waitpid(target_pid, &st, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  target_pid = 0;

  if (o.json) {
    std::printf("{\"provider\": \"%s\", \"window\": %u, \"level\": \"%s\", \"results\": [", o.provider.c_str(), o.window,
                o.level == weft::flag::transmit_complete ? "transmit"
                : o.level == weft::flag::delivery_complete ? "delivery" : "commit");
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::printf("%s\n  {\"test\": \"%s\", \"size\": %zu, \"lat_us\": %.4f, \"mbps\": %.2f, \"mops\": %.4f}",
                  i ? "," : "", rows[i].test.c_str(), rows[i].size, rows[i].lat_us, rows[i].mbps, rows[i].mops);
    std::printf("\n]}\n");
  } else {
    std::printf("%-14s %10s %12s %12s %10s\n", "test", "size", "lat_us", "MB/s", "Mops");
    for (auto& r : rows)
      std::printf("%-14s %10zu %12.3f %12.1f %10.3f\n", r.test.c_str(), r.size, r.lat_us, r.mbps, r.mops);
  }
  return 0;
} catch (const std::exception& e) {
  die(std::string("bad argument (") + e.what() + "); see --help");
}

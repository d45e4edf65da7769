// hello_shm: two processes exchange messages over weft's shm provider.
// The server listens on an integer port; the client finds it by node + port,
// sends a few messages (small and large, plain and tagged) and the server
// echoes each one back. Run: hello_shm  (forks the server itself)
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "weft/weft.hpp"

namespace {

struct node {
  weft::fabric fab;
  weft::domain dom;
  weft::completion_queue cq;
  weft::address_vector av;
  weft::endpoint ep;
};

template <class T>
T check(weft::result<T> r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "hello_shm: %s: %s\n", what, r.error().message.c_str());
    std::exit(1);
  }
  return std::move(*r);
}
void check(weft::result<void> r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "hello_shm: %s: %s\n", what, r.error().message.c_str());
    std::exit(1);
  }
}

node open(const weft::info& info, bool server) {
  node n;
  n.fab = check(weft::fabric::open(info), "fabric");
  n.dom = check(n.fab.open_domain(info), "domain");
  n.cq = check(n.dom.open_cq(), "completion queue");
  weft::av_attr a;
  a.auto_insert = server;  // the server learns its clients from their messages
  n.av = check(n.dom.open_av(a), "address vector");
  n.ep = check(n.dom.open_endpoint(info), "endpoint");
  // binding and enabling are [[nodiscard]] results: check them
  check(n.ep.bind(n.cq), "bind completion queue");
  check(n.ep.bind(n.av), "bind address vector");  // an RDM endpoint needs one before enable()
  check(n.ep.enable(), "enable");
  return n;
}

// A post that fails says why in weft::last_error_message(); again (back-
// pressure) does not happen here: one message is in flight at a time.
bool posted(weft::errc r, const char* what) {
  if (r == weft::errc::ok) return true;
  std::fprintf(stderr, "hello_shm: %s: %s: %s\n", what, weft::to_string(r), weft::last_error_message());
  return false;
}

weft::cq_entry wait(node& n) {
  weft::cq_entry e;
  weft::errc r = n.cq.wait(e, 10000);
  if (r == weft::errc::error_available) {
    weft::cq_err_entry ee;
    (void)n.cq.read_error(ee);
    std::fprintf(stderr, "hello_shm: operation failed: %s\n", ee.msg);
    std::exit(1);
  }
  if (r != weft::errc::ok) {
    std::fprintf(stderr, "hello_shm: no completion: %s\n", weft::to_string(r));
    std::exit(1);
  }
  return e;
}

int server(std::uint16_t port, int ready_fd) {
  weft::hints h;
  h.provider = "shm";
  h.caps = weft::cap::msg | weft::cap::tagged | weft::cap::source;
  h.port = port;
  h.source = true;
  auto infos = check(weft::get_info(h), "get_info (server)");
  node n = open(infos.front(), true);
  (void)!::write(ready_fd, "r", 1);
  std::vector<char> buf(1 << 20);
  for (int i = 0; i < 4; ++i) {
    if (!posted(n.ep.trecv(buf.data(), buf.size(), weft::addr_unspec, 0, ~0ull), "receive")) return 1;
    weft::cq_entry e = wait(n);
    std::printf("  server: got %zu bytes (tag %llu) from client #%llu, echoing\n", e.len,
                static_cast<unsigned long long>(e.tag), static_cast<unsigned long long>(e.src));
    if (!posted(n.ep.tsend(buf.data(), e.len, e.src, e.tag), "echo")) return 1;
    wait(n);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0)) {
    std::puts("usage: hello_shm\n  forks a server process, then exchanges four messages with it over shm");
    return 0;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // both processes print lines in order
  const auto port = static_cast<std::uint16_t>(40000 + ::getpid() % 20000);
  int fds[2];
  if (::pipe(fds) != 0) return 1;
  pid_t child = ::fork();
  if (child == 0) ::_exit(server(port, fds[1]));
  char c;
  if (::read(fds[0], &c, 1) != 1) return 1;  // server is listening

  weft::hints h;
  h.provider = "shm";
  h.caps = weft::cap::msg | weft::cap::tagged;
  h.node = "localhost";
  h.port = port;
  auto infos = check(weft::get_info(h), "get_info (client)");
  node n = open(infos.front(), false);
  weft::fi_addr_t srv = check(n.av.insert(*infos.front().dest_addr), "insert server address");
  std::printf("client: server on port %u is %s\n", port, weft::to_string(*infos.front().dest_addr).c_str());

  const std::size_t sizes[] = {5, 4000, 100000, 1 << 20};
  int failures = 0;
  for (std::uint64_t i = 0; i < 4; ++i) {
    std::vector<char> out(sizes[i]), in(sizes[i]);
    for (std::size_t k = 0; k < out.size(); ++k) out[k] = static_cast<char>('a' + (k + i) % 26);
    if (!posted(n.ep.trecv(in.data(), in.size(), srv, i, 0), "receive")) return 1;
    if (!posted(n.ep.tsend(out.data(), out.size(), srv, i), "send")) return 1;
    wait(n);
    wait(n);
    bool same = in == out;
    failures += !same;
    std::printf("client: %7zu bytes round trip, tag %llu: %s\n", sizes[i], static_cast<unsigned long long>(i),
                same ? "identical" : "DIFFERENT");
  }
  int st = 0;
  ::waitpid(child, &st, 0);
  bool ok = failures == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  std::puts(ok ? "hello_shm: ok" : "hello_shm: FAILED");
  return ok ? 0 : 1;
}

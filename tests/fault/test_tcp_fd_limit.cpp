// tcp: running out of file descriptors fails safe and says so. A process
// with RLIMIT_NOFILE lowered to 64 serves (or calls) more peers than that:
// the connections it cannot take fail at once with an error that names the
// limit (not after a 10 s timeout), it reports the shortage, nothing
// crashes, and the connections it has keep working.
#include <sys/resource.h>

#include <algorithm>

#include "tcp_procs.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int limit = 64;
constexpr int peers = 80;
constexpr int wait_ms = 5000;  // well below WEFT_TCP_TIMEOUT_MS (10 s)
const std::string limit_text = "RLIMIT_NOFILE " + std::to_string(limit);

rlim_t saved_limit = 0;

bool lower_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  saved_limit = rl.rlim_cur;
  rl.rlim_cur = limit;
  return ::setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

// Before a child's objects are destroyed: sanitizers check memory with a
// pipe, which they cannot make while the process is out of descriptors.
void restore_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rl.rlim_cur = saved_limit;
  (void)::setrlimit(RLIMIT_NOFILE, &rl);
}

// What a child saw, for the parent to check.
struct report {
  int ok = 0;        // connections made
  int refused = 0;   // error entries naming the limit, of the expected code
  int other = 0;     // any other outcome (a timeout, a wrong code or text)
  int echoed = 0;    // connections that still worked at the end
  int told = 0;      // the shortage was reported to the application
  char sample[160] = {};  // an error entry's text
  char other_msg[256] = {};
};

}  // namespace

// The server runs out: each client it cannot take gets errc::busy naming
// the limit at once; the server's application gets an error entry naming
// it; the clients it took still get answers.
TEST(tcp_fd_limit, server_out_of_descriptors_refuses_with_the_reason) {
  pipe_pair up, down;
  child srv;
  srv.pid = ::fork();
  ASSERT_GE(srv.pid, 0);
  if (srv.pid == 0) {
    forked_child();
    int rc = 0;
    {
      if (!lower_fd_limit()) ::_exit(1);
      node s = open_node("tcp", cap::msg | cap::tagged | cap::source, 0, true, 1024);
      const address me = s.ep.name();
      if (!up.put(&me, sizeof me)) rc = 2;
      // Echo every message to its sender; say (once) when the shortage is reported.
      char buf[16];
      bool told = false, posted = false;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      char c = 0;
      while (rc == 0 && !down.poll_byte(c) && std::chrono::steady_clock::now() < until) {
        if (!posted) posted = s.ep.recv(buf, sizeof buf) == errc::ok;
        cq_entry e;
        const errc r = s.cq.read(e);
        if (r == errc::ok && (e.flags & flag::recv)) {
          posted = false;
          (void)s.ep.inject(buf, e.len, e.src);
        } else if (r == errc::error_available) {
          cq_err_entry ee;
          (void)s.cq.read_error(ee);
          if (!told && ee.context == nullptr && ee.err == errc::no_memory) {
            told = true;
            if (!up.put(ee.msg, sizeof ee.msg)) rc = 3;
          }
        }
      }
      restore_fd_limit();
    }
    ::_exit(rc);
  }
  address srv_addr{};
  ASSERT_TRUE(up.get(&srv_addr, sizeof srv_addr, 20000)) << "the server did not start";
  std::vector<node> c(peers);
  std::vector<fi_addr_t> to(peers);
  std::vector<bool> connected(peers);
  report rep;
  for (int i = 0; i < peers; ++i) {
    auto& x = c[static_cast<std::size_t>(i)];
    x = open_node("tcp", cap::msg | cap::tagged);
    auto a = x.av.insert(srv_addr);
    ASSERT_TRUE(a);
    to[static_cast<std::size_t>(i)] = *a;
    int ctx = 0;
    ASSERT_EQ(x.ep.send("hi", 2, *a, &ctx), errc::ok);
    outcome o = next(x, {}, wait_ms);
    ASSERT_TRUE(o.ok || o.error) << "client " << i << ": no outcome within " << wait_ms << " ms";
    if (o.ok) {
      ++rep.ok;
      connected[static_cast<std::size_t>(i)] = true;
      char echo[2];
      ASSERT_EQ(x.ep.recv(echo, sizeof echo, *a), errc::ok);
      outcome e = next(x, {}, wait_ms);  // the echo: the connection is served
      ASSERT_TRUE(e.ok) << "client " << i << ": " << e.err.msg;
    } else if (o.err.err == errc::busy && std::string(o.err.msg).find(limit_text) != std::string::npos) {
      ++rep.refused;
      std::snprintf(rep.sample, sizeof rep.sample, "%s", o.err.msg);
    } else {
      ++rep.other;
      std::snprintf(rep.other_msg, sizeof rep.other_msg, "%s: %s", to_string(o.err.err), o.err.msg);
    }
  }
  EXPECT_GT(rep.ok, 10) << "the server takes connections up to its limit";
  EXPECT_GT(rep.refused, 0) << "beyond it, connections are refused with the reason";
  EXPECT_EQ(rep.other, 0) << rep.other_msg;
  EXPECT_EQ(rep.ok + rep.refused, peers);
  EXPECT_NE(std::string(rep.sample).find("out of file descriptors"), std::string::npos) << rep.sample;
  // The server's application was told, naming the limit.
  char told[160] = {};
  ASSERT_TRUE(up.get(told, sizeof told, wait_ms)) << "the server did not report the shortage";
  EXPECT_NE(std::string(told).find("out of file descriptors (" + limit_text + ")"), std::string::npos) << told;
  // The connections it took still work.
  for (int i = 0; i < peers; ++i) {
    if (!connected[static_cast<std::size_t>(i)]) continue;
    auto& x = c[static_cast<std::size_t>(i)];
    char echo[4] = {};
    ASSERT_EQ(x.ep.recv(echo, sizeof echo, to[static_cast<std::size_t>(i)], echo), errc::ok);
    ASSERT_EQ(x.ep.send("ping", 4, to[static_cast<std::size_t>(i)]), errc::ok);
    int seen = 0;
    for (int k = 0; k < 2; ++k) {
      outcome o = next(x, {}, wait_ms);
      ASSERT_TRUE(o.ok) << "client " << i << ": " << o.err.msg;
      seen += o.e.context == echo;
    }
    EXPECT_EQ(seen, 1);
    EXPECT_EQ(std::string(echo, 4), "ping");
  }
  down.put_byte('D');
  EXPECT_TRUE(srv.wait_exit(20000));
  EXPECT_TRUE(srv.exited_ok()) << "server status " << srv.status;
}

// The client runs out: a send to a peer it cannot open a socket for fails
// at once with no_memory naming the limit; its other connections work on.
TEST(tcp_fd_limit, client_out_of_descriptors_fails_the_send_with_the_reason) {
  // The client is forked first (it inherits few descriptors); the peers are
  // endpoints of one domain here (the parent keeps its limit).
  pipe_pair up, down;
  child cl;
  cl.pid = ::fork();
  ASSERT_GE(cl.pid, 0);
  if (cl.pid == 0) {
    forked_child();
    report rep;
    {
      if (!lower_fd_limit()) ::_exit(1);
      node x = open_node("tcp", cap::msg | cap::tagged);
      std::vector<fi_addr_t> to;
      for (int i = 0; i < peers; ++i) {
        address a{};
        if (!down.get(&a, sizeof a, 20000)) ::_exit(3);
        auto f = x.av.insert(a);
        if (!f) ::_exit(4);
        to.push_back(*f);
      }
      auto send_one = [&](int i) {
        int ctx = 0;
        errc r = x.ep.send("hi", 2, to[static_cast<std::size_t>(i)], &ctx);
        if (r != errc::ok) return std::make_pair(r, std::string("send: ") + to_string(r));
        cq_entry e;
        r = x.cq.wait(e, wait_ms);
        if (r == errc::ok) return std::make_pair(r, std::string());
        cq_err_entry ee;
        if (r == errc::error_available && x.cq.read_error(ee) == errc::ok) return std::make_pair(ee.err, std::string(ee.msg));
        return std::make_pair(r, std::string("no outcome: ") + to_string(r));
      };
      for (int i = 0; i < peers; ++i) {
        auto [r, msg] = send_one(i);
        if (r == errc::ok) ++rep.ok;
        else if (r == errc::no_memory && msg.find(limit_text) != std::string::npos) {
          ++rep.refused;
          std::snprintf(rep.sample, sizeof rep.sample, "%s", msg.c_str());
        } else {
          ++rep.other;
          std::snprintf(rep.other_msg, sizeof rep.other_msg, "%s: %s", to_string(r), msg.c_str());
        }
      }
      for (int i = 0; i < rep.ok; ++i) rep.echoed += send_one(i).first == errc::ok;  // the first ones connected
      if (!up.put(&rep, sizeof rep)) ::_exit(2);
      restore_fd_limit();
    }
    ::_exit(0);
  }
  node base = open_node("tcp", cap::msg | cap::tagged);
  std::vector<endpoint> srv;
  for (int i = 0; i < peers; ++i) {
    auto e = base.dom.open_endpoint(base.inf);
    ASSERT_TRUE(e);
    ASSERT_TRUE(e->bind(base.cq) && e->bind(base.av) && e->enable());
    const address a = e->name();
    ASSERT_TRUE(down.put(&a, sizeof a));
    srv.push_back(std::move(*e));
  }
  // Serve the client until it has said how it went (bounded).
  report rep;
  bool got = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<char> buf(16 * peers);
  std::vector<bool> posted(peers);
  while (!got && std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < peers; ++i)
      if (!posted[static_cast<std::size_t>(i)])
        posted[static_cast<std::size_t>(i)] =
            srv[static_cast<std::size_t>(i)].recv(buf.data() + 16 * i, 16, addr_unspec, &posted) == errc::ok;
    cq_entry e;
    while (base.cq.read(e) == errc::ok) {
      const auto k = static_cast<std::size_t>((static_cast<char*>(e.buf) - buf.data()) / 16);
      if (k < posted.size()) posted[k] = false;
    }
    pollfd f{up.rd, POLLIN, 0};
    if (::poll(&f, 1, 0) == 1) got = up.get(&rep, sizeof rep, wait_ms);
  }
  ASSERT_TRUE(got) << "the client did not finish";
  EXPECT_TRUE(cl.wait_exit(20000));
  EXPECT_TRUE(cl.exited_ok()) << "client status " << cl.status;
  EXPECT_GT(rep.ok, 10) << "sockets up to the limit";
  EXPECT_GT(rep.refused, 0) << "beyond it, sends fail with the reason";
  EXPECT_EQ(rep.other, 0) << rep.other_msg;
  EXPECT_NE(std::string(rep.sample).find("out of file descriptors (" + limit_text + ")"), std::string::npos)
      << rep.sample;
  EXPECT_EQ(rep.echoed, rep.ok) << "the connections made still work";
}

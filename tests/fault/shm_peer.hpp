#pragma once
// shm fault tests: a peer process that holds an endpoint and does what the
// parent tells it through a pipe, and bounded waits on CQs and EQs.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "../common/harness.hpp"

namespace weft::test {

// A forked process holding one shm endpoint. Commands (one byte on its pipe):
// 's' sends 5 bytes to the address the parent wrote first ('s' + address),
// 'c' closes its endpoint (and acknowledges), 'q' exits. It never progresses
// otherwise, so it consumes nothing sent to it.
struct peer_proc {
  pid_t pid = -1;
  address addr;
  int cmd = -1, ack = -1;
  bool reaped = false;

  static peer_proc spawn() {
    int to[2], from[2];
    peer_proc p;
    if (::pipe(to) != 0 || ::pipe(from) != 0) return p;
    p.pid = ::fork();
    if (p.pid == 0) {
      forked_child();
      ::close(to[1]);
      ::close(from[0]);
      std::optional<node> n(open_node("shm"));
      address a = *n->ep.name();
      if (::write(from[1], &a, sizeof a) != static_cast<ssize_t>(sizeof a)) ::_exit(2);
      for (;;) {
        char c = 0;
        if (::read(to[0], &c, 1) != 1 || c == 'q') ::_exit(0);
        char ok = 1;
        if (c == 'c') {
          n.reset();  // closes the endpoint; the process lives on
        } else if (c == 's') {
          address dst;
          if (::read(to[0], &dst, sizeof dst) != static_cast<ssize_t>(sizeof dst) || !n) ::_exit(3);
          auto d = n->av.insert(dst);
          ok = d && n->ep.inject("hello", 5, *d) == errc::ok;
        }
        if (::write(from[1], &ok, 1) != 1) ::_exit(4);
      }
    }
    ::close(to[0]);
    ::close(from[1]);
    p.cmd = to[1];
    p.ack = from[0];
    if (p.pid > 0 && ::read(p.ack, &p.addr, sizeof p.addr) != static_cast<ssize_t>(sizeof p.addr)) p.pid = -1;
    return p;
  }
  // Sends a command and waits for its acknowledgement.
  bool command(char c, const address* payload = nullptr) {
    if (::write(cmd, &c, 1) != 1) return false;
    if (payload && ::write(cmd, payload, sizeof *payload) != static_cast<ssize_t>(sizeof *payload)) return false;
    char ok = 0;
    return ::read(ack, &ok, 1) == 1 && ok == 1;
  }
  void kill9() { ::kill(pid, SIGKILL); }
  void reap() {
    if (pid <= 0 || reaped) return;
    ::kill(pid, SIGKILL);
    int st;
    ::waitpid(pid, &st, 0);
    reaped = true;
  }
  [[nodiscard]] std::string name() const { return std::string(addr.view()); }
  ~peer_proc() {
    reap();
    if (cmd >= 0) ::close(cmd);
    if (ack >= 0) ::close(ack);
  }
  peer_proc() = default;
  peer_proc(peer_proc&& o) noexcept : pid(o.pid), addr(o.addr), cmd(o.cmd), ack(o.ack), reaped(o.reaped) {
    o.pid = -1;
    o.cmd = o.ack = -1;
  }
};

// Everything a CQ delivered while waiting.
struct cq_log {
  std::vector<cq_entry> ok;
  std::vector<cq_err_entry> err;
};

// Reads n's CQ (read, or blocking waits when `sleep`) into log until
// done(log) holds or timeout_ms passes; false on timeout.
template <class Done>
bool drain_until(completion_queue& cq, cq_log& log, Done done, int timeout_ms = 5000, bool sleep = false) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done(log)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    cq_entry e{};
    const errc r = sleep ? cq.wait(e, 50) : cq.read(e);
    if (r == errc::ok) {
      log.ok.push_back(e);
    } else if (r == errc::error_available) {
      cq_err_entry ee{};
      if (cq.read_error(ee) == errc::ok) log.err.push_back(ee);
    }
  }
  return true;
}

inline std::size_t count_err(const cq_log& l, void* ctx, errc code) {
  std::size_t n = 0;
  for (auto& e : l.err) n += e.context == ctx && e.err == code;
  return n;
}

}  // namespace weft::test

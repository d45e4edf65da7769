// shm under file-descriptor exhaustion (RLIMIT_NOFILE lowered to 64, more
// peers than that): shm holds no descriptor per peer, a look at a peer that
// fails for want of descriptors never declares it dead, no live peer's region
// is deleted, and the failures that exhaustion does cause say EMFILE and the
// limit: an AV insert, and an auto-insert of a sender (whose message still
// completes, with src = addr_notavail, and the reason reported).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstring>
#include <sstream>

#include "common/limited_child.hpp"
#include "fault/shm_peer.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int peer_count = 100;  // endpoints, more than the 64 descriptors allowed
constexpr rlim_t fd_limit = 64;

struct checker {
  std::ostringstream out;
  int failures = 0;
  void operator()(bool ok, const std::string& what) {
    if (ok) return;
    if (++failures <= 8) out << what << "\n";
    else if (failures == 9) out << "(more failures not shown)\n";
  }
};

bool region_exists(const address& a) {
  std::string p("/dev/shm/");
  p.append(a.view());
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// One CQ read: an entry, an error entry, or nothing.
errc poll(completion_queue& cq, cq_log& log) {
  cq_entry e{};
  errc r = cq.read(e);
  if (r == errc::ok) log.ok.push_back(e);
  if (r == errc::error_available) {
    cq_err_entry ee{};
    if (cq.read_error(ee) == errc::ok) log.err.push_back(ee);
  }
  return r;
}

// Runs in a forked child (the limit is per process); failures come back as text.
std::string exhaustion_scenario() {
  checker check;
  ::setenv("WEFT_SHM_SLOTS", "16", 1);  // small rings: 100 endpoints stay light
  if (!limit_descriptors(fd_limit)) return "setrlimit failed";
  // the server: auto-inserts senders, reports their addresses
  node s = open_node("shm", cap::msg | cap::tagged | cap::source, 0, true, 4096);
  // the peers: many endpoints in one domain of this process, sharing a CQ
  node pn = open_node("shm", cap::msg | cap::tagged, 0, false, 4096);
  std::vector<endpoint> peers;
  std::vector<fi_addr_t> s2p, p2s;
  for (int i = 0; i < peer_count; ++i) {
    auto e = pn.dom.open_endpoint(pn.inf);
    if (!e) return "opening peer endpoint " + std::to_string(i) + ": " + e.error().message;
    if (!e->bind(pn.cq) || !e->bind(pn.av) || !e->enable()) return "binding peer endpoint";
    peers.push_back(std::move(*e));
  }
  // An extra sender in a domain of its own, unknown to the server.
  node x = open_node("shm");
  auto x2s = x.av.insert(*s.ep.name());
  check(x2s.has_value(), "x inserts the server");
  auto ps = pn.av.insert(*s.ep.name());
  if (!ps) return "peers insert the server: " + ps.error().message;
  // The server knows every peer: no descriptor is held per peer.
  for (int i = 0; i < peer_count; ++i) {
    auto a = s.av.insert(*peers[i].name());
    if (!a) return "server inserts peer " + std::to_string(i) + ": " + a.error().message;
    s2p.push_back(*a);
  }
  // Every peer says hello; the server sees each with its AV entry.
  char rbuf[peer_count][8];
  for (int i = 0; i < peer_count; ++i) check(s.ep.recv(rbuf[i], 8) == errc::ok, "server posts a receive");
  for (int i = 0; i < peer_count; ++i)
    check(post([&] { return peers[i].inject(&i, sizeof i, *ps); }, {&s}) == errc::ok, "peer inject");
  cq_log sl;
  for (auto t = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       sl.ok.size() + sl.err.size() < peer_count && std::chrono::steady_clock::now() < t;)
    (void)poll(s.cq, sl);
  check(sl.ok.size() == peer_count, "server received " + std::to_string(sl.ok.size()) + " hellos");
  for (auto& e : sl.ok) {
    int i = -1;
    std::memcpy(&i, e.buf, sizeof i);
    check(i >= 0 && i < peer_count && e.src == s2p[static_cast<std::size_t>(i)], "hello carries its AV entry");
  }
  for (auto& e : sl.err) check(false, std::string("unexpected error entry: ") + e.msg);
  sl = {};

  // Exhaust the descriptors.
  bool exhausted = false;
  std::vector<int> filler = use_up_descriptors(exhausted);
  check(exhausted, "descriptors exhausted with EMFILE");

  // 1. An AV insert fails, naming EMFILE and the limit.
  node* xs = &x;
  auto bad = s.av.insert(*xs->ep.name());
  check(!bad, "an insert without descriptors fails");
  if (!bad) {
    check(bad.error().code == errc::no_memory, "insert error is no_memory: " + std::string(to_string(bad.error().code)));
    check(bad.error().message.find("EMFILE") != std::string::npos, "insert error names EMFILE: " + bad.error().message);
    check(bad.error().message.find("RLIMIT_NOFILE = 64") != std::string::npos,
          "insert error names the limit: " + bad.error().message);
  }
  // 2. A sender the server cannot insert: its message completes with
  // src = addr_notavail, and one error entry says why.
  char xbuf[8] = {};
  check(s.ep.recv(xbuf, sizeof xbuf) == errc::ok, "server posts a receive for x");
  int xval = 4242;
  check(post([&] { return x.ep.inject(&xval, sizeof xval, *x2s); }, {&s}) == errc::ok, "x injects");
  // 3. Meanwhile liveness runs for more than a second (the /proc look at each
  // peer happens once a second): every look fails for want of a descriptor.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < until) {
    (void)poll(s.cq, sl);
    pn.cq.progress();
    x.cq.progress();
  }
  std::size_t from_x = 0, notavail_reports = 0;
  for (auto& e : sl.ok)
    if (e.buf == xbuf) {
      ++from_x;
      check(e.src == addr_notavail, "x's message has src addr_notavail");
    }
  check(from_x == 1, "x's message completed once");
  for (auto& e : sl.err) {
    const bool report = e.context == nullptr && e.err == errc::no_memory && (e.flags & flag::recv) &&
                        e.data == addr_notavail && std::strstr(e.msg, "EMFILE") &&
                        std::strstr(e.msg, std::string(x.ep.name()->view()).c_str());
    if (report) ++notavail_reports;
    else check(false, std::string("unexpected error entry at the server: ") + to_string(e.err) + ": " + e.msg);
  }
  check(notavail_reports == 1, "one report names x and EMFILE, got " + std::to_string(notavail_reports));
  check(s.ep.send("r", 1, addr_notavail) == errc::invalid_argument, "a reply to addr_notavail fails at once");
  // no live peer was declared dead, no live region deleted
  for (int i = 0; i < peer_count; ++i) check(region_exists(*peers[i].name()), "peer region exists");
  check(region_exists(*s.ep.name()) && region_exists(*x.ep.name()), "server and x regions exist");
  cq_log pl;
  while (poll(pn.cq, pl) != errc::again) {
  }
  check(pl.err.empty(), "the peers saw no error");

  // Descriptors back: everyone still communicates.
  give_back(filler);
  auto good = s.av.insert(*x.ep.name());
  check(good.has_value(), "insert works again: " + (good ? std::string() : good.error().message));
  sl = {};
  char pbuf[peer_count][8];
  for (int i = 0; i < peer_count; ++i) check(peers[i].recv(pbuf[i], 8) == errc::ok, "peer posts a receive");
  for (int i = 0; i < peer_count; ++i)
    check(post([&] { return s.ep.inject(&i, sizeof i, s2p[static_cast<std::size_t>(i)]); }, {&pn}) == errc::ok,
          "server sends to peer " + std::to_string(i));
  if (good) check(post([&] { return s.ep.inject("r", 1, *good); }, {&x}) == errc::ok, "server replies to x");
  pl = {};
  for (auto t = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       pl.ok.size() + pl.err.size() < peer_count && std::chrono::steady_clock::now() < t;)
    (void)poll(pn.cq, pl);
  check(pl.ok.size() == peer_count, "every peer got the server's message: " + std::to_string(pl.ok.size()));
  for (auto& e : pl.err) check(false, std::string("peer error: ") + e.msg);
  return check.out.str();
}

}  // namespace

TEST(shm_exhaustion, no_descriptor_per_peer_and_emfile_is_never_death) {
  const child_verdict v = run_in_child(exhaustion_scenario);
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

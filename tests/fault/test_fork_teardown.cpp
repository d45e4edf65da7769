// A forked child that destroys the weft objects it inherited must not damage
// the parent (docs/design.md, "Threading"): its destructors release only what
// is the child's own (views, descriptors, memory). Nothing shared is written:
// no shm region marked closed or unlinked, no MR-table entry cleared, no
// memory segment unlinked, no bye frame (or read) on the parent's sockets, no
// epoll registration of the parent's dropped, no join of the parent's
// progress thread. After the child is gone, the parent and its peer still
// exchange messages and RMA, and neither hears of a death or a close.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "common/child.hpp"
#include "common/harness.hpp"
#include "common/node_with_eq.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr int child_got_there = 42;  // the child's exit code once every object is closed

// Fabric, domain, CQ, AV, EQ, endpoint (node_with_eq) and two regions (one
// registered, one allocated by the domain), in the order they are opened.
struct full_node : node_with_eq {
  info inf;
  std::vector<unsigned char> buf;
  memory_region mr;     // registered over buf
  memory_region alloc;  // the domain's own memory (shm: a segment peers map by name)

  // The natural order: endpoint, regions, AV, EQ, CQ, domain, fabric.
  void close_all() {
    ep.close();
    mr.close();
    alloc.close();
    av.close();
    eq.close();
    cq.close();
    dom.close();
    fab.close();
  }
};

void open_full(full_node& n, const std::string& provider) {
  hints h;
  h.provider = provider;
  h.type = ep_type::rdm;
  h.caps = cap::msg;
  if (provider == "tcp") {
    h.source = true;
    h.node = "127.0.0.1";
  }
  auto infos = get_info(h);
  ASSERT_TRUE(infos) << infos.error().message;
  n.inf = infos->front();
  auto f = fabric::open(n.inf);
  ASSERT_TRUE(f) << f.error().message;
  n.fab = std::move(*f);
  auto d = n.fab.open_domain(n.inf);
  ASSERT_TRUE(d) << d.error().message;
  n.dom = std::move(*d);
  auto q = n.dom.open_cq(1024);
  ASSERT_TRUE(q) << q.error().message;
  n.cq = std::move(*q);
  auto a = n.dom.open_av(av_attr{});
  ASSERT_TRUE(a) << a.error().message;
  n.av = std::move(*a);
  auto eq = n.dom.open_eq();
  ASSERT_TRUE(eq) << eq.error().message;
  n.eq = std::move(*eq);
  auto e = n.dom.open_endpoint(n.inf);
  ASSERT_TRUE(e) << e.error().message;
  n.ep = std::move(*e);
  ASSERT_TRUE(n.ep.bind(n.cq));
  ASSERT_TRUE(n.ep.bind(n.av));
  auto b = n.ep.bind(n.eq);
  ASSERT_TRUE(b) << b.error().message;
  auto en = n.ep.enable();
  ASSERT_TRUE(en) << en.error().message;
  if (!(n.inf.caps & cap::rma)) return;
  n.buf.assign(4096, 0x11);
  auto m = n.dom.register_memory(n.buf.data(), n.buf.size(), access::remote_read | access::remote_write);
  ASSERT_TRUE(m) << m.error().message;
  n.mr = std::move(*m);
  auto al = n.dom.alloc_memory(4096, access::remote_read | access::remote_write);
  ASSERT_TRUE(al) << al.error().message;
  n.alloc = std::move(*al);
}

// One completion on n (success expected), driving `other`; bounded.
bool complete(full_node& n, full_node& other, void* ctx, std::string& why) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    cq_entry e{};
    const errc r = n.cq.read(e);
    if (r == errc::ok) {
      if (e.context == ctx) return true;
      why = "a completion of another operation";
      return false;
    }
    if (r == errc::error_available) {
      cq_err_entry ee{};
      (void)n.cq.read_error(ee);
      why = std::string("error entry: ") + ee.msg;
      return false;
    }
    other.cq.progress();
  }
  why = "no completion within 10 s";
  return false;
}

// Posts while the provider says again (driving both), for at most 10 s.
template <class F>
errc retry(F&& f, full_node& x, full_node& y) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    const errc r = f();
    if (r != errc::again || std::chrono::steady_clock::now() > deadline) return r;
    x.cq.progress();
    y.cq.progress();
  }
}

// from sends len bytes to `to` (entry dest); the bytes arrive intact.
void exchange(full_node& from, full_node& to, fi_addr_t dest, std::size_t len, unsigned seed) {
  const auto out = pattern(len, seed);
  std::vector<unsigned char> in(len, 0);
  int rctx = 0, sctx = 0;
  ASSERT_EQ(to.ep.recv(in.data(), in.size(), addr_unspec, &rctx), errc::ok);
  ASSERT_EQ(retry([&] { return from.ep.send(out.data(), out.size(), dest, &sctx); }, from, to), errc::ok);
  std::string why;
  ASSERT_TRUE(complete(from, to, &sctx, why)) << "send of " << len << " bytes: " << why;
  ASSERT_TRUE(complete(to, from, &rctx, why)) << "receive of " << len << " bytes: " << why;
  EXPECT_EQ(in, out) << len << " bytes";
}

// initiator writes into target's region (key, its memory at base), reads it back.
void rma_round(full_node& initiator, full_node& target, fi_addr_t dest, const memory_region& region,
               unsigned seed) {
  auto key = region.key();
  ASSERT_TRUE(key);
  auto base = region.addr();
  ASSERT_TRUE(base);
  const auto out = pattern(3000, seed);
  int wctx = 0, rctx = 0;
  std::string why;
  ASSERT_EQ(retry([&] { return initiator.ep.write(out.data(), out.size(), dest, 100, *key, &wctx); },
                 initiator, target),
            errc::ok);
  ASSERT_TRUE(complete(initiator, target, &wctx, why)) << "RMA write: " << why;
  EXPECT_EQ(std::memcmp(static_cast<unsigned char*>(*base) + 100, out.data(), out.size()), 0);
  std::vector<unsigned char> back(out.size(), 0);
  ASSERT_EQ(retry([&] { return initiator.ep.read(back.data(), back.size(), dest, 100, *key, &rctx); },
                 initiator, target),
            errc::ok);
  ASSERT_TRUE(complete(initiator, target, &rctx, why)) << "RMA read: " << why;
  EXPECT_EQ(back, out);
}

// Every event on n's EQ (none expected): a peer_dead says the peer thinks
// its partner died or closed.
void expect_no_events(full_node& n, const char* who) {
  for (int i = 0; i < 100; ++i) {
    eq_event e;
    if (n.eq.read(e) != errc::ok) return;
    ADD_FAILURE() << who << " got an event of kind " << static_cast<int>(e.type) << " (err "
                  << static_cast<int>(e.err) << "): " << e.message;
  }
}

class fork_teardown : public ::testing::TestWithParam<variant> {};

}  // namespace

TEST_P(fork_teardown, child_destroying_inherited_objects_leaves_the_parent_working) {
  apply(GetParam());
  full_node a, b;  // a: the objects the child inherits and destroys; b: its peer (both here)
  open_full(a, GetParam().provider);
  if (HasFatalFailure()) return;
  open_full(b, GetParam().provider);
  if (HasFatalFailure()) return;
  auto a2b = a.av.insert(*b.ep.name());
  ASSERT_TRUE(a2b) << a2b.error().message;
  auto b2a = b.av.insert(*a.ep.name());
  ASSERT_TRUE(b2a) << b2a.error().message;
  const bool rma = (a.inf.caps & cap::rma) != 0;

  // Traffic both ways before the fork: connections, peer mappings, access
  // slots and the registered region's entry all exist in the parent.
  exchange(a, b, *a2b, 64, 1);
  exchange(b, a, *b2a, 64, 2);
  exchange(a, b, *a2b, 200'000, 3);  // rendezvous on shm
  if (rma) rma_round(b, a, *b2a, a.mr, 4);
  if (HasFailure()) return;

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Everything inherited goes, in the natural order; then a status that
    // says the child got there (no destructors of the test's statics).
    a.close_all();
    b.close_all();
    ::_exit(child_got_there);
  }
  const child_status st = wait_child(pid, std::chrono::seconds(20), [&] {
    a.cq.progress();
    b.cq.progress();
  });
  EXPECT_EQ(st.exit_code(), child_got_there) << "the child closing its copies " << st.describe();

  // The parent is untouched: messages both ways, small and large...
  exchange(a, b, *a2b, 64, 5);
  exchange(b, a, *b2a, 64, 6);
  exchange(a, b, *a2b, 200'000, 7);
  exchange(b, a, *b2a, 200'000, 8);
  if (rma) {
    // ...RMA into both of its regions (the allocated one first touched now),
    rma_round(b, a, *b2a, a.mr, 9);
    rma_round(b, a, *b2a, a.alloc, 10);
    rma_round(a, b, *a2b, b.mr, 11);
  }
  // ...and neither side heard of a death or a close.
  expect_no_events(a, "the parent's endpoint");
  expect_no_events(b, "its peer");
}

INSTANTIATE_TEST_SUITE_P(variants, fork_teardown, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

#pragma once
// Test helpers: open a node (fabric, domain, CQ, AV, endpoint) on a provider
// variant and drive completions with bounded waits.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "weft/weft.hpp"

namespace weft::test {

// A provider variant: the provider name plus environment it needs.
struct variant {
  std::string name;      // printable
  std::string provider;  // get_info provider
  std::vector<std::pair<std::string, std::string>> env;
  bool receiver_completes_alone = true;  // a large receive finishes without the sender progressing
  bool auto_progress = false;            // a thread drives progress
};

inline void PrintTo(const variant& v, std::ostream* os) { *os << v.name; }

inline bool segmented(const variant& v) {
  for (auto& [k, val] : v.env)
    if (k == "WEFT_SHM_CMA" && val == "0") return true;
  return false;
}

inline std::vector<variant> all_variants() {
  return {
      // single copy by the receiver only
      {"shm_cma", "shm", {{"WEFT_SHM_CMA", "1"}, {"WEFT_SHM_SPLIT_MIN", "0"}}},
      // cooperative copy for every rendezvous message
      {"shm_split", "shm", {{"WEFT_SHM_CMA", "1"}, {"WEFT_SHM_SPLIT_MIN", "1"}}},
      // bounce segments, no cross-memory attach
      {"shm_segmented", "shm", {{"WEFT_SHM_CMA", "0"}, {"WEFT_SHM_SPLIT_MIN", "0"}}, false},
      // sockets on loopback
      {"tcp", "tcp", {{"WEFT_PROGRESS", "manual"}}, false},
      // sockets, with the automatic progress thread
      {"tcp_auto", "tcp", {{"WEFT_PROGRESS", "auto"}}, true, true},
  };
}

// The variants of one provider: a test that names a provider runs only on it.
inline std::vector<variant> variants_of(const std::string& provider) {
  std::vector<variant> out;
  for (auto& v : all_variants())
    if (v.provider == provider) out.push_back(v);
  return out;
}

// First thing in a forked child that opens weft objects: the child starts no
// progress thread of its own. GCC 12's sanitizer allocator is not fork-safe:
// a child of a multi-threaded parent can inherit one of its locks held, and a
// new thread's first allocation then waits forever. (The parent's variant is
// what the test exercises; the child only helps.)
inline void forked_child() { ::setenv("WEFT_PROGRESS", "manual", 1); }

inline void apply(const variant& v) {
  for (auto& [k, val] : v.env) ::setenv(k.c_str(), val.c_str(), 1);
}

struct node {
  fabric fab;
  domain dom;
  completion_queue cq;
  address_vector av;
  endpoint ep;
  info inf;
};

inline node open_node(const std::string& provider, caps_t caps = cap::msg | cap::tagged, std::uint16_t port = 0,
                      bool auto_insert = false, std::size_t cq_size = 1024) {
  hints h;
  h.provider = provider;
  h.type = ep_type::rdm;
  h.caps = caps;
  if (port || provider == "tcp") {
    h.port = port;
    h.source = true;
    if (provider == "tcp") h.node = "127.0.0.1";  // listen on loopback, ephemeral port unless given
  }
  auto infos = get_info(h);
  EXPECT_TRUE(infos.has_value()) << (infos ? "" : infos.error().message);
  node n;
  if (!infos) return n;
  n.inf = infos->front();
  auto f = fabric::open(n.inf);
  EXPECT_TRUE(f.has_value());
  n.fab = std::move(*f);
  auto d = n.fab.open_domain(n.inf);
  EXPECT_TRUE(d.has_value());
  n.dom = std::move(*d);
  auto q = n.dom.open_cq(cq_size);
  EXPECT_TRUE(q.has_value());
  n.cq = std::move(*q);
  av_attr aa;
  aa.auto_insert = auto_insert;
  auto a = n.dom.open_av(aa);
  EXPECT_TRUE(a.has_value());
  n.av = std::move(*a);
  auto e = n.dom.open_endpoint(n.inf);
  EXPECT_TRUE(e.has_value()) << (e ? "" : e.error().message);
  n.ep = std::move(*e);
  EXPECT_TRUE(n.ep.bind(n.cq).has_value());
  EXPECT_TRUE(n.ep.bind(n.av).has_value());
  EXPECT_TRUE(n.ep.enable().has_value());
  return n;
}

inline fi_addr_t insert(node& n, const node& peer) {
  auto r = n.av.insert(*peer.ep.name());
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return r ? *r : addr_unspec;
}

// Outcome of waiting for one completion.
struct outcome {
  bool ok = false;       // a success entry
  bool error = false;    // an error entry
  cq_entry e{};
  cq_err_entry err{};
};

// Waits (bounded) for one completion on n, driving `others` meanwhile.
inline outcome next(node& n, std::vector<node*> others = {}, int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  outcome o;
  while (std::chrono::steady_clock::now() < deadline) {
    errc r = n.cq.read(o.e);
    if (r == errc::ok) {
      o.ok = true;
      return o;
    }
    if (r == errc::error_available) {
      EXPECT_EQ(n.cq.read_error(o.err), errc::ok);
      o.error = true;
      return o;
    }
    for (auto* x : others) x->cq.progress();
  }
  ADD_FAILURE() << "no completion within " << timeout_ms << " ms";
  return o;
}

// One completion on n, polled for without pause until `until` (at least one
// look); neither ok nor error when none came. Adds no failure: usable in
// forked children.
inline outcome poll_next_until(node& n, std::chrono::steady_clock::time_point until) {
  outcome o;
  for (;;) {
    const errc r = n.cq.read(o.e);
    if (r == errc::ok) {
      o.ok = true;
      return o;
    }
    if (r == errc::error_available) {
      (void)n.cq.read_error(o.err);
      o.error = true;
      return o;
    }
    if (std::chrono::steady_clock::now() > until) return o;
  }
}

// Polls n's CQ once: true if it held an error entry for an injected write
// (no context) that failed with `want`. Only failures are expected where this
// is called: a success entry fails the test (it is not silently consumed).
inline bool take_inject_failure(node& n, errc want) {
  cq_entry e{};
  const errc r = n.cq.read(e);
  if (r == errc::ok) {
    ADD_FAILURE() << "a success entry (context " << e.context << ", flags 0x" << std::hex << e.flags << std::dec
                  << ", len " << e.len << ") where a failed inject write was expected";
    return false;
  }
  if (r != errc::error_available) return false;
  cq_err_entry ee{};
  EXPECT_EQ(n.cq.read_error(ee), errc::ok);
  EXPECT_EQ(ee.err, want) << ee.msg;
  EXPECT_EQ(ee.context, nullptr);
  EXPECT_TRUE(ee.flags & flag::inject) << ee.msg;
  return true;
}

// Posts, driving progress on `drive` while the provider says again.
template <class F>
errc post(F&& f, std::vector<node*> drive, int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    errc r = f();
    if (r != errc::again || std::chrono::steady_clock::now() > deadline) return r;
    for (auto* x : drive) x->cq.progress();
  }
}

inline std::vector<unsigned char> pattern(std::size_t n, unsigned seed) {
  std::vector<unsigned char> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<unsigned char>(x);
  }
  return v;
}

// Injects len bytes of m from n to `to` until one is refused (at most
// 100000 tries): that refusal, or ok when none was.
inline errc inject_until_refused(node& n, const void* m, std::size_t len, fi_addr_t to) {
  errc r = errc::ok;
  for (std::size_t i = 0; i < 100000; ++i)
    if ((r = n.ep.inject(m, len, to)) != errc::ok) break;
  return r;
}

// Offset of the first byte of [p, p + n) that is not b, or n.
inline std::size_t first_not(const unsigned char* p, std::size_t n, unsigned char b) {
  std::uint64_t w;
  std::memset(&w, b, sizeof w);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t x;
    std::memcpy(&x, p + i, 8);
    if (x != w) break;
  }
  for (; i < n; ++i)
    if (p[i] != b) return i;
  return n;
}

// Two nodes of one provider variant (msg and tagged), each in the other's
// address vector.
class pair_test : public ::testing::TestWithParam<variant> {
 protected:
  void SetUp() override {
    apply(GetParam());
    a = open_node(GetParam().provider, cap::msg | cap::tagged);
    b = open_node(GetParam().provider, cap::msg | cap::tagged);
    a2b = insert(a, b);
    b2a = insert(b, a);
  }
  node a, b;
  fi_addr_t a2b = addr_unspec, b2a = addr_unspec;
};

// Whether weft::last_error_message() contains what.
inline bool last_error_says(const char* what) { return std::strstr(last_error_message(), what) != nullptr; }

}  // namespace weft::test

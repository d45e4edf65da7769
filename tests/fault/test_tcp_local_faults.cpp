// tcp: a failure in this process's own memory (EFAULT: a receive buffer, or
// the buffer of an RMA read, unmapped or read-only) is a local failure: the
// operation it belongs to fails with io_error saying so, and the connection
// carries on. It used to close the connection, which the peer took for this
// process's death: peer_dead for its operations and a peer_dead report
// although the process was alive. (An unmapped region under a read answer
// at the target: test_tcp_rma_revoke.cpp.)
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/harness.hpp"
#include "prov/tcp/test_hooks.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr std::size_t big = 3u << 19;  // 1.5 MiB: read straight into the buffer (readv), past rbuf's 64 KiB
constexpr std::size_t writable = 1u << 20;  // the first MiB; the rest is read-only

// big bytes whose tail (from `writable`) is read-only.
struct half_writable {
  void* p = MAP_FAILED;
  half_writable() {
    p = ::mmap(nullptr, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) ::mprotect(static_cast<char*>(p) + writable, big - writable, PROT_READ);
  }
  ~half_writable() {
    if (p != MAP_FAILED) ::munmap(p, big);
  }
  half_writable(const half_writable&) = delete;
  half_writable& operator=(const half_writable&) = delete;
};

bool says(const char* msg, const char* what) { return std::strstr(msg, what) != nullptr; }

// No entry is waiting on n (an error entry would be a peer_dead report).
void expect_quiet(node& n, const char* who) {
  cq_entry e;
  const errc st = n.cq.read(e);
  if (st == errc::error_available) {
    cq_err_entry ee;
    ASSERT_EQ(n.cq.read_error(ee), errc::ok);
    ADD_FAILURE() << who << " got an error entry (" << static_cast<int>(ee.err) << "): " << ee.msg;
    return;
  }
  EXPECT_EQ(st, errc::again) << who << " got an entry nobody asked for";
}

}  // namespace

TEST(tcp_local_faults, a_receive_buffer_not_writable_fails_the_receive_only) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node a = open_node("tcp", cap::msg);
  node b = open_node("tcp", cap::msg);
  const fi_addr_t a2b = insert(a, b);
  insert(b, a);  // a is a peer b has a name for: its death would be reported on b's CQ
  const auto msg = pattern(big, 3);
  half_writable buf;
  ASSERT_NE(buf.p, MAP_FAILED);
  int rctx = 0, sctx = 0;
  ASSERT_EQ(b.ep.recv(buf.p, big, addr_unspec, &rctx), errc::ok);
  ASSERT_EQ(a.ep.send(msg.data(), big, a2b, &sctx), errc::ok);
  outcome r = next(b, {&a}, 20000);
  const int hellos = prov::tcp::test_hooks::av_reverses.load();  // connections b has identified
  ASSERT_TRUE(r.error) << "a receive into read-only memory succeeded";
  EXPECT_EQ(r.err.context, &rctx);
  EXPECT_EQ(r.err.err, errc::io_error) << r.err.msg;
  EXPECT_TRUE(says(r.err.msg, "not writable")) << r.err.msg;
  outcome s = next(a, {&b}, 20000);
  ASSERT_TRUE(s.ok) << "the sender's message failed: " << s.err.msg;
  EXPECT_EQ(s.e.context, &sctx);

  // The connection carries on: the next message arrives, and neither side
  // saw a death.
  char got[8] = {};
  ASSERT_EQ(b.ep.recv(got, sizeof got, addr_unspec, &rctx), errc::ok);
  ASSERT_EQ(a.ep.send("after", 6, a2b, &sctx), errc::ok);
  outcome r2 = next(b, {&a}, 20000);
  ASSERT_TRUE(r2.ok) << r2.err.msg;
  EXPECT_STREQ(got, "after");
  outcome s2 = next(a, {&b}, 20000);
  ASSERT_TRUE(s2.ok) << s2.err.msg;
  EXPECT_EQ(prov::tcp::test_hooks::av_reverses.load(), hellos) << "a new connection carried it: the old one was closed";
  expect_quiet(a, "the sender");
  expect_quiet(b, "the receiver");
}

TEST(tcp_local_faults, a_read_into_a_buffer_not_writable_fails_the_read_only) {
  ::setenv("WEFT_PROGRESS", "manual", 1);
  node a = open_node("tcp", cap::msg | cap::rma);
  node b = open_node("tcp", cap::msg | cap::rma);
  const fi_addr_t a2b = insert(a, b);
  insert(b, a);
  auto src = pattern(big, 4);
  auto mr = b.dom.register_memory(src.data(), big, access::remote_read);
  ASSERT_TRUE(mr) << mr.error().message;
  const std::uint64_t key = *mr->key();
  half_writable buf;
  ASSERT_NE(buf.p, MAP_FAILED);
  int ctx = 0;
  ASSERT_EQ(a.ep.read(buf.p, big, a2b, 0, key, &ctx), errc::ok);
  outcome o = next(a, {&b}, 20000);
  const int hellos = prov::tcp::test_hooks::av_reverses.load();  // connections b has identified
  ASSERT_TRUE(o.error) << "a read into read-only memory succeeded";
  EXPECT_EQ(o.err.context, &ctx);
  EXPECT_EQ(o.err.err, errc::io_error) << o.err.msg;
  EXPECT_TRUE(says(o.err.msg, "not writable")) << o.err.msg;

  // The next read, into good memory, works on the same connection.
  std::vector<unsigned char> good(big, 0);
  ASSERT_EQ(a.ep.read(good.data(), big, a2b, 0, key, &ctx), errc::ok);
  outcome o2 = next(a, {&b}, 20000);
  ASSERT_TRUE(o2.ok) << o2.err.msg;
  EXPECT_EQ(std::memcmp(good.data(), src.data(), big), 0);
  EXPECT_EQ(prov::tcp::test_hooks::av_reverses.load(), hellos) << "a new connection carried it: the old one was closed";
  expect_quiet(a, "the reader");
  expect_quiet(b, "the target");
}

// tcp: an RMA read's answer never carries memory of a region closed while
// it was being sent. The target (a child process) serves large reads from a
// region, closes the region while the answer is on the wire (the reader does
// not read meanwhile, so the answer cannot finish), then overwrites the
// memory with a new pattern: the reader gets the old bytes exactly, or
// not_found, never a byte of the new pattern.
#include <sys/mman.h>

#include <algorithm>

#include "tcp_procs.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr std::size_t big = 24u << 20;  // far more than loopback socket buffers hold

enum class how { close_region, unmap_memory };

struct hello_msg {
  address name;
  std::uint64_t key;
};

// The target: serves `reads` reads, then closes the region (or unmaps its
// memory) and overwrites it, says 'C', and serves on until the reader says 'D'
// and the reader's last message ("ok", sent after its reads) has arrived.
int serve(int reads, how h, const pipe_pair& up, const pipe_pair& down) {
  forked_child();
  node t = open_node("tcp", cap::msg);
  auto ctr = t.dom.open_counter();
  if (!ctr) return 10;
  auto ep = t.dom.open_endpoint(t.inf);
  if (!ep || !ep->bind(t.cq) || !ep->bind(t.av) || !ep->bind(*ctr, flag::remote_read) || !ep->enable()) return 11;
  void* mem = ::mmap(nullptr, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 12;
  auto old_bytes = pattern(big, 1);
  std::memcpy(mem, old_bytes.data(), big);
  auto mr = t.dom.register_memory(mem, big, access::remote_read);
  if (!mr) return 13;
  hello_msg m{*ep->name(), *mr->key()};
  if (!up.put(&m, sizeof m)) return 14;
  char hi[2];
  if (ep->recv(hi, sizeof hi) != errc::ok) return 15;  // the reader's first message opens the connection
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (*ctr->read() < static_cast<std::uint64_t>(reads))  // read() drives progress
    if (std::chrono::steady_clock::now() > until) return 16;
  // Every read was taken; the first answer is partly on the wire.
  if (h == how::close_region) {
    mr->close();
    auto new_bytes = pattern(big, 2);
    std::memcpy(mem, new_bytes.data(), big);
  } else {
    // The region stays open; its memory is gone. (Memory mapped again at
    // the same address before the monitor reports the unmap could still be
    // read: docs/rma.md says to close a region before unmapping its memory.)
    ::munmap(mem, big);
  }
  char fin[3] = {};
  if (ep->recv(fin, sizeof fin, addr_unspec, fin) != errc::ok) return 19;
  if (!up.put_byte('C')) return 17;
  until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  char c;
  bool said_done = false, got_fin = false;
  while (!said_done || !got_fin) {
    cq_entry e;
    const errc st = t.cq.read(e);  // drives progress
    if (st == errc::error_available) return 20;  // the last message failed
    if (st == errc::ok && e.context == fin) got_fin = true;
    if (down.poll_byte(c)) said_done = true;
    if (std::chrono::steady_clock::now() > until) return 18;
  }
  return std::strcmp(fin, "ok") == 0 ? 0 : 21;
}

struct read_result {
  outcome o;
  std::vector<unsigned char> buf;
};

// Runs the reader against a target child; the results of the reads, in order.
std::vector<read_result> run(int reads, how h) {
  pipe_pair up, down;
  child kid;
  kid.pid = ::fork();
  if (kid.pid == 0) ::_exit(serve(reads, h, up, down));
  std::vector<read_result> res(static_cast<std::size_t>(reads));
  EXPECT_GT(kid.pid, 0);
  if (kid.pid <= 0) return {};
  hello_msg m{};
  if (!up.get(&m, sizeof m, 20000)) {
    ADD_FAILURE() << "the target did not start";
    return {};
  }
  node r = open_node("tcp", cap::msg);
  auto peer = r.av.insert(m.name);
  EXPECT_TRUE(peer);
  if (!peer) return {};
  // A first message opens and establishes the connection, so that the reads
  // leave as soon as they are posted.
  int hi_ctx = 0;
  EXPECT_EQ(r.ep.send("hi", 2, *peer, &hi_ctx), errc::ok);
  outcome sent = next(r, {}, 20000);
  EXPECT_TRUE(sent.ok) << sent.err.msg;
  for (auto& x : res) {
    x.buf.assign(big, 0);
    EXPECT_EQ(r.ep.read(x.buf.data(), big, *peer, 0, m.key, &x), errc::ok);
  }
  // Not progressing: the answers cannot finish until the target has closed.
  char c = 0;
  EXPECT_TRUE(up.get(&c, 1, 40000)) << "the target never closed the region";
  EXPECT_EQ(c, 'C');
  for (int i = 0; i < reads; ++i) {
    outcome o = next(r, {}, 30000);
    read_result* x = static_cast<read_result*>(o.ok ? o.e.context : o.err.context);
    EXPECT_TRUE(x >= res.data() && x < res.data() + res.size()) << "a completion of an unknown read";
    if (x >= res.data() && x < res.data() + res.size()) x->o = o;
  }
  // Whatever failed, the target is alive and reachable: a message reaches it.
  int ok_ctx = 0;
  EXPECT_EQ(r.ep.send("ok", 3, *peer, &ok_ctx), errc::ok);
  outcome fin = next(r, {}, 20000);
  EXPECT_TRUE(fin.ok) << fin.err.msg;
  down.put_byte('D');
  EXPECT_TRUE(kid.wait_exit(20000));
  EXPECT_TRUE(kid.exited_ok()) << "target status " << kid.status;
  return res;
}

std::size_t first_difference(const std::vector<unsigned char>& got, const std::vector<unsigned char>& want) {
  return static_cast<std::size_t>(std::mismatch(got.begin(), got.end(), want.begin()).first - got.begin());
}

}  // namespace

TEST(tcp_rma_revoke, region_closed_while_its_read_answer_is_sent) {
  // The target closes the region once it took the read, and the answer
  // leaves in the same progress call: it is partly on the wire, so its rest
  // is copied and it completes with the old bytes.
  auto res = run(1, how::close_region);
  ASSERT_EQ(res.size(), 1u);
  const auto old_bytes = pattern(big, 1);
  const outcome& o = res[0].o;
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(o.e.len, big);
  EXPECT_EQ(first_difference(res[0].buf, old_bytes), big) << "bytes that are not the region's old contents";
}

TEST(tcp_rma_revoke, answer_on_the_wire_finishes_with_old_bytes_and_the_next_fails) {
  auto res = run(2, how::close_region);
  ASSERT_EQ(res.size(), 2u);
  const auto old_bytes = pattern(big, 1);
  // The first answer was partly sent when the region closed: its rest was
  // copied before close returned.
  ASSERT_TRUE(res[0].o.ok) << res[0].o.err.msg;
  EXPECT_EQ(first_difference(res[0].buf, old_bytes), big) << "bytes that are not the region's old contents";
  // The second had not started: it became an error answer.
  ASSERT_TRUE(res[1].o.error);
  EXPECT_EQ(res[1].o.err.err, errc::not_found) << res[1].o.err.msg;
  EXPECT_NE(std::string(res[1].o.err.msg).find("closed while the read was in flight"), std::string::npos)
      << res[1].o.err.msg;
  EXPECT_TRUE(std::all_of(res[1].buf.begin(), res[1].buf.end(), [](unsigned char b) { return b == 0; }))
      << "a failed read leaves the buffer alone";
}

TEST(tcp_rma_revoke, memory_unmapped_while_its_read_answer_is_sent) {
  // The memory went away (not the region): the rest of the answer on the
  // wire cannot be copied nor sent. The target completes the frame with
  // zeros and its trailer fails the read (io_error): a failure of the
  // target's memory, not its death (the connection used to be closed, and
  // the reader took the live target for dead: peer_dead). The second read,
  // not started, fails the same way or as revoked (not_found), depending on
  // whether the memory monitor saw the unmap before its answer started.
  // The bytes that did arrive are the old ones.
  auto res = run(2, how::unmap_memory);
  ASSERT_EQ(res.size(), 2u);
  const auto old_bytes = pattern(big, 1);
  for (auto& x : res) ASSERT_TRUE(x.o.error) << "the target's memory is gone: no read can complete";
  EXPECT_EQ(res[0].o.err.err, errc::io_error) << res[0].o.err.msg;
  EXPECT_NE(std::string(res[0].o.err.msg).find("memory went away"), std::string::npos) << res[0].o.err.msg;
  EXPECT_TRUE(res[1].o.err.err == errc::io_error || res[1].o.err.err == errc::not_found) << res[1].o.err.msg;
  const std::size_t got = first_difference(res[0].buf, old_bytes);
  EXPECT_TRUE(std::all_of(res[0].buf.begin() + static_cast<std::ptrdiff_t>(got), res[0].buf.end(),
                          [](unsigned char b) { return b == 0; }))
      << "bytes that are not the region's old contents at " << got;
}

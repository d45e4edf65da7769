// tcp: a read answer sent straight from a region whose region is closed
// after part of the answer left, when the rest cannot be copied (no memory:
// the fail_revoke_copies hook), is poisoned: the target completes its frame
// (the rest of its header first, if only part of the header left) with
// zeros and its trailer fails the read with not_found; the connection
// carries on (docs/wire/tcp.md, "Read answers"). The answer_send_cap hook
// makes the first send of the answer partial, deterministically.
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "prov/tcp/test_hooks.hpp"

#include "../common/child.hpp"
#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

namespace hooks = prov::tcp::test_hooks;

// Exit codes of the child: 0 all as expected; 10+ which step went wrong.
int read_poisoned_after(int first_send) {
  node a = open_node("tcp", cap::msg);  // the reader
  node b = open_node("tcp", cap::msg);  // the target
  if (!(a.inf.caps & cap::rma)) return 10;
  const fi_addr_t a2b = insert(a, b);
  const std::size_t len = 64u << 10;  // above inject_size: sent from the region
  std::vector<unsigned char> mem(len, 0x3c), keep(len, 0x7e);
  auto m = b.dom.register_memory(mem.data(), len, access::remote_read);
  auto m2 = b.dom.register_memory(keep.data(), len, access::remote_read);
  if (!m || !m2) return 11;

  // The connection first (a read that completes), so that the capped send
  // is the answer's.
  std::vector<unsigned char> got(len, 0);
  if (a.ep.read(got.data(), 64, a2b, 0, *m2->key()) != errc::ok) return 12;
  outcome o = next(a, {&b}, 10000);
  if (!o.ok || got[0] != 0x7e) return 13;

  hooks::fail_revoke_copies.store(1);
  hooks::answer_send_cap.store(first_send);
  if (a.ep.read(got.data(), len, a2b, 0, *m->key()) != errc::ok) return 14;
  // Until the target made the capped (partial) send of the answer.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (hooks::answer_send_cap.load() != 0) {
    if (std::chrono::steady_clock::now() > until) return 15;
    b.cq.progress();
    a.cq.progress();
  }
  m->close();  // the rest cannot be copied: poisoned
  if (hooks::fail_revoke_copies.load() != 0) return 16;  // revoke_answer tried to copy
  o = next(a, {&b}, 10000);
  if (o.ok || !o.error || o.err.err != errc::not_found) {
    std::fprintf(stderr, "a read whose region closed mid-answer (first send %d bytes): %s (%s), want not_found\n",
                 first_send, o.ok ? "done" : to_string(o.err.err), o.ok ? "" : o.err.msg);
    return 17;
  }
  // The connection carries on.
  std::fill(got.begin(), got.end(), 0);
  if (a.ep.read(got.data(), len, a2b, 0, *m2->key()) != errc::ok) return 18;
  o = next(a, {&b}, 10000);
  if (!o.ok) {
    std::fprintf(stderr, "the read after the poisoned answer: %s (%s)\n", to_string(o.err.err), o.err.msg);
    return 19;
  }
  if (first_not(got.data(), len, 0x7e) != len) return 20;
  return 0;
}

void run(int first_send) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    forked_child();
    ::_exit(read_poisoned_after(first_send));
  }
  const child_status st = wait_child(pid, std::chrono::seconds(60));
  EXPECT_TRUE(st.exited_ok()) << "the reader and target process " << st.describe();
}

}  // namespace

// Part of the payload left: the rest is zeros, the trailer says not_found.
TEST(tcp_answer_poison, region_closed_mid_payload_without_memory_to_copy_fails_the_read_with_not_found) {
  run(100);
}

// Only part of the 32-byte header left: the rest of the header goes first.
TEST(tcp_answer_poison, region_closed_mid_header_sends_the_rest_of_the_header_then_fails_the_read) {
  run(10);
}

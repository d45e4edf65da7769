// tcp: small RMA writes at the target are stored by a copy that fails
// instead of faulting (prov/tcp/self_copy.hpp, docs/rma.md "Memory unmapped
// under an open region"):
// - memory mapped but not writable (mprotect'ed PROT_READ by the
//   application under an open region) fails the write with not_found, the
//   target carries on;
// - process_vm_writev refused by the kernel (a seccomp rule answering
//   EACCES, simulated by a hook) falls back to a checked plain copy: the
//   write lands;
// - the pid it writes to is this process's, also in a forked child.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>

#include "../common/child.hpp"
#include "../common/harness.hpp"
#include "prov/tcp/self_copy.hpp"

using namespace weft;
using namespace weft::test;

namespace {

namespace hooks = prov::tcp::test_hooks;

// Exit codes: 0 as expected; 10+ the step that went wrong.
int write_into_protected(bool vm_refused) {
  if (vm_refused) hooks::self_vm_errno.store(EACCES);
  node a = open_node("tcp", cap::msg);  // the writer
  node b = open_node("tcp", cap::msg);  // the target
  if (!(a.inf.caps & cap::rma)) return 10;
  const fi_addr_t a2b = insert(a, b);
  const std::size_t len = 64u << 10;
  void* mem = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 11;
  auto* base = static_cast<unsigned char*>(mem);
  auto m = b.dom.register_memory(mem, len, access::remote_write);
  if (!m) return 12;
  const std::uint64_t key = *m->key();
  std::vector<unsigned char> x(64, 0x3c);

  if (a.ep.write(x.data(), 64, a2b, 128, key) != errc::ok) return 13;
  outcome o = next(a, {&b}, 10000);
  if (!o.ok) {
    std::fprintf(stderr, "a 64-byte write into writable memory: %s (%s)\n", to_string(o.err.err), o.err.msg);
    return 14;
  }
  if (base[128] != 0x3c || base[191] != 0x3c) return 15;
  if (vm_refused && !hooks::self_vm_unavailable.load()) return 16;

  // Read-only under the open region: the write fails, the target lives.
  if (::mprotect(mem, len, PROT_READ) != 0) return 17;
  std::fill(x.begin(), x.end(), 0x5d);
  if (a.ep.write(x.data(), 64, a2b, 1024, key) != errc::ok) return 18;
  o = next(a, {&b}, 10000);
  if (o.ok || !o.error || o.err.err != errc::not_found) {
    std::fprintf(stderr, "a 64-byte write into read-only memory: %s (%s), want not_found\n",
                 o.ok ? "done" : to_string(o.err.err), o.ok ? "" : o.err.msg);
    return 19;
  }
  if (base[1024] != 0) return 20;

  // Writable again: writes land again (the connection carried on).
  if (::mprotect(mem, len, PROT_READ | PROT_WRITE) != 0) return 21;
  if (a.ep.write(x.data(), 64, a2b, 2048, key) != errc::ok) return 22;
  o = next(a, {&b}, 10000);
  if (!o.ok) return 23;
  if (base[2048] != 0x5d || base[2111] != 0x5d) return 24;
  m->close();
  return 0;
}

// A small write lands in this process's memory; the writer is in the same
// process. 0 if it landed.
int small_write_lands() {
  node a = open_node("tcp", cap::msg);
  node b = open_node("tcp", cap::msg);
  if (!(a.inf.caps & cap::rma)) return 10;
  const fi_addr_t a2b = insert(a, b);
  std::vector<unsigned char> mem(4096, 0), x(64, 0x6e);
  auto m = b.dom.register_memory(mem.data(), mem.size(), access::remote_write);
  if (!m) return 11;
  if (a.ep.write(x.data(), 64, a2b, 0, *m->key()) != errc::ok) return 12;
  outcome o = next(a, {&b}, 10000);
  if (!o.ok) return 13;
  return mem[0] == 0x6e && mem[63] == 0x6e ? 0 : 14;
}

int write_then_fork() {
  if (int rc = small_write_lands(); rc != 0) return rc;  // the pid is cached now
  const pid_t pid = ::fork();
  if (pid < 0) return 20;
  if (pid == 0) ::_exit(small_write_lands());  // with the parent's pid it would land in the parent
  const child_status st = wait_child(pid, std::chrono::seconds(30));
  return st.exited_ok() ? 0 : 21;
}

void in_child(int (*fn)()) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    forked_child();
    ::_exit(fn());
  }
  const child_status st = wait_child(pid, std::chrono::seconds(60));
  EXPECT_TRUE(st.exited_ok()) << "the writer and target process " << st.describe();
}

}  // namespace

TEST(tcp_checked_stores, a_small_write_into_read_only_memory_under_an_open_region_fails_with_not_found) {
  in_child([] { return write_into_protected(false); });
}

TEST(tcp_checked_stores, process_vm_writev_refused_with_eacces_falls_back_to_a_checked_copy) {
  in_child([] { return write_into_protected(true); });
}

TEST(tcp_checked_stores, small_writes_land_in_a_forked_child_after_the_parent_wrote) {
  in_child(write_then_fork);
}

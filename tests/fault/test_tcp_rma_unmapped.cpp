// A tcp target whose region's memory is unmapped while the region is still
// open: a large write read straight into it (readv) that meets the hole
// (EFAULT) fails with not_found instead of taking the connection down, and
// the connection carries the next write (docs/rma.md, "Memory unmapped
// under an open region": bytes buffered with their frame are copied
// plainly, a checked copy cost 1.3 us per small write). The
// domain's monitor here never notifies (as for memory the kernel will not
// watch, or in the moment between an munmap and its report): the region
// stays open and valid in the registry while its memory is gone.
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "weft/monitor.hpp"

#include "../common/child.hpp"
#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// A monitor that cannot tell: no notification, every range valid.
class blind_monitor final : public memory_monitor {
 public:
  result<void> start(notify_fn) override { return {}; }
  void stop() noexcept override {}
  result<watch_mode> subscribe(const void*, std::size_t) override { return watch_mode::notified; }
  void unsubscribe(const void*, std::size_t) noexcept override {}
  bool valid(const void*, std::size_t) noexcept override { return true; }
  const char* name() const noexcept override { return "blind"; }
};

// Exit codes of the child: 0 all as expected; 10+ which step went wrong.
int run_target_and_writer() {
  node a = open_node("tcp", cap::msg);  // the writer
  node b = open_node("tcp", cap::msg);  // the target
  if (!(a.inf.caps & cap::rma)) return 10;
  if (!b.dom.import_monitor(std::make_shared<blind_monitor>())) return 11;
  const fi_addr_t a2b = insert(a, b);
  const std::size_t len = std::size_t{256} << 10;
  void* mem = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 12;
  auto m = b.dom.register_memory(mem, len, access::remote_write);
  if (!m) return 13;
  const std::uint64_t key = *m->key();

  // Before: a small write lands.
  std::vector<unsigned char> x(std::size_t{128} << 10, 0x3c);
  if (a.ep.write(x.data(), 64, a2b, 0, key) != errc::ok) return 14;
  outcome o = next(a, {&b}, 10000);
  if (!o.ok) {
    std::fprintf(stderr, "the write before the unmap failed: %s\n", o.err.msg);
    return 15;
  }
  if (static_cast<unsigned char*>(mem)[63] != 0x3c) return 16;

  // Its upper half goes; the region stays open. A large write that starts
  // in the lower half is read straight into the region until the kernel
  // meets the hole (EFAULT).
  auto* base = static_cast<unsigned char*>(mem);
  if (::munmap(base + len / 2, len / 2) != 0) return 17;
  if (a.ep.write(x.data(), len / 2, a2b, len / 4, key) != errc::ok) return 21;
  o = next(a, {&b}, 10000);
  if (o.ok || !o.error || o.err.err != errc::not_found) {
    std::fprintf(stderr, "a write running into unmapped memory: %s (%s), want not_found\n",
                 o.ok ? "done" : to_string(o.err.err), o.ok ? "" : o.err.msg);
    return 22;
  }
  if (base[len / 4] != 0x3c || base[len / 2 - 1] != 0x3c) return 23;  // the mapped part was written

  // The connection carries on: a small write into the part still mapped
  // lands.
  std::vector<unsigned char> y(64, 0x5a);
  if (a.ep.write(y.data(), y.size(), a2b, 128, key) != errc::ok) return 18;
  o = next(a, {&b}, 10000);
  if (!o.ok) {
    std::fprintf(stderr, "a small write after the failed one: %s (%s)\n", to_string(o.err.err), o.err.msg);
    return 19;
  }
  if (base[128] != 0x5a || base[191] != 0x5a) return 20;
  m->close();
  return 0;
}

}  // namespace

TEST(tcp_rma_unmapped, a_large_write_into_memory_unmapped_under_an_open_region_fails_and_the_connection_carries_on) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    forked_child();
    ::_exit(run_target_and_writer());
  }
  const child_status st = wait_child(pid, std::chrono::seconds(60));
  EXPECT_TRUE(st.exited_ok()) << "the target and writer process " << st.describe();
}

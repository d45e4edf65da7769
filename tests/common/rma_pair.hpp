#pragma once
// Two nodes of one provider variant, b's memory registered for a's RMA: the
// fixture of the RMA conformance tests. Skips variants without cap::rma.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include "child.hpp"
#include "harness.hpp"

namespace weft::test {

// Forks `procs` processes that each add 1, `per` times, to the u64 at offset
// 0 of region `key` at the endpoint `target`, waiting for each completion;
// a child exits 0 when every addition completed. With retry_again, a post
// answered `again` is retried (progressing) for up to 10 s; without, it fails.
inline void fork_adders(const std::string& provider, const address& target, std::uint64_t key, int procs, int per,
                        bool retry_again, std::vector<pid_t>& kids) {
  for (int k = 0; k < procs; ++k) {
    pid_t p = ::fork();
    ASSERT_GE(p, 0);
    if (p == 0) {
      forked_child();
      int rc = 0;
      {
        node c = open_node(provider, cap::msg);
        auto d = c.av.insert(target);
        std::uint64_t one = 1;
        for (int i = 0; d && i < per && rc == 0; ++i) {
          errc r;
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          while ((r = c.ep.atomic(atomic_op::sum, atomic_type::u64, &one, 1, *d, 0, key)) == errc::again &&
                 retry_again && std::chrono::steady_clock::now() < until)
            c.cq.progress();
          if (r != errc::ok) rc = 2;
          cq_entry e;
          if (rc == 0 && c.cq.wait(e, 10000) != errc::ok) rc = 3;
        }
        if (!d) rc = 1;
      }
      ::_exit(rc);
    }
    kids.push_back(p);
  }
}

// Progresses `target` until each of the adders exited (each has 60 s, then
// it is killed), and expects exit 0.
inline void reap_adders(node& target, const std::vector<pid_t>& kids) {
  for (pid_t p : kids) {
    const child_status st = wait_child(p, std::chrono::seconds(60), [&] { target.cq.progress(); });
    EXPECT_TRUE(st.exited_ok()) << "adder " << st.describe();
  }
}

class rma_pair : public ::testing::TestWithParam<variant> {
 protected:
  void open_pair(std::size_t target_len) {
    apply(GetParam());
    a = open_node(GetParam().provider, cap::msg);
    b = open_node(GetParam().provider, cap::msg);
    if (!(a.inf.caps & cap::rma)) GTEST_SKIP() << GetParam().name << " has no RMA in this mode";
    a2b = insert(a, b);
    insert(b, a);
    target.assign(target_len, 0x5a);
    auto m = b.dom.register_memory(target.data(), target.size(), access::remote_read | access::remote_write);
    ASSERT_TRUE(m) << m.error().message;
    mr = std::move(*m);
  }
  // next completion at the initiator, driving the target
  outcome done() { return next(a, {&b}); }
  node a, b;
  fi_addr_t a2b = addr_unspec;
  std::vector<unsigned char> target;
  memory_region mr;
};

}  // namespace weft::test

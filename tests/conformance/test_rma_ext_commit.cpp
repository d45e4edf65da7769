// The durability side of the RMA extensions (suite rma_ext, instantiated in
// test_rma_ext.cpp), on every provider with cap::rma: completion levels per
// operation and per endpoint, SAVE and the commit handler that decides its
// answer, persistent regions whose commits flush the file, and a committed
// write that survives kill -9 of its target.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "../common/rma_ext.hpp"
#include "weft/pmem.hpp"

using namespace weft;
using namespace weft::test;

TEST_P(rma_ext, completion_levels_per_operation_and_errors_are_not_lost) {
  auto src = pattern(100000, 5);
  for (op_flags level : {flag::transmit_complete, flag::delivery_complete, flag::commit_complete}) {
    SCOPED_TRACE(level);
    std::fill(target.begin(), target.end(), 0);
    ::iovec v{src.data(), 60000};
    rma_desc d{&v, 1, a2b, 10, *mr.key(), &level};
    ASSERT_EQ(a.ep.writemsg(d, level), errc::ok);
    outcome o = done();
    ASSERT_TRUE(o.ok) << o.err.msg;
    EXPECT_EQ(o.e.context, &level);
    if (level != flag::transmit_complete) {
      EXPECT_TRUE(std::equal(src.begin(), src.begin() + 60000, target.begin() + 10)) << "placed at completion";
    }
  }
  // with transmit_complete the write completes before the target checked it;
  // its failure still arrives, as an error without a context
  unsigned char x = 1;
  ::iovec v{&x, 1};
  rma_desc d{&v, 1, a2b, 0, *mr.key() ^ 3, nullptr};
  ASSERT_EQ(a.ep.writemsg(d, flag::transmit_complete), errc::ok);
  bool saw_error = false;
  for (int i = 0; i < 2 && !saw_error; ++i) {
    outcome o = done();
    if (o.error) {
      saw_error = true;
      EXPECT_EQ(o.err.err, errc::not_found) << o.err.msg;
    }
  }
  EXPECT_TRUE(saw_error) << "the target's refusal reached the initiator";
}

TEST_P(rma_ext, endpoint_default_level_from_info) {
  info i = a.inf;
  i.tx.op_flags = flag::commit_complete;
  auto ep = a.dom.open_endpoint(i);
  ASSERT_TRUE(ep) << ep.error().message;
  ASSERT_TRUE(ep->bind(a.cq));
  ASSERT_TRUE(ep->bind(a.av));
  ASSERT_TRUE(ep->enable());
  std::atomic<int> commits{0};
  ASSERT_TRUE(b.dom.set_commit_handler([&](const commit_event& ev) {
    if (ev.what == commit_event::kind::write) commits.fetch_add(1);
    return errc::ok;
  }));
  unsigned char x = 42;
  ASSERT_EQ(ep->write(&x, 1, a2b, 5, *mr.key()), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(target[5], 42);
  EXPECT_EQ(commits.load(), 1) << "the endpoint's default level is commit";
  ASSERT_EQ(a.ep.write(&x, 1, a2b, 6, *mr.key()), errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(commits.load(), 1) << "the other endpoint's default is delivery";
}

TEST_P(rma_ext, save_runs_the_commit_handler_which_decides_the_answer) {
  std::mutex mu;
  std::vector<commit_event> seen;
  errc answer = errc::ok;
  ASSERT_TRUE(b.dom.set_commit_handler([&](const commit_event& ev) {
    std::lock_guard lk(mu);
    seen.push_back(ev);
    return answer;
  }));
  auto src = pattern(2000, 9);
  ASSERT_EQ(a.ep.write(src.data(), src.size(), a2b, 0, *mr.key()), errc::ok);
  ASSERT_TRUE(done().ok);
  int ctx = 0;
  ASSERT_EQ(a.ep.save(a2b, *mr.key(), flag::commit_complete, &ctx), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(o.e.context, &ctx);
  EXPECT_TRUE(o.e.flags & flag::save);
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].what, commit_event::kind::save);
    EXPECT_EQ(seen[0].key, *mr.key());
    EXPECT_EQ(seen[0].len, target.size()) << "SAVE covers the whole region";
    EXPECT_EQ(seen[0].addr, target.data());
    EXPECT_FALSE(seen[0].persistent());
    answer = errc::permission_denied;
  }
  ASSERT_EQ(a.ep.save(a2b, *mr.key()), errc::ok);
  o = done();
  ASSERT_TRUE(o.error) << "the handler refused";
  EXPECT_EQ(o.err.err, errc::permission_denied) << o.err.msg;
  // a write with commit_complete asks the handler too
  ::iovec v{src.data(), 100};
  rma_desc d{&v, 1, a2b, 50, *mr.key(), nullptr};
  ASSERT_EQ(a.ep.writemsg(d, flag::commit_complete), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::permission_denied);
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(seen.size(), 3u);
    EXPECT_EQ(seen[2].what, commit_event::kind::write);
    EXPECT_EQ(seen[2].offset, 50u);
    EXPECT_EQ(seen[2].len, 100u);
  }
  EXPECT_EQ(a.ep.save(a2b, *mr.key(), flag::rma), errc::invalid_argument);
  ASSERT_EQ(a.ep.save(a2b, *mr.key() ^ 1), errc::ok);
  o = done();
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.err.err, errc::not_found);
}

TEST_P(rma_ext, persistent_region_commit_flushes_the_file) {
  EXPECT_TRUE(a.inf.caps & cap::pmem) << "providers with RMA offer pmem";
  dir = temp_dir();
  auto f = persistent_file::open(dir + "/pmem.dat", 1 << 16, true);
  ASSERT_TRUE(f) << f.error().message;
  auto pm = b.dom.register_memory(f->addr(), f->len(), access::remote_write | access::remote_read | access::persistent);
  ASSERT_TRUE(pm) << pm.error().message;
  EXPECT_NE(pm->persist().value_or(flush_method::none), flush_method::none);
  std::atomic<int> flushed{0};
  ASSERT_TRUE(b.dom.set_commit_handler([&](const commit_event& ev) {
    if (ev.persistent()) flushed.fetch_add(1);
    return errc::ok;
  }));
  auto src = pattern(5000, 77);
  ::iovec v{src.data(), src.size()};
  rma_desc d{&v, 1, a2b, 1000, *pm->key(), nullptr};
  ASSERT_EQ(a.ep.writemsg(d, flag::commit_complete), errc::ok);
  outcome o = done();
  ASSERT_TRUE(o.ok) << o.err.msg;
  EXPECT_EQ(flushed.load(), 1);
  // what the file holds (read through a second, independent descriptor)
  std::vector<unsigned char> disk(src.size());
  int fd = ::open((dir + "/pmem.dat").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pread(fd, disk.data(), disk.size(), 1000), static_cast<ssize_t>(disk.size()));
  ::close(fd);
  EXPECT_EQ(disk, src);
  // anonymous memory cannot be persistent
  std::vector<unsigned char> anon(4096);
  auto bad = b.dom.register_memory(anon.data(), anon.size(), access::remote_write | access::persistent);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_NE(bad.error().message.find("file"), std::string::npos) << bad.error().message;
}

// The durability test: write + commit_complete to a target process, kill -9
// it, reopen the file.
TEST_P(rma_ext, committed_write_survives_kill_9_of_the_target) {
  dir = temp_dir();
  const std::string path = dir + "/durable.dat";
  int to_parent[2], to_child[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  ASSERT_EQ(::pipe(to_child), 0);
  pid_t kid = ::fork();
  ASSERT_GE(kid, 0);
  if (kid == 0) {
    forked_child();
    ::close(to_parent[0]);
    ::close(to_child[1]);
    int rc = 0;
    {
      node t = open_node(GetParam().provider, cap::msg);
      auto f = persistent_file::open(path, 1 << 20, true);
      auto m = f ? t.dom.register_memory(f->addr(), f->len(), access::remote_write | access::persistent)
                 : result<memory_region>(std::unexpected(f.error()));
      if (!m) rc = 1;
      struct {
        std::uint64_t key;
        char name[120];
        std::size_t name_len;
      } msg{};
      if (m) {
        msg.key = *m->key();
        auto n = *t.ep.name();
        msg.name_len = n.view().size();
        std::memcpy(msg.name, n.view().data(), std::min(msg.name_len, sizeof msg.name));
      }
      if (::write(to_parent[1], &msg, sizeof msg) != static_cast<ssize_t>(sizeof msg)) rc = 2;
      // serve until killed (bounded: 60 s)
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (rc == 0 && std::chrono::steady_clock::now() < until) t.cq.progress();
    }
    ::_exit(rc);
  }
  ::close(to_parent[1]);
  ::close(to_child[0]);
  struct {
    std::uint64_t key;
    char name[120];
    std::size_t name_len;
  } msg{};
  ASSERT_EQ(::read(to_parent[0], &msg, sizeof msg), static_cast<ssize_t>(sizeof msg));
  ASSERT_NE(msg.key, 0u);
  auto peer = a.av.insert(address::from_string(a.inf.format, std::string(msg.name, msg.name_len)));
  ASSERT_TRUE(peer) << peer.error().message;
  auto src = pattern(300000, 31);
  ::iovec v{src.data(), src.size()};
  rma_desc d{&v, 1, *peer, 4096, msg.key, nullptr};
  ASSERT_EQ(a.ep.writemsg(d, flag::commit_complete), errc::ok);
  outcome o = next(a, {}, 20000);
  ASSERT_TRUE(o.ok) << o.err.msg;
  const child_status st = kill_and_reap(kid);
  EXPECT_TRUE(st.signaled(SIGKILL)) << "the target " << st.describe();
  ::close(to_parent[0]);
  ::close(to_child[1]);
  auto f = persistent_file::open(path, 1 << 20, false);
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_TRUE(std::equal(src.begin(), src.end(), reinterpret_cast<unsigned char*>(f->data()) + 4096))
      << "the committed bytes are in the file";
}

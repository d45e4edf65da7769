#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/child.hpp"
#include "util/persist.hpp"
#include "weft/pmem.hpp"

using weft::errc;
using weft::flush_method;
using weft::persistent_file;
namespace util = weft::util;

namespace {

std::size_t page() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

flush_method expected_file_method() {
  // libpmem2 is used only where it fits (DAX: cache-line granularity); the
  // test machines have no DAX file system, so files are flushed with msync.
  return flush_method::msync;
}

class persist : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/weft_persist_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
    for (const auto& f : extra_) std::filesystem::remove(f, ec);
  }
  std::string file(const char* name) const { return dir_ + "/" + name; }
  // A file of n bytes of byte b, opened read/write (the caller closes it).
  int make_file(const std::string& path, std::size_t n, char b = 0) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    std::vector<char> buf(n, b);
    EXPECT_EQ(::pwrite(fd, buf.data(), n, 0), static_cast<ssize_t>(n));
    return fd;
  }
  static std::string read_file(const std::string& path, std::size_t off, std::size_t n) {
    std::string out(n, '\0');
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    const auto got = ::pread(fd, out.data(), n, static_cast<off_t>(off));
    ::close(fd);
    out.resize(got < 0 ? 0 : static_cast<std::size_t>(got));
    return out;
  }
  static std::size_t file_size(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<std::size_t>(st.st_size) : 0;
  }

  std::string dir_;
  std::vector<std::string> extra_;
};

}  // namespace

TEST_F(persist, method_names) {
  EXPECT_STREQ(weft::to_string(flush_method::none), "none");
  EXPECT_STREQ(weft::to_string(flush_method::libpmem2), "libpmem2");
  EXPECT_STREQ(weft::to_string(flush_method::clwb), "clwb");
  EXPECT_STREQ(weft::to_string(flush_method::clflushopt), "clflushopt");
  EXPECT_STREQ(weft::to_string(flush_method::clflush), "clflush");
  EXPECT_STREQ(weft::to_string(flush_method::msync), "msync");
}

TEST_F(persist, describe_support) {
  const std::string d = weft::describe_persist_support();
  EXPECT_NE(d.find("msync"), std::string::npos) << d;
  EXPECT_NE(d.find("libpmem2"), std::string::npos) << d;
  const auto s = weft::detect_persist_support();
#ifdef WEFT_HAVE_LIBPMEM2
  EXPECT_TRUE(s.libpmem2);
  EXPECT_NE(d.find("compiled in"), std::string::npos) << d;
#else
  EXPECT_FALSE(s.libpmem2);
  EXPECT_NE(d.find("not compiled in"), std::string::npos) << d;
#endif
  EXPECT_EQ(s.best_cpu, util::best_cpu_flush());
  if (s.clwb) {
    EXPECT_NE(d.find("clwb"), std::string::npos) << d;
  }
  if (s.clflush) {
    EXPECT_NE(d.find("clflush"), std::string::npos) << d;
  }
#if defined(__x86_64__)
  EXPECT_TRUE(s.clflush) << "every x86-64 CPU has clflush";
#endif
  std::printf("persist support: %s\n", d.c_str());
}

TEST_F(persist, create_open_extend_and_errors) {
  const std::string p = file("store");
  {
    auto missing = persistent_file::open(p, 100, false);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code, errc::not_found);
    EXPECT_NE(missing.error().message.find("create"), std::string::npos) << missing.error().message;
  }
  {
    auto empty = persistent_file::open(p, 0, true);
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.error().code, errc::invalid_argument);
  }
  {
    auto f = persistent_file::open(p, 100, true);
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_TRUE(f->is_open());
    EXPECT_EQ(f->len(), 100u);
    EXPECT_EQ(f->path(), p);
    EXPECT_EQ(f->method(), expected_file_method());
    EXPECT_EQ(file_size(p), page()) << "created files are grown to whole pages";
    std::memcpy(f->addr(), "hello", 5);
    EXPECT_EQ(f->persist(0, 5), errc::ok);
    EXPECT_EQ(f->persist(0, 100), errc::ok);
    EXPECT_EQ(f->persist(100, 0), errc::ok);
    EXPECT_EQ(f->persist(90, 20), errc::invalid_argument) << "past len()";
    EXPECT_EQ(f->persist(101, 0), errc::invalid_argument);
    EXPECT_EQ(f->persist(1, static_cast<std::size_t>(-1)), errc::invalid_argument) << "overflow";
    ASSERT_TRUE(f->close());
    EXPECT_FALSE(f->is_open());
    EXPECT_EQ(f->persist(0, 5), errc::bad_state);
    EXPECT_TRUE(f->close()) << "close is idempotent";
  }
  {
    auto f = persistent_file::open(p, 100, false);
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(std::memcmp(f->addr(), "hello", 5), 0);
  }
  {
    auto too_short = persistent_file::open(p, 2 * page() + 1, false);
    ASSERT_FALSE(too_short);
    EXPECT_EQ(too_short.error().code, errc::invalid_argument);
    EXPECT_NE(too_short.error().message.find("shorter"), std::string::npos) << too_short.error().message;
    EXPECT_EQ(file_size(p), page()) << "a refused open leaves the file alone";
  }
  {
    auto f = persistent_file::open(p, 3 * page(), true);
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(file_size(p), 3 * page());
    EXPECT_EQ(std::memcmp(f->addr(), "hello", 5), 0) << "extending keeps the data";
    const auto* b = f->data();
    bool zero = true;
    for (std::size_t i = page(); i < 3 * page(); ++i) zero = zero && b[i] == std::byte{0};
    EXPECT_TRUE(zero) << "the new part reads as zeros";
    f->data()[3 * page() - 1] = std::byte{7};
    EXPECT_EQ(f->persist(3 * page() - 1, 1), errc::ok);
  }
  {
    // A larger file opened for a shorter length is not shrunk.
    auto f = persistent_file::open(p, 10, true);
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(file_size(p), 3 * page());
  }
  {
    // A file whose length is not a page multiple maps too (libpmem2 cannot
    // map the partial page: the mapping falls back to mmap).
    const std::string odd = file("odd");
    ::close(make_file(odd, 1000, 'x'));
    auto f = persistent_file::open(odd, 1000, false);
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_NE(f->method(), flush_method::none);
    EXPECT_EQ(static_cast<const char*>(f->addr())[999], 'x');
    static_cast<char*>(f->addr())[0] = 'y';
    EXPECT_EQ(f->persist(0, 1000), errc::ok);
    EXPECT_EQ(read_file(odd, 0, 1), "y");
    EXPECT_EQ(file_size(odd), 1000u);
  }
  {
    auto d = persistent_file::open(dir_, 100, false);
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().code, errc::invalid_argument) << d.error().message;
  }
  {
    auto nodir = persistent_file::open(file("no/such/dir"), 100, true);
    ASSERT_FALSE(nodir);
    EXPECT_EQ(nodir.error().code, errc::not_found) << nodir.error().message;
  }
}

TEST_F(persist, move_only_handle) {
  auto r = persistent_file::open(file("moved"), page(), true);
  ASSERT_TRUE(r) << r.error().message;
  persistent_file a = std::move(*r);
  EXPECT_FALSE(r->is_open());
  void* where = a.addr();
  persistent_file b;
  b = std::move(a);
  EXPECT_FALSE(a.is_open());
  ASSERT_EQ(b.addr(), where);
  auto m = util::classify_range(where, 64);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(*m, b.method()) << "the registry follows the mapping, not the handle";
  EXPECT_EQ(b.persist(0, 64), errc::ok);
  ASSERT_TRUE(b.close());
  EXPECT_FALSE(util::find_mapping(where, 64)) << "closed mappings leave the registry";
}

TEST_F(persist, data_reaches_the_file_and_a_fresh_mapping) {
  const std::string p = file("data");
  const std::size_t n = 2 * page() + 123;
  {
    auto f = persistent_file::open(p, n, true);
    ASSERT_TRUE(f) << f.error().message;
    auto* b = static_cast<unsigned char*>(f->addr());
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>(i * 7 + 1);
    ASSERT_EQ(f->persist(0, n), errc::ok);
  }
  const std::string raw = read_file(p, 0, n);
  ASSERT_EQ(raw.size(), n);
  for (std::size_t i = 0; i < n; ++i)
    ASSERT_EQ(static_cast<unsigned char>(raw[i]), static_cast<unsigned char>(i * 7 + 1)) << i;
  auto f = persistent_file::open(p, n, false);
  ASSERT_TRUE(f) << f.error().message;
  const auto* b = static_cast<const unsigned char*>(f->addr());
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(b[i], static_cast<unsigned char>(i * 7 + 1)) << i;
}

TEST_F(persist, data_survives_a_killed_writer) {
  const std::string p = file("killed");
  auto f = persistent_file::open(p, 2 * page(), true);
  ASSERT_TRUE(f) << f.error().message;
  std::memcpy(f->addr(), "parent", 6);
  ASSERT_EQ(f->persist(0, 6), errc::ok);

  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    auto c = persistent_file::open(p, 2 * page(), false);  // its own mapping
    if (!c) ::_exit(2);
    std::memcpy(c->data() + page(), "child", 5);
    if (c->persist(page(), 5) != errc::ok) ::_exit(3);
    const char ok = 'k';
    if (::write(pipefd[1], &ok, 1) != 1) ::_exit(4);
    for (;;) ::pause();  // killed here, never unmapping or closing anything
  }
  ::close(pipefd[1]);
  char got = 0;
  const auto rd = ::read(pipefd[0], &got, 1);
  ::close(pipefd[0]);
  const weft::test::child_status st = weft::test::kill_and_reap(pid);
  ASSERT_EQ(rd, 1) << "child failed: it " << st.describe();
  ASSERT_TRUE(st.signaled(SIGKILL)) << "the child " << st.describe();

  ASSERT_TRUE(f->close());
  auto again = persistent_file::open(p, 2 * page(), false);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(std::memcmp(again->addr(), "parent", 6), 0);
  EXPECT_EQ(std::memcmp(again->data() + page(), "child", 5), 0);
  EXPECT_EQ(read_file(p, page(), 5), "child");
}

TEST_F(persist, classify_refuses_memory_that_is_no_shared_file_mapping) {
  auto expect_refused = [](const void* a, std::size_t n, const char* what, const char* word) {
    auto r = util::classify_range(a, n);
    ASSERT_FALSE(r) << what << " classified as " << weft::to_string(*r);
    EXPECT_EQ(r.error().code, errc::invalid_argument) << what;
    EXPECT_NE(r.error().message.find("shared mapping"), std::string::npos) << what << ": " << r.error().message;
    EXPECT_NE(r.error().message.find(word), std::string::npos) << what << ": " << r.error().message;
  };
  std::vector<char> heap(1 << 20);  // large: its own anonymous mapping
  expect_refused(heap.data(), heap.size(), "a vector", "anonymous");
  int on_stack = 0;
  expect_refused(&on_stack, sizeof on_stack, "a local", "[stack]");

  void* anon = ::mmap(nullptr, page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(anon, MAP_FAILED);
  expect_refused(anon, page(), "private anonymous memory", "anonymous");
  ::munmap(anon, page());
  void* shared_anon = ::mmap(nullptr, page(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared_anon, MAP_FAILED);
  expect_refused(shared_anon, page(), "shared anonymous memory", "no file");
  ::munmap(shared_anon, page());

  const std::string p = file("private");
  const int fd = make_file(p, 2 * page());
  void* priv = ::mmap(nullptr, 2 * page(), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ASSERT_NE(priv, MAP_FAILED);
  expect_refused(priv, 2 * page(), "a MAP_PRIVATE file mapping", "private");
  ::munmap(priv, 2 * page());

  // A hole in the middle of a shared file mapping.
  const std::string h = file("holey");
  const int hfd = make_file(h, 3 * page());
  auto* holey = static_cast<char*>(::mmap(nullptr, 3 * page(), PROT_READ | PROT_WRITE, MAP_SHARED, hfd, 0));
  ASSERT_NE(static_cast<void*>(holey), MAP_FAILED);
  ASSERT_EQ(::munmap(holey + page(), page()), 0);
  expect_refused(holey, 3 * page(), "a partly unmapped range", "not mapped");
  expect_refused(holey + page() + 8, 16, "an unmapped range", "not mapped");
  auto first = util::classify_range(holey, page());
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(*first, flush_method::msync);
  ::munmap(holey, page());
  ::munmap(holey + 2 * page(), page());
  ::close(hfd);

  // A shared mapping of a file that was deleted.
  const std::string gone = file("gone");
  const int gfd = make_file(gone, page());
  void* g = ::mmap(nullptr, page(), PROT_READ | PROT_WRITE, MAP_SHARED, gfd, 0);
  ASSERT_NE(g, MAP_FAILED);
  ASSERT_EQ(::unlink(gone.c_str()), 0);
  expect_refused(g, page(), "a deleted file", "deleted");
  ::munmap(g, page());
  ::close(gfd);
  ::close(fd);

  auto empty = util::classify_range(&on_stack, 0);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, errc::invalid_argument);
}

TEST_F(persist, classify_shared_file_mappings) {
  const std::string a = file("a");
  const std::string b = file("b");
  const int afd = make_file(a, 2 * page());
  const int bfd = make_file(b, page());
  auto* m = static_cast<char*>(::mmap(nullptr, 2 * page(), PROT_READ | PROT_WRITE, MAP_SHARED, afd, 0));
  ASSERT_NE(static_cast<void*>(m), MAP_FAILED);
  auto r = util::classify_range(m + 10, 100);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, flush_method::msync) << "no DAX here: plain shared mappings need msync";

  // Two VMAs of two files, side by side: the range spans both.
  ASSERT_EQ(::mmap(m + page(), page(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, bfd, 0),
            static_cast<void*>(m + page()));
  r = util::classify_range(m, 2 * page());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, flush_method::msync);
  std::memcpy(m + page() - 2, "abcd", 4);
  EXPECT_EQ(util::persist_range(m + page() - 2, 4, *r), errc::ok);
  EXPECT_EQ(read_file(a, page() - 2, 2), "ab");
  EXPECT_EQ(read_file(b, 0, 2), "cd");
  ::munmap(m, 2 * page());
  ::close(afd);
  ::close(bfd);

  // tmpfs: a shared file mapping too (durable across a crash, not a reboot).
  if (std::filesystem::is_directory("/dev/shm")) {
    char tmpl[] = "/dev/shm/weft_persist_XXXXXX";
    const int sfd = ::mkstemp(tmpl);
    ASSERT_GE(sfd, 0) << std::strerror(errno);
    extra_.push_back(tmpl);
    ASSERT_EQ(::ftruncate(sfd, static_cast<off_t>(page())), 0);
    void* s = ::mmap(nullptr, page(), PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    ASSERT_NE(s, MAP_FAILED);
    auto t = util::classify_range(s, page());
    ASSERT_TRUE(t) << t.error().message;
    EXPECT_EQ(*t, flush_method::msync);
    EXPECT_EQ(util::flush_range(*t, s, page()), errc::ok);
    ::munmap(s, page());
    ::close(sfd);
  }
}

TEST_F(persist, classify_map_sync_mapping_when_dax) {
  const std::string p = file("sync");
  const int fd = make_file(p, page());
  void* m = ::mmap(nullptr, page(), PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
  const int e = errno;
  ::close(fd);
  if (m == MAP_FAILED) {
    EXPECT_TRUE(e == EOPNOTSUPP || e == EINVAL) << std::strerror(e);
    GTEST_SKIP() << "no DAX file system under /tmp (MAP_SYNC: " << std::strerror(e) << ")";
  }
  auto r = util::classify_range(m, page());
  ::munmap(m, page());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, util::best_cpu_flush());
}

TEST_F(persist, classify_persistent_file_gives_its_method) {
  auto f = persistent_file::open(file("pf"), 3 * page(), true);
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->method(), expected_file_method());
  auto whole = util::classify_range(f->addr(), f->len());
  ASSERT_TRUE(whole) << whole.error().message;
  EXPECT_EQ(*whole, f->method());
  auto part = util::classify_range(f->data() + page() + 5, 100);
  ASSERT_TRUE(part) << part.error().message;
  EXPECT_EQ(*part, f->method());
  ASSERT_TRUE(util::find_mapping(f->data() + 5, 10));
  EXPECT_FALSE(util::find_mapping(f->data() + f->len() - 5, 10)) << "runs past the mapping";

  std::memcpy(f->data() + page() + 5, "persisted", 9);
  EXPECT_EQ(util::persist_range(f->data() + page() + 5, 9, *part), errc::ok);
  int local = 0;
  EXPECT_EQ(util::persist_range(&local, sizeof local, flush_method::libpmem2), errc::invalid_argument)
      << "libpmem2 only for live persistent_file mappings";
  EXPECT_EQ(util::persist_range(&local, 0, flush_method::libpmem2), errc::ok);
}

TEST_F(persist, flush_range_with_every_supported_method) {
  auto f = persistent_file::open(file("flush"), 4 * page(), true);
  ASSERT_TRUE(f) << f.error().message;
  int checked = 0;
  for (auto m : {flush_method::clwb, flush_method::clflushopt, flush_method::clflush, flush_method::msync}) {
    std::memset(f->data() + 100, static_cast<int>(m), 3 * page());
    if (!util::flush_supported(m)) {
      EXPECT_EQ(util::flush_range(m, f->data() + 100, 3 * page()), errc::not_supported) << weft::to_string(m);
      continue;
    }
    ++checked;
    EXPECT_EQ(util::flush_range(m, f->data() + 100, 3 * page()), errc::ok) << weft::to_string(m);
    EXPECT_EQ(util::flush_range(m, f->data() + 63, 2), errc::ok) << weft::to_string(m) << ": across a line";
    EXPECT_EQ(util::flush_range(m, f->data(), 0), errc::ok) << weft::to_string(m);
    EXPECT_EQ(util::persist_range(f->data() + 1, 1, m), errc::ok) << weft::to_string(m);
  }
  EXPECT_GE(checked, 1) << "msync at least";
  const auto s = weft::detect_persist_support();
  EXPECT_EQ(util::flush_supported(flush_method::clwb), s.clwb);
  EXPECT_EQ(util::flush_supported(flush_method::clflushopt), s.clflushopt);
  EXPECT_EQ(util::flush_supported(flush_method::clflush), s.clflush);

  EXPECT_EQ(util::flush_range(flush_method::none, f->addr(), 64), errc::not_supported);
  EXPECT_EQ(util::flush_range(flush_method::libpmem2, f->addr(), 64), errc::not_supported);

  // CPU flushes work on any memory (they are merely not enough off DAX).
  std::vector<char> anon(4096, 1);
  if (util::best_cpu_flush() != flush_method::none) {
    EXPECT_EQ(util::flush_range(util::best_cpu_flush(), anon.data(), anon.size()), errc::ok);
  }

  // msync on memory that is not mapped.
  void* hole = ::mmap(nullptr, page(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  ::munmap(hole, page());
  EXPECT_EQ(util::flush_range(flush_method::msync, hole, 10), errc::invalid_argument);
  EXPECT_EQ(util::flush_range(flush_method::msync, f->data() + 10, static_cast<std::size_t>(-1)),
            errc::invalid_argument)
      << "wraps around";
}

// The maps fallback monitor, and which monitor a process gets (privileges,
// a forbidden userfaultfd system call).
#include "monitor_support.hpp"

// --- the fallback -------------------------------------------------------------

TEST(maps_monitor, valid_while_mapped_false_after_munmap_and_never_notifies) {
  recorder rec;
  weft::util::maps_monitor m;
  ASSERT_TRUE(m.start(rec.fn()));
  EXPECT_STREQ(m.name(), "maps");
  char* p = map_anon(8);
  ASSERT_NE(p, nullptr);
  auto mode = m.subscribe(p, 8 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::checked);
  EXPECT_TRUE(m.valid(p, 8 * k_page));
  EXPECT_TRUE(m.valid(p + 5, 100));
  ASSERT_EQ(::mprotect(p + k_page, k_page, PROT_READ), 0);
  EXPECT_TRUE(m.valid(p, 8 * k_page)) << "mprotect splits the VMA but keeps the memory";
  ASSERT_EQ(::munmap(p + 2 * k_page, k_page), 0);
  EXPECT_FALSE(m.valid(p, 8 * k_page));
  ::munmap(p, 8 * k_page);
  EXPECT_FALSE(m.valid(p, 8 * k_page));
  EXPECT_FALSE(rec.wait_overlap(p, 8 * k_page, 200ms));
  m.unsubscribe(p, 8 * k_page);
  m.stop();
}

TEST(maps_monitor, another_file_at_the_same_address_is_invalid) {
  recorder rec;
  weft::util::maps_monitor m;
  ASSERT_TRUE(m.start(rec.fn()));
  const int fa = temp_file("/tmp", 8);
  const int fb = temp_file("/tmp", 8);
  ASSERT_GE(fa, 0);
  ASSERT_GE(fb, 0);
  auto* p = static_cast<char*>(::mmap(nullptr, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0));
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  // munmap, then a different file at the same address
  ASSERT_EQ(::munmap(p, 4 * k_page), 0);
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fb, 0), static_cast<void*>(p));
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  // subscribing again answers for the new mapping
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  // the same file at another offset
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fb, static_cast<off_t>(4 * k_page)),
            static_cast<void*>(p));
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  // anonymous shared memory is a new shmem inode each time
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            static_cast<void*>(p));
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  ASSERT_EQ(::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            static_cast<void*>(p));
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  m.unsubscribe(p, 4 * k_page);
  m.unsubscribe(p, 4 * k_page);
  m.unsubscribe(p, 4 * k_page);
  ::munmap(p, 4 * k_page);
  ::close(fa);
  ::close(fb);
  m.stop();
}

TEST(maps_monitor, reference_counts_and_unknown_ranges) {
  recorder rec;
  weft::util::maps_monitor m;
  ASSERT_TRUE(m.start(rec.fn()));
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(m.valid(p, 4 * k_page)) << "never subscribed";
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  ASSERT_TRUE(m.subscribe(p, 4 * k_page));
  m.unsubscribe(p, 4 * k_page);
  EXPECT_TRUE(m.valid(p, 4 * k_page));
  m.unsubscribe(p, 4 * k_page);
  EXPECT_FALSE(m.valid(p, 4 * k_page));
  ::munmap(p + k_page, k_page);
  EXPECT_FALSE(m.subscribe(p, 4 * k_page)) << "not mapped";
  ::munmap(p, 4 * k_page);
  m.stop();
  EXPECT_FALSE(m.subscribe(p, k_page)) << "stopped";
}

// --- who gets what -----------------------------------------------------------

namespace {

// Exercises the default monitor; returns whether it behaved and describes it.
bool exercise_default(std::string& out) {
  const auto s = weft::util::probe_userfaultfd();
  char info[160];
  std::snprintf(info, sizeof info, "uid=%d userfaultfd: available=%d user_mode_only=%d errno=%d", static_cast<int>(::getuid()),
                s.available, s.user_mode_only, s.open_errno);
  out = info;
  recorder rec;
  auto mon = started_default(rec);
  if (!mon) {
    out += "; no monitor";
    return false;
  }
  out += std::string("; monitor=") + mon->name();
  char* p = map_anon(4);
  auto mode = mon->subscribe(p, 4 * k_page);
  if (!mode) {
    out += "; subscribe failed: " + mode.error().message;
    return false;
  }
  out += std::string(" mode=") + weft::to_string(*mode);
  ::munmap(p, 4 * k_page);
  const bool invalid = !mon->valid(p, 4 * k_page);
  const bool notified = rec.wait_overlap(p, 4 * k_page, *mode == watch_mode::notified ? 1000ms : 100ms);
  out += std::string(" notified=") + (notified ? "yes" : "no") + " invalid_after_munmap=" + (invalid ? "yes" : "no");
  mon->stop();
  return invalid && (notified || *mode == watch_mode::checked);
}

}  // namespace

TEST(monitor_identity, current_user_and_unprivileged_child) {
  std::string me;
  EXPECT_TRUE(exercise_default(me)) << me;
  std::printf("[ info ] current user: %s\n", me.c_str());
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to an unprivileged user";
  auto r = run_bounded([](std::string& out) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
      out = "cannot become nobody";
      return 2;
    }
    return exercise_default(out) ? 0 : 3;
  });
  std::printf("[ info ] setuid(65534) child: %s\n", r.output.c_str());
  EXPECT_EQ(r.code, 0) << r.output;
  if (weft::util::probe_userfaultfd().user_mode_only) {
    EXPECT_NE(r.output.find("monitor=userfaultfd"), std::string::npos)
        << "UFFD_USER_MODE_ONLY works for root here, so it must for nobody";
  }
}

namespace {

// Makes the userfaultfd system call fail with EPERM, as container runtimes'
// default seccomp profiles do.
bool forbid_userfaultfd_syscall() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

}  // namespace

TEST(monitor_identity, userfaultfd_system_call_forbidden) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to compare with and without /dev/userfaultfd";
  // as root: /dev/userfaultfd (Linux 6.1, root-only here) still gives one
  auto root = run_bounded([](std::string& out) {
    if (!forbid_userfaultfd_syscall()) return 2;
    const bool ok = exercise_default(out);
    out += weft::util::probe_userfaultfd().dev_userfaultfd ? " via /dev/userfaultfd" : "";
    return ok ? 0 : 3;
  });
  std::printf("[ info ] root, syscall forbidden: %s\n", root.output.c_str());
  EXPECT_EQ(root.code, 0) << root.output;
  // as nobody: the fallback
  auto nobody = run_bounded([](std::string& out) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
    if (!forbid_userfaultfd_syscall()) return 3;
    return exercise_default(out) ? 0 : 4;
  });
  std::printf("[ info ] nobody, syscall forbidden: %s\n", nobody.output.c_str());
  EXPECT_EQ(nobody.code, 0) << nobody.output;
  EXPECT_NE(nobody.output.find("monitor=maps mode=checked"), std::string::npos) << nobody.output;
}

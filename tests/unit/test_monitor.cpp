// The default memory monitor (userfaultfd, or its fallback): what it notifies
// and what it does not, subscriptions, and its cost.
#include "monitor_support.hpp"

TEST_F(default_monitor, is_userfaultfd_when_the_kernel_allows_it) {
  const auto s = weft::util::probe_userfaultfd();
  std::printf("[ info ] default monitor: %s; userfaultfd available=%d user_mode_only=%d errno=%d offered=%#llx enabled=%#llx\n",
              mon_->name(), s.available, s.user_mode_only, s.open_errno, static_cast<unsigned long long>(s.offered),
              static_cast<unsigned long long>(s.enabled));
  EXPECT_STREQ(mon_->name(), s.available ? "userfaultfd" : "maps");
}

TEST_F(default_monitor, munmap_of_part_notifies_and_invalidates) {
  REQUIRE_UFFD();
  char* p = map_anon(16);
  ASSERT_NE(p, nullptr);
  auto mode = mon_->subscribe(p, 16 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::notified);
  EXPECT_TRUE(mon_->valid(p, 16 * k_page));
  EXPECT_TRUE(mon_->valid(p + 100, 10)) << "a part of a subscribed range";
  ASSERT_EQ(::munmap(p + 4 * k_page, 4 * k_page), 0);
  EXPECT_FALSE(mon_->valid(p, 16 * k_page)) << "false as soon as munmap returned";
  EXPECT_TRUE(rec_.wait_overlap(p + 4 * k_page, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(p, 4 * k_page)) << "notify reports what went away, not the whole subscription";
  mon_->unsubscribe(p, 16 * k_page);
  ::munmap(p, 4 * k_page);  // not the hole: it may belong to someone else by now
  ::munmap(p + 8 * k_page, 8 * k_page);
}

TEST_F(default_monitor, madvise_dontneed_and_free_notify) {
  REQUIRE_UFFD();
  char* p = map_anon(8);
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, 8 * k_page);
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(p + 4 * k_page, 4 * k_page));
  ASSERT_EQ(::madvise(p + k_page, k_page, MADV_DONTNEED), 0);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + k_page, k_page));
  ASSERT_EQ(::madvise(p + 5 * k_page, k_page, MADV_FREE), 0);
  EXPECT_FALSE(mon_->valid(p + 4 * k_page, 4 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + 5 * k_page, k_page));
  mon_->unsubscribe(p, 4 * k_page);
  mon_->unsubscribe(p + 4 * k_page, 4 * k_page);
  ::munmap(p, 8 * k_page);
}

TEST_F(default_monitor, mremap_move_notifies) {
  REQUIRE_UFFD();
  char* p = map_anon(8);
  char* dst = map_anon(8);  // a place to move to
  ASSERT_NE(p, nullptr);
  ASSERT_NE(dst, nullptr);
  std::memset(p, 1, 8 * k_page);
  ASSERT_TRUE(mon_->subscribe(p, 8 * k_page));
  void* q = ::mremap(p, 8 * k_page, 8 * k_page, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  ASSERT_EQ(q, static_cast<void*>(dst));
  EXPECT_FALSE(mon_->valid(p, 8 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p, 8 * k_page));
  EXPECT_EQ(dst[0], 1);
  ASSERT_EQ(::munmap(dst, 8 * k_page), 0) << "the moved area is no one's subscription";
  EXPECT_FALSE(rec_.wait_overlap(dst, 8 * k_page, 200ms));
  mon_->unsubscribe(p, 8 * k_page);
}

TEST_F(default_monitor, mremap_shrink_and_map_fixed_over_notify) {
  REQUIRE_UFFD();
  char* p = map_anon(16);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(mon_->subscribe(p, 8 * k_page));
  ASSERT_TRUE(mon_->subscribe(p + 8 * k_page, 8 * k_page));
  ASSERT_EQ(::mremap(p + 8 * k_page, 8 * k_page, 4 * k_page, 0), static_cast<void*>(p + 8 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + 12 * k_page, 4 * k_page));
  void* f = ::mmap(p + 2 * k_page, k_page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(f, static_cast<void*>(p + 2 * k_page));
  EXPECT_FALSE(mon_->valid(p, 8 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(p + 2 * k_page, k_page));
  mon_->unsubscribe(p, 8 * k_page);
  mon_->unsubscribe(p + 8 * k_page, 8 * k_page);
  ::munmap(p, 12 * k_page);
}

#if defined(__SANITIZE_ADDRESS__)
// ASan's allocator keeps freed blocks in quarantine: use glibc's own.
extern "C" void* __libc_malloc(std::size_t);
extern "C" void __libc_free(void*);
#define GLIBC_MALLOC __libc_malloc
#define GLIBC_FREE __libc_free
#else
#define GLIBC_MALLOC std::malloc
#define GLIBC_FREE std::free
#endif

TEST_F(default_monitor, free_of_a_16_mib_malloc_block_notifies) {
  REQUIRE_UFFD();
  constexpr std::size_t len = 16u << 20;  // above glibc's mmap threshold: its own mapping
  auto* b = static_cast<char*>(GLIBC_MALLOC(len));
  ASSERT_NE(b, nullptr);
  b[0] = 1;
  b[len - 1] = 1;
  ASSERT_TRUE(mon_->subscribe(b, len));
  EXPECT_TRUE(mon_->valid(b, len));
  volatile std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(b);  // only the address is used after free
  GLIBC_FREE(b);
  const auto* gone = reinterpret_cast<const void*>(addr);
  EXPECT_TRUE(rec_.wait_overlap(gone, len));
  EXPECT_FALSE(mon_->valid(gone, len));
  mon_->unsubscribe(gone, len);
}

TEST_F(default_monitor, unsubscribed_ranges_are_not_notified) {
  REQUIRE_UFFD();
  char* a = map_anon(4);
  char* b = map_anon(4);
  char* c = map_anon(4);
  ASSERT_TRUE(a && b && c);
  ASSERT_TRUE(mon_->subscribe(a, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(b, 4 * k_page));
  mon_->unsubscribe(b, 4 * k_page);
  EXPECT_FALSE(mon_->valid(b, 4 * k_page)) << "not subscribed any more";
  EXPECT_FALSE(mon_->valid(c, 4 * k_page)) << "never subscribed";
  ::munmap(b, 4 * k_page);
  ::munmap(c, 4 * k_page);
  ::munmap(a, 4 * k_page);  // events are applied in order: once a is reported, b and c were seen
  EXPECT_TRUE(rec_.wait_overlap(a, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(b, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(c, 4 * k_page));
  mon_->unsubscribe(a, 4 * k_page);
}

TEST_F(default_monitor, subscriptions_are_reference_counted) {
  REQUIRE_UFFD();
  char* p = map_anon(4);
  char* q = map_anon(4);
  char* s = map_anon(4);
  ASSERT_TRUE(p && q && s);
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  mon_->unsubscribe(p, 4 * k_page);
  EXPECT_TRUE(mon_->valid(p, 4 * k_page)) << "one reference left";
  ASSERT_TRUE(mon_->subscribe(q, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(q, 4 * k_page));
  mon_->unsubscribe(q, 4 * k_page);
  mon_->unsubscribe(q, 4 * k_page);
  EXPECT_FALSE(mon_->valid(q, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(s, 4 * k_page));
  ::munmap(p, 4 * k_page);
  ::munmap(q, 4 * k_page);
  ::munmap(s, 4 * k_page);
  EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  EXPECT_TRUE(rec_.wait_overlap(s, 4 * k_page));
  EXPECT_FALSE(rec_.overlaps(q, 4 * k_page));
  mon_->unsubscribe(p, 4 * k_page);
  mon_->unsubscribe(s, 4 * k_page);
}

TEST_F(default_monitor, overlapping_ranges) {
  REQUIRE_UFFD();
  char* p = map_anon(12);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(mon_->subscribe(p, 8 * k_page));
  ASSERT_TRUE(mon_->subscribe(p + 4 * k_page, 8 * k_page));
  EXPECT_TRUE(mon_->valid(p, 12 * k_page)) << "covered by the union";
  mon_->unsubscribe(p, 8 * k_page);
  EXPECT_FALSE(mon_->valid(p, 12 * k_page));
  EXPECT_TRUE(mon_->valid(p + 4 * k_page, 8 * k_page));
  ::munmap(p, 2 * k_page);  // only the dropped subscription covered it
  ::munmap(p + 6 * k_page, k_page);
  EXPECT_TRUE(rec_.wait_overlap(p + 6 * k_page, k_page));
  EXPECT_FALSE(rec_.overlaps(p, 2 * k_page));
  EXPECT_FALSE(mon_->valid(p + 4 * k_page, 8 * k_page));
  mon_->unsubscribe(p + 4 * k_page, 8 * k_page);
  // only what is still ours: another thread (e.g. the sanitizer's TLS) may
  // have been given the holes made above
  ::munmap(p + 2 * k_page, 4 * k_page);
  ::munmap(p + 7 * k_page, 5 * k_page);
}

TEST_F(default_monitor, subscribing_again_after_invalidation_starts_afresh) {
  REQUIRE_UFFD();
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  auto replace = [&] {  // an implicit munmap that keeps the address ours
    return ::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p;
  };
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  ASSERT_TRUE(replace());
  EXPECT_FALSE(mon_->valid(p, 4 * k_page));
  ASSERT_TRUE(mon_->subscribe(p, 4 * k_page));
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ASSERT_TRUE(replace());
  EXPECT_FALSE(mon_->valid(p, 4 * k_page)) << "registered again: the new mapping is watched";
  EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  mon_->unsubscribe(p, 4 * k_page);
  mon_->unsubscribe(p, 4 * k_page);
  ::munmap(p, 4 * k_page);
}

TEST_F(default_monitor, unmapped_range_cannot_be_subscribed) {
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  ::munmap(p + k_page, k_page);
  auto r = mon_->subscribe(p, 4 * k_page);
  EXPECT_FALSE(r);
  if (!r) {
    EXPECT_TRUE(r.error().code == weft::errc::invalid_argument || r.error().code == weft::errc::not_found);
  }
  EXPECT_FALSE(mon_->subscribe(p, 0));
  ::munmap(p, 4 * k_page);
}

TEST_F(default_monitor, two_monitors_watch_the_same_range) {
  REQUIRE_UFFD();
  recorder rec2;
  auto second = started_default(rec2);
  ASSERT_NE(second, nullptr);
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  auto m1 = mon_->subscribe(p, 4 * k_page);
  auto m2 = second->subscribe(p, 4 * k_page);
  ASSERT_TRUE(m1 && m2);
  EXPECT_EQ(*m1, watch_mode::notified);
  EXPECT_EQ(*m2, watch_mode::notified) << "all monitors share one userfaultfd";
  second->unsubscribe(p, 4 * k_page);
  ASSERT_TRUE(second->subscribe(p, 4 * k_page));
  ::munmap(p, 4 * k_page);
  EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  EXPECT_TRUE(rec2.wait_overlap(p, 4 * k_page));
  second->stop();
}

TEST_F(default_monitor, range_owned_by_another_userfaultfd_is_checked) {
  REQUIRE_UFFD();
  char* p = map_anon(4);
  ASSERT_NE(p, nullptr);
  const int other = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  ASSERT_GE(other, 0);
  uffdio_api api{};
  api.api = UFFD_API;
  ASSERT_EQ(::ioctl(other, UFFDIO_API, &api), 0);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<std::uintptr_t>(p);
  reg.range.len = 4 * k_page;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  ASSERT_EQ(::ioctl(other, UFFDIO_REGISTER, &reg), 0);
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  EXPECT_EQ(*mode, watch_mode::checked);
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ::close(other);
  ::munmap(p + k_page, k_page);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page)) << "checked against /proc/self/maps";
  mon_->unsubscribe(p, 4 * k_page);
  ::munmap(p, 4 * k_page);
}

TEST_F(default_monitor, system_v_segment_is_checked) {
  REQUIRE_UFFD();
  const int id = ::shmget(IPC_PRIVATE, 4 * k_page, IPC_CREAT | 0600);
  ASSERT_GE(id, 0);
  void* p = ::shmat(id, nullptr, 0);
  ::shmctl(id, IPC_RMID, nullptr);
  ASSERT_NE(p, reinterpret_cast<void*>(-1));
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  // what /proc/self/maps answered, should it ever go wrong again
  const auto d = weft::util::proc_maps_diagnostics();
  const std::string why = " (/proc/self/maps: " + std::to_string(d.failed_calls) + " failed calls, last errno " +
                          std::to_string(d.last_errno) + ", " + std::to_string(d.retried_calls) +
                          " retried, PROCMAP_QUERY " + (d.procmap_query ? "on)" : "off)");
  EXPECT_EQ(*mode, watch_mode::checked) << "userfaultfd does not report shmdt" << why;
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ASSERT_EQ(::shmdt(p), 0);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page)) << why;
  mon_->unsubscribe(p, 4 * k_page);
}

TEST_F(default_monitor, shared_file_mapping) {
  REQUIRE_UFFD();
  const int fd = temp_file("/tmp", 4);
  ASSERT_GE(fd, 0);
  auto* p = static_cast<char*>(::mmap(nullptr, 4 * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(p, MAP_FAILED);
  auto mode = mon_->subscribe(p, 4 * k_page);
  ASSERT_TRUE(mode) << mode.error().message;
  std::printf("[ info ] MAP_SHARED file on /tmp: %s\n", weft::to_string(*mode));
  const bool wp_async = (weft::util::probe_userfaultfd().enabled & (1ull << 15)) != 0;
  EXPECT_EQ(*mode, wp_async ? watch_mode::notified : watch_mode::checked);
  std::memset(p, 7, 4 * k_page);
  EXPECT_TRUE(mon_->valid(p, 4 * k_page));
  ::munmap(p, 4 * k_page);
  EXPECT_FALSE(mon_->valid(p, 4 * k_page));
  if (*mode == watch_mode::notified) {
    EXPECT_TRUE(rec_.wait_overlap(p, 4 * k_page));
  }
  mon_->unsubscribe(p, 4 * k_page);
  ::close(fd);
}

TEST_F(default_monitor, concurrent_subscribe_unmap_valid) {
  REQUIRE_UFFD();
  // Each thread works inside its own reservation and unmaps by mapping
  // PROT_NONE over (an implicit munmap): no thread can map an address
  // another one just unmapped. (With plain munmap, another thread may map
  // and subscribe the address before the kernel queues the first thread's
  // event, which then invalidates the new subscription too: spurious, safe.)
  constexpr std::size_t slots = 16;
  std::atomic<int> failures{0};
  auto worker = [&] {
    char* region = static_cast<char*>(
        ::mmap(nullptr, slots * 4 * k_page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (region == MAP_FAILED) {
      ++failures;
      return;
    }
    for (std::size_t i = 0; i < 200; ++i) {
      char* p = region + (i % slots) * 4 * k_page;
      if (::mmap(p, 4 * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p ||
          !mon_->subscribe(p, 4 * k_page) || !mon_->valid(p, 4 * k_page)) {
        ++failures;
        continue;
      }
      p[0] = 1;
      ::mmap(p, 4 * k_page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      if (mon_->valid(p, 4 * k_page)) ++failures;
      if (!rec_.wait_overlap(p, 4 * k_page)) ++failures;
      mon_->unsubscribe(p, 4 * k_page);
    }
    ::munmap(region, slots * 4 * k_page);
  };
  std::thread t1(worker), t2(worker), t3(worker);
  t1.join();
  t2.join();
  t3.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(default_monitor, munmap_cost) {
  REQUIRE_UFFD();
  constexpr int n = 2000;
  std::vector<char*> areas;
  auto time_munmap = [&](bool subscribe) {
    areas.clear();
    for (int i = 0; i < n; ++i) areas.push_back(map_anon(1));
    for (char* p : areas) {
      if (subscribe) (void)mon_->subscribe(p, k_page);
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (char* p : areas) ::munmap(p, k_page);
    const auto t1 = std::chrono::steady_clock::now();
    for (char* p : areas) {
      if (subscribe) mon_->unsubscribe(p, k_page);
    }
    return std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
  };
  const double plain = time_munmap(false);
  const double watched = time_munmap(true);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    char* p = map_anon(1);
    (void)mon_->subscribe(p, k_page);
    mon_->unsubscribe(p, k_page);
    ::munmap(p, k_page);
  }
  const double sub = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / n;
  std::printf("[ info ] munmap of 1 page: %.1f us plain, %.1f us subscribed; mmap+subscribe+unsubscribe+munmap: %.1f us\n",
              plain, watched, sub);
  SUCCEED();
}

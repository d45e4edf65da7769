// The memory monitor never hangs its users: each case runs in a child with a
// deadline (run_bounded), so that a bug fails instead of hanging.
#include "monitor_support.hpp"

// --- things that could hang: run in a child with a deadline ------------------

TEST(monitor_no_hang, touching_never_populated_pages_of_subscribed_ranges) {
  auto r = run_bounded([](std::string& out) {
    recorder rec;
    auto mon = started_default(rec);
    if (!mon) return 2;
    out = mon->name();
    constexpr std::size_t pages = 64;
    std::vector<std::pair<char*, std::size_t>> areas;
    areas.emplace_back(map_anon(pages), pages);
    areas.emplace_back(map_anon(pages, MAP_SHARED), pages);
    const int mfd = ::memfd_create("weft-monitor", MFD_CLOEXEC);
    if (mfd < 0 || ::ftruncate(mfd, static_cast<off_t>(pages * k_page)) != 0) return 3;
    areas.emplace_back(static_cast<char*>(::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)), pages);
    const int tfd = temp_file("/tmp", pages);
    if (tfd < 0) return 4;
    areas.emplace_back(static_cast<char*>(::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, MAP_SHARED, tfd, 0)), pages);
    areas.emplace_back(static_cast<char*>(::mmap(nullptr, pages * k_page, PROT_READ | PROT_WRITE, MAP_PRIVATE, tfd, 0)), pages);
    for (auto& [p, n] : areas) {
      if (p == nullptr || p == MAP_FAILED) return 5;
      auto mode = mon->subscribe(p, n * k_page);
      if (!mode) return 6;
      out += std::string(" ") + weft::to_string(*mode);
    }
    volatile char sink = 0;
    for (auto& [p, n] : areas) {
      for (std::size_t i = 0; i < n / 2; ++i) sink = sink + p[i * k_page];  // read fault (zero page)
      for (std::size_t i = 0; i < n; ++i) p[i * k_page] = 1;               // write faults
    }
    for (auto& [p, n] : areas) {
      if (!mon->valid(p, n * k_page)) return 7;
      mon->unsubscribe(p, n * k_page);
      ::munmap(p, n * k_page);
    }
    mon->stop();
    return 0;
  });
  std::printf("[ info ] child: %s\n", r.output.c_str());
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

TEST(monitor_no_hang, munmap_after_stop_or_destruction) {
  auto r = run_bounded([](std::string&) {
    for (int round = 0; round < 2; ++round) {
      recorder rec;
      auto mon = started_default(rec);
      if (!mon) return 2;
      char* p = map_anon(8);
      if (!mon->subscribe(p, 8 * k_page)) return 3;
      if (round == 0) {
        mon->stop();
        ::munmap(p, 4 * k_page);
        mon.reset();
      } else {
        mon.reset();  // destroyed without stop()
      }
      ::munmap(p, 8 * k_page);
    }
    return 0;
  });
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

TEST(monitor_no_hang, notify_may_unsubscribe_free_and_munmap) {
  auto r = run_bounded([](std::string&) {
    std::mutex mu;
    std::condition_variable cv;
    int calls = 0;
    std::shared_ptr<weft::memory_monitor> mon;
    char* a = map_anon(4);
    char* b = map_anon(4);
    auto notify = [&](const void* addr, std::size_t) {
      if (addr == a) {
        mon->unsubscribe(a, 4 * k_page);
        std::free(std::malloc(1 << 20));
        ::munmap(b, 4 * k_page);  // subscribed: its event is read by the other thread
        (void)mon->valid(b, 4 * k_page);
      }
      std::lock_guard lk(mu);
      ++calls;
      cv.notify_all();
    };
    auto m = weft::make_default_monitor();
    if (!m) return 2;
    mon = *m;
    if (!mon->start(notify) || !is_uffd(*mon)) return 3;
    if (!mon->subscribe(a, 4 * k_page) || !mon->subscribe(b, 4 * k_page)) return 4;
    ::munmap(a, 4 * k_page);
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, 2s, [&] { return calls >= 2; })) return 5;
    lk.unlock();
    mon->stop();
    return 0;
  });
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

TEST(monitor_no_hang, stop_or_destroy_from_inside_notify) {
  for (int variant = 0; variant < 2; ++variant) {
    auto r = run_bounded([variant](std::string&) {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      std::shared_ptr<weft::memory_monitor> mon;
      auto notify = [&](const void*, std::size_t) {
        if (variant == 0) {
          mon->stop();
        } else {
          mon.reset();  // the last reference: the monitor dies on its own thread
        }
        std::lock_guard lk(mu);
        done = true;
        cv.notify_all();
      };
      auto m = weft::make_default_monitor();
      if (!m) return 2;
      mon = *m;
      if (!mon->start(notify) || !is_uffd(*mon)) return 3;
      char* p = map_anon(4);
      if (!mon->subscribe(p, 4 * k_page)) return 4;
      ::munmap(p, 4 * k_page);
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, 2s, [&] { return done; })) return 5;
      lk.unlock();
      std::this_thread::sleep_for(50ms);
      // a new monitor works after the old one went away
      recorder rec;
      auto again = started_default(rec);
      char* q = map_anon(4);
      if (!again || !again->subscribe(q, 4 * k_page)) return 6;
      ::munmap(q, 4 * k_page);
      if (!rec.wait_overlap(q, 4 * k_page)) return 7;
      again->stop();
      return 0;
    });
    EXPECT_EQ(r.code, 0) << "variant " << variant << ": -1 means it hung";
  }
}

TEST(monitor_no_hang, fork_while_subscribed) {
  auto r = run_bounded([](std::string&) {
    recorder rec;
    auto mon = started_default(rec);
    if (!mon || !is_uffd(*mon)) return 2;
    char* p = map_anon(4);
    char* q = map_anon(4);
    if (!mon->subscribe(p, 4 * k_page) || !mon->subscribe(q, 4 * k_page)) return 3;
    const pid_t child = ::fork();
    if (child == 0) {
      // the child's copy is not watched and must not wait for anyone
      ::munmap(p, 4 * k_page);
#if defined(__SANITIZE_ADDRESS__)
      // GCC 12's sanitizer runtime is not fork-safe: a lock of its allocator
      // or thread registry that one of the parent's monitor threads held at
      // the fork stays held here, and a new thread blocks on it forever (and
      // with it this munmap of watched memory: an unkillable process). The
      // release build checks the rest (100 runs under load, no hang).
      ::_exit(0);
#endif
      recorder rec2;
      auto own = started_default(rec2);  // a fresh monitor works in the child
      char* c = map_anon(4);
      if (!own || !own->subscribe(c, 4 * k_page)) ::_exit(10);
      ::munmap(c, 4 * k_page);
      ::_exit(rec2.wait_overlap(c, 4 * k_page) ? 0 : 11);
    }
    if (!weft::test::wait_child(child, 10s).exited_ok()) return 4;  // a hung grandchild is killed too
    if (!mon->valid(p, 4 * k_page)) return 5;  // the parent's mapping is untouched
    mon->stop();
    mon.reset();
    ::munmap(q, 4 * k_page);  // after the parent dropped its monitor
    ::munmap(p, 4 * k_page);
    return 0;
  });
  EXPECT_EQ(r.code, 0) << "-1 means it hung";
}

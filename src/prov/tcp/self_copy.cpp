// Checked copies to and from a region's memory in this process (self_copy.hpp).
#include "prov/tcp/self_copy.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace weft::prov::tcp {

namespace test_hooks {
std::atomic<int> self_vm_errno{0};
std::atomic<bool> self_vm_unavailable{false};
}  // namespace test_hooks

namespace {

// getpid() is a system call (glibc does not cache it): cached, and cleared
// in a forked child, whose pid differs.
std::atomic<pid_t> cached_pid{0};

void forget_pid() noexcept { cached_pid.store(0, std::memory_order_relaxed); }

pid_t self_pid() noexcept {
  static const int registered = ::pthread_atfork(nullptr, nullptr, forget_pid);
  (void)registered;
  pid_t p = cached_pid.load(std::memory_order_relaxed);
  if (p == 0) [[unlikely]] {
    p = ::getpid();
    cached_pid.store(p, std::memory_order_relaxed);
  }
  return p;
}

std::uintptr_t page() noexcept {
  static const std::uintptr_t p = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  return p;
}

std::uintptr_t hex(const char*& s, const char* end) noexcept {
  std::uintptr_t v = 0;
  for (; s < end; ++s) {
    const char c = *s;
    if (c >= '0' && c <= '9') v = v * 16 + static_cast<std::uintptr_t>(c - '0');
    else if (c >= 'a' && c <= 'f') v = v * 16 + static_cast<std::uintptr_t>(c - 'a' + 10);
    else break;
  }
  return v;
}

std::uintptr_t dec(const char*& s, const char* end) noexcept {
  std::uintptr_t v = 0;
  for (; s < end && *s >= '0' && *s <= '9'; ++s) v = v * 10 + static_cast<std::uintptr_t>(*s - '0');
  return v;
}

// One line of /proc/self/maps: whether it vouches for [lo, hi) ∩ its range
// (the access `perm` — 'r' or 'w' — and, for a file mapping, a file that
// reaches that far: past its end a touch is SIGBUS). Advances lo.
bool check_line(const char* s, const char* end, char perm, std::uintptr_t& lo, std::uintptr_t hi) noexcept {
  const std::uintptr_t a = hex(s, end);
  if (s == end || *s++ != '-') return false;
  const std::uintptr_t b = hex(s, end);
  if (b <= lo || a >= hi) return true;  // not this range's
  if (a > lo) return false;             // a hole before it
  if (end - s < 5) return false;
  const char* perms = s + 1;
  if (perms[perm == 'r' ? 0 : 1] != perm) return false;
  s = perms + 5;  // "offset dev inode path"
  const std::uintptr_t off = hex(s, end);
  while (s < end && *s == ' ') ++s;
  while (s < end && *s != ' ') ++s;  // dev
  while (s < end && *s == ' ') ++s;
  const std::uintptr_t inode = dec(s, end);
  const std::uintptr_t upto = hi < b ? hi : b;
  if (inode != 0) {
    while (s < end && *s == ' ') ++s;
    // A file we can look at: not past its end. A deleted one (memfd, shared
    // anonymous memory, System V segments) or a special file cannot be
    // told from here: trusted.
    char path[4096];
    const std::size_t n = static_cast<std::size_t>(end - s);
    struct stat st;
    if (n > 0 && n < sizeof path && *s == '/') {
      std::memcpy(path, s, n);
      path[n] = 0;
      if (::stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
          static_cast<std::uintptr_t>(st.st_size) < off + (upto - a))
        return false;
    }
  }
  lo = upto;
  return true;
}

// Whether /proc/self/maps shows every byte of [p, p + len) mapped with
// access `perm` ('r' or 'w'). Reads the text line by line (no allocation).
bool maps_allow(const void* p, std::size_t len, char perm) noexcept {
  std::uintptr_t lo = reinterpret_cast<std::uintptr_t>(p) & ~(page() - 1);
  const std::uintptr_t hi = reinterpret_cast<std::uintptr_t>(p) + len;
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[8192];
  std::size_t have = 0;
  bool ok = true;
  while (ok && lo < hi) {
    const ssize_t r = ::read(fd, buf + have, sizeof buf - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += static_cast<std::size_t>(r);
    std::size_t start = 0;
    for (std::size_t i = 0; i < have && ok && lo < hi; ++i) {
      if (buf[i] != '\n') continue;
      ok = check_line(buf + start, buf + i, perm, lo, hi);
      start = i + 1;
    }
    if (start == 0 && have == sizeof buf) ok = false;  // a line longer than the buffer
    std::memmove(buf, buf + start, have - start);
    have -= start;
  }
  ::close(fd);
  return ok && lo >= hi;
}

bool vm_available() noexcept { return !test_hooks::self_vm_unavailable.load(std::memory_order_relaxed); }

// The kernel refused the call itself (not the memory): stop trying it.
void vm_refused() noexcept { test_hooks::self_vm_unavailable.store(true, std::memory_order_relaxed); }

}  // namespace

bool copy_if_mapped(std::byte* dst, const std::byte* src, std::size_t len) noexcept {
  if (vm_available()) [[likely]] {
    ::iovec l{dst, len};
    ::iovec r{const_cast<std::byte*>(src), len};
    ssize_t n;
    if (const int e = test_hooks::self_vm_errno.load(std::memory_order_relaxed)) [[unlikely]] {
      errno = e;
      n = -1;
    } else {
      n = ::process_vm_readv(self_pid(), &l, 1, &r, 1, 0);
    }
    if (n == static_cast<ssize_t>(len)) return true;
    if (n >= 0 || errno == EFAULT) return false;  // some of it cannot be read
    vm_refused();
  }
  // Not allowed here (seccomp): /proc/self/maps says whether it can be read.
  if (!maps_allow(src, len, 'r')) return false;
  std::memcpy(dst, src, len);
  return true;
}

}  // namespace weft::prov::tcp

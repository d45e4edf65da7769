#include "util/proc_maps.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace weft::util {
namespace {

// struct procmap_query of <linux/fs.h> (Linux 6.11), which older headers lack.
struct procmap_query_arg {
  std::uint64_t size;
  std::uint64_t query_flags;
  std::uint64_t query_addr;
  std::uint64_t vma_start;
  std::uint64_t vma_end;
  std::uint64_t vma_flags;
  std::uint64_t vma_page_size;
  std::uint64_t vma_offset;
  std::uint64_t inode;
  std::uint32_t dev_major;
  std::uint32_t dev_minor;
  std::uint32_t vma_name_size;
  std::uint32_t build_id_size;
  std::uint64_t vma_name_addr;
  std::uint64_t build_id_addr;
};
static_assert(sizeof(procmap_query_arg) == 104);
constexpr unsigned long k_procmap_query = _IOWR('f', 17, procmap_query_arg);
constexpr std::uint64_t k_procmap_vma_shared = 0x08;
constexpr std::size_t k_max_maps_text = std::size_t{256} << 20;  // a bound on the read loop

std::atomic<bool> g_procmap_off{false};
std::atomic<int (*)() noexcept> g_open_hook{nullptr};
std::atomic<int (*)(int, void*) noexcept> g_query_hook{nullptr};
std::atomic<std::uint64_t> g_failed{0};
std::atomic<std::uint64_t> g_retried{0};
std::atomic<int> g_last_errno{0};

void note_failure(int e) noexcept {
  g_failed.fetch_add(1, std::memory_order_relaxed);
  g_last_errno.store(e, std::memory_order_relaxed);
}
void note_retry() noexcept { g_retried.fetch_add(1, std::memory_order_relaxed); }

class fd_closer {
 public:
  explicit fd_closer(int fd) noexcept : fd_(fd) {}
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  ~fd_closer() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_;
};

// /proc/self/maps, opened; -1 (errno set) after bounded retries of EINTR.
int open_maps() noexcept {
  const auto hook = g_open_hook.load(std::memory_order_acquire);
  for (int attempt = 0;; ++attempt) {
    const int fd = hook != nullptr ? hook() : ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) return fd;
    const int e = errno;
    if (e == EINTR && attempt < k_proc_retries) {
      note_retry();
      continue;
    }
    note_failure(e);
    errno = e;
    return -1;
  }
}

enum class query_status { done, hole, unsupported };
enum class ioctl_status { ok, hole, unsupported, failed };

// One PROCMAP_QUERY. EINTR and EAGAIN are retried a bounded number of times;
// only the answers of a kernel that lacks the ioctl turn it off for good.
ioctl_status query_once(int fd, procmap_query_arg& q) noexcept {
  const auto hook = g_query_hook.load(std::memory_order_acquire);
  const procmap_query_arg in = q;
  for (int attempt = 0;; ++attempt) {
    q = in;
    const int rc = hook != nullptr ? hook(fd, &q) : ::ioctl(fd, k_procmap_query, &q);
    if (rc == 0) return ioctl_status::ok;
    const int e = errno;
    if (e == ENOENT) return ioctl_status::hole;
    if ((e == EINTR || e == EAGAIN) && attempt < k_proc_retries) {
      note_retry();
      continue;
    }
    note_failure(e);
    if (e == ENOTTY || e == EINVAL || e == EOPNOTSUPP) {
      g_procmap_off.store(true, std::memory_order_relaxed);
      return ioctl_status::unsupported;
    }
    return ioctl_status::failed;
  }
}

// Appends p, merging it with the previous piece when it continues it (VMAs
// split by mprotect and the like are the same memory).
void append_piece(std::vector<map_piece>& out, const map_piece& p) {
  if (!out.empty()) {
    map_piece& b = out.back();
    const bool file = p.dev != 0 || p.inode != 0;
    if (b.hi == p.lo && b.dev == p.dev && b.inode == p.inode && b.shared == p.shared &&
        (!file || b.offset + (b.hi - b.lo) == p.offset)) {
      b.hi = p.hi;
      return;
    }
  }
  out.push_back(p);
}

map_piece make_piece(std::uintptr_t lo, std::uintptr_t hi, std::uintptr_t vma_start, std::uint64_t vma_offset,
                     std::uint64_t dev, std::uint64_t inode, bool shared) noexcept {
  const bool file = dev != 0 || inode != 0;
  return map_piece{lo, hi, dev, inode, file ? vma_offset + (lo - vma_start) : 0, shared};
}

// A System V segment is the kernel's file "/SYSV<key>" (shown "(deleted)").
bool sysv_name(std::string_view path) noexcept { return path.starts_with("/SYSV"); }

// PROCMAP_QUERY: one ioctl per VMA, no text to parse.
query_status identity_procmap(std::uintptr_t lo, std::uintptr_t hi, std::vector<map_piece>& out) {
  const int fd = open_maps();
  if (fd < 0) return query_status::unsupported;
  fd_closer closer(fd);
  for (std::uintptr_t cur = lo; cur < hi;) {
    procmap_query_arg q{};
    q.size = sizeof q;
    q.query_addr = cur;  // query_flags 0: the VMA covering cur, any permissions
    switch (query_once(fd, q)) {
      case ioctl_status::ok: break;
      case ioctl_status::hole: return query_status::hole;
      case ioctl_status::unsupported:
      case ioctl_status::failed: return query_status::unsupported;
    }
    if (q.vma_start > cur || q.vma_end <= cur) return query_status::hole;
    const std::uintptr_t end = std::min<std::uintptr_t>(hi, q.vma_end);
    append_piece(out, make_piece(cur, end, q.vma_start, q.vma_offset, makedev(q.dev_major, q.dev_minor), q.inode,
                                 (q.vma_flags & k_procmap_vma_shared) != 0));
    cur = end;
  }
  return query_status::done;
}

// Classification by PROCMAP_QUERY; nullopt when it could not answer.
std::optional<range_kind> classify_procmap(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  const int fd = open_maps();
  if (fd < 0) return std::nullopt;
  fd_closer closer(fd);
  std::array<char, 4096> name;
  for (std::uintptr_t cur = lo; cur < hi;) {
    procmap_query_arg q{};
    q.size = sizeof q;
    q.query_addr = cur;
    switch (query_once(fd, q)) {
      case ioctl_status::ok: break;
      case ioctl_status::hole: return range_kind::hole;
      case ioctl_status::unsupported:
      case ioctl_status::failed: return std::nullopt;
    }
    if (q.vma_start > cur || q.vma_end <= cur) return range_kind::hole;
    if ((q.vma_flags & k_procmap_vma_shared) != 0 && q.inode != 0) {
      procmap_query_arg n{};
      n.size = sizeof n;
      n.query_addr = cur;
      n.vma_name_size = static_cast<std::uint32_t>(name.size());
      n.vma_name_addr = reinterpret_cast<std::uintptr_t>(name.data());
      switch (query_once(fd, n)) {
        case ioctl_status::ok: break;
        case ioctl_status::hole: return range_kind::hole;  // unmapped meanwhile
        case ioctl_status::unsupported:
        case ioctl_status::failed: return std::nullopt;
      }
      if (n.vma_name_size > 0 && n.vma_name_size <= name.size() &&
          sysv_name(std::string_view(name.data(), n.vma_name_size - 1))) {
        return range_kind::sysv_shm;
      }
    }
    cur = static_cast<std::uintptr_t>(q.vma_end);
  }
  return range_kind::mapped;
}

// mincore fails with ENOMEM when a page of the range is not mapped.
bool range_mapped_mincore(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  const std::uintptr_t ps = page_size();
  std::array<unsigned char, 4096> vec;
  for (std::uintptr_t cur = lo; cur < hi;) {
    const std::uintptr_t pages = std::min<std::uintptr_t>((hi - cur) / ps, vec.size());
    if (::mincore(reinterpret_cast<void*>(cur), pages * ps, vec.data()) != 0 && errno == ENOMEM) return false;
    cur += pages * ps;
  }
  return true;
}

bool read_maps_text(std::string& out) {
  const int fd = open_maps();
  if (fd < 0) return false;
  fd_closer closer(fd);
  out.clear();
  std::array<char, 16384> buf;
  for (int interrupted = 0; out.size() < k_max_maps_text;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR && interrupted++ < k_proc_retries) {
      note_retry();
      continue;
    }
    if (n < 0) {
      note_failure(errno);
      return false;
    }
    if (n == 0) return true;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  note_failure(EFBIG);
  return false;
}

// One line of /proc/self/maps: "start-end perms offset major:minor inode path".
struct map_line {
  std::uint64_t start = 0, stop = 0, offset = 0, major = 0, minor = 0, inode = 0;
  bool shared = false;
  std::string_view path;
};

// Calls fn(line) for each well-formed line until fn returns false.
template <class F>
void for_each_map_line(std::string_view text, F&& fn) {
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    const char* eol = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
    if (eol == nullptr) eol = end;
    const char* s = p;
    p = eol + 1;
    auto num = [&](std::uint64_t& v, int base, char sep) {
      const auto r = std::from_chars(s, eol, v, base);
      if (r.ec != std::errc{} || r.ptr >= eol || *r.ptr != sep) return false;
      s = r.ptr + 1;
      return true;
    };
    map_line l;
    if (!num(l.start, 16, '-') || !num(l.stop, 16, ' ')) continue;
    if (eol - s < 5) continue;
    l.shared = s[3] == 's';
    s += 5;
    if (!num(l.offset, 16, ' ') || !num(l.major, 16, ':') || !num(l.minor, 16, ' ')) continue;
    const auto r = std::from_chars(s, eol, l.inode, 10);
    if (r.ec != std::errc{}) continue;
    s = r.ptr;
    while (s < eol && *s == ' ') ++s;
    l.path = std::string_view(s, static_cast<std::size_t>(eol - s));
    if (!fn(l)) return;
  }
}

query_status identity_text(std::uintptr_t lo, std::uintptr_t hi, std::vector<map_piece>& out) {
  if (!range_mapped_mincore(lo, hi)) return query_status::hole;
  std::string text;
  if (!read_maps_text(text)) return query_status::unsupported;
  std::uintptr_t cur = lo;
  bool gap = false;
  for_each_map_line(text, [&](const map_line& l) {
    if (l.stop <= cur) return true;
    if (l.start > cur) {
      gap = true;
      return false;
    }
    const std::uintptr_t piece_end = std::min<std::uintptr_t>(hi, l.stop);
    append_piece(out, make_piece(cur, piece_end, l.start, l.offset, makedev(l.major, l.minor), l.inode, l.shared));
    cur = piece_end;
    return cur < hi;
  });
  return !gap && cur >= hi ? query_status::done : query_status::hole;
}

range_kind classify_text(std::uintptr_t lo, std::uintptr_t hi) {
  std::string text;
  if (!read_maps_text(text)) return range_kind::unknown;
  std::uintptr_t cur = lo;
  bool sysv = false;
  bool gap = false;
  for_each_map_line(text, [&](const map_line& l) {
    if (l.stop <= cur) return true;
    if (l.start > cur) {
      gap = true;
      return false;
    }
    if (l.shared && l.inode != 0 && sysv_name(l.path)) {
      sysv = true;
      return false;
    }
    cur = std::min<std::uintptr_t>(hi, l.stop);
    return cur < hi;
  });
  if (sysv) return range_kind::sysv_shm;
  return !gap && cur >= hi ? range_kind::mapped : range_kind::hole;
}

}  // namespace

std::uintptr_t page_size() noexcept {
  static const std::uintptr_t ps = [] {
    const long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<std::uintptr_t>(v) : std::uintptr_t{4096};
  }();
  return ps;
}

bool page_round(const void* addr, std::size_t len, std::uintptr_t& lo, std::uintptr_t& hi) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t ps = page_size();
  if (len == 0 || len > UINTPTR_MAX - a || a + len > UINTPTR_MAX - ps) return false;
  lo = a & ~(ps - 1);
  hi = (a + len + ps - 1) & ~(ps - 1);
  return true;
}

result<std::vector<map_piece>> map_identity(std::uintptr_t lo, std::uintptr_t hi) {
  std::vector<map_piece> out;
  query_status st = query_status::unsupported;
  if (!g_procmap_off.load(std::memory_order_relaxed)) st = identity_procmap(lo, hi, out);
  if (st == query_status::unsupported) {
    out.clear();
    st = identity_text(lo, hi, out);
  }
  switch (st) {
    case query_status::done: return out;
    case query_status::hole: return make_error(errc::not_found, "memory monitor: range is not mapped");
    case query_status::unsupported: break;
  }
  return make_error(errc::not_supported, "memory monitor: /proc/self/maps is not readable");
}

bool identity_matches(const std::vector<map_piece>& identity, std::uintptr_t lo, std::uintptr_t hi) noexcept {
  if (identity.empty()) return false;
  try {
    const auto now = map_identity(lo, hi);
    return now && *now == identity;
  } catch (...) {
    return false;
  }
}

range_kind classify_mapping(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  if (!g_procmap_off.load(std::memory_order_relaxed)) {
    if (const auto k = classify_procmap(lo, hi)) return *k;
  }
  try {
    return classify_text(lo, hi);
  } catch (...) {
    return range_kind::unknown;
  }
}

bool covered(const std::vector<candidate>& cands, std::uintptr_t lo, std::uintptr_t hi) noexcept {
  std::uintptr_t cur = lo;
  for (const candidate& c : cands) {
    if (!c.ok || c.hi <= cur) continue;
    if (c.lo > cur) return false;
    cur = c.hi;
    if (cur >= hi) return true;
  }
  return cur >= hi;
}

proc_maps_stats proc_maps_diagnostics() noexcept {
  proc_maps_stats s;
  s.failed_calls = g_failed.load(std::memory_order_relaxed);
  s.retried_calls = g_retried.load(std::memory_order_relaxed);
  s.last_errno = g_last_errno.load(std::memory_order_relaxed);
  s.procmap_query = !g_procmap_off.load(std::memory_order_relaxed);
  return s;
}

proc_maps_hooks set_proc_maps_hooks(proc_maps_hooks hooks) noexcept {
  proc_maps_hooks old;
  old.open_maps = g_open_hook.exchange(hooks.open_maps, std::memory_order_acq_rel);
  old.query = g_query_hook.exchange(hooks.query, std::memory_order_acq_rel);
  return old;
}

void reset_procmap_query_support() noexcept { g_procmap_off.store(false, std::memory_order_relaxed); }

}  // namespace weft::util

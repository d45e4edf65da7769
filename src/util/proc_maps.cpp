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
#include <string>

namespace weft::util {

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

namespace {

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

// ---------------------------------------------------------------------------
// Mapping identity (/proc/self/maps)

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

std::atomic<bool> g_procmap_unsupported{false};

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

enum class query_status { done, hole, unsupported };

// PROCMAP_QUERY: one ioctl per VMA, no text to parse.
query_status identity_procmap(std::uintptr_t lo, std::uintptr_t hi, std::vector<map_piece>& out) {
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return query_status::unsupported;
  fd_closer closer(fd);
  for (std::uintptr_t cur = lo; cur < hi;) {
    procmap_query_arg q{};
    q.size = sizeof q;
    q.query_addr = cur;  // query_flags 0: the VMA covering cur, any permissions
    if (::ioctl(fd, k_procmap_query, &q) != 0) {
      if (errno == ENOENT) return query_status::hole;
      g_procmap_unsupported.store(true, std::memory_order_relaxed);
      return query_status::unsupported;
    }
    if (q.vma_start > cur || q.vma_end <= cur) return query_status::hole;
    const std::uintptr_t end = std::min<std::uintptr_t>(hi, q.vma_end);
    append_piece(out, make_piece(cur, end, q.vma_start, q.vma_offset, makedev(q.dev_major, q.dev_minor), q.inode,
                                 (q.vma_flags & k_procmap_vma_shared) != 0));
    cur = end;
  }
  return query_status::done;
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

}  // namespace

range_kind classify_mapping(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  const auto by_mincore = [&] { return range_mapped_mincore(lo, hi) ? range_kind::mapped : range_kind::hole; };
  if (g_procmap_unsupported.load(std::memory_order_relaxed)) return by_mincore();
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return by_mincore();
  fd_closer closer(fd);
  std::array<char, 4096> name;
  for (std::uintptr_t cur = lo; cur < hi;) {
    procmap_query_arg q{};
    q.size = sizeof q;
    q.query_addr = cur;
    if (::ioctl(fd, k_procmap_query, &q) != 0) {
      if (errno == ENOENT) return range_kind::hole;
      g_procmap_unsupported.store(true, std::memory_order_relaxed);
      return by_mincore();
    }
    if (q.vma_start > cur || q.vma_end <= cur) return range_kind::hole;
    if ((q.vma_flags & k_procmap_vma_shared) != 0 && q.inode != 0) {
      procmap_query_arg n{};
      n.size = sizeof n;
      n.query_addr = cur;
      n.vma_name_size = static_cast<std::uint32_t>(name.size());
      n.vma_name_addr = reinterpret_cast<std::uintptr_t>(name.data());
      // the kernel names a System V segment "/SYSV<key> (deleted)"
      if (::ioctl(fd, k_procmap_query, &n) == 0 && n.vma_name_size > 5 && std::memcmp(name.data(), "/SYSV", 5) == 0) {
        return range_kind::sysv_shm;
      }
    }
    cur = static_cast<std::uintptr_t>(q.vma_end);
  }
  return range_kind::mapped;
}

namespace {

bool read_whole(const char* path, std::string& out) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  fd_closer closer(fd);
  out.clear();
  std::array<char, 16384> buf;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
}

// Text of /proc/self/maps: "start-end perms offset major:minor inode path".
query_status identity_text(std::uintptr_t lo, std::uintptr_t hi, std::vector<map_piece>& out) {
  if (!range_mapped_mincore(lo, hi)) return query_status::hole;
  std::string text;
  if (!read_whole("/proc/self/maps", text)) return query_status::unsupported;
  std::uintptr_t cur = lo;
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end && cur < hi) {
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
    std::uint64_t start = 0, stop = 0, offset = 0, major = 0, minor = 0, inode = 0;
    if (!num(start, 16, '-') || !num(stop, 16, ' ')) continue;
    if (eol - s < 5) continue;
    const bool shared = s[3] == 's';
    s += 5;
    if (!num(offset, 16, ' ') || !num(major, 16, ':') || !num(minor, 16, ' ')) continue;
    const auto r = std::from_chars(s, eol, inode, 10);
    if (r.ec != std::errc{}) continue;
    if (stop <= cur) continue;
    if (start > cur) return query_status::hole;
    const std::uintptr_t piece_end = std::min<std::uintptr_t>(hi, stop);
    append_piece(out, make_piece(cur, piece_end, start, offset, makedev(major, minor), inode, shared));
    cur = piece_end;
  }
  return cur >= hi ? query_status::done : query_status::hole;
}

}  // namespace

bool identity_matches(const std::vector<map_piece>& expected, std::uintptr_t lo, std::uintptr_t hi) noexcept {
  try {
    const auto now = map_identity(lo, hi);
    return now && *now == expected;
  } catch (...) {
    return false;
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

result<std::vector<map_piece>> map_identity(std::uintptr_t lo, std::uintptr_t hi) {
  std::vector<map_piece> out;
  query_status st = query_status::unsupported;
  if (!g_procmap_unsupported.load(std::memory_order_relaxed)) st = identity_procmap(lo, hi, out);
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

}  // namespace weft::util

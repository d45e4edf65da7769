// Persistence: CPU cache flushes, msync, libpmem2 mappings, and telling how
// a range of memory can be made durable (weft/pmem.hpp, util/persist.hpp).
#include "util/persist.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#define WEFT_PERSIST_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#ifdef WEFT_HAVE_LIBPMEM2
#include <libpmem2.h>
#endif

namespace weft::util {

namespace {

std::size_t page_size() noexcept {
  static const std::size_t page = [] {
    const long p = ::sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<std::size_t>(p) : std::size_t{4096};
  }();
  return page;
}

cpu_flush_support read_cpuid() noexcept {
  cpu_flush_support s;
#ifdef WEFT_PERSIST_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) != 0) s.clflush = ((d >> 19) & 1u) != 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) != 0) {
    s.clflushopt = ((b >> 23) & 1u) != 0;
    s.clwb = ((b >> 24) & 1u) != 0;
  }
#endif
  return s;
}

#ifdef WEFT_PERSIST_X86
// The target attributes let the intrinsics compile without -mclwb etc.; the
// callers check cpuid first.
__attribute__((target("clwb"))) void lines_clwb(std::uintptr_t p, std::uintptr_t end) noexcept {
  for (; p < end; p += cache_line_size) _mm_clwb(reinterpret_cast<void*>(p));
}
__attribute__((target("clflushopt"))) void lines_clflushopt(std::uintptr_t p, std::uintptr_t end) noexcept {
  for (; p < end; p += cache_line_size) _mm_clflushopt(reinterpret_cast<void*>(p));
}
__attribute__((target("sse2"))) void lines_clflush(std::uintptr_t p, std::uintptr_t end) noexcept {
  for (; p < end; p += cache_line_size) _mm_clflush(reinterpret_cast<const void*>(p));
}
__attribute__((target("sse"))) void store_fence() noexcept { _mm_sfence(); }
#endif

errc cpu_flush_range(flush_method m, std::uintptr_t start, std::uintptr_t end) noexcept {
#ifdef WEFT_PERSIST_X86
  if (!flush_supported(m)) return errc::not_supported;
  // Keep the compiler from sinking earlier stores past the flushes.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  const std::uintptr_t first = start & ~static_cast<std::uintptr_t>(cache_line_size - 1);
  switch (m) {
    case flush_method::clwb: lines_clwb(first, end); break;
    case flush_method::clflushopt: lines_clflushopt(first, end); break;
    case flush_method::clflush: lines_clflush(first, end); break;
    default: return errc::not_supported;
  }
  store_fence();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return errc::ok;
#else
  (void)m;
  (void)start;
  (void)end;
  return errc::not_supported;
#endif
}

errc msync_range(std::uintptr_t start, std::uintptr_t end) noexcept {
  const std::uintptr_t mask = page_size() - 1;
  const std::uintptr_t first = start & ~mask;
  // end + mask cannot overflow: the last page of the address space is never
  // mapped, so such a range is refused by msync anyway.
  if (end > std::numeric_limits<std::uintptr_t>::max() - mask) return errc::invalid_argument;
  const std::uintptr_t last = (end + mask) & ~mask;
  if (::msync(reinterpret_cast<void*>(first), last - first, MS_SYNC) == 0) return errc::ok;
  switch (errno) {
    case EINVAL:
    case ENOMEM: return errc::invalid_argument;  // bad flags/alignment, or part of the range unmapped
    case EBUSY: return errc::busy;
    default: return errc::io_error;  // EIO, ENOSPC... from writeback
  }
}

struct registry {
  std::mutex mu;
  std::vector<live_mapping> maps;
};

// Never destroyed: persistent_file objects with static storage may outlive
// any destructor order.
registry& the_registry() {
  static registry* r = new registry;
  return *r;
}

bool holds(const live_mapping& m, std::uintptr_t start, std::size_t len) noexcept {
  const auto base = reinterpret_cast<std::uintptr_t>(m.addr);
  return start >= base && start - base < m.len && len <= m.len - (start - base);
}

std::string hex(std::uintptr_t v) {
  char buf[2 + 2 * sizeof v + 1];
  std::snprintf(buf, sizeof buf, "0x%jx", static_cast<std::uintmax_t>(v));
  return buf;
}

// One VMA as /proc/self/smaps tells it.
struct vma {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  char perms[5] = {};
  std::string path;
  bool sync = false;  // VmFlags "sf": MAP_SYNC
};

bool parse_header(const std::string& line, vma& out) {
  std::uintmax_t start = 0, end = 0;
  char perms[5] = {};
  int path_at = -1;
  if (std::sscanf(line.c_str(), "%jx-%jx %4s %*s %*s %*s%n", &start, &end, perms, &path_at) != 3 || path_at < 0)
    return false;
  out = vma{};
  out.start = static_cast<std::uintptr_t>(start);
  out.end = static_cast<std::uintptr_t>(end);
  std::memcpy(out.perms, perms, sizeof perms);
  std::string_view rest(line);
  rest.remove_prefix(static_cast<std::size_t>(path_at));
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  out.path.assign(rest);
  return true;
}

bool has_flag(std::string_view flags, std::string_view f) {
  while (!flags.empty()) {
    const auto sp = flags.find(' ');
    const auto tok = flags.substr(0, sp);
    if (tok == f) return true;
    if (sp == std::string_view::npos) break;
    flags.remove_prefix(sp + 1);
  }
  return false;
}

constexpr std::string_view need_shared_file =
    "; durable memory must be a shared mapping (MAP_SHARED) of a regular file, e.g. weft::persistent_file";

// Empty when v may be made durable, else why not.
std::string refuse(const vma& v) {
  const std::string where = "memory at " + hex(v.start) + "-" + hex(v.end);
  if (v.path.empty()) return where + " is anonymous memory";
  if (v.path.front() == '[') return where + " is " + v.path + ", not a file mapping";
  if (v.perms[3] != 's')
    return where + " is a private (MAP_PRIVATE) mapping of " + v.path + ": its stores never reach the file";
  constexpr std::string_view deleted = " (deleted)";
  if (v.path.size() >= deleted.size() && v.path.ends_with(deleted))
    return where + " maps " + v.path +
           ", which is no file on a file system (a deleted file, a memfd, or shared anonymous memory)";
  struct stat st {};
  if (::stat(v.path.c_str(), &st) != 0)
    return where + " maps " + v.path + ", which cannot be found: " + std::strerror(errno);
  if (!S_ISREG(st.st_mode)) return where + " maps " + v.path + ", which is not a regular file";
  return {};
}

}  // namespace

const cpu_flush_support& cpu_flush() noexcept {
  static const cpu_flush_support s = read_cpuid();
  return s;
}

flush_method best_cpu_flush() noexcept {
  const auto& s = cpu_flush();
  if (s.clwb) return flush_method::clwb;
  if (s.clflushopt) return flush_method::clflushopt;
  if (s.clflush) return flush_method::clflush;
  return flush_method::none;
}

bool flush_supported(flush_method m) noexcept {
  switch (m) {
    case flush_method::clwb: return cpu_flush().clwb;
    case flush_method::clflushopt: return cpu_flush().clflushopt;
    case flush_method::clflush: return cpu_flush().clflush;
    case flush_method::msync: return true;
    case flush_method::none:
    case flush_method::libpmem2: return false;
  }
  return false;
}

errc flush_range(flush_method m, const void* addr, std::size_t len) noexcept {
  if (len == 0) return errc::ok;
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  if (len > std::numeric_limits<std::uintptr_t>::max() - start) return errc::invalid_argument;
  const std::uintptr_t end = start + len;
  switch (m) {
    case flush_method::clwb:
    case flush_method::clflushopt:
    case flush_method::clflush: return cpu_flush_range(m, start, end);
    case flush_method::msync: return msync_range(start, end);
    case flush_method::none:
    case flush_method::libpmem2: return errc::not_supported;
  }
  return errc::not_supported;
}

errc persist_range(const void* addr, std::size_t len, flush_method m) noexcept {
  if (m != flush_method::libpmem2) return flush_range(m, addr, len);
  if (len == 0) return errc::ok;
  const auto found = find_mapping(addr, len);
  if (!found || found->fn == nullptr) return errc::invalid_argument;
  found->fn(addr, len);
  return errc::ok;
}

void register_mapping(const live_mapping& m) {
  auto& r = the_registry();
  std::lock_guard lk(r.mu);
  r.maps.push_back(m);
}

void unregister_mapping(const void* addr) noexcept {
  auto& r = the_registry();
  std::lock_guard lk(r.mu);
  for (auto it = r.maps.begin(); it != r.maps.end(); ++it) {
    if (it->addr == addr) {
      *it = r.maps.back();
      r.maps.pop_back();
      return;
    }
  }
}

std::optional<live_mapping> find_mapping(const void* addr, std::size_t len) noexcept {
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  auto& r = the_registry();
  std::lock_guard lk(r.mu);
  for (const auto& m : r.maps)
    if (holds(m, start, len)) return m;
  return std::nullopt;
}

result<flush_method> classify_range(const void* addr, std::size_t len) {
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  if (len == 0) return make_error(errc::invalid_argument, "classify_range: empty range at " + hex(start));
  if (len > std::numeric_limits<std::uintptr_t>::max() - start)
    return make_error(errc::invalid_argument, "classify_range: range at " + hex(start) + " wraps around");
  if (const auto m = find_mapping(addr, len)) return m->method;

  const std::uintptr_t end = start + len;
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) return make_error(errc::io_error, "classify_range: cannot read /proc/self/smaps");

  // VMAs come in address order; each header line is followed by its fields,
  // VmFlags last.
  std::uintptr_t covered = start;  // [start, covered) is known good
  bool all_sync = true;
  bool in_range = false;           // the current VMA overlaps the range
  vma cur;
  std::string line;
  auto settle = [&]() -> std::string {  // the current VMA is complete
    if (!in_range) return {};
    in_range = false;
    if (cur.start > covered) return "memory at " + hex(covered) + " is not mapped";
    if (auto why = refuse(cur); !why.empty()) return why;
    all_sync = all_sync && cur.sync;
    covered = cur.end;
    return {};
  };
  while (covered < end && std::getline(smaps, line)) {
    vma next;
    if (parse_header(line, next)) {
      if (auto why = settle(); !why.empty())
        return make_error(errc::invalid_argument, why + std::string(need_shared_file));
      if (covered >= end) break;
      cur = std::move(next);
      in_range = cur.end > covered && cur.start < end;
      if (!in_range && cur.start >= end) break;  // past the range: a hole remains
      continue;
    }
    if (in_range && line.starts_with("VmFlags:")) cur.sync = has_flag(std::string_view(line).substr(8), "sf");
  }
  if (auto why = settle(); !why.empty()) return make_error(errc::invalid_argument, why + std::string(need_shared_file));
  if (covered < end)
    return make_error(errc::invalid_argument,
                      "memory at " + hex(covered) + " is not mapped" + std::string(need_shared_file));
  if (all_sync && best_cpu_flush() != flush_method::none) return best_cpu_flush();
  return flush_method::msync;
}

}  // namespace weft::util

namespace weft {

namespace {

errc errno_code(int e) noexcept {
  switch (e) {
    case ENOENT: return errc::not_found;
    case EACCES:
    case EPERM:
    case EROFS: return errc::permission_denied;
    case ENOMEM: return errc::no_memory;
    case EFBIG: return errc::too_big;
    case EINVAL:
    case EISDIR:
    case ENOTDIR:
    case ENAMETOOLONG: return errc::invalid_argument;
    default: return errc::io_error;
  }
}

std::unexpected<error> sys_error(int e, const std::string& what) {
  return make_error(errno_code(e), "persistent_file: " + what + ": " + std::strerror(e));
}

struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

// fsync of the directory that holds path, so that a new entry survives a crash.
result<void> sync_parent(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0) return sys_error(errno, "cannot open directory " + dir);
  if (::fsync(d.fd) != 0) return sys_error(errno, "fsync of directory " + dir);
  return {};
}

#ifdef WEFT_HAVE_LIBPMEM2
std::unexpected<error> pmem2_error(int rc, const std::string& what) {
  // libpmem2 returns -errno for system errors and its own PMEM2_E_* codes.
  const errc code = rc < 0 && rc > -4096 ? errno_code(-rc) : errc::io_error;
  return make_error(code, "persistent_file: " + what + ": " + pmem2_errormsg());
}

struct pmem2_mapped {
  void* addr = nullptr;
  std::size_t len = 0;
  pmem2_map* map = nullptr;
  pmem2_persist_fn fn = nullptr;
};

// nullopt when libpmem2 cannot map the file whole (its length is not a
// multiple of what libpmem2 maps in): the caller maps it itself.
result<std::optional<pmem2_mapped>> map_pmem2(int fd, std::size_t len, std::size_t file_size,
                                              const std::string& path) {
  pmem2_source* src = nullptr;
  if (int rc = pmem2_source_from_fd(&src, fd); rc != 0) return pmem2_error(rc, path + ": pmem2_source_from_fd");
  struct source_guard {
    pmem2_source* s;
    ~source_guard() { pmem2_source_delete(&s); }
  } sg{src};
  std::size_t align = 0;
  if (int rc = pmem2_source_alignment(src, &align); rc != 0) return pmem2_error(rc, path + ": pmem2_source_alignment");
  if (align == 0) align = 1;
  if (len > std::numeric_limits<std::size_t>::max() - (align - 1)) return std::optional<pmem2_mapped>{};
  const std::size_t map_len = (len + align - 1) / align * align;
  if (map_len > file_size) return std::optional<pmem2_mapped>{};

  pmem2_config* cfg = nullptr;
  if (int rc = pmem2_config_new(&cfg); rc != 0) return pmem2_error(rc, "pmem2_config_new");
  struct config_guard {
    pmem2_config* c;
    ~config_guard() { pmem2_config_delete(&c); }
  } cg{cfg};
  // PAGE is the coarsest granularity: accept whatever the medium offers.
  if (int rc = pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE); rc != 0)
    return pmem2_error(rc, "pmem2_config_set_required_store_granularity");
  if (int rc = pmem2_config_set_length(cfg, map_len); rc != 0) return pmem2_error(rc, "pmem2_config_set_length");
  pmem2_map* map = nullptr;
  if (int rc = pmem2_map_new(&map, cfg, src); rc != 0) return pmem2_error(rc, path + ": pmem2_map_new");
  // libpmem2 fits where the medium is byte-addressable persistent memory
  // (cache-line or byte granularity). At page granularity its persist
  // function is msync, and libpmem2 aborts the process when that fails;
  // weft's own msync path reports the error to the initiator instead.
  if (pmem2_map_get_store_granularity(map) == PMEM2_GRANULARITY_PAGE) {
    pmem2_map_delete(&map);
    return std::optional<pmem2_mapped>{};
  }
  return pmem2_mapped{pmem2_map_get_address(map), map_len, map, pmem2_get_persist_fn(map)};
}
#endif

}  // namespace

const char* to_string(flush_method m) noexcept {
  switch (m) {
    case flush_method::none: return "none";
    case flush_method::libpmem2: return "libpmem2";
    case flush_method::clwb: return "clwb";
    case flush_method::clflushopt: return "clflushopt";
    case flush_method::clflush: return "clflush";
    case flush_method::msync: return "msync";
  }
  return "unknown";
}

persist_support detect_persist_support() noexcept {
  persist_support s;
#ifdef WEFT_HAVE_LIBPMEM2
  s.libpmem2 = true;
#ifdef WEFT_LIBPMEM2_VERSION
  s.libpmem2_version = WEFT_LIBPMEM2_VERSION;
#endif
#endif
#if defined(MAP_SYNC) && defined(MAP_SHARED_VALIDATE)
  s.map_sync = true;
#endif
  const auto& cpu = util::cpu_flush();
  s.clwb = cpu.clwb;
  s.clflushopt = cpu.clflushopt;
  s.clflush = cpu.clflush;
  s.best_cpu = util::best_cpu_flush();
  return s;
}

std::string describe_persist_support() {
  const auto s = detect_persist_support();
  std::string out;
  if (s.libpmem2) {
    out = "libpmem2";
    if (*s.libpmem2_version != '\0') out += std::string(" ") + s.libpmem2_version;
    out += " (compiled in)";
  } else {
    out = "libpmem2 not compiled in";
  }
  out += "; cpu:";
  if (s.clwb) out += " clwb";
  if (s.clflushopt) out += " clflushopt";
  if (s.clflush) out += " clflush";
  if (s.best_cpu == flush_method::none) out += " no cache flush instruction";
  if (s.map_sync && s.best_cpu != flush_method::none) out += "; MAP_SYNC on DAX file systems";
  out += "; fallback msync";
  return out;
}

result<persistent_file> persistent_file::open(const std::string& path, std::size_t len, bool create) {
  if (len == 0) return make_error(errc::invalid_argument, "persistent_file: " + path + ": length 0");
  const std::size_t page = util::page_size();
  if (len > static_cast<std::size_t>(std::numeric_limits<off_t>::max()) - page)
    return make_error(errc::too_big, "persistent_file: " + path + ": length " + std::to_string(len) + " is too big");
  const std::size_t map_len = (len + page - 1) / page * page;

  bool created = false;
  fd_guard g{::open(path.c_str(), O_RDWR | O_CLOEXEC)};
  if (g.fd < 0 && errno == ENOENT && create) {
    g.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
    if (g.fd >= 0)
      created = true;
    else if (errno == EEXIST)  // someone else created it meanwhile
      g.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  }
  if (g.fd < 0) {
    const int e = errno;
    return sys_error(e, "cannot open " + path + (e == ENOENT && !create ? " (open it with create to make it)" : ""));
  }

  struct stat st {};
  if (::fstat(g.fd, &st) != 0) return sys_error(errno, "fstat of " + path);
  if (!S_ISREG(st.st_mode))
    return make_error(errc::invalid_argument, "persistent_file: " + path + " is not a regular file");
  auto size = static_cast<std::size_t>(st.st_size);
  if (size < len && !create)
    return make_error(errc::invalid_argument, "persistent_file: " + path + " is " + std::to_string(size) +
                                                  " bytes, shorter than the " + std::to_string(len) +
                                                  " asked for (open it with create to extend it)");
  if (create && size < map_len) {
    // Allocated blocks: no SIGBUS for want of space when the mapping is written.
    int rc = ::posix_fallocate(g.fd, 0, static_cast<off_t>(map_len));
    if (rc == EOPNOTSUPP || rc == EINVAL) rc = ::ftruncate(g.fd, static_cast<off_t>(map_len)) == 0 ? 0 : errno;
    if (rc != 0) return sys_error(rc, "cannot extend " + path + " to " + std::to_string(map_len) + " bytes");
    size = map_len;
    if (::fsync(g.fd) != 0) return sys_error(errno, "fsync of " + path);
  }
  if (created) {
    if (auto r = sync_parent(path); !r) return std::unexpected(std::move(r.error()));
  }

  persistent_file f;
  f.path_ = path;
  f.len_ = len;
#ifdef WEFT_HAVE_LIBPMEM2
  {
    auto m = map_pmem2(g.fd, len, size, path);
    if (!m) return std::unexpected(std::move(m.error()));
    if (*m) {
      f.addr_ = (*m)->addr;
      f.map_len_ = (*m)->len;
      f.pmem2_map_ = (*m)->map;
      f.persist_fn_ = (*m)->fn;
      f.method_ = flush_method::libpmem2;
    }
  }
#endif
#if defined(MAP_SYNC) && defined(MAP_SHARED_VALIDATE)
  if (f.addr_ == nullptr && util::best_cpu_flush() != flush_method::none) {
    // Succeeds only on DAX file systems (EOPNOTSUPP elsewhere).
    void* p = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, g.fd, 0);
    if (p != MAP_FAILED) {
      f.addr_ = p;
      f.map_len_ = map_len;
      f.method_ = util::best_cpu_flush();
    }
  }
#endif
  if (f.addr_ == nullptr) {
    void* p = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, g.fd, 0);
    if (p == MAP_FAILED) return sys_error(errno, "mmap of " + path);
    f.addr_ = p;
    f.map_len_ = map_len;
    f.method_ = flush_method::msync;
  }
  f.fd_ = g.fd;
  g.fd = -1;
  util::register_mapping({f.addr_, f.len_, f.method_, f.persist_fn_});
  return f;
}

persistent_file::persistent_file(persistent_file&& o) noexcept
    : addr_(std::exchange(o.addr_, nullptr)),
      len_(std::exchange(o.len_, 0)),
      map_len_(std::exchange(o.map_len_, 0)),
      method_(std::exchange(o.method_, flush_method::none)),
      fd_(std::exchange(o.fd_, -1)),
      pmem2_map_(std::exchange(o.pmem2_map_, nullptr)),
      persist_fn_(std::exchange(o.persist_fn_, nullptr)),
      path_(std::move(o.path_)) {}

persistent_file& persistent_file::operator=(persistent_file&& o) noexcept {
  if (this != &o) {
    (void)close();
    addr_ = std::exchange(o.addr_, nullptr);
    len_ = std::exchange(o.len_, 0);
    map_len_ = std::exchange(o.map_len_, 0);
    method_ = std::exchange(o.method_, flush_method::none);
    fd_ = std::exchange(o.fd_, -1);
    pmem2_map_ = std::exchange(o.pmem2_map_, nullptr);
    persist_fn_ = std::exchange(o.persist_fn_, nullptr);
    path_ = std::move(o.path_);
  }
  return *this;
}

persistent_file::~persistent_file() { (void)close(); }

errc persistent_file::persist(std::size_t offset, std::size_t len) noexcept {
  if (addr_ == nullptr) return errc::bad_state;
  if (offset > len_ || len > len_ - offset) return errc::invalid_argument;
  if (len == 0) return errc::ok;
  const auto* p = static_cast<const std::byte*>(addr_) + offset;
  if (persist_fn_ != nullptr) {
    persist_fn_(p, len);
    return errc::ok;
  }
  return util::flush_range(method_, p, len);
}

result<void> persistent_file::close() {
  if (addr_ == nullptr) return {};
  util::unregister_mapping(addr_);
  std::string failed;
  errc code = errc::ok;
  bool unmapped = false;
#ifdef WEFT_HAVE_LIBPMEM2
  if (pmem2_map_ != nullptr) {
    unmapped = true;
    auto* map = static_cast<pmem2_map*>(pmem2_map_);
    if (int rc = pmem2_map_delete(&map); rc != 0) {
      code = errc::io_error;
      failed = std::string("pmem2_map_delete: ") + pmem2_errormsg();
    }
  }
#endif
  if (!unmapped && ::munmap(addr_, map_len_) != 0) {
    const int e = errno;
    code = errno_code(e);
    failed = std::string("munmap: ") + std::strerror(e);
  }
  if (fd_ >= 0) ::close(fd_);  // its errors do not matter: nothing was written through the descriptor
  addr_ = nullptr;
  len_ = map_len_ = 0;
  method_ = flush_method::none;
  fd_ = -1;
  pmem2_map_ = nullptr;
  persist_fn_ = nullptr;
  if (code != errc::ok) return make_error(code, "persistent_file: " + path_ + ": " + failed);
  return {};
}

}  // namespace weft

#include "prov/shm/region.hpp"
#include "weft/spi/mr.hpp"

#include "util/clock.hpp"
#include "util/reserve_fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <new>
#include <mutex>

namespace weft::prov::shm {

namespace {
std::string sys_err(const char* what, const std::string& name) {
  const int e = errno;
  return std::string(what) + " '/dev/shm/" + name + "': " + (exhausted(e) ? exhaustion_text(e) : std::strerror(e));
}
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

// Maps the ring's pages now rather than on first touch, so no message pays a
// page fault (a miss costs microseconds; with 256 slots that is the p99).
void populate(std::byte* base, std::size_t off, std::size_t len) {
  std::byte* p = base + (off & ~std::size_t{4095});
  if (::madvise(p, len, MADV_POPULATE_WRITE) == 0) return;
  for (std::size_t i = 0; i < len; i += 4096) {  // older kernels: touch each page
    auto* w = reinterpret_cast<std::atomic<std::uint64_t>*>(p + i);
    w->fetch_add(0, std::memory_order_relaxed);
  }
}

bool env_u32(const char* name, std::uint32_t& out) {
  const char* s = std::getenv(name);
  if (!s || !*s) return false;
  out = static_cast<std::uint32_t>(std::strtoul(s, nullptr, 10));
  return true;
}
}  // namespace

result<config> load_config() {
  config c;
  if (const char* s = std::getenv("WEFT_SHM_CMA"); s && *s) c.cma = std::strcmp(s, "0") != 0;
  if (std::uint32_t v = 0; env_u32("WEFT_SHM_SPLIT_MIN", v)) c.split_min = v;
  env_u32("WEFT_SHM_SLOTS", c.slot_count);
  env_u32("WEFT_SHM_SLOT_SIZE", c.slot_size);
  if (c.slot_size < min_slot_size || c.slot_size > 65536 + 64 || c.slot_size % 64)
    return make_error(errc::invalid_argument, "WEFT_SHM_SLOT_SIZE must be a multiple of 64 between " +
                                                  std::to_string(min_slot_size) + " and 65600");
  env_u32("WEFT_SHM_SEGMENTS", c.seg_count);
  if (c.slot_count < 4 || (c.slot_count & (c.slot_count - 1)))
    return make_error(errc::invalid_argument, "WEFT_SHM_SLOTS must be a power of two >= 4");
  if (c.seg_count < 1 || c.seg_count > max_segments)
    return make_error(errc::invalid_argument, "WEFT_SHM_SEGMENTS must be between 1 and 64");
  return c;
}

std::string region_name(std::uint32_t uid, std::uint32_t pid, std::uint32_t epid) {
  return "weft." + std::to_string(uid) + "." + std::to_string(pid) + "." + std::to_string(epid);
}

bool parse_region_name(std::string_view name, std::uint32_t& uid, std::uint32_t& pid,
                       std::uint32_t& epid) noexcept {
  unsigned u = 0, p = 0, e = 0;
  int used = 0;
  std::string s(name);
  if (std::sscanf(s.c_str(), "weft.%u.%u.%u%n", &u, &p, &e, &used) != 3 || used != static_cast<int>(s.size()))
    return false;
  uid = u;
  pid = p;
  epid = e;
  return true;
}

std::string mem_segment_name(std::uint32_t uid, std::uint32_t pid, std::uint64_t start, std::uint64_t seq) {
  return "weft." + std::to_string(uid) + "." + std::to_string(pid) + ".mem." + std::to_string(start) + "." +
         std::to_string(seq);
}

namespace {
// A descriptor kept in reserve (opened with the first endpoint) so that a
// process's /proc entry can still be read when this process has no
// descriptor left: a peer is then proven alive or dead instead of unknown
// (a live RMA holder is waited for, a reused pid is not). Never destroyed:
// a thread may read /proc while the process exits.
util::reserve_fd& proc_reserve() noexcept {
  static auto* r = new util::reserve_fd();
  return *r;
}
}  // namespace

void keep_proc_reserve() noexcept { (void)proc_reserve().keep(); }

int read_proc_stat(pid_t pid, proc_stat& out) noexcept {
  char path[40];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  char buf[1024];
  ssize_t n = -1;
  int err = 0;
  auto read_it = [&]() noexcept {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
      return;
    }
    n = ::read(fd, buf, sizeof buf - 1);
    err = n < 0 ? errno : 0;
    ::close(fd);
  };
  read_it();
  // No descriptor left: once more, in the reserve's place.
  if (n < 0 && (err == EMFILE || err == ENFILE) && !proc_reserve().use(read_it)) return err;
  if (n <= 0) return n < 0 ? err : ESRCH;
  buf[n] = '\0';
  // "pid (comm) state ppid ...": comm may hold anything, so parse after the last ')'
  const char* p = std::strrchr(buf, ')');
  if (!p || p[1] != ' ' || !p[2]) return EINVAL;
  p += 2;
  out.state = *p;
  // field 3 is the state; field 4 ppid; field 22 the start time
  int field = 3;
  while (*p && field < 22) {
    while (*p && *p != ' ') ++p;
    while (*p == ' ') ++p;
    ++field;
    if (field == 4) out.ppid = static_cast<std::uint32_t>(std::strtoul(p, nullptr, 10));
  }
  if (field != 22 || !*p) return EINVAL;
  out.start = std::strtoull(p, nullptr, 10);
  return 0;
}

std::uint64_t process_start_time(pid_t pid) noexcept {
  proc_stat st;
  return read_proc_stat(pid, st) == 0 ? st.start : 0;
}

std::uint64_t own_start_time() noexcept {
  // (pid, start) of this process; a forked child reads its own again
  static std::atomic<std::uint64_t> cached_pid{0}, cached_start{0};
  const auto me = static_cast<std::uint64_t>(::getpid());
  if (cached_pid.load(std::memory_order_acquire) == me) return cached_start.load(std::memory_order_relaxed);
  const std::uint64_t s = process_start_time(static_cast<pid_t>(me));
  if (s) {
    cached_start.store(s, std::memory_order_relaxed);
    cached_pid.store(me, std::memory_order_release);
  }
  return s;
}

liveness probe_process(pid_t pid, std::uint64_t start, bool deep, bool child) noexcept {
  if (pid <= 0) return liveness::unknown;
  if (::kill(pid, 0) != 0) {
    if (errno == ESRCH) return liveness::dead;
    if (errno != EPERM) return liveness::unknown;
    deep = true;  // the pid belongs to another user now: the start time tells
  } else if (child) {
    // an exited child not yet reaped still answers kill(): ask without reaping
    siginfo_t si{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
      return liveness::dead;
  }
  if (!deep) return liveness::alive;
  proc_stat st;
  const int e = read_proc_stat(pid, st);
  if (e == ENOENT || e == ESRCH) return liveness::dead;
  if (e != 0) return liveness::unknown;  // EMFILE, ENFILE, ENOMEM, an unreadable /proc: proves nothing
  if (start != 0 && st.start != start) return liveness::dead;  // the pid was reused
  if (st.state == 'Z' || st.state == 'X') return liveness::dead;
  return liveness::alive;
}

std::string exhaustion_text(int e) {
  if (e == EMFILE) {
    rlimit rl{};
    std::string lim = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? std::to_string(rl.rlim_cur) : std::string("?");
    return "out of file descriptors (EMFILE: this process has RLIMIT_NOFILE = " + lim +
           " open; raise it with ulimit -n or setrlimit, or close descriptors; shm holds none per peer)";
  }
  if (e == ENFILE)
    return "the system's file table is full (ENFILE): raise fs.file-max or close descriptors";
  if (e == ENOMEM) return "out of memory (ENOMEM)";
  return std::strerror(e);
}

result<std::unique_ptr<mapping>> mapping::create(const std::string& name, const config& c, std::uint32_t epid) {
  auto page = [](std::size_t n) { return (n + 4095) & ~std::size_t{4095}; };
  const std::size_t split_off = 4096;
  const std::size_t access_off = split_off + page(c.split_count * sizeof(split_entry));
  const std::size_t ctl_off = access_off + page(std::size_t{c.access_count} * sizeof(access_slot));
  const std::size_t ctl_bytes = static_cast<std::size_t>(c.ctl_count) * c.ctl_slot_size;
  const std::size_t req_off = ctl_off + page(ctl_bytes);
  const std::size_t req_bytes = static_cast<std::size_t>(c.req_count) * min_slot_size;
  const std::size_t ring_off = req_off + page(req_bytes);
  const std::size_t ring_bytes = static_cast<std::size_t>(c.slot_count) * c.slot_size;
  const std::size_t seg_off = ring_off + ((ring_bytes + 4095) & ~std::size_t{4095});
  const std::size_t mrt_off = page(seg_off + static_cast<std::size_t>(c.seg_count) * c.seg_size);
  const std::size_t total = mrt_off + std::size_t{spi::mr_key_slots} * sizeof(mr_entry);  // pages committed on use
  const std::uint64_t start = own_start_time();  // peers tell us from a later process with our pid by it
  if (start == 0) {
    const int e = errno;
    return make_error(exhausted(e) ? errc::no_memory : errc::io_error,
                      "cannot read this process's start time from /proc/self/stat: " +
                          (exhausted(e) ? exhaustion_text(e) : std::string(std::strerror(e))));
  }
  std::string path = "/" + name;
  int fd = ::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0 && errno == EEXIST) {  // a dead process with our pid left it
    ::shm_unlink(path.c_str());
    fd = ::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  }
  if (fd < 0) {
    if (exhausted(errno)) return make_error(errc::no_memory, sys_err("cannot create shared memory", name));
    return make_error(errc::io_error, sys_err("cannot create shared memory", name) +
                                          " (is /dev/shm mounted and writable?)");
  }
  if (::ftruncate(fd, static_cast<off_t>(total)) != 0) {
    int e = errno;
    ::close(fd);
    ::shm_unlink(path.c_str());
    errno = e;
    return make_error(errc::no_memory, sys_err("cannot size shared memory", name) + " (is /dev/shm full?)");
  }
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    ::shm_unlink(path.c_str());
    return make_error(errc::no_memory, sys_err("cannot map shared memory", name));
  }
  auto m = std::unique_ptr<mapping>(new mapping());
  m->hdr_ = new (p) region_header{};
  m->size_ = total;
  m->name_ = name;
  m->owner_ = true;
  auto* h = m->hdr_;
  h->magic = region_magic;
  h->version = layout_version;
  h->header_size = sizeof(region_header);
  h->owner_pid = static_cast<std::uint32_t>(::getpid());
  h->owner_uid = static_cast<std::uint32_t>(::getuid());
  h->owner_start = start;
  h->slot_count = c.slot_count;
  h->slot_size = c.slot_size;
  h->seg_count = c.seg_count;
  h->seg_size = c.seg_size;
  h->ring_offset = ring_off;
  h->seg_offset = seg_off;
  h->total_size = total;
  h->epid = epid;
  h->split_offset = split_off;
  h->split_count = c.split_count;
  h->ctl_offset = ctl_off;
  h->ctl_count = c.ctl_count;
  h->ctl_slot_size = c.ctl_slot_size;
  h->mrt_offset = mrt_off;
  h->mrt_count = spi::mr_key_slots;
  h->req_offset = req_off;
  h->req_count = c.req_count;
  h->req_slot_size = min_slot_size;
  h->access_offset = access_off;
  h->access_count = c.access_count;
  m->take_geometry();
  m->ring().format();
  m->ctl_ring().format();
  m->req_ring().format();
  populate(m->base(), ring_off, ring_bytes);
  populate(m->base(), ctl_off, ctl_bytes);
  populate(m->base(), req_off, req_bytes);
  h->state.store(static_cast<std::uint32_t>(region_state::ready), std::memory_order_release);
  return m;
}

result<std::unique_ptr<mapping>> mapping::open(const std::string& name) {
  std::string path = "/" + name;
  int fd = ::shm_open(path.c_str(), O_RDWR, 0);
  if (fd < 0) {
    if (errno == ENOENT)
      return make_error(errc::not_found, "no shm endpoint named '" + name +
                                             "' on this host: is the peer running, and is the address one its "
                                             "endpoint::name() returned?");
    if (errno == EACCES)
      return make_error(errc::permission_denied, sys_err("cannot open", name) +
                                                     " (shm regions are owner-only: run both peers as the same user)");
    if (exhausted(errno)) return make_error(errc::no_memory, sys_err("cannot open", name));
    return make_error(errc::io_error, sys_err("cannot open", name));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(region_header)) {
    ::close(fd);
    return make_error(errc::invalid_argument, "'/dev/shm/" + name + "' is not a weft shm region (too small)");
  }
  void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_err = errno;
  ::close(fd);  // no descriptor is kept per peer
  errno = map_err;
  if (p == MAP_FAILED) return make_error(errc::no_memory, sys_err("cannot map", name));
  auto m = std::unique_ptr<mapping>(new mapping());
  m->hdr_ = static_cast<region_header*>(p);
  m->size_ = static_cast<std::size_t>(st.st_size);
  m->name_ = name;
  auto* h = m->hdr_;
  m->take_geometry();  // validate the private copy, not the live header
  const auto& g = m->g_;
  auto fits = [&](std::uint64_t off, std::uint64_t count, std::uint64_t size) {
    return off >= sizeof(region_header) && off % 64 == 0 && count <= (1u << 20) && size <= (1u << 26) &&
           off + count * size <= m->size_;
  };
  auto pow2 = [](std::uint32_t n) { return n >= 4 && (n & (n - 1)) == 0; };
  if (h->magic != region_magic || h->version != layout_version || h->total_size != m->size_ ||
      h->header_size != sizeof(region_header) || g.slot_size < min_slot_size || g.slot_size % 64 ||
      g.ctl_slot_size < min_slot_size || g.ctl_slot_size % 64 || !pow2(g.slot_count) || !pow2(g.ctl_count) ||
      g.seg_count > max_segments || g.seg_count == 0 || g.seg_size == 0 ||
      !fits(g.ring_offset, g.slot_count, g.slot_size) || !fits(g.ctl_offset, g.ctl_count, g.ctl_slot_size) ||
      !fits(g.seg_offset, g.seg_count, g.seg_size) || !fits(g.split_offset, g.split_count, sizeof(split_entry)) ||
      g.mrt_count != spi::mr_key_slots || !fits(g.mrt_offset, g.mrt_count, sizeof(mr_entry)) ||
      g.req_slot_size < min_slot_size || g.req_slot_size % 64 || !pow2(g.req_count) ||
      !fits(g.req_offset, g.req_count, g.req_slot_size) || g.access_count > max_access_slots ||
      !fits(g.access_offset, g.access_count, sizeof(access_slot)))
    return make_error(errc::invalid_argument, "'/dev/shm/" + name +
                                                  "' is not a compatible weft shm region (layout version " +
                                                  std::to_string(layout_version) + " expected)");
  if (h->state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(region_state::ready))
    return make_error(errc::peer_dead, "shm endpoint '" + name + "' is closed");
  populate(m->base(), g.ring_offset, std::size_t{g.slot_count} * g.slot_size);
  populate(m->base(), g.ctl_offset, std::size_t{g.ctl_count} * g.ctl_slot_size);
  populate(m->base(), g.req_offset, std::size_t{g.req_count} * g.req_slot_size);
  // Is the owner the process that made it? Only a proof of death counts:
  // a look that fails for want of resources leaves the region alone.
  proc_stat ps;
  if (read_proc_stat(static_cast<pid_t>(h->owner_pid), ps) == 0)
    m->child_ = ps.ppid == static_cast<std::uint32_t>(::getpid());
  const bool gone = probe_process(static_cast<pid_t>(h->owner_pid), h->owner_start, true, m->child_) == liveness::dead;
  if (gone) {
    m->unlink_if_stale();
    return make_error(errc::peer_dead, "the process that owned shm endpoint '" + name +
                                           "' is gone (its stale region was removed)");
  }
  return m;
}

mapping::~mapping() {
  // In a forked child the region is still the parent's, live: only our view goes.
  if (owner_ && creator_.is_this_process()) {
    hdr_->state.store(static_cast<std::uint32_t>(region_state::closed), std::memory_order_release);
    ::shm_unlink(("/" + name_).c_str());
  }
  ::munmap(hdr_, size_);
}

void mapping::take_geometry() noexcept {
  const auto* h = hdr_;
  g_ = geometry{h->slot_count,    h->slot_size,   h->seg_count,  h->seg_size,     h->split_count, h->ctl_count,
                h->ctl_slot_size, h->mrt_count,   h->ring_offset, h->seg_offset, h->split_offset, h->ctl_offset,
                h->mrt_offset,    h->req_count,   h->req_slot_size, h->access_count, h->req_offset,
                h->access_offset};
}

bool mapping::owner_alive() noexcept {
  if (owner_) return true;
  if (dead_) return false;
  if (hdr_->state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(region_state::ready)) {
    dead_ = true;
    closed_cleanly_ = true;
    return false;
  }
  // At most one look per 5 ms per peer however often we are asked, a system
  // call (kill) without a descriptor; /proc (pid reuse, zombies) once a second.
  const std::uint64_t now = util::coarse_now_ns();
  if (now < next_alive_check_) return true;
  next_alive_check_ = now + 5'000'000;
  const bool deep = now >= next_deep_check_;
  if (deep) next_deep_check_ = now + 1'000'000'000;
  if (probe_process(static_cast<pid_t>(hdr_->owner_pid), hdr_->owner_start, deep, child_) != liveness::dead)
    return true;  // alive, or nothing proven (unknown)
  dead_ = true;
  unlink_if_stale();
  return false;
}

void mapping::unlink_if_stale() noexcept {
  // Only remove the name if the file still holds this region (same owner).
  char path[256];  // no allocation: called from the data path (owner_alive)
  if (std::snprintf(path, sizeof path, "/%s", name_.c_str()) >= static_cast<int>(sizeof path)) return;
  int fd = ::shm_open(path, O_RDONLY, 0);
  if (fd < 0) return;
  region_header h{};
  bool same = ::pread(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h) &&
              h.owner_pid == hdr_->owner_pid && h.owner_start == hdr_->owner_start;
  ::close(fd);
  if (same) ::shm_unlink(path);
}

namespace {
std::string port_name(std::uint16_t port) {
  return "weft." + std::to_string(::getuid()) + ".port." + std::to_string(port);
}
struct port_record {
  std::uint32_t pid;
  std::uint32_t pad;
  std::uint64_t start;
  char region[64];
};
// Only a proven death frees a port: a look that proves nothing keeps it.
bool record_alive(const port_record& r) {
  return r.pid && probe_process(static_cast<pid_t>(r.pid), r.start, true, false) != liveness::dead;
}
bool read_record(const std::string& name, port_record& r) {
  int fd = ::shm_open(("/" + name).c_str(), O_RDONLY, 0);
  if (fd < 0) return false;  // errno tells why
  bool ok = ::pread(fd, &r, sizeof r, 0) == static_cast<ssize_t>(sizeof r);
  ::close(fd);
  r.region[sizeof r.region - 1] = '\0';
  return ok;
}
}  // namespace

result<void> register_port(std::uint16_t port, const std::string& region) {
  std::string name = port_name(port);
  port_record rec{};
  rec.pid = static_cast<std::uint32_t>(::getpid());
  rec.start = own_start_time();
  std::snprintf(rec.region, sizeof rec.region, "%s", region.c_str());
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      bool ok = ::pwrite(fd, &rec, sizeof rec, 0) == static_cast<ssize_t>(sizeof rec);
      ::close(fd);
      if (!ok) {
        ::shm_unlink(("/" + name).c_str());
        return make_error(errc::io_error, "cannot write shm port entry for port " + std::to_string(port));
      }
      return {};
    }
    if (errno != EEXIST) return make_error(errc::io_error, sys_err("cannot create port entry", name));
    port_record old{};
    bool have = read_record(name, old);
    if (!have || old.pid == 0) {  // being written by its creator right now
      if (attempt == 0) {
        ::usleep(2000);
        have = read_record(name, old);
      }
      if (!have || old.pid == 0)
        return make_error(errc::address_in_use, "shm port " + std::to_string(port) + " is being registered by "
                                                    "another process: choose another port");
    }
    if (record_alive(old))
      return make_error(errc::address_in_use, "shm port " + std::to_string(port) + " is in use by process " +
                                                  std::to_string(old.pid) + ": choose another port");
    ::shm_unlink(("/" + name).c_str());  // stale: its owner is gone
  }
  return make_error(errc::address_in_use, "shm port " + std::to_string(port) + " is contended: retry");
}

void unregister_port(std::uint16_t port, const std::string& region) noexcept {
  std::string name = port_name(port);
  port_record r{};
  if (read_record(name, r) && r.pid == static_cast<std::uint32_t>(::getpid()) && region == r.region)
    ::shm_unlink(("/" + name).c_str());
}

result<std::string> lookup_port(std::uint16_t port) {
  std::string name = port_name(port);
  port_record r{};
  if (!read_record(name, r)) {
    if (exhausted(errno))
      return make_error(errc::no_memory, "cannot look up shm port " + std::to_string(port) + ": " +
                                             exhaustion_text(errno));
    return make_error(errc::not_found, "no shm endpoint listens on port " + std::to_string(port) +
                                           " on this host (start the server first)");
  }
  if (!record_alive(r)) {
    ::shm_unlink(("/" + name).c_str());
    return make_error(errc::not_found, "the shm endpoint on port " + std::to_string(port) +
                                           " belonged to a process that is gone (start the server again)");
  }
  return std::string(r.region);
}

std::size_t clean_stale() {
  std::size_t removed = 0;
  DIR* d = ::opendir("/dev/shm");
  if (!d) return 0;
  const std::string mine = "weft." + std::to_string(::getuid()) + ".";
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(mine, 0) != 0) continue;
    std::uint32_t uid, pid, epid;
    if (parse_region_name(n, uid, pid, epid)) {
      int fd = ::shm_open(("/" + n).c_str(), O_RDONLY, 0);
      if (fd < 0) continue;
      region_header h{};
      bool ok = ::pread(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h);
      ::close(fd);
      // Removed only when its owner is proven gone (or closed it): never on
      // a look that failed for want of descriptors or memory.
      const bool gone = ok && h.magic == region_magic && h.owner_start != 0 &&
                        (h.state.load() == static_cast<std::uint32_t>(region_state::closed) ||
                         probe_process(static_cast<pid_t>(h.owner_pid), h.owner_start, true, false) == liveness::dead);
      // (a region still being created has owner_start == 0 only for a moment)
      if (gone) {
        ::shm_unlink(("/" + n).c_str());
        ++removed;
      }
    } else if (n.find(".mem.") != std::string::npos) {
      unsigned u = 0, p = 0;
      unsigned long long start = 0, seq = 0;
      int used = 0;
      if (std::sscanf(n.c_str(), "weft.%u.%u.mem.%llu.%llu%n", &u, &p, &start, &seq, &used) == 4 &&
          used == static_cast<int>(n.size()) &&
          probe_process(static_cast<pid_t>(p), start, true, false) == liveness::dead) {
        ::shm_unlink(("/" + n).c_str());
        ++removed;
      }
    } else if (n.find(".port.") != std::string::npos) {
      port_record r{};
      if (read_record(n, r) && !record_alive(r)) {
        ::shm_unlink(("/" + n).c_str());
        ++removed;
      }
    }
  }
  ::closedir(d);
  return removed;
}

}  // namespace weft::prov::shm

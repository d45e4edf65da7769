#pragma once
// A same-user process's view of an shm endpoint's region: maps it and writes
// into its rings directly, as a misbehaving or dying peer would (fault tests).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "prov/shm/layout.hpp"
#include "weft/address.hpp"

namespace weft::test {

// The process id and endpoint id in an shm endpoint's name ("weft.UID.PID.EPID").
inline bool endpoint_ids(const address& a, std::uint32_t& pid, std::uint32_t& epid) {
  unsigned uid = 0;
  std::string s(a.view());
  return std::sscanf(s.c_str(), "weft.%u.%u.%u", &uid, &pid, &epid) == 3;
}

struct hostile_view {
  void* base = MAP_FAILED;
  std::size_t size = 0;
  weft::prov::shm::region_header* h = nullptr;
  weft::util::mpsc_ring ring;  // messages (inline, rts)
  weft::util::mpsc_ring ctl;   // control (cts, ack, data, split)
  weft::util::mpsc_ring req;   // requests (rma_write, rma_read, atomic, save)
  explicit hostile_view(const address& a) {
    std::string path("/");
    path.append(a.view());
    int fd = ::shm_open(path.c_str(), O_RDWR, 0);
    struct stat st;
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      if (fd >= 0) ::close(fd);
      return;
    }
    size = static_cast<std::size_t>(st.st_size);
    base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (base == MAP_FAILED) return;
    h = static_cast<weft::prov::shm::region_header*>(base);
    auto* b = static_cast<std::byte*>(base);
    ring = weft::util::mpsc_ring(&h->tail, b + h->ring_offset, h->slot_count, h->slot_size);
    ctl = weft::util::mpsc_ring(&h->ctl_tail, b + h->ctl_offset, h->ctl_count, h->ctl_slot_size);
    req = weft::util::mpsc_ring(&h->req_tail, b + h->req_offset, h->req_count, h->req_slot_size);
  }
  hostile_view(const hostile_view&) = delete;
  hostile_view& operator=(const hostile_view&) = delete;
  [[nodiscard]] bool ok() const { return base != MAP_FAILED; }
  void unmap() {
    if (ok()) ::munmap(base, size);
    base = MAP_FAILED;
  }
  ~hostile_view() { unmap(); }
};

// Publishes on rv's control ring a data chunk from endpoint (pid, epid)
// carried in segment seg, naming no receive of rv's endpoint (failed or never
// was); "" when published, else what failed.
inline std::string publish_stale_data_chunk(hostile_view& rv, std::uint32_t pid, std::uint32_t epid,
                                            std::uint32_t seg) {
  using namespace weft::prov::shm;
  std::uint64_t pos;
  auto* h = reinterpret_cast<slot_header*>(rv.ctl.claim(pos));
  if (!h) return "control ring full";
  h->src_pid = pid;
  h->src_epid = epid;
  h->code = op::data;
  h->flags = 0;
  h->len = 16;
  h->tag = 0;
  h->data = 0;
  h->cookie = 0x5555;
  h->aux = 0xdead0000beefull;
  h->seg = seg;
  h->iov_count = 0;
  if (!rv.ctl.publish(pos)) return "publish failed";
  return "";
}

}  // namespace weft::test

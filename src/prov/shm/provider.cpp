// shm provider: registration, discovery, fabric, domain and address vector.
#include <unistd.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "prov/shm/endpoint.hpp"
#include "prov/shm/shm.hpp"
#include "util/clock.hpp"

namespace weft::prov::shm {

namespace {
constexpr std::uint32_t version = 1;

bool node_is_local(const std::string& node) {
  if (node.empty() || node == "localhost" || node == "::1" || node.rfind("127.", 0) == 0) return true;
  char host[256] = {};
  return ::gethostname(host, sizeof host - 1) == 0 && node == host;
}

info base_info(const config& c) {
  info i;
  i.caps = cap::msg | cap::tagged | cap::source | cap::directed_recv | cap::remote_cq_data | cap::local_comm |
           (c.cma ? cap::rma | cap::atomic | cap::pmem : 0);  // RMA moves data with cross-memory attach
  i.fabric = {"shm", "shm", version};
  i.domain.name = "shm";
  i.domain.max_ep_count = 1024;
  i.ep.type = ep_type::rdm;
  i.ep.max_msg_size = max_msg_size;
  i.tx = {tx_size, c.inline_max(), max_iov, max_iov, 0};
  i.rx = {rx_size, max_iov, unexpected_count * c.inline_max()};
  i.format = addr_format::shm_name;
  return i;
}

result<std::vector<info>> get_info(const hints& h) {
  auto c = load_config();
  if (!c) return std::unexpected(c.error());
  info i = base_info(*c);
  if (!node_is_local(h.node))
    return make_error(errc::not_found, "node '" + h.node + "' is not this host (shm reaches local processes only)");
  std::uint16_t port = 0;
  if (h.port) port = *h.port;  // the core resolved hints.service into hints.port
  if (h.source) {
    i.src_port = port;
  } else if (port != 0) {
    auto r = lookup_port(port);
    if (!r) return std::unexpected(r.error());
    i.dest_addr = address::from_string(addr_format::shm_name, *r);
  }
  return std::vector<info>{i};
}

class fabric_impl final : public spi::fabric {
 public:
  explicit fabric_impl(config c) : cfg_(c) {}
  result<std::shared_ptr<spi::domain>> open_domain(const info& i) override {
    if (i.fabric.prov_name != "shm")
      return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not shm");
    // once per process (a forked child cleans again: it is a new start)
    static std::atomic<pid_t> cleaned_by{0};
    if (const pid_t me = ::getpid(); cleaned_by.exchange(me) != me) clean_stale();
    return std::make_shared<domain_impl>(cfg_);
  }

 private:
  config cfg_;
};
}  // namespace

spi::provider make_provider() {
  spi::provider p;
  p.name = "shm";
  p.version = version;
  p.get_info = get_info;
  p.open_fabric = [](const info&) -> result<std::shared_ptr<spi::fabric>> {
    auto c = load_config();
    if (!c) return std::unexpected(c.error());
    return std::make_shared<fabric_impl>(*c);
  };
  return p;
}

result<std::shared_ptr<peer>> domain_impl::peer_by_name(const std::string& name) {
  std::uint32_t uid, pid, epid;
  if (!parse_region_name(name, uid, pid, epid))
    return make_error(errc::invalid_argument, "'" + name + "' is not a shm address (expected weft.UID.PID.EP)");
  auto key = peer_key(pid, epid);
  if (auto it = peers_.find(key); it != peers_.end()) {
    if (it->second->map->owner_alive()) return it->second;
    peers_.erase(it);  // a dead one: map again (may be a new process)
  }
  auto m = mapping::open(name);
  if (!m) return std::unexpected(m.error());
  auto p = std::make_shared<peer>();
  p->ring = (*m)->ring();
  p->ctl = (*m)->ctl_ring();
  p->req = (*m)->req_ring();
  p->key = key;
  p->pid = pid;
  p->inline_max = (*m)->slot_size() - static_cast<std::uint32_t>(sizeof(slot_header));
  p->map = std::move(*m);
  peers_[key] = p;
  return p;
}

void domain_impl::sweep() noexcept {
  std::erase_if(peers_, [](auto& kv) { return kv.second.use_count() == 1 && !kv.second->map->owner_alive(); });
}

result<std::shared_ptr<peer>> domain_impl::peer_by_key(std::uint64_t key) noexcept {
  if (auto it = peers_.find(key); it != peers_.end()) return it->second;
  try {
    return peer_by_name(region_name(static_cast<std::uint32_t>(::getuid()), static_cast<std::uint32_t>(key >> 32),
                                    static_cast<std::uint32_t>(key)));
  } catch (...) {  // std::bad_alloc: the name, the mapping, the peer or its map entry
    // "out of memory" fits std::string's inline buffer: no allocation here
    return std::unexpected(error{errc::no_memory, std::string("out of memory")});
  }
}

result<std::shared_ptr<spi::mr>> domain_impl::register_memory(void* buf, std::size_t len, std::uint64_t acc) {
  if (!cfg_.cma)
    return make_error(errc::not_supported, "shm RMA needs cross-memory attach (WEFT_SHM_CMA is 0)");
  return registry_->register_memory(buf, len, acc);
}

result<std::shared_ptr<spi::mr>> domain_impl::alloc_memory(std::size_t len, std::uint64_t acc) {
  if (!cfg_.cma) return spi::domain::alloc_memory(len, acc);  // no one-sided access without CMA anyway
  static std::atomic<std::uint64_t> next_seq{1};
  const std::uint64_t seq = next_seq.fetch_add(1);
  const auto uid = static_cast<std::uint32_t>(::getuid());
  const auto pid = static_cast<std::uint32_t>(::getpid());
  std::string name = "/";
  name.append(mem_segment_name(uid, pid, own_start_time(), seq));
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t n = (len + page - 1) / page * page;
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    std::string m = "cannot create shared memory '/dev/shm";
    m.append(name).append("': ").append(std::strerror(errno));
    return make_error(errc::io_error, std::move(m));
  }
  if (::ftruncate(fd, static_cast<off_t>(n)) != 0) {
    ::close(fd);
    ::shm_unlink(name.c_str());
    std::string m = "cannot size shared memory '/dev/shm";
    m.append(name).append("' (is /dev/shm full?)");
    return make_error(errc::no_memory, std::move(m));
  }
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    ::shm_unlink(name.c_str());
    std::string m = "cannot map shared memory '/dev/shm";
    m.append(name).append("'");
    return make_error(errc::no_memory, std::move(m));
  }
  auto m = registry_->register_memory(p, len, acc, seq);
  if (!m) {
    ::munmap(p, n);
    ::shm_unlink(name.c_str());
    return m;
  }
  (*m)->own(std::shared_ptr<void>(p, [n, name, pid](void* q) {
    ::munmap(q, n);
    // A forked child's close: the segment is the parent's, still mapped by its peers.
    if (static_cast<std::uint32_t>(::getpid()) == pid) ::shm_unlink(name.c_str());
  }));
  return m;
}

peer_segs::~peer_segs() {
  for (auto& s : v) ::munmap(s.base, s.len);
}

void peer_segs::drop_freed(const mapping& m) noexcept {
  const mr_entry* table = m.mr_table();
  std::erase_if(v, [&](const seg& s) {
    // Its key still in its entry: the region lives (a torn read at worst
    // unmaps a live segment, which the next access maps again).
    const mr_entry& e = table[spi::mr_key_slot(s.key)];
    if (__atomic_load_n(&e.key, __ATOMIC_ACQUIRE) == s.key && __atomic_load_n(&e.seg, __ATOMIC_RELAXED) == s.id)
      return false;
    ::munmap(s.base, s.len);
    return true;
  });
}

std::byte* peer_segs::find_or_map(const mapping& m, std::uint64_t key, std::uint64_t id, std::size_t len) noexcept {
  // The owner freed segments since we last looked: those go first (a load
  // here, off the inline path; the table is read only when it moved).
  if (const std::uint32_t f = m.hdr()->segs_freed.load(std::memory_order_acquire); f != seen_freed_) {
    seen_freed_ = f;
    drop_freed(m);
  }
  const auto* ph = m.hdr();
  const std::uint32_t uid = ph->owner_uid, pid = ph->owner_pid;
  const std::uint64_t start = ph->owner_start;
  for (std::size_t i = 0; i < v.size(); ++i)
    if (v[i].id == id) {
      if (i) std::swap(v[i], v[0]);  // most recent first
      return v[0].len >= len ? v[0].base : nullptr;
    }
  // first access: map it (the owner keeps the name while the region lives)
  std::string name;
  try {
    name = "/";
    name.append(mem_segment_name(uid, pid, start, id));
  } catch (...) {
    return nullptr;
  }
  int fd = ::shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) return nullptr;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < len) {
    ::close(fd);
    return nullptr;
  }
  void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return nullptr;
  if (v.size() >= max_peer_segs) {
    ::munmap(v.back().base, v.back().len);
    v.pop_back();
  }
  try {
    v.insert(v.begin(), seg{id, key, static_cast<std::byte*>(p), static_cast<std::size_t>(st.st_size)});
  } catch (...) {
    ::munmap(p, static_cast<std::size_t>(st.st_size));
    return nullptr;
  }
  return static_cast<std::byte*>(p);
}

result<std::shared_ptr<spi::av>> domain_impl::open_av(const spi::av_attr& a) {
  return std::make_shared<av_impl>(shared_from_this(), a);
}

result<fi_addr_t> av_impl::insert(const address& a) {
  if (a.format != addr_format::shm_name)
    return make_error(errc::invalid_argument, "address '" + to_string(a) + "' is not a shm address");
  auto p = dom_->peer_by_name(std::string(a.view()));
  if (!p) return std::unexpected(p.error());
  if (auto it = rev_.find((*p)->key); it != rev_.end()) return it->second;
  fi_addr_t h;
  if (!free_.empty()) {
    h = free_.back();
    free_.pop_back();
  } else {
    h = table_.size();
    table_.emplace_back();
  }
  table_[h] = entry{*p, a};
  rev_[(*p)->key] = h;
  failed_.erase((*p)->key);
  ++version_;
  return h;
}

result<void> av_impl::remove(fi_addr_t a) {
  if (a >= table_.size() || !table_[a].p)
    return make_error(errc::not_found, "address handle " + std::to_string(a) + " is not in this address vector");
  rev_.erase(table_[a].p->key);
  last_key_ = ~0ull;
  table_[a] = entry{};
  free_.push_back(a);
  ++version_;
  return {};
}

result<address> av_impl::lookup(fi_addr_t a) const {
  if (a >= table_.size() || !table_[a].p)
    return make_error(errc::not_found, "address handle " + std::to_string(a) + " is not in this address vector");
  return table_[a].a;
}

fi_addr_t av_impl::find(std::uint64_t key) const noexcept {
  auto it = rev_.find(key);
  return it != rev_.end() ? it->second : addr_notavail;
}

const error* av_impl::insert_failure(std::uint64_t key) const noexcept {
  auto it = failed_.find(key);
  return it != failed_.end() ? &it->second.err : nullptr;
}

fi_addr_t av_impl::reverse(std::uint64_t key, bool& failed) noexcept {
  if (key == last_key_) return last_addr_;
  if (auto it = rev_.find(key); it != rev_.end()) {
    last_key_ = key;
    last_addr_ = it->second;
    return it->second;
  }
  if (!attr_.auto_insert) return addr_notavail;
  // First contact from an unknown sender: a control-path insertion. One that
  // failed is not retried for 100 ms (each try costs system calls).
  const std::uint64_t now = util::coarse_now_ns();
  auto f = failed_.find(key);
  if (f != failed_.end() && now < f->second.retry_at) {
    failed = true;
    return addr_notavail;
  }
  try {
    auto name = region_name(static_cast<std::uint32_t>(::getuid()), static_cast<std::uint32_t>(key >> 32),
                            static_cast<std::uint32_t>(key));
    auto r = insert(address::from_string(addr_format::shm_name, name));
    if (r) return *r;
    failed_[key] = failure{r.error(), now + 100'000'000};
  } catch (...) {
    if (f != failed_.end()) f->second.retry_at = now + 100'000'000;
  }
  failed = true;
  return addr_notavail;
}

result<std::shared_ptr<spi::endpoint>> domain_impl::open_endpoint(const info& i) {
  if (i.fabric.prov_name != "shm")
    return make_error(errc::invalid_argument, "info is for provider '" + i.fabric.prov_name + "', not shm");
  auto ep = std::make_shared<endpoint_impl>(shared_from_this(), i);
  if (auto r = ep->init(); !r) return std::unexpected(r.error());
  return ep;
}

}  // namespace weft::prov::shm

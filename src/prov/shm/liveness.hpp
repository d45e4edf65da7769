#pragma once
// Peer liveness of an shm endpoint (docs/design.md "Peer failure"): which
// peers it knows (its AV's entries, the senders it heard from, the peers it
// sent to), a bounded schedule that finds the ones that died or closed their
// endpoint, the failure of what involved them, and the report: a peer_dead
// event on the bound EQ, else a CQ error entry, once per dead peer.
#include <array>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "prov/shm/shm.hpp"

namespace weft::prov::shm {

// What the endpoint does when a peer is gone: fail its directed receives and
// its operations in flight with errc::peer_dead. `name` is the peer's
// address, `why` a few words on what happened ("died", "closed its endpoint").
class peer_failure_sink {
 public:
  virtual void fail_peer(std::uint64_t key, const peer* p, const char* name, const char* why) noexcept = 0;

 protected:
  ~peer_failure_sink() = default;
};

// A peer's address (its region's name) from its key, without allocating.
void peer_name(std::uint64_t key, char (&out)[48]) noexcept;

inline constexpr std::uint64_t liveness_period_ns = 20'000'000;  // a dead peer is found within ~20 ms
inline constexpr std::size_t peers_per_tick = 256;               // probes per period (one kill() each)

class peer_watch {
 public:
  peer_watch(domain_impl& d, peer_failure_sink& sink, const spi::endpoint& ep) noexcept
      : dom_(d), sink_(sink), ep_(ep) {
    seen_.fill(~0ull);
  }
  void bind(spi::cq* rxcq, spi::eq* eq, av_impl* av) noexcept {
    cq_ = rxcq;
    eq_ = eq;
    av_ = av;
  }

  // Data path: a message from key arrived. A known sender costs one load and
  // a compare; the first message of a new one maps it (control path, once).
  void saw(std::uint64_t key) noexcept {
    if (seen_[slot(key)] != key) [[unlikely]]
      first_contact(key);
  }
  // An auto-insertion of sender key into the AV failed: report it (once).
  void insert_failed(std::uint64_t key) noexcept;

  [[nodiscard]] bool due(std::uint64_t now) const noexcept { return now >= next_tick_; }
  // Whether there is a peer to watch (alive, dying, a report owed, or an AV
  // not scanned since it changed): an EQ wait then needs the pulse, as the
  // deaths it reports are found by these checks, not by a doorbell.
  [[nodiscard]] bool watching() const noexcept;
  // One period, in two steps around the endpoint taking in every control
  // message already published (a peer's replies sent before it went):
  // probe() finds peers gone (up to peers_per_tick probes), true if any is
  // waiting to be failed; settle() fails each once every message it
  // published before is consumed (our message ring's head past its tail when
  // it was found gone), and reports what is owed.
  [[nodiscard]] bool probe(std::uint64_t now, std::uint64_t ring_tail) noexcept;
  void settle(std::uint64_t now, std::uint64_t ring_head, std::uint64_t ring_tail) noexcept;

  enum class fate : std::uint8_t { alive, dying, dead };
  // A receive is directed at key, whose region is closed or whose owner is
  // gone: dead once its failure was processed (fail at once), dying until then
  // (post it: the failure will complete it).
  [[nodiscard]] fate fate_of(std::uint64_t key, std::uint64_t ring_tail) noexcept;

 private:
  struct known {
    std::shared_ptr<peer> p;      // null: could not be mapped yet (resources); probed by pid
    std::uint64_t key = 0;
    std::uint64_t drain_to = 0;   // dying: our ring's tail when it was found gone
    std::uint64_t since = 0;      // dying: when found gone; unmapped: next mapping attempt
    fate state = fate::alive;
    bool cleanly = false;         // it closed its endpoint (its process may live on)
    bool notice = false;          // a peer_dead report is owed
    bool insert_notice = false;   // an auto-insert failure report is owed
  };
  static std::size_t slot(std::uint64_t key) noexcept {
    return static_cast<std::size_t>(((key ^ (key >> 29)) * 0x9e3779b97f4a7c15ull) >> 56);
  }
  void first_contact(std::uint64_t key) noexcept;
  known* add(std::uint64_t key, std::shared_ptr<peer> p) noexcept;
  known* lookup(std::uint64_t key) noexcept;
  void scan_av() noexcept;
  void forget_removed() noexcept;
  void probe_one(known& k, std::uint64_t now, std::uint64_t ring_tail) noexcept;
  void mark_gone(known& k, bool cleanly, std::uint64_t now, std::uint64_t ring_tail) noexcept;
  [[nodiscard]] bool report_dead(const known& k) noexcept;
  [[nodiscard]] bool report_insert_failure(const known& k) noexcept;
  void erase_at(std::size_t i) noexcept;

  domain_impl& dom_;
  peer_failure_sink& sink_;
  const spi::endpoint& ep_;
  spi::cq* cq_ = nullptr;
  spi::eq* eq_ = nullptr;
  av_impl* av_ = nullptr;
  std::array<std::uint64_t, 256> seen_{};  // direct-mapped: keys known alive
  std::vector<known> known_;
  std::unordered_map<std::uint64_t, std::uint32_t> index_;
  std::uint64_t av_version_ = ~0ull;
  std::uint64_t next_tick_ = 0;
  std::size_t next_probe_ = 0;  // round robin over known_
  std::size_t owed_ = 0;        // entries dying, or with a report owed
};

}  // namespace weft::prov::shm

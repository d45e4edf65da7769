// What an shm endpoint does about a peer that is gone (docs/design.md
// "Peer failure"): the receives directed at it and the transfers with it
// complete with peer_dead. liveness.cpp finds the deaths.
#include <cstdio>

#include "prov/shm/endpoint.hpp"
#include "util/match.hpp"

namespace weft::prov::shm {

// A peer is gone and every message it sent before is consumed (liveness.cpp):
// receives directed at it can never match, and its transfers cannot finish.
void endpoint_impl::fail_peer(std::uint64_t key, const peer* p, const char* name, const char* why) noexcept {
  char msg[160];
  std::snprintf(msg, sizeof msg, "receive directed at shm peer %s, which %s: it can never match; post it for "
                "another peer", name, why);
  for (auto* l : {&posted_msg_, &posted_tag_}) {
    for (rx_op* r = l->front(); r;) {
      rx_op* next = l->next(r);
      if (r->src_filter == key) {
        l->erase(r);
        directed_posted_ -= r->src_filter != util::any_source;
        r->msg_tag = r->tag;
        complete_rx_error(r, errc::peer_dead, msg);
      }
      r = next;
    }
  }
  if (!p) return;
  std::snprintf(msg, sizeof msg, "shm peer %s %s before the transfer finished", name, why);
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->p.get() == p) complete_tx(op, errc::peer_dead, msg);
    op = next;
  }
  for (rx_op* r = rx_active_.front(); r;) {
    rx_op* next = rx_active_.next(r);
    if (r->p.get() == p) {
      rx_active_.erase(r);
      if (r->split) {
        --splits_pending_;
        r->split = false;
      }
      complete_rx_error(r, errc::peer_dead, msg);
    }
    r = next;
  }
}

// Latches the death of the peers of operations in flight (owner_alive, at
// most one look per 5 ms per peer): true if any is gone.
bool endpoint_impl::probe_op_peers() noexcept {
  bool gone = false;
  for (tx_op* op = tx_active_.front(); op; op = tx_active_.next(op)) gone = !op->p->map->owner_alive() || gone;
  for (rx_op* r = rx_active_.front(); r; r = rx_active_.next(r)) gone = !r->p->map->owner_alive() || gone;
  return gone;
}

// Operations whose peer was found gone before the control ring was drained
// (found_gone(), not a fresh look: a peer that acknowledged and then closed
// just now is not failed).
void endpoint_impl::check_peers() noexcept {
  for (tx_op* op = tx_active_.front(); op;) {
    tx_op* next = tx_active_.next(op);
    if (op->p->map->found_gone())
      complete_tx(op, errc::peer_dead, "the receiver exited before the transfer finished");
    op = next;
  }
  for (rx_op* r = rx_active_.front(); r;) {
    rx_op* next = rx_active_.next(r);
    if (r->p->map->found_gone()) {
      rx_active_.erase(r);
      if (r->split) {
        --splits_pending_;
        r->split = false;
      }
      complete_rx_error(r, errc::peer_dead, "the sender exited before the transfer finished");
    }
    r = next;
  }
}

}  // namespace weft::prov::shm

// shm: a data chunk for no active receive whose sender the receiver cannot
// map (EMFILE) is set aside until the mapping works, instead of waiting at
// the head of the control ring: the control messages behind it (here the
// answer to the receiver's own rendezvous send: ack, or cts when cross-memory
// attach is refused) are processed meanwhile, so that send completes while
// descriptors are still exhausted. The chunk's segment is given back once
// descriptors are back (never dropped). Before, the send waited for the
// descriptors too. The list set aside is bounded (64): with more such chunks
// the next one waits in the ring again (back-pressure: the answer behind it
// is held until descriptors are back), and is never dropped. Runs in a
// forked child with a lowered descriptor limit.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/limited_child.hpp"
#include "common/shm_view.hpp"

using namespace weft;
using namespace weft::test;
using namespace weft::prov::shm;

namespace {

using clk = std::chrono::steady_clock;

// Completions of n's CQ so far: ok entries in ok, error entries in err.
void drain(node& n, int& ok, int& err) {
  cq_entry e{};
  const errc x = n.cq.read(e);
  if (x == errc::ok) {
    ++ok;
  } else if (x == errc::error_available) {
    cq_err_entry ee{};
    (void)n.cq.read_error(ee);
    ++err;
  }
}

// chunks stale chunks from s, all but the last naming s's segment 0, the
// last (of several) its segment 1; then r's rendezvous send to t, whose answer comes
// behind them. With at most 64 chunks the send completes while descriptors
// are exhausted; with more, it completes once they are back.
std::string scenario(int chunks) {
  const bool aside = chunks <= 64;
  if (!limit_descriptors(64)) return "setrlimit failed";
  constexpr std::size_t len = 64 * 1024;  // a rendezvous: its sender waits for an answer on its control ring
  node r = open_node("shm");
  node s = open_node("shm");  // a domain of its own: r has not mapped it
  node t = open_node("shm");
  auto r2t = r.av.insert(*t.ep.name());
  auto t2r = t.av.insert(*r.ep.name());
  if (!r2t || !t2r) return "insert failed";
  if (!warm_up({&r, &s, &t})) return "cancel of nothing";
  std::uint32_t pid = 0, epid = 0;
  if (!endpoint_ids(*s.ep.name(), pid, epid)) return "cannot parse the sender's name";
  hostile_view sv(*s.ep.name()), rv(*r.ep.name());
  if (!sv.ok() || !rv.ok()) return "cannot map the regions";
  sv.h->seg_busy[0].store(1);  // lent to r, as when s streamed chunks through them
  const int segs = chunks > 1 ? 2 : 1;
  sv.h->seg_busy[1].store(segs == 2 ? 1 : 0);
  for (int i = 0; i < chunks; ++i) {
    const std::string why = publish_stale_data_chunk(rv, pid, epid, i + 1 == chunks && segs == 2 ? 1 : 0);
    if (!why.empty()) return why;
  }
  std::vector<char> src(len, 'r'), dst(len, 0);
  int tctx = 0, rctx = 0;
  if (t.ep.recv(dst.data(), len, addr_unspec, &tctx) != errc::ok) return "recv";
  bool exhausted = false;
  std::vector<int> filler = use_up_descriptors(exhausted);
  if (!exhausted) {
    give_back(filler);
    return "descriptors not exhausted with EMFILE";
  }
  std::string out;
  int rok = 0, rerr = 0, tok = 0, terr = 0;
  const errc sent = r.ep.send(src.data(), len, *r2t, &rctx);
  if (sent != errc::ok) out += std::string("send: ") + to_string(sent) + "\n";
  // r reads its control ring (the stale chunks first), t its message ring:
  // until both complete (aside), or t's receive completed and r kept
  // polling for a while after its answer was published (held).
  const auto until = clk::now() + std::chrono::seconds(10);
  auto held_until = clk::time_point::max();
  while (sent == errc::ok && (rok + rerr < 1 || tok + terr < 1) && clk::now() < until && clk::now() < held_until) {
    drain(r, rok, rerr);
    const int before = tok + terr;
    drain(t, tok, terr);
    if (!aside && before == 0 && tok + terr == 1) held_until = clk::now() + std::chrono::milliseconds(200);
  }
  const std::uint32_t during0 = sv.h->seg_busy[0].load(), during1 = sv.h->seg_busy[1].load();
  const int rok_during = rok;
  give_back(filler);
  if (sent == errc::ok && (rok_during != (aside ? 1 : 0) || tok != 1 || rerr || terr))
    out += "while the stale chunks' sender could not be mapped: send " + std::to_string(rok) + " ok / " +
           std::to_string(rerr) + " failed, receive " + std::to_string(tok) + " ok / " + std::to_string(terr) +
           (aside ? " failed (expected 1 ok each: the answer behind the chunk was held)\n"
                  : " failed (expected the receive only: the answer waits behind the chunk the full list left in the ring)\n");
  if (during0 != 1 || during1 != (segs == 2 ? 1u : 0u)) out += "a segment given back while its owner could not be mapped?\n";
  // Descriptors back: everything proceeds, nothing was dropped.
  const auto back = clk::now() + std::chrono::seconds(10);
  while ((sv.h->seg_busy[0].load() != 0 || sv.h->seg_busy[1].load() != 0 || rok + rerr < 1) && clk::now() < back)
    drain(r, rok, rerr);
  if (rok != 1) out += "the send never completed\n";
  if (std::string(dst.data(), len) != std::string(src.data(), len)) out += "received bytes differ\n";
  for (int seg : {0, 1})
    if (sv.h->seg_busy[seg].load() != 0)
      out += "the sender's segment " + std::to_string(seg) + " was never given back (a chunk was dropped)\n";
  return out.empty() ? "ok" : out;
}

}  // namespace

TEST(shm_stale_chunk_aside, control_messages_behind_a_stale_chunk_proceed_while_its_sender_cannot_be_mapped) {
  const child_verdict v = run_in_child([] { return scenario(1); });
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

TEST(shm_stale_chunk_aside, a_full_side_list_is_back_pressure_not_a_drop) {
  const child_verdict v = run_in_child([] { return scenario(65); });
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

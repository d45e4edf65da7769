// shm replies to a sender the receiver cannot map for want of descriptors
// (EMFILE): they wait until the mapping works, never dropped.
//  - a data chunk for a receive that is no longer active still gives its
//    segment back to the sender: dropped, the segment stayed held forever and
//    the sender's pool shrank;
//  - a malformed rendezvous announcement still answers its sender with an
//    error ack: its send completes with io_error.
// Slots are written or altered in the rings directly (shm_view.hpp), as a
// misbehaving same-user process would; each scenario runs in a forked child
// with a lowered descriptor limit (limited_child.hpp).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "common/limited_child.hpp"
#include "common/shm_view.hpp"

using namespace weft;
using namespace weft::test;
using namespace weft::prov::shm;

namespace {

using clk = std::chrono::steady_clock;

// A data chunk naming segment 0 of sender s, for no active receive at r,
// handled while r cannot map s: once descriptors are back, segment 0 is s's again.
std::string stale_data_scenario() {
  if (!limit_descriptors(64)) return "setrlimit failed";
  node r = open_node("shm");
  node s = open_node("shm");  // a domain of its own: r has not mapped it
  if (!warm_up({&r, &s})) return "cancel of nothing";
  std::uint32_t pid = 0, epid = 0;
  if (!endpoint_ids(*s.ep.name(), pid, epid)) return "cannot parse the sender's name";
  hostile_view sv(*s.ep.name()), rv(*r.ep.name());
  if (!sv.ok() || !rv.ok()) return "cannot map the regions";
  sv.h->seg_busy[0].store(1);  // lent to r, as when s streamed a chunk through it
  if (const std::string why = publish_stale_data_chunk(rv, pid, epid, 0); !why.empty()) return why;
  bool exhausted = false;
  std::vector<int> filler = use_up_descriptors(exhausted);
  if (!exhausted) {
    give_back(filler);
    return "descriptors not exhausted with EMFILE";
  }
  for (int i = 0; i < 4; ++i) r.cq.progress();  // handles the chunk: s cannot be mapped now
  const std::uint32_t during = sv.h->seg_busy[0].load();
  give_back(filler);
  std::string out;
  if (during != 1) out += "segment given back while its owner could not be mapped?\n";
  const auto until = clk::now() + std::chrono::seconds(10);
  while (sv.h->seg_busy[0].load() != 0 && clk::now() < until) r.cq.progress();
  if (sv.h->seg_busy[0].load() != 0)
    out += "the sender's segment 0 was never given back (its pool stays one segment short)\n";
  return out.empty() ? "ok" : out;
}

// A real 64 KiB send whose announcement is made malformed in r's ring (its
// buffers no longer add up to its length) while r cannot map the sender:
// the receive fails with io_error, and the sender's send completes with
// io_error. `posted`: the receive is posted before the announcement arrives
// (it waits in the ring), else after (the receive returns again with
// no_resources until descriptors are back).
std::string malformed_rts_scenario(bool posted) {
  if (!limit_descriptors(64)) return "setrlimit failed";
  constexpr std::size_t len = 64 * 1024;
  node r = open_node("shm");
  node s = open_node("shm");
  auto d = s.av.insert(*r.ep.name());
  if (!d) return "insert failed";
  if (!warm_up({&r, &s})) return "cancel of nothing";
  hostile_view rv(*r.ep.name());
  if (!rv.ok()) return "cannot map the receiver's region";
  std::vector<char> src(len, 's'), dst(len, 0);
  int rctx = 0;
  if (posted && r.ep.trecv(dst.data(), len, addr_unspec, 9, 0, &rctx) != errc::ok) return "trecv";
  if (s.ep.tsend(src.data(), len, *d, 9, &src) != errc::ok) return "tsend";
  auto* h = reinterpret_cast<slot_header*>(rv.ring.peek());
  if (!h || h->code != op::rts) return "no announcement at the head of the receiver's ring";
  h->aux = len * 2;  // its buffers add up to len: malformed
  bool exhausted = false;
  std::vector<int> filler = use_up_descriptors(exhausted);
  if (!exhausted) {
    give_back(filler);
    return "descriptors not exhausted with EMFILE";
  }
  for (int i = 0; i < 4; ++i) r.cq.progress();
  errc post = errc::ok;
  again_reason why = again_reason::none;
  if (!posted) {
    post = r.ep.trecv(dst.data(), len, addr_unspec, 9, 0, &rctx);
    if (post == errc::again) why = r.ep.again_reason();
  }
  give_back(filler);
  std::string out;
  if (!posted) {
    if (post != errc::again || why != again_reason::no_resources)
      out += std::string("receive while the sender cannot be mapped: ") + to_string(post) + " / " + to_string(why) +
             " (expected again / no_resources)\n";
    if (post == errc::again && r.ep.trecv(dst.data(), len, addr_unspec, 9, 0, &rctx) != errc::ok)
      out += "receive with descriptors back\n";
  }
  int rgot = 0, sgot = 0;
  errc rerr = errc::ok, serr = errc::ok;
  for (auto until = clk::now() + std::chrono::seconds(10); (rgot < 1 || sgot < 1) && clk::now() < until;) {
    for (auto [n, got, err] : {std::tuple{&r, &rgot, &rerr}, std::tuple{&s, &sgot, &serr}}) {
      cq_entry e{};
      const errc x = n->cq.read(e);
      if (x == errc::ok) {
        ++*got;
      } else if (x == errc::error_available) {
        cq_err_entry ee{};
        (void)n->cq.read_error(ee);
        *err = ee.err;
        ++*got;
      }
    }
  }
  if (rgot != 1 || rerr != errc::io_error)
    out += "receiver: " + std::to_string(rgot) + " completions, error " + to_string(rerr) + " (expected 1, io_error)\n";
  if (sgot != 1 || serr != errc::io_error)
    out += "sender: " + std::to_string(sgot) + " completions, error " + to_string(serr) + " (expected 1, io_error)\n";
  if (std::any_of(dst.begin(), dst.end(), [](char c) { return c != 0; })) out += "bytes were read from the sender\n";
  return out.empty() ? "ok" : out;
}

}  // namespace

TEST(shm_unmappable_replies, a_stale_data_chunk_gives_its_segment_back_once_the_sender_can_be_mapped) {
  const child_verdict v = run_in_child(stale_data_scenario);
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

TEST(shm_unmappable_replies, a_malformed_announcement_for_a_posted_receive_fails_its_send_once_the_sender_can_be_mapped) {
  const child_verdict v = run_in_child([] { return malformed_rts_scenario(true); });
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

TEST(shm_unmappable_replies, a_malformed_unexpected_announcement_fails_its_send_once_the_sender_can_be_mapped) {
  const child_verdict v = run_in_child([] { return malformed_rts_scenario(false); });
  EXPECT_TRUE(v.status.exited_ok()) << "child " << v.status.describe();
  EXPECT_EQ(v.text, "ok");
}

// An endpoint's close locks out a wait on every queue it feeds (CQs, EQ,
// counters) until it is detached from them (core/source_holds.hpp). That
// set is bounded by the API: a transmit and a receive CQ, an EQ, and one
// counter per kind of event (six): nine queues, all distinct here. Each of
// the nine is waited on in turn on another thread while the endpoint
// closes: every wait returns a code it may (ok, timed_out, again,
// error_available), the close completes, and afterwards each queue still
// answers. A tenth binding (another counter, a third CQ) is refused.
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "../common/harness.hpp"

using namespace weft;
using namespace weft::test;

namespace {

constexpr op_flags kinds[] = {flag::send, flag::recv, flag::read, flag::write, flag::remote_read, flag::remote_write};
constexpr int queues = 2 + 1 + 6;

struct full_binding {
  fabric fab;
  domain dom;
  address_vector av;
  completion_queue txcq, rxcq;
  event_queue eq;
  std::vector<counter> ctrs;
  endpoint ep;
  info inf;
};

void open_full(full_binding& w, const std::string& provider) {
  hints h;
  h.provider = provider;
  h.type = ep_type::rdm;
  h.caps = cap::msg;
  if (provider == "tcp") {
    h.source = true;
    h.node = "127.0.0.1";
  }
  auto infos = get_info(h);
  ASSERT_TRUE(infos) << infos.error().message;
  w.inf = infos->front();
  w.fab = std::move(*fabric::open(w.inf));
  w.dom = std::move(*w.fab.open_domain(w.inf));
  w.av = std::move(*w.dom.open_av(av_attr{}));
  w.txcq = std::move(*w.dom.open_cq(1024));
  w.rxcq = std::move(*w.dom.open_cq(1024));
  auto q = w.dom.open_eq();
  ASSERT_TRUE(q) << q.error().message;
  w.eq = std::move(*q);
  auto e = w.dom.open_endpoint(w.inf);
  ASSERT_TRUE(e) << e.error().message;
  w.ep = std::move(*e);
  ASSERT_TRUE(w.ep.bind(w.av));
  ASSERT_TRUE(w.ep.bind(w.txcq, flag::transmit));
  ASSERT_TRUE(w.ep.bind(w.rxcq, flag::receive));
  ASSERT_TRUE(w.ep.bind(w.eq));
  for (op_flags k : kinds) {
    auto c = w.dom.open_counter();
    ASSERT_TRUE(c) << c.error().message;
    w.ctrs.push_back(std::move(*c));
    auto b = w.ep.bind(w.ctrs.back(), k);
    ASSERT_TRUE(b) << b.error().message;
  }
  // That was the most: every kind has its counter, both directions their CQ.
  auto extra = w.dom.open_counter();
  ASSERT_TRUE(extra);
  for (op_flags k : kinds) {
    auto b = w.ep.bind(*extra, k);
    ASSERT_FALSE(b);
    EXPECT_EQ(b.error().code, errc::bad_state);
  }
  auto q3 = w.dom.open_cq(16);
  ASSERT_TRUE(q3);
  auto b3 = w.ep.bind(*q3, flag::transmit | flag::receive);
  ASSERT_FALSE(b3);
  EXPECT_EQ(b3.error().code, errc::bad_state);
  auto en = w.ep.enable();
  ASSERT_TRUE(en) << en.error().message;
}

// Entries on q (successes, errors), drained.
std::pair<std::uint64_t, std::uint64_t> drain(completion_queue& q) {
  std::uint64_t ok = 0, err = 0;
  for (int i = 0; i < 4096; ++i) {
    cq_entry e;
    const errc r = q.read(e);
    if (r == errc::ok) {
      ++ok;
    } else if (r == errc::error_available) {
      cq_err_entry ee;
      if (q.read_error(ee) == errc::ok) ++err;
    } else {
      break;
    }
  }
  return {ok, err};
}

class bind_every_queue : public ::testing::TestWithParam<variant> {};

}  // namespace

TEST_P(bind_every_queue, closing_an_endpoint_bound_to_nine_queues_while_each_is_waited_on) {
  apply(GetParam());
  node b = open_node(GetParam().provider, cap::msg);
  for (int which = 0; which < queues; ++which) {
    full_binding w;
    open_full(w, GetParam().provider);
    if (HasFatalFailure()) return;
    auto wname = w.ep.name();
    ASSERT_TRUE(wname);
    auto b2w = b.av.insert(*wname);
    ASSERT_TRUE(b2w) << b2w.error().message;
    auto wb = w.av.insert(*b.ep.name());
    ASSERT_TRUE(wb) << wb.error().message;
    // Traffic under way: receives b's messages fill, and one send to b.
    char in[4][64];
    for (auto& r : in) ASSERT_EQ(w.ep.recv(r, sizeof r), errc::ok);
    ASSERT_EQ(post([&] { return w.ep.send("to b", 4, *wb); }, {&b}), errc::ok);
    for (int i = 0; i < 4; ++i) ASSERT_EQ(post([&] { return b.ep.send("to w", 4, *b2w); }, {&b}), errc::ok);

    std::atomic<bool> stop{false}, started{false};
    std::atomic<int> bad{0}, bad_code{0};
    std::thread waiter([&] {
      started = true;
      for (int i = 0; i < 100'000 && !stop.load(); ++i) {
        errc r;
        if (which == 0) {
          cq_entry e;
          r = w.txcq.wait(e, 1);
        } else if (which == 1) {
          cq_entry e;
          r = w.rxcq.wait(e, 1);
        } else if (which == 2) {
          eq_event ev;
          r = w.eq.wait(ev, 1);
        } else {
          r = w.ctrs[static_cast<std::size_t>(which - 3)].wait(1'000'000, 1);
        }
        if (r != errc::timed_out && r != errc::ok && r != errc::again && r != errc::error_available) {
          bad.fetch_add(1);
          bad_code = static_cast<int>(r);
        }
      }
    });
    const auto start_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!started.load() && std::chrono::steady_clock::now() < start_by) std::this_thread::yield();
    for (int i = 0; i < which * 20; ++i) {
      (void)b.cq.progress();
      std::this_thread::yield();
    }
    w.ep.close();
    stop = true;
    waiter.join();
    EXPECT_EQ(bad.load(), 0) << "queue " << which << ": a wait returned " << to_string(static_cast<errc>(bad_code.load()));
    // Every queue still answers, with no source left.
    eq_event ev;
    EXPECT_EQ(w.eq.read(ev), errc::again);
    for (auto& c : w.ctrs) {
      const errc r = c.wait(1'000'000, 0);
      EXPECT_TRUE(r == errc::timed_out || r == errc::error_available) << to_string(r);
    }
    for (auto* q : {&w.txcq, &w.rxcq}) {
      cq_entry e;
      const errc r = q->wait(e, 0);
      EXPECT_TRUE(r == errc::timed_out || r == errc::ok || r == errc::error_available) << to_string(r);
    }
    (void)b.av.remove(*b2w);
    drain(b.cq);
  }
}

INSTANTIATE_TEST_SUITE_P(variants, bind_every_queue, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

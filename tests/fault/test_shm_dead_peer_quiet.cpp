// shm liveness after a peer is reported dead: a dead peer that stays in the
// address vector is neither probed nor counted as owed work any more, so the
// 20 ms schedule stops asking the endpoint to drain its control ring for it
// (peer_watch::probe() answers "nothing to drain") and the failure is
// handled and reported once. It is forgotten when its AV entry is removed.
//
// The watch is driven directly, with the times it is given (no clock, no
// sleep): a real domain and AV, a real peer endpoint that closes.
#include <optional>

#include "common/harness.hpp"
#include "prov/shm/liveness.hpp"
#include "prov/shm/region.hpp"

using namespace weft;
using namespace weft::test;
namespace shm = weft::prov::shm;

namespace {

// The endpoint the watch names in its reports: only its identity is used.
class quiet_endpoint final : public spi::endpoint {
 public:
  errc send(const msg_desc&, std::uint64_t) noexcept override { return errc::not_supported; }
  errc recv(const msg_desc&, std::uint64_t) noexcept override { return errc::not_supported; }
  errc cancel(void*) noexcept override { return errc::not_found; }
  result<void> bind_cq(std::shared_ptr<spi::cq>, std::uint64_t) override { return {}; }
  result<void> bind_av(std::shared_ptr<spi::av>) override { return {}; }
  result<void> enable() override { return {}; }
  [[nodiscard]] address name() const override { return address{}; }
};

struct counting_sink final : shm::peer_failure_sink {
  int failed = 0;
  std::uint64_t last_key = 0;
  void fail_peer(std::uint64_t key, const shm::peer*, const char*, const char*) noexcept override {
    ++failed;
    last_key = key;
  }
};

}  // namespace

TEST(shm_dead_peer_quiet, a_reported_dead_peer_in_the_av_is_not_drained_for_every_tick) {
  auto cfg = shm::load_config();
  ASSERT_TRUE(cfg) << cfg.error().message;
  auto dom = std::make_shared<shm::domain_impl>(*cfg);
  auto av = std::make_shared<shm::av_impl>(dom, av_attr{});
  quiet_endpoint ep;
  counting_sink sink;
  shm::peer_watch watch(*dom, sink, ep);
  watch.bind(nullptr, nullptr, av.get());  // no CQ, no EQ: a peer that closed is reported as handled

  std::optional<node> other(open_node("shm"));
  auto a = av->insert(*other->ep.name());
  ASSERT_TRUE(a) << a.error().message;
  const std::uint64_t key = (*av->at(*a))->key;

  std::uint64_t now = shm::liveness_period_ns;
  auto tick = [&] {
    now += shm::liveness_period_ns;
    const bool drain = watch.probe(now, 0);
    watch.settle(now, 0, 0);  // our ring: every message consumed
    return drain;
  };
  EXPECT_FALSE(tick()) << "a live peer needs no drain";

  other.reset();  // closes its endpoint
  EXPECT_TRUE(tick()) << "a peer found gone: the endpoint takes in its replies first";
  EXPECT_EQ(sink.failed, 1);
  EXPECT_EQ(sink.last_key, key);

  // Dead and still in the AV: 50 more periods (one second) cost no drain and no second failure.
  int drains = 0;
  for (int i = 0; i < 50; ++i) drains += tick();
  EXPECT_EQ(drains, 0) << "ticks that drained the control ring for a peer already reported dead";
  EXPECT_EQ(sink.failed, 1);

  // Its AV entry removed: forgotten, and nothing is reported again.
  ASSERT_TRUE(av->remove(*a));
  for (int i = 0; i < 5; ++i) drains += tick();
  EXPECT_EQ(drains, 0);
  EXPECT_EQ(sink.failed, 1);
  EXPECT_EQ(watch.fate_of(key, 0), shm::peer_watch::fate::dying)
      << "after its AV entry went, the watch forgot it (a new look starts)";
}

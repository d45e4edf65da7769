// Local memory descriptors of atomics (atomic_desc::desc, compare_desc,
// result_desc), as send and RMA have them: every atomic form carries the
// descriptors it is given to the provider unchanged (none when not given),
// an initialisation that names none leaves them none, and on the providers that
// ignore them (shm, tcp) atomics with descriptors give the same results.
#include <algorithm>
#include <cstring>

#include "../common/rma_pair.hpp"
#include "weft/spi/provider.hpp"

using namespace weft;
using namespace weft::test;

namespace {

// An endpoint that records the atomic it is given.
class recording_endpoint final : public spi::endpoint {
 public:
  result<void> bind_cq(std::shared_ptr<spi::cq>, std::uint64_t) override { return {}; }
  result<void> bind_av(std::shared_ptr<spi::av>) override { return {}; }
  result<void> enable() override { return {}; }
  [[nodiscard]] address name() const override { return {}; }
  errc send(const msg_desc&, std::uint64_t) noexcept override { return errc::not_supported; }
  errc recv(const msg_desc&, std::uint64_t) noexcept override { return errc::not_supported; }
  errc cancel(void*) noexcept override { return errc::not_found; }
  errc atomic(const atomic_desc& d) noexcept override {
    last = d;
    ++calls;
    return errc::ok;
  }
  atomic_desc last{};
  int calls = 0;
};

mr_desc fake(std::uintptr_t v) { return static_cast<mr_desc>(v); }

}  // namespace

TEST(atomic_desc, every_form_carries_its_descriptors_to_the_provider) {
  auto rec = std::make_shared<recording_endpoint>();
  endpoint ep(rec, nullptr);
  std::uint64_t operand = 1, compare = 2, result = 0;

  ASSERT_EQ(ep.atomic(atomic_op::sum, atomic_type::u64, &operand, 1, 0, 0, 7, nullptr, fake(0x10)), errc::ok);
  EXPECT_EQ(rec->last.desc, fake(0x10));
  EXPECT_EQ(rec->last.compare_desc, mr_desc::none);
  EXPECT_EQ(rec->last.result_desc, mr_desc::none);

  ASSERT_EQ(ep.fetch_atomic(atomic_op::sum, atomic_type::u64, &operand, &result, 1, 0, 0, 7, nullptr, fake(0x20),
                            fake(0x30)),
            errc::ok);
  EXPECT_EQ(rec->last.desc, fake(0x20));
  EXPECT_EQ(rec->last.compare_desc, mr_desc::none);
  EXPECT_EQ(rec->last.result_desc, fake(0x30));

  ASSERT_EQ(ep.compare_atomic(atomic_type::u64, &operand, &compare, &result, 1, 0, 0, 7, nullptr, fake(0x40),
                              fake(0x50), fake(0x60)),
            errc::ok);
  EXPECT_EQ(rec->last.op, atomic_op::cswap);
  EXPECT_EQ(rec->last.desc, fake(0x40));
  EXPECT_EQ(rec->last.compare_desc, fake(0x50));
  EXPECT_EQ(rec->last.result_desc, fake(0x60));

  // the general form passes the description as it is
  atomic_desc d{.operand = &operand, .result = &result, .count = 1, .addr = 0, .offset = 8, .key = 7,
                .op = atomic_op::sum, .type = atomic_type::u64};
  EXPECT_EQ(d.desc, mr_desc::none) << "an initialisation that names no descriptors leaves them none";
  EXPECT_EQ(d.compare_desc, mr_desc::none);
  EXPECT_EQ(d.result_desc, mr_desc::none);
  d.desc = fake(0x70);
  d.result_desc = fake(0x80);
  ASSERT_EQ(ep.atomicmsg(d), errc::ok);
  EXPECT_EQ(rec->last.desc, fake(0x70));
  EXPECT_EQ(rec->last.result_desc, fake(0x80));
  EXPECT_EQ(rec->last.offset, 8u);

  // without descriptors: none
  ASSERT_EQ(ep.atomic(atomic_op::sum, atomic_type::u64, &operand, 1, 0, 0, 7), errc::ok);
  EXPECT_EQ(rec->last.desc, mr_desc::none);
  EXPECT_EQ(rec->calls, 5);
  // a description the core refuses never reaches the provider, descriptors or not
  atomic_desc bad = d;
  bad.count = 0;
  EXPECT_EQ(ep.atomicmsg(bad), errc::invalid_argument);
  EXPECT_EQ(rec->calls, 5);
}

// The forms build the description field by field (designated initialisers,
// docs/abi.md): each field lands where the provider reads it, and the
// reserved bytes are zero.
TEST(atomic_desc, every_form_fills_each_field_and_zeroes_the_reserved_bytes) {
  auto rec = std::make_shared<recording_endpoint>();
  endpoint ep(rec, nullptr);
  std::uint32_t operand[2] = {1, 2}, compare[2] = {3, 4}, result[2] = {};
  int ctx = 0;
  auto reserved_zero = [&] {
    return std::all_of(std::begin(rec->last.reserved), std::end(rec->last.reserved),
                       [](std::uint8_t b) { return b == 0; });
  };
  auto same_target = [&] {
    EXPECT_EQ(rec->last.count, 2u);
    EXPECT_EQ(rec->last.addr, 5u);
    EXPECT_EQ(rec->last.offset, 24u);
    EXPECT_EQ(rec->last.key, 9u);
    EXPECT_EQ(rec->last.context, &ctx);
    EXPECT_EQ(rec->last.type, atomic_type::u32);
    EXPECT_EQ(rec->last.operand, operand);
    EXPECT_TRUE(reserved_zero());
  };

  ASSERT_EQ(ep.atomic(atomic_op::bxor, atomic_type::u32, operand, 2, 5, 24, 9, &ctx), errc::ok);
  EXPECT_EQ(rec->last.op, atomic_op::bxor);
  EXPECT_EQ(rec->last.compare, nullptr);
  EXPECT_EQ(rec->last.result, nullptr);
  same_target();

  ASSERT_EQ(ep.fetch_atomic(atomic_op::max, atomic_type::u32, operand, result, 2, 5, 24, 9, &ctx), errc::ok);
  EXPECT_EQ(rec->last.op, atomic_op::max);
  EXPECT_EQ(rec->last.compare, nullptr);
  EXPECT_EQ(rec->last.result, result);
  same_target();

  ASSERT_EQ(ep.compare_atomic(atomic_type::u32, operand, compare, result, 2, 5, 24, 9, &ctx), errc::ok);
  EXPECT_EQ(rec->last.op, atomic_op::cswap);
  EXPECT_EQ(rec->last.compare, compare);
  EXPECT_EQ(rec->last.result, result);
  same_target();
  EXPECT_EQ(rec->calls, 3);
}

class atomic_desc_real : public rma_pair {
 protected:
  void SetUp() override { open_pair(64); }  // skips the variants without RMA
};

// On shm and tcp (which ignore local descriptors, as for RMA), atomics with
// the descriptors of registered local buffers give the same results.
TEST_P(atomic_desc_real, atomics_with_descriptors_give_the_same_results) {
  std::fill(target.begin(), target.end(), 0);
  std::uint64_t local[3] = {5, 0, 0};  // operand, compare, result
  auto lm = a.dom.register_memory(local, sizeof local, access::read | access::write);
  const mr_desc ld = lm ? lm->desc() : mr_desc::none;  // shm's segmented mode registers nothing
  ASSERT_EQ(a.ep.atomic(atomic_op::sum, atomic_type::u64, &local[0], 1, a2b, 0, *mr.key(), nullptr, ld), errc::ok);
  ASSERT_TRUE(done().ok);
  ASSERT_EQ(a.ep.fetch_atomic(atomic_op::sum, atomic_type::u64, &local[0], &local[2], 1, a2b, 0, *mr.key(), nullptr, ld,
                              ld),
            errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(local[2], 5u) << "the value before the second sum";
  local[0] = 42;
  local[1] = 10;
  ASSERT_EQ(a.ep.compare_atomic(atomic_type::u64, &local[0], &local[1], &local[2], 1, a2b, 0, *mr.key(), nullptr, ld,
                                ld, ld),
            errc::ok);
  ASSERT_TRUE(done().ok);
  EXPECT_EQ(local[2], 10u);
  std::uint64_t now = 0;
  std::memcpy(&now, target.data(), sizeof now);
  EXPECT_EQ(now, 42u) << "10 matched the compare value: swapped";
}

INSTANTIATE_TEST_SUITE_P(providers, atomic_desc_real, ::testing::ValuesIn(all_variants()),
                         [](const auto& i) { return i.param.name; });

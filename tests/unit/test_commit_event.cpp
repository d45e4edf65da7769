// What a commit handler receives (commit_event, docs/abi.md): the registry
// fills every field, says whether the region is persistent in flags
// (commit_flag::persistent) and leaves the reserved bytes zero, for a write
// with commit_complete and for a SAVE, on a plain and on a persistent region.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "weft/pmem.hpp"
#include "weft/spi/mr.hpp"

using namespace weft;

namespace {
bool reserved_zero(const commit_event& ev) {
  return std::all_of(std::begin(ev.reserved), std::end(ev.reserved), [](std::uint8_t b) { return b == 0; });
}
}  // namespace

TEST(commit_event, the_registry_fills_every_field_and_leaves_the_reserved_bytes_zero) {
  auto reg = std::make_shared<spi::mr_registry>();
  std::vector<commit_event> seen;
  reg->set_commit_handler([&](const commit_event& ev) {
    seen.push_back(ev);
    return errc::ok;
  });

  std::vector<std::byte> plain(8192);
  auto m = reg->register_memory(plain.data(), plain.size(), access::remote_write);
  ASSERT_TRUE(m) << m.error().message;
  const std::uint64_t key = (*m)->key();
  ASSERT_EQ(reg->commit(commit_event::kind::write, key, 100, 200, flag::commit_complete.bits()), errc::ok);
  ASSERT_EQ(reg->commit(commit_event::kind::save, key, 0, 0, flag::delivery_complete.bits()), errc::ok);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].what, commit_event::kind::write);
  EXPECT_EQ(seen[0].key, key);
  EXPECT_EQ(seen[0].addr, plain.data() + 100);
  EXPECT_EQ(seen[0].offset, 100u);
  EXPECT_EQ(seen[0].len, 200u);
  EXPECT_EQ(seen[0].level, flag::commit_complete);
  EXPECT_EQ(seen[0].flags, commit_flags{});
  EXPECT_FALSE(seen[0].persistent());
  EXPECT_TRUE(reserved_zero(seen[0]));
  EXPECT_EQ(seen[1].what, commit_event::kind::save);
  EXPECT_EQ(seen[1].addr, plain.data());
  EXPECT_EQ(seen[1].len, plain.size()) << "SAVE covers the whole region";
  EXPECT_EQ(seen[1].level, flag::delivery_complete);
  EXPECT_FALSE(seen[1].persistent());
  EXPECT_TRUE(reserved_zero(seen[1]));

  char tmpl[] = "/tmp/weft-commit-event-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  {
    auto f = persistent_file::open(dir + "/pm", page, true);
    ASSERT_TRUE(f) << f.error().message;
    auto pm = reg->register_memory(f->data(), page, access::remote_write | access::persistent);
    ASSERT_TRUE(pm) << pm.error().message;
    ASSERT_EQ(reg->commit(commit_event::kind::write, (*pm)->key(), 8, 16, flag::commit_complete.bits()), errc::ok);
    ASSERT_EQ(seen.size(), 3u);
    EXPECT_EQ(seen[2].flags, commit_flag::persistent);
    EXPECT_TRUE(seen[2].persistent());
    EXPECT_EQ(seen[2].addr, f->data() + 8);
    EXPECT_EQ(seen[2].len, 16u);
    EXPECT_TRUE(reserved_zero(seen[2]));
    pm->reset();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// The flag sets of different kinds do not mix, the small one included.
template <class A, class B>
concept can_or = requires(A a, B b) { a | b; };
template <class A, class B>
concept can_compare = requires(A a, B b) { a == b; };
static_assert(can_or<commit_flags, commit_flags> && can_or<op_flags, op_flags>);
static_assert(!can_or<commit_flags, op_flags> && !can_or<op_flags, commit_flags> &&
              !can_or<commit_flags, access_flags>);
static_assert(!can_compare<commit_flags, op_flags> && !can_compare<access_flags, commit_flags>);
static_assert((commit_flag::persistent | commit_flags{}).bits() == 1 && (~commit_flags{}).bits() == 0xff);

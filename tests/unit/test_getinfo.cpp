#include <gtest/gtest.h>
#include <stdlib.h>

#include "core/getinfo.hpp"
#include "weft/info.hpp"

using namespace weft;

namespace {
info entry(const char* prov, ep_type t, caps_t c, std::size_t inject) {
  info i;
  i.fabric.prov_name = prov;
  i.ep.type = t;
  i.caps = c;
  i.tx.inject_size = inject;
  i.tx.size = 64;
  i.rx.size = 64;
  return i;
}
}  // namespace

TEST(getinfo, filters_keep_order) {
  std::vector<info> v{entry("a", ep_type::rdm, cap::msg | cap::tagged, 64),
                      entry("b", ep_type::msg, cap::msg, 128), entry("c", ep_type::rdm, cap::msg, 256)};
  hints h;
  auto all = core::filter_static(v, h);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 3u);
  h.type = ep_type::rdm;
  auto rdm = core::filter_static(v, h);
  ASSERT_TRUE(rdm);
  ASSERT_EQ(rdm->size(), 2u);
  EXPECT_EQ((*rdm)[0].fabric.prov_name, "a");
  EXPECT_EQ((*rdm)[1].fabric.prov_name, "c");
  h.caps = cap::tagged;
  auto tg = core::filter_static(v, h);
  ASSERT_TRUE(tg);
  ASSERT_EQ(tg->size(), 1u);
  EXPECT_EQ((*tg)[0].fabric.prov_name, "a");
  h.caps = 0;
  h.min_inject_size = 200;
  auto inj = core::filter_static(v, h);
  ASSERT_TRUE(inj);
  ASSERT_EQ(inj->size(), 1u);
  EXPECT_EQ((*inj)[0].fabric.prov_name, "c");
}

TEST(getinfo, error_names_first_unsatisfiable_hint) {
  std::vector<info> v{entry("a", ep_type::rdm, cap::msg, 64)};
  hints h;
  h.type = ep_type::msg;
  h.caps = cap::rma;
  auto r = core::filter_static(v, h);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("endpoint type 'msg'"), std::string::npos) << r.error().message;
  h.type = ep_type::rdm;
  r = core::filter_static(v, h);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("rma"), std::string::npos) << r.error().message;
  h.caps = cap::msg;
  h.min_inject_size = 1000;
  r = core::filter_static(v, h);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("inject size"), std::string::npos) << r.error().message;
}

TEST(getinfo, caps_strings_round_trip) {
  auto c = caps_from_string("msg,tagged,directed_recv");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, cap::msg | cap::tagged | cap::directed_recv);
  EXPECT_EQ(caps_to_string(*c), "msg,tagged,directed_recv");
  auto bad = caps_from_string("msg,warp_drive");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("warp_drive"), std::string::npos);
}

TEST(getinfo, service_is_integer_or_string) {
  hints h;
  h.port = 7471;
  EXPECT_EQ(core::resolve_port(h).value(), 7471);
  h.port.reset();
  h.service = "8080";
  EXPECT_EQ(core::resolve_port(h).value(), 8080);
  h.service = "99999";
  EXPECT_FALSE(core::resolve_port(h));
  h.service = "no-such-service-name";
  EXPECT_FALSE(core::resolve_port(h));
}

TEST(getinfo, provider_list_env) {
  auto v = core::parse_provider_list("shm,tcp");
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0], "shm");
  EXPECT_EQ(v[1], "tcp");
  EXPECT_TRUE(core::parse_provider_list(nullptr).empty());
}

TEST(getinfo, real_providers_and_restriction) {
  hints h;
  h.type = ep_type::rdm;
  auto r = get_info(h);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->front().fabric.prov_name, "shm");
  h.provider = "nonesuch";
  auto bad = get_info(h);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("nonesuch"), std::string::npos);
  h.provider.clear();
  ::setenv("WEFT_PROVIDER", "tcp-only-for-this-test", 1);
  auto restricted = get_info(h);
  ::unsetenv("WEFT_PROVIDER");
  ASSERT_FALSE(restricted);
  EXPECT_NE(restricted.error().message.find("WEFT_PROVIDER"), std::string::npos) << restricted.error().message;
  h.node = "localhost";
  h.port = 1;  // no shm endpoint listens there (tcp cannot know before connecting)
  h.provider = "shm";
  auto none = get_info(h);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("port 1"), std::string::npos) << none.error().message;
}

TEST(getinfo, shm_rejects_bad_slot_sizes_clearly) {
  for (const char* bad : {"128", "300", "1000", "99999999"}) {
    ::setenv("WEFT_SHM_SLOT_SIZE", bad, 1);
    hints h;
    h.provider = "shm";
    auto r = get_info(h);
    EXPECT_FALSE(r) << "slot size " << bad;
    if (!r) {
      EXPECT_NE(r.error().message.find("WEFT_SHM_SLOT_SIZE"), std::string::npos) << r.error().message;
    }
  }
  ::setenv("WEFT_SHM_SLOT_SIZE", "320", 1);
  hints h;
  h.provider = "shm";
  EXPECT_TRUE(get_info(h)) << "320 holds a header and 16 iov entries";
  ::unsetenv("WEFT_SHM_SLOT_SIZE");
}

// The public API's surface: this translation unit includes weft.hpp only, so
// the provider objects behind the handles must be incomplete types here.
#include <gtest/gtest.h>

#include "weft/weft.hpp"

namespace {

template <class T>
concept complete_type = requires { sizeof(T); };

static_assert(!complete_type<weft::spi::endpoint>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::cq>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::cntr>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::domain>, "weft.hpp must not define the provider interface");
static_assert(!complete_type<weft::spi::mr>, "weft.hpp must not define the provider interface");
// ... while what an application uses is public
static_assert(complete_type<weft::av_attr> && complete_type<weft::commit_event> &&
              complete_type<weft::mr_cache_stats> && complete_type<weft::eq_event>);

TEST(api_surface, closed_handles_refuse_the_data_path) {
  weft::endpoint ep;
  weft::completion_queue cq;
  weft::counter c;
  char b[8] = {};
  EXPECT_EQ(ep.send(b, sizeof b, 0), weft::errc::bad_state);
  EXPECT_EQ(ep.write(b, sizeof b, 0, 0, 1), weft::errc::bad_state);
  weft::cq_entry e;
  EXPECT_EQ(cq.read(e), weft::errc::bad_state);
  EXPECT_EQ(c.wait(1, 0), weft::errc::bad_state);
}

}  // namespace

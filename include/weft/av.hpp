#pragma once
// Address vector attributes (cf. fi_av(3)). The address vector itself is
// weft::address_vector (weft.hpp).
#include <cstddef>

namespace weft {

struct av_attr {
  std::size_t count = 64;     // expected entries (a hint)
  bool auto_insert = false;   // unknown senders are inserted on first receive
};

}  // namespace weft

#include "weft/spi/provider.hpp"

namespace weft::prov::shm {
spi::provider make_provider();
}
namespace weft::prov::tcp {
spi::provider make_provider();
}

namespace weft::spi {

const std::vector<provider>& providers() {
  static const std::vector<provider> all = [] {
    std::vector<provider> v;
    v.push_back(prov::shm::make_provider());  // local peers: fastest first
    v.push_back(prov::tcp::make_provider());
    return v;
  }();
  return all;
}

}  // namespace weft::spi

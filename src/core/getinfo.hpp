#pragma once
// Filtering and ordering common to all providers (unit-tested on its own).
#include <string>
#include <vector>

#include "weft/info.hpp"

namespace weft::core {

// Provider names allowed by WEFT_PROVIDER-style list ("shm,tcp"); empty = all.
[[nodiscard]] std::vector<std::string> parse_provider_list(const char* env);

// Keeps the entries that satisfy the type, capability and size hints, in
// order. On an empty result the error names the first unsatisfiable hint.
[[nodiscard]] result<std::vector<info>> filter_static(const std::vector<info>& entries, const hints& h);

// Resolves hints.service / hints.port to a port number (0 when absent).
[[nodiscard]] result<std::uint16_t> resolve_port(const hints& h);

}  // namespace weft::core

#include <netdb.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "core/getinfo.hpp"
#include "weft/info.hpp"
#include "weft/spi/provider.hpp"

namespace weft {

namespace {
struct cap_name {
  caps_t bit;
  const char* name;
};
constexpr cap_name cap_names[] = {
    {cap::msg, "msg"},         {cap::tagged, "tagged"},
    {cap::rma, "rma"},         {cap::atomic, "atomic"},
    {cap::source, "source"},   {cap::directed_recv, "directed_recv"},
    {cap::remote_cq_data, "remote_cq_data"}, {cap::local_comm, "local_comm"},
    {cap::remote_comm, "remote_comm"},       {cap::pmem, "pmem"},
};
}  // namespace

std::string caps_to_string(caps_t c) {
  std::string out;
  for (auto& n : cap_names)
    if (c & n.bit) {
      if (!out.empty()) out += ',';
      out += n.name;
    }
  return out;
}

result<caps_t> caps_from_string(const std::string& s) {
  caps_t c = 0;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok.empty()) continue;
    auto it = std::find_if(std::begin(cap_names), std::end(cap_names),
                           [&](const cap_name& n) { return tok == n.name; });
    if (it == std::end(cap_names)) {
      std::string known;
      for (auto& n : cap_names) known += std::string(known.empty() ? "" : ", ") + n.name;
      return make_error(errc::invalid_argument, "unknown capability '" + tok + "' (known: " + known + ")");
    }
    c |= it->bit;
  }
  return c;
}

const char* to_string(ep_type t) noexcept {
  switch (t) {
    case ep_type::msg: return "msg";
    case ep_type::rdm: return "rdm";
    default: return "unspec";
  }
}

namespace core {

std::vector<std::string> parse_provider_list(const char* env) {
  std::vector<std::string> out;
  if (!env) return out;
  std::stringstream ss(env);
  std::string tok;
  while (std::getline(ss, tok, ','))
    if (!tok.empty()) out.push_back(tok);
  return out;
}

result<std::uint16_t> resolve_port(const hints& h) {
  if (h.port) return *h.port;
  if (h.service.empty()) return std::uint16_t{0};
  char* end = nullptr;
  unsigned long v = std::strtoul(h.service.c_str(), &end, 10);
  if (end && *end == '\0') {
    if (v > 65535) return make_error(errc::invalid_argument, "service '" + h.service + "' is not a port (0-65535)");
    return static_cast<std::uint16_t>(v);
  }
  if (servent* s = ::getservbyname(h.service.c_str(), "tcp")) return static_cast<std::uint16_t>(ntohs(s->s_port));
  return make_error(errc::not_found, "service '" + h.service +
                                         "' is neither a port number nor a name in /etc/services");
}

result<std::vector<info>> filter_static(const std::vector<info>& entries, const hints& h) {
  std::vector<info> cur = entries;
  auto keep = [&](auto pred) {
    std::vector<info> next;
    for (auto& i : cur)
      if (pred(i)) next.push_back(i);
    return next;
  };
  auto provs = [&](const std::vector<info>& v) {
    std::string s;
    for (auto& i : v)
      if (s.find(i.fabric.prov_name) == std::string::npos) s += (s.empty() ? "" : ",") + i.fabric.prov_name;
    return s;
  };
  if (h.type != ep_type::unspec) {
    auto next = keep([&](const info& i) { return i.ep.type == h.type; });
    if (next.empty())
      return make_error(errc::not_found, std::string("no provider offers endpoint type '") + to_string(h.type) +
                                             "' (providers considered: " + provs(cur) + ")");
    cur = std::move(next);
  }
  if (h.caps) {
    auto next = keep([&](const info& i) { return (i.caps & h.caps) == h.caps; });
    if (next.empty()) {
      caps_t offered = 0;
      for (auto& i : cur) offered |= i.caps;
      caps_t missing = h.caps & ~offered;
      return make_error(errc::not_found, "no provider offers capabilities '" + caps_to_string(h.caps) + "' (" +
                                             provs(cur) + (missing ? " lack: " + caps_to_string(missing)
                                                                   : ": no single endpoint type has them all") +
                                             ")");
    }
    cur = std::move(next);
  }
  if (h.min_inject_size) {
    auto next = keep([&](const info& i) { return i.tx.inject_size >= h.min_inject_size; });
    if (next.empty())
      return make_error(errc::not_found, "no provider offers an inject size of " + std::to_string(h.min_inject_size) +
                                             " bytes (" + provs(cur) + ")");
    cur = std::move(next);
  }
  if (h.min_tx_size) {
    auto next = keep([&](const info& i) { return i.tx.size >= h.min_tx_size; });
    if (next.empty())
      return make_error(errc::not_found, "no provider offers " + std::to_string(h.min_tx_size) +
                                             " transmit operations in flight (" + provs(cur) + ")");
    cur = std::move(next);
  }
  if (h.min_rx_size) {
    auto next = keep([&](const info& i) { return i.rx.size >= h.min_rx_size; });
    if (next.empty())
      return make_error(errc::not_found, "no provider offers " + std::to_string(h.min_rx_size) +
                                             " posted receives (" + provs(cur) + ")");
    cur = std::move(next);
  }
  return cur;
}

}  // namespace core

result<std::vector<info>> get_info(const hints& h) {
  const auto& all = spi::providers();
  auto allowed = core::parse_provider_list(std::getenv("WEFT_PROVIDER"));
  std::vector<const spi::provider*> provs;
  std::string names;
  for (auto& p : all) {
    names += (names.empty() ? "" : ", ") + p.name;
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), p.name) == allowed.end()) continue;
    if (!h.provider.empty() && h.provider != p.name) continue;
    provs.push_back(&p);
  }
  if (provs.empty()) {
    std::string why = h.provider.empty() ? "" : "no provider named '" + h.provider + "'";
    if (!allowed.empty()) why += std::string(why.empty() ? "" : " ") + "(WEFT_PROVIDER restricts to " + std::getenv("WEFT_PROVIDER") + ")";
    return make_error(errc::not_found, why + "; providers built in: " + names);
  }
  auto port = core::resolve_port(h);
  if (!port) return std::unexpected(port.error());
  hints resolved = h;  // providers see the service as an integer port
  if (*port || h.port) resolved.port = *port;
  resolved.service.clear();

  // Stage 1: what providers offer regardless of node/service.
  hints stat = h;
  stat.node.clear();
  stat.service.clear();
  stat.port.reset();
  stat.source = false;
  std::vector<info> static_entries;
  std::string prov_errors;
  for (auto* p : provs) {
    auto r = p->get_info(stat);
    if (r) static_entries.insert(static_entries.end(), r->begin(), r->end());
    else prov_errors += (prov_errors.empty() ? "" : "; ") + p->name + ": " + r.error().message;
  }
  if (static_entries.empty())  // every provider refused (e.g. a bad environment setting)
    return make_error(errc::invalid_argument, prov_errors);
  auto filtered = core::filter_static(static_entries, h);
  if (!filtered) return filtered;

  // Stage 2: node/service resolution, by the providers that survived.
  std::vector<info> out;
  std::string node_errors;
  for (auto* p : provs) {
    bool survived = std::any_of(filtered->begin(), filtered->end(),
                                [&](const info& i) { return i.fabric.prov_name == p->name; });
    if (!survived) continue;
    auto r = p->get_info(resolved);
    if (!r) {
      node_errors += (node_errors.empty() ? "" : "; ") + p->name + ": " + r.error().message;
      continue;
    }
    auto f = core::filter_static(*r, h);
    if (f) out.insert(out.end(), f->begin(), f->end());
  }
  if (out.empty())
    return make_error(errc::not_found, "node '" + h.node + "' service '" +
                                           (h.port ? std::to_string(*h.port) : h.service) +
                                           "' could not be satisfied: " + node_errors);
  return out;
}

}  // namespace weft

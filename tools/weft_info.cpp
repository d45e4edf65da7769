// weft_info: the providers and endpoint types weft offers, with attributes.
#include <cstdio>
#include <cstring>
#include <string>

#include "weft/pmem.hpp"
#include "weft/weft.hpp"

namespace {
void usage() {
  std::puts(
      "usage: weft_info [options]\n"
      "  -p, --provider NAME   only this provider (shm, ...)\n"
      "  -e, --ep-type TYPE    only this endpoint type (rdm, msg)\n"
      "  -c, --caps LIST       only entries with these capabilities (msg,tagged,source,...)\n"
      "  -n, --node HOST       resolve a node (with --port: find a listening endpoint)\n"
      "  -P, --port N          integer service port\n"
      "      --json            one JSON object instead of text\n"
      "  -h, --help            this text\n"
      "Environment: WEFT_PROVIDER=shm,tcp restricts the providers considered.\n"
      "The last line (JSON: \"pmem\") says how persistent regions are flushed here (libpmem2,\n"
      "CPU cache write-back instructions or msync), detected at run time.");
}
std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}
}  // namespace

int main(int argc, char** argv) {
  weft::hints h;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "weft_info: %s needs a value (see --help)\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else if (a == "-p" || a == "--provider") h.provider = next();
    else if (a == "-e" || a == "--ep-type") {
      std::string t = next();
      if (t == "rdm") h.type = weft::ep_type::rdm;
      else if (t == "msg") h.type = weft::ep_type::msg;
      else {
        std::fprintf(stderr, "weft_info: unknown endpoint type '%s' (rdm or msg)\n", t.c_str());
        return 2;
      }
    } else if (a == "-c" || a == "--caps") {
      auto c = weft::caps_from_string(next());
      if (!c) {
        std::fprintf(stderr, "weft_info: %s\n", c.error().message.c_str());
        return 2;
      }
      h.caps = *c;
    } else if (a == "-n" || a == "--node") h.node = next();
    else if (a == "-P" || a == "--port") {
      std::string v = next();
      char* end = nullptr;
      unsigned long p = std::strtoul(v.c_str(), &end, 10);
      if (v.empty() || *end || p > 65535) {
        std::fprintf(stderr, "weft_info: --port takes a number 0-65535, not '%s'\n", v.c_str());
        return 2;
      }
      h.port = static_cast<std::uint16_t>(p);
    }
    else if (a == "--json") json = true;
    else {
      std::fprintf(stderr, "weft_info: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  auto r = weft::get_info(h);
  if (!r) {
    if (json) std::printf("{\"error\": %s, \"entries\": []}\n", json_str(r.error().message).c_str());
    else std::fprintf(stderr, "weft_info: %s\n", r.error().message.c_str());
    return 1;
  }
  if (json) std::printf("{\"entries\": [");
  bool first = true;
  for (auto& i : *r) {
    std::string caps = weft::caps_to_string(i.caps);
    std::string dest = i.dest_addr ? weft::to_string(*i.dest_addr) : "";
    if (json) {
      std::printf(
          "%s\n  {\"provider\": %s, \"version\": %u, \"ep_type\": \"%s\", \"caps\": %s, \"addr_format\": %d,"
          " \"max_msg_size\": %zu, \"tx\": {\"size\": %zu, \"inject_size\": %zu, \"iov_limit\": %zu},"
          " \"rx\": {\"size\": %zu, \"iov_limit\": %zu, \"total_buffered_recv\": %zu},"
          " \"domain\": {\"threading\": \"domain\", \"progress\": \"%s\", \"cq_data_size\": %zu}%s%s}",
          first ? "" : ",", json_str(i.fabric.prov_name).c_str(), i.fabric.prov_version, weft::to_string(i.ep.type),
          json_str(caps).c_str(), static_cast<int>(i.format), i.ep.max_msg_size, i.tx.size, i.tx.inject_size,
          i.tx.iov_limit, i.rx.size, i.rx.iov_limit, i.rx.total_buffered_recv,
          i.domain.progress == weft::progress_mode::manual ? "manual" : "auto", i.domain.cq_data_size,
          dest.empty() ? "" : ", \"dest_addr\": ", dest.empty() ? "" : json_str(dest).c_str());
    } else {
      std::printf("provider: %s (version %u)\n", i.fabric.prov_name.c_str(), i.fabric.prov_version);
      std::printf("    ep_type: %s\n    caps: %s\n", weft::to_string(i.ep.type), caps.c_str());
      std::printf("    max_msg_size: %zu\n", i.ep.max_msg_size);
      std::printf("    tx: size %zu, inject_size %zu, iov_limit %zu\n", i.tx.size, i.tx.inject_size, i.tx.iov_limit);
      std::printf("    rx: size %zu, iov_limit %zu, total_buffered_recv %zu\n", i.rx.size, i.rx.iov_limit,
                  i.rx.total_buffered_recv);
      std::printf("    domain: threading domain, progress %s, cq_data_size %zu\n",
                  i.domain.progress == weft::progress_mode::manual ? "manual" : "auto", i.domain.cq_data_size);
      if (!dest.empty()) std::printf("    dest_addr: %s\n", dest.c_str());
    }
    first = false;
  }
  const std::string pmem = weft::describe_persist_support();
  if (json) std::printf("\n], \"pmem\": %s}\n", json_str(pmem).c_str());
  else std::printf("pmem: %s\n", pmem.c_str());
  return 0;
}

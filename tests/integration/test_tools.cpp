// Integration: the tools as a user runs them (separate processes).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

#ifndef WEFT_TOOLS_DIR
#error "WEFT_TOOLS_DIR must be defined"
#endif

namespace {

struct run_result {
  int status = -1;
  std::string out;
};

run_result run(const std::string& cmd) {
  run_result r;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string tool(const char* name) { return std::string(WEFT_TOOLS_DIR) + "/" + name; }

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST(tools, weft_info_lists_shm_and_filters) {
  auto r = run(tool("weft_info"));
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("provider: shm"), std::string::npos) << r.out;
  auto j = run(tool("weft_info") + " --json -p shm -e rdm -c msg,tagged");
  EXPECT_EQ(j.status, 0);
  EXPECT_NE(j.out.find("\"provider\": \"shm\""), std::string::npos) << j.out;
  EXPECT_NE(j.out.find("\"ep_type\": \"rdm\""), std::string::npos);
  auto none = run(tool("weft_info") + " -p shm -e msg");
  EXPECT_EQ(none.status, 1) << "shm has no msg endpoints: a clear failure";
  auto msg = run(tool("weft_info") + " -e msg --json");
  EXPECT_EQ(msg.status, 0);
  EXPECT_NE(msg.out.find("\"provider\": \"tcp\""), std::string::npos) << msg.out;
  auto all = run(tool("weft_info"));
  EXPECT_NE(all.out.find("provider: tcp"), std::string::npos) << all.out;
  // how persistent memory is flushed on this machine, detected at run time
  EXPECT_NE(all.out.find("pmem: "), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("msync"), std::string::npos) << all.out;
  EXPECT_NE(j.out.find("\"pmem\": \""), std::string::npos) << j.out;
  EXPECT_NE(all.out.find("caps: msg,tagged,rma,atomic"), std::string::npos) << "tcp offers RMA: " << all.out;
  auto help = run(tool("weft_info") + " --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("usage"), std::string::npos);
}

TEST(tools, weft_perf_spawn_verifies_data_and_prints_json) {
  auto r = run(tool("weft_perf") + " --spawn --json -q --verify --iters 200 -s 0:64 -s 4K -s 64K -s 1M");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out.find("{\"provider\": \"shm\", \"results\": ["), 0u) << r.out;
  EXPECT_EQ(count(r.out, "\"size\":"), 11u) << "0,1,2,...,64 (8) + 4K + 64K + 1M";
  EXPECT_EQ(count(r.out, "\"latency_us\": {\"median\":"), 11u);
  EXPECT_EQ(count(r.out, "\"bandwidth_MBps\":"), 11u);
  EXPECT_EQ(count(r.out, "\"msg_rate\":"), 11u);
}

TEST(tools, weft_perf_server_and_client_on_integer_port) {
  const std::string port = std::to_string(30000 + ::getpid() % 20000);
  pid_t srv = ::fork();
  if (srv == 0) {
    std::string bin = tool("weft_perf");
    ::execl(bin.c_str(), "weft_perf", "--server", "-q", "-P", port.c_str(), "--timeout", "20", nullptr);
    ::_exit(127);
  }
  auto c = run(tool("weft_perf") + " --client -q -n localhost -P " + port + " -s 64 -s 100000 --iters 100 --verify");
  int st = 0;
  for (int i = 0; i < 500 && ::waitpid(srv, &st, WNOHANG) == 0; ++i) ::usleep(10000);
  if (::waitpid(srv, &st, WNOHANG) == 0) {
    ::kill(srv, SIGKILL);
    ::waitpid(srv, &st, 0);
    ADD_FAILURE() << "server did not finish";
  }
  EXPECT_EQ(c.status, 0) << c.out;
  EXPECT_NE(c.out.find("100000"), std::string::npos) << c.out;
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(tools, weft_perf_client_without_server_fails_clearly) {
  auto r = run(tool("weft_perf") + " --client -q -P 1 --timeout 1 -s 64");
  EXPECT_EQ(r.status, 1);
}

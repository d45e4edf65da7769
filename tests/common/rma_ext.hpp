#pragma once
// The fixture of the RMA extension tests (tests/conformance/test_rma_ext*.cpp):
// an rma_pair with 64 KB registered at b, a temporary directory removed at
// the end of each test, and quiet(), which drives both sides for a while.
// One suite, rma_ext, across the files; test_rma_ext.cpp instantiates it.
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "rma_pair.hpp"

namespace weft::test {

// A fresh directory under /tmp (or /tmp itself when it cannot be made).
inline std::string temp_dir() {
  char tmpl[] = "/tmp/weft-rma-XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  return d ? d : "/tmp";
}

class rma_ext : public rma_pair {
 protected:
  void SetUp() override { open_pair(1 << 16); }
  void TearDown() override {
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
  // drives both sides for a while and says whether a has a completion
  bool quiet(int ms = 100) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      b.cq.progress();
      cq_entry e;
      errc r = a.cq.read(e);
      if (r != errc::again) return false;
    }
    return true;
  }
  std::string dir;
};

}  // namespace weft::test

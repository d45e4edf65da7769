// Counting this process's open descriptors (for tests that check nothing leaks).
#pragma once

#include <dirent.h>

namespace weft::test {

// Open descriptors of this process, not counting the one that reads them.
inline int count_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;
}

}  // namespace weft::test

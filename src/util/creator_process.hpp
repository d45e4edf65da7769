#pragma once
// The process that created an object owning shared or cross-process state
// (a shm region, an MR table, a socket's connection, a progress thread).
// After fork() the child holds copies of such objects; when it destroys them
// it may release only what is its own (its mapping, its descriptors, its
// memory) and must touch nothing the parent still uses (docs/design.md,
// "Threading"). Asked on the control path only (a getpid() system call).
#include <unistd.h>

namespace weft::util {

class creator_process {
 public:
  // True in the process that constructed this object, false in a forked child.
  [[nodiscard]] bool is_this_process() const noexcept { return ::getpid() == pid_; }

 private:
  pid_t pid_ = ::getpid();
};

}  // namespace weft::util

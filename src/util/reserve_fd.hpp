#pragma once
// A file descriptor kept in reserve (on /dev/null) for the one call that
// must still get a descriptor when the process has none left: tcp's
// listener takes a waiting connection with it to refuse it with a reason
// (EMFILE), shm reads a peer's /proc entry with it to prove it alive or dead.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

namespace weft::util {

class reserve_fd {
 public:
  reserve_fd() = default;
  reserve_fd(const reserve_fd&) = delete;
  reserve_fd& operator=(const reserve_fd&) = delete;
  ~reserve_fd() {
    if (fd_ >= 0) ::close(fd_);  // the last owner: no other thread can be here
  }

  // Opens the reserve if it is not open. false (errno set) if it cannot be now.
  bool keep() noexcept {
    std::lock_guard lk(mu_);
    return open_locked();
  }

  // Frees the reserve's descriptor, runs use() (which may take one
  // descriptor and must give it back before it returns), and opens the
  // reserve again; all under the reserve's mutex, so that threads using it
  // never close it twice, leak it, or both take it. A thread outside weft
  // may take the freed number first: use() then fails as it would have.
  // false (use() not run, errno EMFILE or ENFILE) when there is no reserve.
  template <class F>
  bool use(F&& f) noexcept {
    std::lock_guard lk(mu_);
    if (!open_locked()) return false;  // lost at an earlier use: tried again here
    ::close(fd_);
    fd_ = -1;
    f();
    const int err = errno;
    (void)open_locked();
    errno = err;
    return true;
  }

 private:
  bool open_locked() noexcept {
    if (fd_ < 0) fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd_ >= 0;
  }
  std::mutex mu_;
  int fd_ = -1;
};

}  // namespace weft::util

// Opening the monitor's userfaultfd: the system call with and without
// UFFD_USER_MODE_ONLY, else /dev/userfaultfd; the features it needs.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "util/uffd_monitor.hpp"

namespace weft::util {
namespace {

#ifdef UFFD_USER_MODE_ONLY
constexpr int k_user_mode_only = UFFD_USER_MODE_ONLY;
#else
constexpr int k_user_mode_only = 1;  // Linux 5.11
#endif
// UFFD_FEATURE_WP_ASYNC (Linux 6.7; older headers lack it): WP-only
// registration then accepts every memory type (regular file mappings too), and
// a write-protect fault would be resolved by the kernel itself.
constexpr std::uint64_t k_feature_wp_async = 1ull << 15;
constexpr std::uint64_t k_required = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE |
                                     UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_PAGEFAULT_FLAG_WP;
constexpr std::uint64_t k_optional = k_feature_wp_async;
// USERFAULTFD_IOC_NEW on /dev/userfaultfd (Linux 6.1): for when seccomp
// forbids the system call but the device is accessible.
constexpr unsigned long k_uffd_ioc_new = _IO(0xAA, 0x00);

int open_uffd(int how) noexcept {
  const int flags = O_CLOEXEC | O_NONBLOCK;
  switch (how) {
    case 0:  // the only kind an unprivileged process may open when vm.unprivileged_userfaultfd is 0
#ifdef SYS_userfaultfd
      return static_cast<int>(::syscall(SYS_userfaultfd, flags | k_user_mode_only));
#else
      errno = ENOSYS;
      return -1;
#endif
    case 1:  // kernels before 5.11 refuse UFFD_USER_MODE_ONLY
#ifdef SYS_userfaultfd
      return static_cast<int>(::syscall(SYS_userfaultfd, flags));
#else
      errno = ENOSYS;
      return -1;
#endif
    default: {
      const int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
      if (dev < 0) return -1;
      const int fd = ::ioctl(dev, k_uffd_ioc_new, flags);
      const int err = errno;
      ::close(dev);
      errno = err;
      return fd;
    }
  }
}

}  // namespace

// Opens a userfaultfd with the features we need; -1 (and s.open_errno) if
// this process may not. The kernel reports what it offers on a first
// userfaultfd; UFFDIO_API works once per fd, so a second one gets the
// features enabled.
int open_configured(uffd_support& s) noexcept {
  int how = 0;
  int fd = -1;
  int first_errno = 0;
  for (; how < 3; ++how) {
    fd = open_uffd(how);
    if (fd >= 0) break;
    if (how == 0) first_errno = errno;
    // report the system call's answer, not /dev/userfaultfd's
    if (how < 2) s.open_errno = (how == 1 && errno == EINVAL) ? first_errno : errno;
  }
  if (fd < 0) return -1;
  s.user_mode_only = how == 0;
  s.dev_userfaultfd = how == 2;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = 0;
  const bool ok = ::ioctl(fd, UFFDIO_API, &api) == 0;
  s.open_errno = ok ? 0 : errno;
  ::close(fd);
  if (!ok) return -1;
  s.offered = api.features;
  if ((s.offered & k_required) != k_required) {
    s.open_errno = ENOTSUP;
    return -1;
  }
  s.enabled = s.offered & (k_required | k_optional);
  fd = open_uffd(how);
  if (fd < 0) {
    s.open_errno = errno;
    return -1;
  }
  api = uffdio_api{};
  api.api = UFFD_API;
  api.features = s.enabled;
  if (::ioctl(fd, UFFDIO_API, &api) != 0) {
    s.open_errno = errno;
    ::close(fd);
    return -1;
  }
  s.available = true;
  return fd;
}

uffd_support probe_userfaultfd() noexcept {
  uffd_support s;
  const int fd = open_configured(s);
  if (fd >= 0) ::close(fd);
  return s;
}

}  // namespace weft::util

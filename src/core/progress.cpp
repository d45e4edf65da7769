#include "weft/spi/progress.hpp"

#include <poll.h>
#include <time.h>

#include <algorithm>

namespace weft::spi {

namespace {
// Read on every poll: libweft is built with TLS descriptors (CMakeLists.txt),
// so this costs no __tls_get_addr call, and dlopen() still works.
thread_local std::uint64_t progress_calls_tl = 0;
}  // namespace

std::uint64_t thread_progress_calls() noexcept { return progress_calls_tl; }

void progress_group::attach(progressable* p) {
  if (std::find(sources_.begin(), sources_.end(), p) == sources_.end()) sources_.push_back(p);
}

void progress_group::detach(progressable* p) noexcept { std::erase(sources_, p); }

void progress_group::progress() noexcept {
  auto g = guard();
  if (in_progress_) return;  // re-entry from a callback is refused
  in_progress_ = true;
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    ++progress_calls_tl;
    sources_[i]->progress();
  }
  in_progress_ = false;
}

bool progress_group::set_lock(std::recursive_mutex* m) noexcept {
  if (!m) return true;
  if (lock_ && lock_ != m) return false;
  lock_ = m;
  ++lock_users_;
  return true;
}

void progress_group::release_lock(std::recursive_mutex* m) noexcept {
  if (m && lock_ == m && --lock_users_ == 0) lock_ = nullptr;
}

void progress_group::sleep_slice(int ms) const noexcept {
  for (auto* s : sources_) s->prepare_sleep();
  const int fd = sources_.empty() ? -1 : sources_.front()->wait_fd();
  if (fd >= 0) {
    pollfd p{fd, POLLIN, 0};
    (void)::poll(&p, 1, ms);
  } else {
    timespec ts{0, 200000};
    nanosleep(&ts, nullptr);
  }
}

}  // namespace weft::spi

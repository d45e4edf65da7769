#pragma once
// Copies out of a region's memory in this process for a read answer,
// failing (never faulting) when the memory is gone or cannot be read: a
// region's memory may be unmapped, or mprotect'ed, under an open region
// (docs/rma.md, "Memory unmapped under an open region"). Writes into a
// region are plain copies (a checked one cost 1.3 us per small write).
//
// The fast path is one process_vm_readv to ourselves (the pid is
// cached, refreshed in a forked child). When the kernel refuses those calls
// (any error other than EFAULT: seccomp answering ENOSYS, EPERM or EACCES),
// they are not tried again in this process and every copy takes the checked
// path: /proc/self/maps must show the range mapped with the access needed
// (and a file mapping's file long enough) before a plain copy.
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace weft::prov::tcp {

// len bytes at src (a region's memory) into dst; false if src cannot be read.
bool copy_if_mapped(std::byte* dst, const std::byte* src, std::size_t len) noexcept;

namespace test_hooks {
// When non-zero, process_vm_readv to ourselves fail with this errno
// (as a seccomp rule makes them) without being called.
extern std::atomic<int> self_vm_errno;
// Whether this process stopped using process_vm_readv; tests reset it.
extern std::atomic<bool> self_vm_unavailable;
}  // namespace test_hooks

}  // namespace weft::prov::tcp

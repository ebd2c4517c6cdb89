//! A user-space `/dev/iommu`: loaded with `LD_PRELOAD`, this library presents iommu-rs's
//! [`iommufd::Ictx`] to an unmodified process through the file calls it already makes.
//!
//! * `open`/`openat` (and their 64-bit and fortified forms) of exactly `/dev/iommu` create a
//!   context and return a real fd for it: an anonymous `memfd`, so `close`, `dup`, `fcntl`,
//!   `poll` and `fork` behave as on any file. Every other path passes through untouched.
//! * `ioctl` on such an fd runs [`iommufd::Ictx::ioctl`]; the commands read and write the
//!   caller's memory through [`ProcessMemory`] (`process_vm_readv`/`writev` on the process
//!   itself, so a bad pointer is `EFAULT`, never a crash).
//! * `dup`/`dup2`/`dup3`/`fcntl(F_DUPFD*)` of one of our fds share its context; the context
//!   (and every object in it, as in Linux) dies when its last fd is closed.
//! * A fault queue's fd is a dup of the fault object's eventfd, so `poll`/`epoll` need no
//!   interception; `read`/`write` on it go to the [`iommufd::FaultFd`] byte interface.
//!
//! Memory model: the user VA is the memory; a mapping's "physical address" is its user VA.
//! Pins are per-page counts of the process ([`ProcessMemory`]): taken while a user mapping is
//! in an IOAS with a paging HWPT, `EFAULT` if a page is not mapped (or not writable for a
//! writable mapping) per `/proc/self/maps`. Nothing is locked in memory for real.
//!
//! The variadic entry points (`open`, `openat`, `ioctl`, `fcntl`) are defined with their one
//! optional argument as a named one. Stable Rust cannot define C-variadic functions, and a C
//! shim cannot be used: a Rust `cdylib` exports only Rust's own `#[no_mangle]` symbols (its
//! version script hides every C symbol linked in). On the System V x86-64 and AArch64 Linux
//! ABIs an integer or pointer variadic argument travels exactly as the next named one would,
//! so the fixed-arity definitions are what a variadic call passes; the optional argument is
//! read only when the call says it was passed (`O_CREAT`/`O_TMPFILE` for `mode`), as libc's
//! own wrappers do. Other targets refuse to compile.
//!
//! This crate holds all the `unsafe` of the user-space `/dev/iommu`.

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!("the variadic entry points assume the x86-64 or AArch64 Linux calling convention");

mod fds;
mod forward;
mod interpose;
mod memory;

use std::ffi::c_int;

use fds::lookup;
pub use interpose::*;
pub use memory::{file_page, range_mapped, ProcessMemory};

/// Whether `fd` is one of ours (for tests and diagnostics).
pub fn is_ours(fd: c_int) -> bool {
    lookup(fd).is_some()
}

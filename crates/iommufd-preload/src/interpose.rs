//! The exported interposers: `open*`, `ioctl`, `fcntl`, `close`, `dup*`, `read`, `write`.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::AtomicPtr;
use std::sync::Arc;

use iommufd::user_memory::UserMemory;
use iommufd::Ictx;

use crate::fds::{lookup, register, unregister, Entry};
use crate::forward::{
    errno, fail, next_symbol, real, set_errno, CloseFn, Dup2Fn, Dup3Fn, DupFn, ReadFn, WriteFn,
};
use crate::memory::process_memory;

/// `open("/dev/iommu", flags)`: a new context behind a new memfd.
fn open_dev_iommu(flags: c_int) -> c_int {
    let mfd_flags = if flags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: the name is NUL-terminated; memfd_create has no other preconditions.
    let fd = unsafe { libc::memfd_create(c"iommufd".as_ptr(), mfd_flags as c_uint) };
    if fd < 0 {
        return -1;
    }
    let mem: Arc<dyn UserMemory> = process_memory();
    let old = register(fd, Entry::Ctx(Arc::new(Ictx::with_user_memory(mem))));
    drop(old);
    fd
}

/// Whether `path` (a C string or null) is exactly `/dev/iommu`.
fn is_dev_iommu(path: *const c_char) -> bool {
    if path.is_null() {
        return false;
    }
    // SAFETY: a non-null path handed to open(2) is a NUL-terminated string by its contract;
    // libc would read it the same way.
    unsafe { CStr::from_ptr(path) }.to_bytes() == b"/dev/iommu"
}

/// Whether open(2) `flags` carry the `mode` argument.
fn has_mode(flags: c_int) -> bool {
    flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE
}

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
type Openat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;
type FcntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;

macro_rules! open_like {
    ($name:ident, $sym:literal) => {
        /// `open(2)`: `/dev/iommu` is ours, every other path goes to libc.
        ///
        /// # Safety
        /// As `open(2)`; `mode` is read only with `O_CREAT`/`O_TMPFILE`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            if is_dev_iommu(path) {
                return open_dev_iommu(flags);
            }
            let real = real!($sym, OpenFn);
            let mode = if has_mode(flags) { mode } else { 0 };
            // SAFETY: libc's open with the caller's arguments under the caller's contract.
            unsafe { real(path, flags, mode) }
        }
    };
}
open_like!(open, c"open");
open_like!(open64, c"open64");

macro_rules! openat_like {
    ($name:ident, $sym:literal) => {
        /// `openat(2)`: an absolute `/dev/iommu` is ours, everything else goes to libc.
        ///
        /// # Safety
        /// As `openat(2)`; `mode` is read only with `O_CREAT`/`O_TMPFILE`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: c_uint,
        ) -> c_int {
            if is_dev_iommu(path) {
                return open_dev_iommu(flags);
            }
            let real = real!($sym, OpenatFn);
            let mode = if has_mode(flags) { mode } else { 0 };
            // SAFETY: libc's openat with the caller's arguments under the caller's contract.
            unsafe { real(dirfd, path, flags, mode) }
        }
    };
}
openat_like!(openat, c"openat");
openat_like!(openat64, c"openat64");

/// `__open_2` (the `_FORTIFY_SOURCE` form of `open` without a mode).
///
/// # Safety
/// As `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    if is_dev_iommu(path) {
        return open_dev_iommu(flags);
    }
    let real = real!(c"__open_2", Open2Fn);
    // SAFETY: libc's __open_2 with the caller's arguments.
    unsafe { real(path, flags) }
}

/// `__open64_2`.
///
/// # Safety
/// As `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    if is_dev_iommu(path) {
        return open_dev_iommu(flags);
    }
    let real = real!(c"__open64_2", Open2Fn);
    // SAFETY: libc's __open64_2 with the caller's arguments.
    unsafe { real(path, flags) }
}

/// `__openat_2`.
///
/// # Safety
/// As `openat(2)`.
#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    if is_dev_iommu(path) {
        return open_dev_iommu(flags);
    }
    let real = real!(c"__openat_2", Openat2Fn);
    // SAFETY: libc's __openat_2 with the caller's arguments.
    unsafe { real(dirfd, path, flags) }
}

/// `ioctl(2)`: our fds run the iommufd dispatch; every other fd goes to libc.
///
/// # Safety
/// As `ioctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    match lookup(fd) {
        None => {
            let real = real!(c"ioctl", IoctlFn);
            // SAFETY: libc's ioctl with the caller's arguments under the caller's contract.
            unsafe { real(fd, request, arg) }
        }
        Some(Entry::Ctx(ictx)) => ctx_ioctl(&ictx, request, arg),
        Some(Entry::Fault(_)) => {
            set_errno(libc::ENOTTY);
            -1
        }
    }
}

macro_rules! fcntl_like {
    ($name:ident, $sym:literal) => {
        /// `fcntl(2)`: passed to libc; `F_DUPFD*` of one of our fds shares its entry.
        ///
        /// # Safety
        /// As `fcntl(2)`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
            let real = real!($sym, FcntlFn);
            // SAFETY: libc's fcntl with the caller's arguments under the caller's contract.
            let rc = unsafe { real(fd, cmd, arg) };
            if rc >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
                let saved = errno();
                dup_notify(fd, rc);
                set_errno(saved);
            }
            rc
        }
    };
}
fcntl_like!(fcntl, c"fcntl");
fcntl_like!(fcntl64, c"fcntl64");

fn ctx_ioctl(ictx: &Ictx, request: c_ulong, arg: c_ulong) -> c_int {
    let Ok(request) = u32::try_from(request) else {
        set_errno(libc::ENOTTY);
        return -1;
    };
    let out = match ictx.ioctl(request, arg) {
        Ok(out) => out,
        Err(e) => return fail(&e),
    };
    if let Some(new) = out.new_fd {
        let efd = new.endpoint.as_fd().as_raw_fd();
        // SAFETY: F_DUPFD_CLOEXEC on an fd the endpoint keeps open; the raw syscall bypasses
        // our own `fcntl` interposer.
        let ufd = unsafe { libc::syscall(libc::SYS_fcntl, efd, libc::F_DUPFD_CLOEXEC, 0) };
        if ufd < 0 {
            return -1;
        }
        let ufd = ufd as c_int;
        let at = arg + new.out_offset as c_ulong;
        if let Err(e) = ictx.user_memory().write(at, &(ufd as u32).to_ne_bytes()) {
            // SAFETY: `ufd` was just created here and is not shared.
            unsafe { libc::syscall(libc::SYS_close, ufd) };
            return fail(&e);
        }
        let old = register(ufd, Entry::Fault(Arc::new(new.endpoint)));
        drop(old);
    }
    out.ret
}

/// `fcntl(F_DUPFD*)` or a `dup*` made `newfd` a copy of `oldfd`: share its entry.
fn dup_notify(oldfd: c_int, newfd: c_int) {
    if oldfd == newfd {
        return;
    }
    let old = match lookup(oldfd) {
        Some(e) => register(newfd, e),
        // `newfd` was closed by the dup (dup2/dup3 onto one of ours).
        None => unregister(newfd),
    };
    drop(old);
}

/// `close(2)`: forgets our entry (the context dies with its last fd), then closes for real.
#[no_mangle]
pub extern "C" fn close(fd: c_int) -> c_int {
    let entry = unregister(fd);
    let real = real!(c"close", CloseFn);
    // SAFETY: libc's close with the caller's argument.
    let rc = unsafe { real(fd) };
    let saved = errno();
    drop(entry);
    set_errno(saved);
    rc
}

/// `dup(2)`.
#[no_mangle]
pub extern "C" fn dup(fd: c_int) -> c_int {
    let real = real!(c"dup", DupFn);
    // SAFETY: libc's dup with the caller's argument.
    let rc = unsafe { real(fd) };
    if rc >= 0 {
        dup_notify(fd, rc);
    }
    rc
}

/// `dup2(2)`.
#[no_mangle]
pub extern "C" fn dup2(fd: c_int, newfd: c_int) -> c_int {
    let real = real!(c"dup2", Dup2Fn);
    // SAFETY: libc's dup2 with the caller's arguments.
    let rc = unsafe { real(fd, newfd) };
    if rc >= 0 {
        let saved = errno();
        dup_notify(fd, rc);
        set_errno(saved);
    }
    rc
}

/// `dup3(2)`.
#[no_mangle]
pub extern "C" fn dup3(fd: c_int, newfd: c_int, flags: c_int) -> c_int {
    let real = real!(c"dup3", Dup3Fn);
    // SAFETY: libc's dup3 with the caller's arguments.
    let rc = unsafe { real(fd, newfd, flags) };
    if rc >= 0 {
        let saved = errno();
        dup_notify(fd, rc);
        set_errno(saved);
    }
    rc
}

/// `read(2)`: a fault fd yields fault records; `/dev/iommu` itself has no `read` (`EINVAL`).
///
/// # Safety
/// As `read(2)`: `buf` must be valid for writes of `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize {
    match lookup(fd) {
        None => {
            let real = real!(c"read", ReadFn);
            // SAFETY: libc's read with the caller's arguments, under the caller's contract.
            unsafe { real(fd, buf, count) }
        }
        Some(Entry::Ctx(_)) => {
            set_errno(libc::EINVAL);
            -1
        }
        Some(Entry::Fault(f)) => with_read_scratch(count.min(READ_MAX), |tmp| match f.read(tmp) {
            Ok(n) => {
                // SAFETY: `n <= tmp.len() <= count` and the caller gave `count` writable bytes
                // at `buf`, which cannot overlap this thread's scratch buffer.
                unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr(), buf.cast(), n) };
                n as isize
            }
            Err(e) => fail(&e) as isize,
        }),
    }
}

/// Most bytes one fault-fd `read` fills (a larger count gets that much: a short read).
const READ_MAX: usize = 1 << 20;

std::thread_local! {
    /// This thread's buffer for fault-fd reads: the records are written here and copied to the
    /// caller's buffer, which may be uninitialised memory (no `&mut [u8]` may be made over it).
    /// Grown on demand and kept, so a reading loop allocates and zero-fills nothing per call.
    static READ_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` bytes of this thread's read scratch. The buffer is taken out while `f`
/// runs, so a `read` re-entered from a signal handler gets a buffer of its own.
fn with_read_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let take =
        |s: &std::cell::RefCell<Vec<u8>>| s.try_borrow_mut().map(|mut v| std::mem::take(&mut *v));
    let mut buf = READ_SCRATCH
        .try_with(take)
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let r = f(&mut buf[..len]);
    let _ = READ_SCRATCH.try_with(|s| {
        if let Ok(mut slot) = s.try_borrow_mut() {
            if slot.capacity() < buf.capacity() {
                *slot = buf;
            }
        }
    });
    r
}

/// `write(2)`: a fault fd takes page responses; `/dev/iommu` itself has no `write`.
///
/// # Safety
/// As `write(2)`: `buf` must be valid for reads of `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: usize) -> isize {
    match lookup(fd) {
        None => {
            let real = real!(c"write", WriteFn);
            // SAFETY: libc's write with the caller's arguments, under the caller's contract.
            unsafe { real(fd, buf, count) }
        }
        Some(Entry::Ctx(_)) => {
            set_errno(libc::EINVAL);
            -1
        }
        Some(Entry::Fault(f)) => {
            // A zero count may come with any pointer, so it gets an empty slice instead.
            let data = if count == 0 {
                &[][..]
            } else {
                // SAFETY: the caller gave `count` readable bytes at `buf`.
                unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), count) }
            };
            match f.write(data) {
                Ok(n) => n as isize,
                Err(e) => fail(&e) as isize,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_read_scratch;

    #[test]
    fn the_read_scratch_is_reused_and_a_nested_read_gets_its_own() {
        let first = with_read_scratch(4096, |b| {
            assert_eq!(b.len(), 4096);
            b[0] = 7;
            b.as_ptr() as usize
        });
        // A smaller read reuses the allocation: nothing allocated or zeroed per call.
        let again = with_read_scratch(100, |b| {
            assert_eq!(b.len(), 100);
            let nested = with_read_scratch(64, |inner| {
                assert_eq!(inner.len(), 64);
                inner.as_ptr() as usize
            });
            assert_ne!(
                nested,
                b.as_ptr() as usize,
                "a nested read has a buffer of its own"
            );
            b.as_ptr() as usize
        });
        assert_eq!(again, first);
        // The larger buffer is the one kept.
        assert_eq!(with_read_scratch(4096, |b| b.as_ptr() as usize), first);
    }
}

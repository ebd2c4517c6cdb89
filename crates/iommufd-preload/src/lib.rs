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

use std::collections::BTreeMap;
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!("the variadic entry points assume the x86-64 or AArch64 Linux calling convention");

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use iommu_core::error::{efault_v, einval_v, Error};
use iommufd::user_memory::{PinCounts, UserMemory, USER_PAGE_SIZE};
use iommufd::{FaultFd, Ictx};

/// What one of our fds stands for.
#[derive(Clone)]
enum Entry {
    /// An open `/dev/iommu`.
    Ctx(Arc<Ictx>),
    /// A fault queue's fd.
    Fault(Arc<FaultFd>),
}

/// Our fds. Critical sections only clone or move entries: nothing that may call back into
/// `close` (dropping a context closes eventfds) runs under the lock.
static FDS: Mutex<BTreeMap<c_int, Entry>> = Mutex::new(BTreeMap::new());
/// Whether any fd was ever ours: until then every call passes through without the lock.
static ANY: AtomicBool = AtomicBool::new(false);

fn lookup(fd: c_int) -> Option<Entry> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    FDS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&fd)
        .cloned()
}

fn register(fd: c_int, e: Entry) -> Option<Entry> {
    ANY.store(true, Ordering::Release);
    FDS.lock().unwrap_or_else(|e| e.into_inner()).insert(fd, e)
}

fn unregister(fd: c_int) -> Option<Entry> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    FDS.lock().unwrap_or_else(|e| e.into_inner()).remove(&fd)
}

fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid for writes
    // for the thread's lifetime.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    // SAFETY: as in `set_errno`, the slot is valid for reads.
    unsafe { *libc::__errno_location() }
}

fn fail(e: &Error) -> c_int {
    set_errno(e.errno());
    -1
}

/// The next definition of libc function `name` (libc's own), resolved once.
fn next_symbol(slot: &AtomicPtr<c_void>, name: &CStr) -> *mut c_void {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: `name` is a NUL-terminated string; `RTLD_NEXT` asks for the definition after
    // this library's, which is libc's and lives as long as the process.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    slot.store(p, Ordering::Release);
    p
}

macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static SLOT: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
        let p = next_symbol(&SLOT, $name);
        assert!(!p.is_null(), "libc lacks {:?}", $name);
        // SAFETY: `p` is libc's definition of the function named, whose C signature `$ty`
        // spells out.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
    }};
}

type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type DupFn = unsafe extern "C" fn(c_int) -> c_int;
type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
type WriteFn = unsafe extern "C" fn(c_int, *const c_void, usize) -> isize;

/// The process's own memory, reached safely: copies go through `process_vm_readv`/`writev`
/// on our own pid (an unmapped address is `EFAULT`, not a fault), and pins are page counts
/// checked against `/proc/self/maps`.
#[derive(Default)]
pub struct ProcessMemory {
    pins: PinCounts,
}

/// Whether every page of `[uva, uva + len)` is mapped readable (and writable with `write`)
/// according to `maps` (the text of `/proc/self/maps`).
pub fn range_mapped(maps: &str, uva: u64, len: u64, write: bool) -> bool {
    let Some(end) = uva.checked_add(len) else {
        return false;
    };
    let mut cursor = uva;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if hi <= cursor || lo > cursor {
            continue;
        }
        let p = perms.as_bytes();
        if p.first() != Some(&b'r') || (write && p.get(1) != Some(&b'w')) {
            return false;
        }
        cursor = hi;
        if cursor >= end {
            return true;
        }
    }
    cursor >= end
}

/// The file page behind user address `addr` according to `maps` (the text of
/// `/proc/self/maps`): `(device, inode, page index in the file)` for a file-backed mapping
/// (memfds and shared anonymous memory are files too), `None` for private anonymous memory or
/// an unmapped address.
pub fn file_page(maps: &str, addr: u64) -> Option<(String, u64, u64)> {
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [range, _perms, offset, dev, inode, ..] = f[..] else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if !(lo..hi).contains(&addr) {
            continue;
        }
        let (Ok(offset), Ok(inode)) = (u64::from_str_radix(offset, 16), inode.parse::<u64>())
        else {
            return None;
        };
        if inode == 0 {
            return None;
        }
        let page = offset.checked_add(addr - lo)? / USER_PAGE_SIZE;
        return Some((dev.to_string(), inode, page));
    }
    None
}

/// The page-aligned span `[base, base + len)` covering `len` bytes from `uva`.
fn page_span(uva: u64, len: u64) -> Option<(u64, usize)> {
    let off = uva % USER_PAGE_SIZE;
    let span = off
        .checked_add(len)?
        .checked_next_multiple_of(USER_PAGE_SIZE)?;
    Some((uva - off, usize::try_from(span).ok()?))
}

impl ProcessMemory {
    fn mapped(&self, uva: u64, len: u64, write: bool) -> bool {
        match std::fs::read_to_string("/proc/self/maps") {
            Ok(maps) => range_mapped(&maps, uva, len, write),
            Err(_) => false,
        }
    }
}

/// One `process_vm_readv`/`writev` of `len` bytes between `local` and remote `uva` in this
/// process; `EFAULT` unless all of it moved.
fn vm_copy(local: *mut c_void, uva: u64, len: usize, write: bool) -> Result<(), Error> {
    if len == 0 {
        return Ok(());
    }
    let liov = libc::iovec {
        iov_base: local,
        iov_len: len,
    };
    let riov = libc::iovec {
        iov_base: uva as usize as *mut c_void,
        iov_len: len,
    };
    // SAFETY: `liov` describes `len` bytes the caller owns (readable for a write, writable
    // for a read); the kernel checks the remote range itself and fails with EFAULT rather than
    // touching an unmapped address; both iovec arrays have one element.
    let n = unsafe {
        let pid = libc::getpid();
        if write {
            libc::process_vm_writev(pid, &liov, 1, &riov, 1, 0)
        } else {
            libc::process_vm_readv(pid, &liov, 1, &riov, 1, 0)
        }
    };
    if n < 0 || n as usize != len {
        return Err(efault_v("user address not accessible", uva));
    }
    Ok(())
}

impl UserMemory for ProcessMemory {
    fn read(&self, uva: u64, buf: &mut [u8]) -> iommu_core::Result<()> {
        vm_copy(buf.as_mut_ptr().cast(), uva, buf.len(), false)
    }

    fn write(&self, uva: u64, data: &[u8]) -> iommu_core::Result<()> {
        // process_vm_writev only reads the local buffer.
        vm_copy(data.as_ptr().cast_mut().cast(), uva, data.len(), true)
    }

    fn pin(&self, uva: u64, len: u64, writable: bool) -> iommu_core::Result<()> {
        if !self.mapped(uva, len, writable) {
            return Err(efault_v("page to pin not mapped", uva));
        }
        self.pins.add(uva, len)
    }

    fn unpin(&self, uva: u64, len: u64) {
        self.pins.remove(uva, len);
    }

    fn pin_count(&self, uva: u64) -> iommu_core::Result<u32> {
        let page = uva - uva % USER_PAGE_SIZE;
        if !self.mapped(page, USER_PAGE_SIZE, false) {
            return Err(efault_v("user page not mapped", page));
        }
        Ok(self.pins.get(page))
    }

    /// Maps the file range shared into this process (a new window the caller never sees).
    /// Linux answers a bad fd with `EBADF`, which the model's errors lack: `EINVAL` here.
    fn map_file(&self, fd: i32, start: u64, len: u64, writable: bool) -> iommu_core::Result<u64> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes one `struct stat` into `st`, which is large enough, and
        // touches nothing else; on failure `st` stays unread.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return Err(einval_v("fd is not an open file", fd as u64));
        }
        // SAFETY: fstat returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(einval_v("fd is not a memfd or regular file", fd as u64));
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        match start.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(einval_v("file range beyond the end of the file", size)),
        }
        let (base, span) = page_span(start, len).ok_or(einval_v("file range wraps", start))?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let offset = libc::off_t::try_from(base).map_err(|_| einval_v("offset", base))?;
        // SAFETY: a null hint makes the kernel choose a free range, so no existing mapping is
        // replaced; the window is private to this crate until `unmap_file` removes it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(einval_v("the file cannot be mapped", fd as u64));
        }
        Ok(p as u64 + (start - base))
    }

    fn unmap_file(&self, uva: u64, len: u64) {
        if let Some((base, span)) = page_span(uva, len) {
            // SAFETY: `[base, base + span)` is exactly a window `map_file` created; its IOAS
            // mapping is gone, so nothing of ours refers to it any more.
            unsafe { libc::munmap(base as usize as *mut c_void, span) };
        }
    }

    fn same_page(&self, a: u64, b: u64) -> bool {
        if a == b {
            return true;
        }
        if a % USER_PAGE_SIZE != b % USER_PAGE_SIZE {
            return false;
        }
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return false;
        };
        matches!((file_page(&maps, a), file_page(&maps, b)), (Some(x), Some(y)) if x == y)
    }
}

/// The process's memory, shared by every context (pins are per process, as page counts).
fn process_memory() -> Arc<ProcessMemory> {
    static MEM: OnceLock<Arc<ProcessMemory>> = OnceLock::new();
    MEM.get_or_init(Default::default).clone()
}

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
        Some(Entry::Fault(f)) => {
            let mut tmp = vec![0u8; count.min(1 << 20)];
            match f.read(&mut tmp) {
                Ok(n) => {
                    // SAFETY: `n <= tmp.len() <= count` and the caller gave `count` writable
                    // bytes at `buf`, which cannot overlap our fresh `tmp`.
                    unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr(), buf.cast(), n) };
                    n as isize
                }
                Err(e) => fail(&e) as isize,
            }
        }
    }
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

/// Whether `fd` is one of ours (for tests and diagnostics).
pub fn is_ours(fd: c_int) -> bool {
    lookup(fd).is_some()
}

//! Forwarding to libc: errno access and the next (libc's) definitions found with `dlsym`.

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};

use iommu_core::error::Error;

pub(crate) fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid for writes
    // for the thread's lifetime.
    unsafe { *libc::__errno_location() = e };
}

pub(crate) fn errno() -> c_int {
    // SAFETY: as in `set_errno`, the slot is valid for reads.
    unsafe { *libc::__errno_location() }
}

pub(crate) fn fail(e: &Error) -> c_int {
    set_errno(e.errno());
    -1
}

/// The next definition of libc function `name` (libc's own), resolved once.
pub(crate) fn next_symbol(slot: &AtomicPtr<c_void>, name: &CStr) -> *mut c_void {
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

pub(crate) type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
pub(crate) type DupFn = unsafe extern "C" fn(c_int) -> c_int;
pub(crate) type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
pub(crate) type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
pub(crate) type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
pub(crate) type WriteFn = unsafe extern "C" fn(c_int, *const c_void, usize) -> isize;

pub(crate) use real;

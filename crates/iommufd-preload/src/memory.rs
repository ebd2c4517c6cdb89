//! User memory access: the process's own memory as [`UserMemory`], copies and pins checked.

use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

use iommu_core::error::{efault_v, einval_v, Error};
use iommufd::user_memory::{PinCounts, UserMemory, USER_PAGE_SIZE};

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
pub(crate) fn process_memory() -> Arc<ProcessMemory> {
    static MEM: OnceLock<Arc<ProcessMemory>> = OnceLock::new();
    MEM.get_or_init(Default::default).clone()
}

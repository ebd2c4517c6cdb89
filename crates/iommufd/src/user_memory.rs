//! The caller's memory, as the uAPI dispatch sees it: `copy_from_user`/`copy_to_user` for the
//! arrays and driver data a command points at, and the page pins `IOMMU_IOAS_MAP` takes.
//!
//! In-process (the `LD_PRELOAD` library), the user VA *is* the memory: a mapping's "physical
//! address" is the user VA itself, and pinning is bookkeeping only. The model, following
//! Linux's `iopt_pages`:
//!
//! * `IOMMU_IOAS_MAP` records the range without touching it (Linux only sets up a lazy
//!   reference for an IOAS without domains); a hole is not an error then.
//! * While the IOAS has at least one paging HWPT, every user mapping holds one pin on each of
//!   its pages ([`UserMemory::pin`]): the first HWPT pins the existing mappings, mapping with a
//!   HWPT present pins at once, and a hole (a page not mapped, or not writable for a writable
//!   mapping) is `EFAULT` and refuses the call. A mapping made by `IOMMU_IOAS_COPY` pins for
//!   itself like any other (Linux shares the source's `iopt_pages`, so its copies add no pin:
//!   `MD_CHECK_REFS` after a copy reads one pin more here than on Linux).
//! * Unmap, the last HWPT going and closing the context drop the pins; the selftest's
//!   `MD_CHECK_REFS` reads the count ([`UserMemory::pin_count`]).
//!
//! Pins are counted per page of the *process*, not per context: a fresh `/dev/iommu` sees the
//! pins an earlier one still holds, as Linux's page reference counts do.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use iommu_core::error::{efault_v, einval_v};
use iommu_core::sync::Mutex;
use iommu_core::Result;

/// The page granule of pins.
pub const USER_PAGE_SIZE: u64 = 4096;

/// Access to the memory of the process issuing commands.
///
/// Every method refuses a range it cannot access with `EFAULT` and then has changed nothing.
pub trait UserMemory: Send + Sync {
    /// Copies `buf.len()` bytes from user address `uva` (`copy_from_user`).
    fn read(&self, uva: u64, buf: &mut [u8]) -> Result<()>;
    /// Copies `data` to user address `uva` (`copy_to_user`).
    fn write(&self, uva: u64, data: &[u8]) -> Result<()>;
    /// Takes one pin on every page of `[uva, uva + len)` (page aligned); `EFAULT` if a page is
    /// not mapped, or not writable when `writable`.
    fn pin(&self, uva: u64, len: u64, writable: bool) -> Result<()>;
    /// Drops one pin on every page of `[uva, uva + len)`.
    fn unpin(&self, uva: u64, len: u64);
    /// The pins held on the page at `uva`; `EFAULT` if it is not mapped.
    fn pin_count(&self, uva: u64) -> Result<u32>;
    /// Makes `[start, start + len)` of the caller's file `fd` addressable and returns the user
    /// VA of `start` (`IOMMU_IOAS_MAP_FILE`); `EBADF` for no such fd, `EINVAL` for a range
    /// beyond the file's end. Default: `EOPNOTSUPP`, memory without files.
    fn map_file(&self, fd: i32, start: u64, len: u64, writable: bool) -> Result<u64> {
        let _ = (start, len, writable);
        Err(iommu_core::error::eopnotsupp_v(
            "this memory has no files",
            fd as u64,
        ))
    }
    /// Releases a window [`UserMemory::map_file`] returned.
    fn unmap_file(&self, uva: u64, len: u64) {
        let _ = (uva, len);
    }
    /// Whether user addresses `a` and `b` reach the same byte of the same page (the physical
    /// identity `IOMMU_TEST_OP_MD_CHECK_MAP` compares). Default: the same address.
    fn same_page(&self, a: u64, b: u64) -> bool {
        a == b
    }
}

/// Per-page pin counts, the bookkeeping half of a [`UserMemory`] (a page is the key, its
/// count the value; absent means 0).
#[derive(Default)]
pub struct PinCounts {
    pins: Mutex<BTreeMap<u64, u32>>,
}

/// The pages of `[uva, uva + len)`, or `EINVAL` for an unaligned or wrapping range.
fn pages(uva: u64, len: u64) -> Result<impl Iterator<Item = u64>> {
    if !uva.is_multiple_of(USER_PAGE_SIZE) || !len.is_multiple_of(USER_PAGE_SIZE) {
        return Err(einval_v("pinned range not page aligned", uva));
    }
    let end = uva
        .checked_add(len)
        .ok_or(einval_v("pinned range wraps", uva))?;
    Ok((uva..end).step_by(USER_PAGE_SIZE as usize))
}

impl PinCounts {
    /// Adds one pin on every page of the (page aligned) range.
    pub fn add(&self, uva: u64, len: u64) -> Result<()> {
        let range = pages(uva, len)?;
        let mut p = self.pins.lock();
        for page in range {
            *p.entry(page).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Drops one pin on every page of the range (pages without pins are left alone).
    pub fn remove(&self, uva: u64, len: u64) {
        let Ok(range) = pages(uva, len) else { return };
        let mut p = self.pins.lock();
        for page in range {
            if let Some(n) = p.get_mut(&page) {
                *n -= 1;
                if *n == 0 {
                    p.remove(&page);
                }
            }
        }
    }

    /// The pins on the page holding `uva`.
    pub fn get(&self, uva: u64) -> u32 {
        let page = uva - uva % USER_PAGE_SIZE;
        self.pins.lock().get(&page).copied().unwrap_or(0)
    }
}

/// No user memory at all: every access is `EFAULT`. The memory of a context made with
/// [`crate::Ictx::new`], whose callers map physical addresses through the Rust API.
pub struct NoUserMemory;

impl UserMemory for NoUserMemory {
    fn read(&self, uva: u64, _buf: &mut [u8]) -> Result<()> {
        Err(efault_v("no user memory", uva))
    }
    fn write(&self, uva: u64, _data: &[u8]) -> Result<()> {
        Err(efault_v("no user memory", uva))
    }
    fn pin(&self, uva: u64, _len: u64, _writable: bool) -> Result<()> {
        Err(efault_v("no user memory", uva))
    }
    fn unpin(&self, _uva: u64, _len: u64) {}
    fn pin_count(&self, uva: u64) -> Result<u32> {
        Err(efault_v("no user memory", uva))
    }
}

/// A simulated process address space: page-granular regions of bytes, for tests and for
/// driving the uAPI without a real process behind it.
#[derive(Default)]
pub struct SimMemory {
    /// Page address → (bytes, writable).
    pages: Mutex<BTreeMap<u64, (Vec<u8>, bool)>>,
    pins: PinCounts,
}

impl SimMemory {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[uva, uva + len)` (page aligned) as zeroed memory.
    pub fn map(&self, uva: u64, len: u64, writable: bool) -> Result<()> {
        let range = pages(uva, len)?;
        let mut p = self.pages.lock();
        for page in range {
            p.insert(page, (alloc::vec![0; USER_PAGE_SIZE as usize], writable));
        }
        Ok(())
    }

    /// Unmaps `[uva, uva + len)` (page aligned); pins stay counted, as a real page's do.
    pub fn unmap(&self, uva: u64, len: u64) -> Result<()> {
        let range = pages(uva, len)?;
        let mut p = self.pages.lock();
        for page in range {
            p.remove(&page);
        }
        Ok(())
    }

    /// Walks `[uva, uva + len)` page by page, calling `f(page bytes, offset in page, offset in
    /// the request, chunk length)`; `EFAULT` before any call if a page is missing or, with
    /// `write`, read-only.
    fn walk(
        &self,
        uva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&mut Vec<u8>, usize, usize, usize),
    ) -> Result<()> {
        let end = uva
            .checked_add(len as u64)
            .ok_or(efault_v("user range wraps", uva))?;
        let mut p = self.pages.lock();
        let first = uva - uva % USER_PAGE_SIZE;
        for page in (first..end).step_by(USER_PAGE_SIZE as usize) {
            match p.get(&page) {
                Some((_, w)) if !write || *w => {}
                _ => return Err(efault_v("user page not mapped", page)),
            }
        }
        let mut done = 0usize;
        while done < len {
            let at = uva + done as u64;
            let page = at - at % USER_PAGE_SIZE;
            let off = (at - page) as usize;
            let n = (USER_PAGE_SIZE as usize - off).min(len - done);
            let bytes = &mut p.get_mut(&page).expect("checked above").0;
            f(bytes, off, done, n);
            done += n;
        }
        Ok(())
    }
}

impl UserMemory for SimMemory {
    fn read(&self, uva: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.walk(uva, len, false, |page, off, at, n| {
            buf[at..at + n].copy_from_slice(&page[off..off + n]);
        })
    }

    fn write(&self, uva: u64, data: &[u8]) -> Result<()> {
        self.walk(uva, data.len(), true, |page, off, at, n| {
            page[off..off + n].copy_from_slice(&data[at..at + n]);
        })
    }

    fn pin(&self, uva: u64, len: u64, writable: bool) -> Result<()> {
        let range = pages(uva, len)?;
        {
            let p = self.pages.lock();
            for page in range {
                match p.get(&page) {
                    Some((_, w)) if !writable || *w => {}
                    _ => return Err(efault_v("page to pin not mapped", page)),
                }
            }
        }
        self.pins.add(uva, len)
    }

    fn unpin(&self, uva: u64, len: u64) {
        self.pins.remove(uva, len);
    }

    fn pin_count(&self, uva: u64) -> Result<u32> {
        let page = uva - uva % USER_PAGE_SIZE;
        if !self.pages.lock().contains_key(&page) {
            return Err(efault_v("user page not mapped", page));
        }
        Ok(self.pins.get(uva))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_page_reads_but_refuses_a_copy_to_user() {
        let mem = SimMemory::new();
        mem.map(0x1000, USER_PAGE_SIZE, false).unwrap();
        mem.map(0x2000, USER_PAGE_SIZE, true).unwrap();
        let mut b = [1u8; 8];
        mem.read(0x1000, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        let err = mem.write(0x1000, &[7; 8]).unwrap_err();
        assert_eq!(err.errno_name(), "EFAULT");
        // A write from the writable page into the read-only one changes nothing, not even
        // the writable part (the read-only page is mapped right after a writable one here).
        mem.map(0x3000, USER_PAGE_SIZE, false).unwrap();
        assert!(mem.write(0x3000 - 4, &[7; 8]).is_err());
        mem.read(0x3000 - 4, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        mem.read(0x1000, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
    }
}

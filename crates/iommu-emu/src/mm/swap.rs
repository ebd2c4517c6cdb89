//! Page reclaim: [`Mm::swap_out`] takes resident pages away from their frames, keeping their
//! contents, and the next fault brings them back (Linux `mm/vmscan.c` for anonymous memory,
//! with the swap device replaced by a map in the mm).
//!
//! The order is the one munmap keeps, with one step added: clear the page-table entries,
//! invalidate every secondary TLB (the IOMMU's IOTLB and the device TLBs, waiting for DMA in
//! flight), *then* copy the contents out — nothing can write the frame any more: CPU accesses
//! take the mm's lock, which reclaim holds, and no device holds a translation — and only then
//! free the frame. A device touching the page afterwards misses, asks through PRI, and the
//! fault handler swaps it in exactly as a CPU access does.

use iommu_core::Result;
use iommu_pt::Pfn;

use super::vma::user_range;
use super::{Mm, MmInner};
use crate::phys::{PhysMem, PAGE_SHIFT, PAGE_SIZE};

impl Mm {
    /// Swaps out every resident page of `[addr, addr + len)` (`len` rounded up to pages):
    /// contents saved, page-table entry cleared, every secondary TLB invalidated, frame freed.
    /// The next CPU access or device access (through PRI) faults the page back in with its
    /// contents. Returns how many pages were swapped out (0 after exit). `EINVAL` for a
    /// misaligned or out-of-range request, as [`Mm::munmap`].
    pub fn swap_out(&self, addr: u64, len: u64) -> Result<usize> {
        let end = user_range(addr, len)?;
        let mut inner = self.inner.lock();
        let victims = inner.pages.range(addr >> PAGE_SHIFT, end >> PAGE_SHIFT);
        if inner.exited || victims.is_empty() {
            return Ok(0);
        }
        let tables = inner.clear_ptes(addr, end);
        self.invalidate_secondary(addr, end);
        let mut frames = Vec::with_capacity(victims.len());
        for &(vpn, pfn) in &victims {
            let mut saved = vec![0u8; PAGE_SIZE as usize].into_boxed_slice();
            // A frame of the page map is always inside memory; if it were not, the page is
            // dropped (it could not have been read either) rather than the frame leaked.
            if self.phys.read(pfn.addr(), &mut saved).is_ok() {
                inner.swapped.insert(vpn, saved);
            }
            inner.pages.remove(vpn);
            frames.push(pfn);
        }
        self.phys.release_frames(frames);
        inner.pt.free_tables(tables);
        Ok(victims.len())
    }

    /// Pages of this mm currently swapped out.
    pub fn swapped_pages(&self) -> usize {
        self.inner.lock().swapped.len()
    }
}

impl MmInner {
    /// Fills a freshly allocated frame for page `vpn`: its saved contents if it was swapped
    /// out (still kept until the page is mapped, so a failed fault loses nothing), else the
    /// frame stays zero (demand-zero).
    pub(super) fn swap_in(&self, phys: &PhysMem, vpn: u64, pfn: Pfn) -> Result<()> {
        match self.swapped.get(&vpn) {
            Some(saved) => phys.write(pfn.addr(), saved),
            None => Ok(()),
        }
    }

    /// Drops the saved contents of the swapped-out pages of `[start, end)` (munmap).
    pub(super) fn drop_swapped(&mut self, start: u64, end: u64) {
        let doomed: Vec<u64> = self
            .swapped
            .range(start >> PAGE_SHIFT..end >> PAGE_SHIFT)
            .map(|(v, _)| *v)
            .collect();
        for vpn in doomed {
            self.swapped.remove(&vpn);
        }
    }
}

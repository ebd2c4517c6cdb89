//! The VMA tree of an mm: which ranges are mapped with which protection (Linux `mm/mmap.c`,
//! `mm/vma.c`), and the page-table clearing that removing or changing a range needs.

use iommu_core::error::{einval, einval_v};
use iommu_core::Result;
use iommu_pt::Pfn;

use super::{MmInner, Prot, MMAP_BASE, USER_TOP};
use crate::phys::PAGE_SIZE;

/// One mapped range: it ends at `end` (its start is its key in the tree).
#[derive(Clone, Copy, Debug)]
pub(super) struct Vma {
    pub end: u64,
    pub prot: Prot,
}

pub(super) fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}

/// Validates a page-aligned user range and returns its end.
pub(super) fn user_range(addr: u64, len: u64) -> Result<u64> {
    if addr & (PAGE_SIZE - 1) != 0 {
        return Err(einval_v("address is not page aligned", addr));
    }
    if len == 0 {
        return Err(einval("zero-length range"));
    }
    let len = len
        .checked_add(PAGE_SIZE - 1)
        .ok_or(einval_v("length overflows", len))?
        & !(PAGE_SIZE - 1);
    let end = addr
        .checked_add(len)
        .filter(|&e| e <= USER_TOP)
        .ok_or(einval_v("range leaves the user address space", addr))?;
    Ok(end)
}

impl MmInner {
    /// The VMA containing `addr`.
    pub(super) fn vma(&self, addr: u64) -> Option<(u64, Vma)> {
        self.vmas
            .range(..=addr)
            .next_back()
            .filter(|(_, v)| v.end > addr)
            .map(|(s, v)| (*s, *v))
    }

    pub(super) fn overlaps(&self, start: u64, end: u64) -> bool {
        self.vmas
            .range(..end)
            .next_back()
            .is_some_and(|(_, v)| v.end > start)
    }

    /// Removes `[start, end)` from the VMAs, keeping the parts outside; returns the removed
    /// pieces.
    pub(super) fn carve(&mut self, start: u64, end: u64) -> Vec<(u64, u64, Prot)> {
        let hit: Vec<(u64, Vma)> = self
            .vmas
            .range(..end)
            .rev()
            .take_while(|(_, v)| v.end > start)
            .map(|(s, v)| (*s, *v))
            .collect();
        let mut removed = Vec::new();
        for (s, v) in hit {
            self.vmas.remove(&s);
            if s < start {
                self.vmas.insert(
                    s,
                    Vma {
                        end: start,
                        prot: v.prot,
                    },
                );
            }
            if v.end > end {
                self.vmas.insert(end, v);
            }
            removed.push((s.max(start), v.end.min(end), v.prot));
        }
        removed
    }

    /// First free gap of `len` bytes at or above `MMAP_BASE`.
    pub(super) fn find_gap(&self, len: u64) -> Option<u64> {
        let mut cand = MMAP_BASE;
        for (s, v) in &self.vmas {
            if v.end <= cand {
                continue;
            }
            if *s >= cand && s - cand >= len {
                return Some(cand);
            }
            cand = cand.max(v.end);
        }
        (USER_TOP - cand >= len).then_some(cand)
    }

    /// Clears the page-table entries of `[start, end)`; returns the table pages to free after
    /// invalidation.
    pub(super) fn clear_ptes(&mut self, start: u64, end: u64) -> Vec<Pfn> {
        match self.pt.unmap(start, end - start) {
            Ok(u) => u.freed_tables,
            // NotMapped: nothing was present. Other errors cannot happen for a validated
            // 4 KiB-granular range of 4 KiB leaves (no split is ever needed).
            Err(_) => Vec::new(),
        }
    }
}

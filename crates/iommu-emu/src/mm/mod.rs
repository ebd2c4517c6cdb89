//! Simulated process address spaces: [`Mm`], implementing [`iommu_core::AddressSpace`].
//!
//! An `Mm` has VMAs (`mmap`/`munmap`/`mprotect`), demand-zero paging, and one x86-64 first-stage
//! page table ([`FirstStage4`]) in [`PhysMem`]: the table the CPU would use *and* the one the
//! IOMMU walks for SVA (hardware shares the CPU's tables; the IOMMU reads
//! [`Mm::pgd_root`] without taking any lock of the mm).
//!
//! # Concurrency
//! Every change (fault-in, munmap, mprotect, exit) runs under the mm's lock (Linux's
//! `mmap_lock` taken for write, simplified). Walkers never take it: the page table's entries are
//! atomic words, so a walk racing an update sees each entry before or after it.
//!
//! # Invalidation before free (DESIGN §4, SPEC §3.6 / H28 in spirit)
//! IOMMUs that cache translations of this mm register a [`SecondaryTlb`] (Linux's
//! `mmu_notifier` `invalidate_range` / `arch_invalidate_secondary_tlbs`). `munmap`, `mprotect`
//! and `exit` first clear the page-table entries, then call every registered secondary TLB, and
//! only then free data frames and table pages. A secondary TLB returns only when no device can
//! still use an old translation (the emulator also waits for DMA in flight), so after `munmap`
//! returns no DMA reads or writes the old frames.
//!
//! Resident pages are tracked in a page map (vpn → frame, Linux's `struct page` mapping), apart
//! from the page-table entries: `mprotect(PROT_NONE)` drops the entries but keeps the data, and
//! the next permitted fault maps the same frame again. [`Mm::swap_out`] (page reclaim) moves a
//! resident page's contents out of its frame into the mm's swap (a map vpn → saved bytes) and
//! frees the frame; the next fault allocates a frame and copies the contents back.
//!
//! # Files
//! `prot.rs` ([`Prot`]), `vma.rs` (the VMA tree: lookup, carving, free gaps; Linux
//! `mm/mmap.c`, `mm/vma.c`), `fault.rs` (demand-zero fault-in and CPU accesses; Linux
//! `mm/memory.c`), `notifier.rs` ([`SecondaryTlb`]; Linux `mm/mmu_notifier.c`), `swap.rs`
//! ([`Mm::swap_out`]; Linux `mm/vmscan.c`'s reclaim of anonymous pages). This file: the
//! address space, its lifetime, and the calls that change its mappings.

mod fault;
mod notifier;
mod page_map;
mod prot;
mod swap;
#[cfg(test)]
mod tests;
mod vma;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use iommu_core::error::{eexist_v, efault, efault_v, einval, einval_v, enomem_v};
use iommu_core::{AddressSpace, MmIommuData, Result};
use iommu_pt::{FirstStage4, PageTable, Pfn, PhysAddr};
use parking_lot::Mutex;

use crate::phys::{PhysMem, PAGE_SHIFT, PAGE_SIZE};

pub use notifier::SecondaryTlb;
use page_map::PageMap;
pub use prot::Prot;
use vma::{page_down, user_range, Vma};

/// Lowest address `mmap` hands out (Linux's `mmap_min_addr` is 64 KiB; we start higher so tests
/// can use low fixed addresses freely).
pub const MMAP_BASE: u64 = 0x10_0000_0000;
/// End of the user half of the 48-bit canonical address space.
pub const USER_TOP: u64 = 0x0000_8000_0000_0000;

/// Counters of an mm's paging activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MmStats {
    /// Pages made present by faults (CPU or device).
    pub faults: u64,
    /// Pages currently holding a frame.
    pub resident_pages: u64,
    /// Secondary-TLB invalidations sent.
    pub invalidations: u64,
}

struct MmInner {
    /// VMAs by start address; non-overlapping.
    vmas: BTreeMap<u64, Vma>,
    /// vpn → frame of every resident page.
    pages: PageMap,
    /// vpn → contents of every swapped-out page (never also in `pages`).
    swapped: BTreeMap<u64, Box<[u8]>>,
    pt: PageTable<FirstStage4, Arc<PhysMem>>,
    exited: bool,
}

/// A process address space that devices can share through SVA.
pub struct Mm {
    id: u64,
    iommu: MmIommuData,
    phys: Arc<PhysMem>,
    root: Pfn,
    inner: Mutex<MmInner>,
    exited: AtomicBool,
    notifiers: Mutex<Vec<(u64, Weak<dyn SecondaryTlb>)>>,
    next_notifier: AtomicU64,
    faults: AtomicU64,
    invalidations: AtomicU64,
}

static NEXT_MM_ID: AtomicU64 = AtomicU64::new(1);

impl Mm {
    /// A fresh, empty address space whose pages and tables live in `phys`. `ENOMEM` if the root
    /// table cannot be allocated.
    pub fn new(phys: &Arc<PhysMem>) -> Result<Arc<Mm>> {
        let pt = PageTable::<FirstStage4, _>::new(phys.clone())
            .map_err(|_| iommu_core::error::enomem("no memory for the page-table root"))?;
        let root = pt.root();
        Ok(Arc::new(Mm {
            id: NEXT_MM_ID.fetch_add(1, Relaxed),
            iommu: MmIommuData::default(),
            phys: phys.clone(),
            root,
            inner: Mutex::new(MmInner {
                vmas: BTreeMap::new(),
                pages: PageMap::default(),
                swapped: BTreeMap::new(),
                pt,
                exited: false,
            }),
            exited: AtomicBool::new(false),
            notifiers: Mutex::new(Vec::new()),
            next_notifier: AtomicU64::new(1),
            faults: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }))
    }

    /// The `Mm` behind an address space the core hands out, if it is one.
    pub fn from_address_space(mm: &Arc<dyn AddressSpace>) -> Option<Arc<Mm>> {
        let any: Arc<dyn std::any::Any + Send + Sync> = mm.clone();
        any.downcast::<Mm>().ok()
    }

    /// The mm as the core's address-space trait object (what `sva_bind_device` takes).
    pub fn as_address_space(self: &Arc<Self>) -> Arc<dyn AddressSpace> {
        self.clone()
    }

    /// The physical memory holding this mm's pages and tables.
    pub fn phys(&self) -> &Arc<PhysMem> {
        &self.phys
    }

    /// The first-stage root (Linux's `mm->pgd`): what an SVA PASID entry points at. Stable for
    /// the mm's life.
    pub fn pgd_root(&self) -> Pfn {
        self.root
    }

    /// Whether [`Mm::exit`] has run.
    pub fn has_exited(&self) -> bool {
        self.exited.load(Relaxed)
    }

    /// Maps `len` bytes (rounded up to pages) of demand-zero memory with `prot` at an address
    /// the mm chooses; returns it. Nothing is allocated until a page is touched. `EINVAL` for a
    /// zero length, `ENOMEM` when no gap is large enough, `EFAULT` after exit.
    pub fn mmap(&self, len: u64, prot: Prot) -> Result<u64> {
        let mut inner = self.inner.lock();
        if inner.exited {
            return Err(efault("mm has exited"));
        }
        if len == 0 {
            return Err(einval("zero-length mmap"));
        }
        let rounded = len
            .checked_add(PAGE_SIZE - 1)
            .ok_or(einval_v("length overflows", len))?
            & !(PAGE_SIZE - 1);
        let addr = inner
            .find_gap(rounded)
            .ok_or(enomem_v("no free range of this length", len))?;
        inner.vmas.insert(
            addr,
            Vma {
                end: addr + rounded,
                prot,
            },
        );
        Ok(addr)
    }

    /// Maps demand-zero memory at exactly `addr` (Linux `MAP_FIXED_NOREPLACE`): `EEXIST` if any
    /// of it is already mapped, `EINVAL` for a misaligned or out-of-range request.
    pub fn mmap_fixed(&self, addr: u64, len: u64, prot: Prot) -> Result<u64> {
        let end = user_range(addr, len)?;
        let mut inner = self.inner.lock();
        if inner.exited {
            return Err(efault("mm has exited"));
        }
        if addr == 0 {
            return Err(einval("cannot map page zero"));
        }
        if inner.overlaps(addr, end) {
            return Err(eexist_v("range overlaps an existing mapping", addr));
        }
        inner.vmas.insert(addr, Vma { end, prot });
        Ok(addr)
    }

    /// Unmaps `[addr, addr + len)` (rounded up to pages; holes are fine, as in Linux); its
    /// swapped-out pages are dropped. Every
    /// secondary TLB is invalidated before the range's frames and table pages are freed.
    /// `EINVAL` for a misaligned or out-of-range request; after exit this is a no-op.
    pub fn munmap(&self, addr: u64, len: u64) -> Result<()> {
        let end = user_range(addr, len)?;
        let mut inner = self.inner.lock();
        inner.carve(addr, end);
        inner.drop_swapped(addr, end);
        let resident = inner.pages.range(addr >> PAGE_SHIFT, end >> PAGE_SHIFT);
        if resident.is_empty() {
            return Ok(());
        }
        let tables = inner.clear_ptes(addr, end);
        self.invalidate_secondary(addr, end);
        let frames = resident
            .into_iter()
            .filter_map(|(vpn, _)| inner.pages.remove(vpn))
            .collect();
        self.phys.release_frames(frames);
        inner.pt.free_tables(tables);
        Ok(())
    }

    /// Changes the protection of `[addr, addr + len)`, which must be wholly mapped (`ENOMEM`
    /// otherwise, as Linux; nothing changes then). Present entries of the range are dropped and
    /// every secondary TLB invalidated; pages keep their data and come back, with the new
    /// permissions, on the next permitted access.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<()> {
        let end = user_range(addr, len)?;
        let mut inner = self.inner.lock();
        if inner.exited {
            return Err(efault("mm has exited"));
        }
        // The whole range must be covered by VMAs.
        let mut at = addr;
        while at < end {
            match inner.vma(at) {
                Some((_, v)) => at = v.end,
                None => return Err(enomem_v("range is not wholly mapped", at)),
            }
        }
        for (s, e, _) in inner.carve(addr, end) {
            inner.vmas.insert(s, Vma { end: e, prot });
        }
        let any_resident = inner.pages.any_in(addr >> PAGE_SHIFT, end >> PAGE_SHIFT);
        if any_resident {
            let tables = inner.clear_ptes(addr, end);
            self.invalidate_secondary(addr, end);
            inner.pt.free_tables(tables);
        }
        Ok(())
    }

    /// The process exits: every mapping is removed (secondary TLBs invalidated first, then
    /// frames freed) and every later fault, CPU access or device page request fails. The
    /// first-stage root stays allocated (empty) until the mm is dropped, because SVA domains
    /// may still point PASID entries at it.
    pub fn exit(&self) {
        let mut inner = self.inner.lock();
        if inner.exited {
            return;
        }
        inner.exited = true;
        self.exited.store(true, Relaxed);
        inner.vmas.clear();
        inner.swapped.clear();
        if inner.pages.is_empty() {
            return;
        }
        let tables = inner.clear_ptes(0, USER_TOP);
        self.invalidate_secondary(0, USER_TOP);
        self.phys.release_frames(inner.pages.take_all());
        inner.pt.free_tables(tables);
    }

    /// The physical address `addr` translates to right now, without faulting (for tests and
    /// checkers). `None` when not present.
    pub fn translate(&self, addr: u64) -> Option<PhysAddr> {
        self.inner
            .lock()
            .pt
            .query(page_down(addr))
            .map(|m| PhysAddr(m.pa.0 | (addr & (PAGE_SIZE - 1))))
    }

    /// Paging counters.
    pub fn stats(&self) -> MmStats {
        MmStats {
            faults: self.faults.load(Relaxed),
            resident_pages: self.inner.lock().pages.len() as u64,
            invalidations: self.invalidations.load(Relaxed),
        }
    }

    /// The VMAs as `(start, end, prot)`, in address order.
    pub fn vmas(&self) -> Vec<(u64, u64, Prot)> {
        self.inner
            .lock()
            .vmas
            .iter()
            .map(|(s, v)| (*s, v.end, v.prot))
            .collect()
    }
}

impl AddressSpace for Mm {
    fn mm_id(&self) -> u64 {
        self.id
    }

    fn iommu_mm(&self) -> &MmIommuData {
        &self.iommu
    }

    /// SPEC §3.5 `handle_one`: VMA lookup, permission check (`PRIV` clear is a user access;
    /// our VMAs are all user memory, so a privileged access is checked the same way), then
    /// demand-zero fault-in. `EFAULT` (no VMA, exited), `EPERM` (not permitted), `ENOMEM`.
    fn handle_mm_fault(&self, addr: u64, perm: u32) -> Result<()> {
        if addr >= USER_TOP {
            return Err(efault_v("address outside the user address space", addr));
        }
        let mut inner = self.inner.lock();
        let (_, fresh) = inner.fault_in(&self.phys, addr, perm)?;
        if fresh {
            // Every writer holds the mm's lock.
            crate::counter::add_locked(&self.faults, 1);
        }
        Ok(())
    }

    fn has_exited(&self) -> bool {
        Mm::has_exited(self)
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // No SVA domain can exist any more (each holds the mm), so no IOMMU caches it.
        let inner = self.inner.get_mut();
        self.phys.release_frames(inner.pages.take_all());
        // The page table frees its own table pages when dropped.
    }
}

impl core::fmt::Debug for Mm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mm")
            .field("id", &self.id)
            .field("root", &self.root)
            .field("exited", &self.has_exited())
            .finish_non_exhaustive()
    }
}

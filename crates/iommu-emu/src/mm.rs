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
//! the next permitted fault maps the same frame again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use iommu_core::error::{eexist_v, efault, efault_v, einval, einval_v, enomem_v, eperm_v};
use iommu_core::{
    AddressSpace, MmIommuData, Result, IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_READ,
    IOMMU_FAULT_PERM_WRITE,
};
use iommu_pt::{walk, Access, FirstStage4, PageTable, Perms, Pfn, PhysAddr};
use parking_lot::Mutex;

use crate::phys::{read_frame, write_frame, PhysMem, PAGE_SHIFT, PAGE_SIZE};

/// Lowest address `mmap` hands out (Linux's `mmap_min_addr` is 64 KiB; we start higher so tests
/// can use low fixed addresses freely).
pub const MMAP_BASE: u64 = 0x10_0000_0000;
/// End of the user half of the 48-bit canonical address space.
pub const USER_TOP: u64 = 0x0000_8000_0000_0000;

/// Memory protection of a VMA (`PROT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Prot {
    /// `PROT_READ`.
    pub read: bool,
    /// `PROT_WRITE`.
    pub write: bool,
    /// `PROT_EXEC`.
    pub exec: bool,
}

impl Prot {
    /// `PROT_NONE`: no access; pages keep their data.
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
        exec: false,
    };
    /// `PROT_READ`.
    pub const READ: Prot = Prot {
        read: true,
        write: false,
        exec: false,
    };
    /// `PROT_READ | PROT_WRITE`.
    pub const READ_WRITE: Prot = Prot {
        read: true,
        write: true,
        exec: false,
    };
    /// `PROT_READ | PROT_EXEC`.
    pub const READ_EXEC: Prot = Prot {
        read: true,
        write: false,
        exec: true,
    };

    /// Whether the protection allows an access with `IOMMU_FAULT_PERM_*` bits `perm`.
    pub fn allows(self, perm: u32) -> bool {
        let any = self.read || self.write || self.exec;
        // x86 cannot express write-only or exec-only pages: any access right implies read.
        (perm & IOMMU_FAULT_PERM_READ == 0 || any)
            && (perm & IOMMU_FAULT_PERM_WRITE == 0 || self.write)
            && (perm & IOMMU_FAULT_PERM_EXEC == 0 || self.exec)
            && (perm & (IOMMU_FAULT_PERM_READ | IOMMU_FAULT_PERM_WRITE | IOMMU_FAULT_PERM_EXEC)
                != 0
                || any)
    }

    fn pte_perms(self) -> Perms {
        Perms {
            read: true,
            write: self.write,
            exec: self.exec,
            user: true,
        }
    }
}

/// A cache of this mm's translations outside the CPU (an IOMMU's IOTLB and the device TLBs
/// behind it): Linux's secondary-TLB `mmu_notifier`.
pub trait SecondaryTlb: Send + Sync {
    /// `[start, end)` of mm `mm_id` changed: its entries are already cleared from the page
    /// table, and its frames and table pages will be freed when this returns. Must drop every
    /// cached translation of the range and wait until no access through one is in flight.
    /// Called with the mm's lock held: must not call back into the mm.
    fn invalidate_range(&self, mm_id: u64, start: u64, end: u64);
}

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

#[derive(Clone, Copy, Debug)]
struct Vma {
    end: u64,
    prot: Prot,
}

struct MmInner {
    /// VMAs by start address; non-overlapping.
    vmas: BTreeMap<u64, Vma>,
    /// vpn → frame of every resident page.
    pages: BTreeMap<u64, Pfn>,
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

fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}

/// Validates a page-aligned user range and returns its end.
fn user_range(addr: u64, len: u64) -> Result<u64> {
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
    fn vma(&self, addr: u64) -> Option<(u64, Vma)> {
        self.vmas
            .range(..=addr)
            .next_back()
            .filter(|(_, v)| v.end > addr)
            .map(|(s, v)| (*s, *v))
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.vmas
            .range(..end)
            .next_back()
            .is_some_and(|(_, v)| v.end > start)
    }

    /// Removes `[start, end)` from the VMAs, keeping the parts outside; returns the removed
    /// pieces.
    fn carve(&mut self, start: u64, end: u64) -> Vec<(u64, u64, Prot)> {
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
    fn find_gap(&self, len: u64) -> Option<u64> {
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
    fn clear_ptes(&mut self, start: u64, end: u64) -> Vec<Pfn> {
        match self.pt.unmap(start, end - start) {
            Ok(u) => u.freed_tables,
            // NotMapped: nothing was present. Other errors cannot happen for a validated
            // 4 KiB-granular range of 4 KiB leaves (no split is ever needed).
            Err(_) => Vec::new(),
        }
    }

    /// Makes `addr`'s page present for `perm`; returns its frame.
    fn fault_in(&mut self, phys: &PhysMem, addr: u64, perm: u32) -> Result<(Pfn, bool)> {
        if self.exited {
            return Err(efault("mm has exited"));
        }
        let (_, vma) = self
            .vma(addr)
            .ok_or(efault_v("no VMA contains the address", addr))?;
        if !vma.prot.allows(perm) {
            return Err(eperm_v("access not permitted by the VMA", addr));
        }
        let page = page_down(addr);
        let vpn = page >> PAGE_SHIFT;
        if let Some(m) = self.pt.query(page) {
            return Ok((m.pa.pfn(), false));
        }
        let (pfn, fresh) = match self.pages.get(&vpn) {
            Some(p) => (*p, false),
            None => (phys.alloc_frame()?, true),
        };
        if self
            .pt
            .map(page, pfn.addr(), PAGE_SIZE, vma.prot.pte_perms())
            .is_err()
        {
            if fresh {
                phys.free_frame(pfn);
            }
            return Err(enomem_v("no memory for page tables", addr));
        }
        self.pages.insert(vpn, pfn);
        Ok((pfn, true))
    }
}

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
                pages: BTreeMap::new(),
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

    /// Tells every secondary TLB that `[start, end)` changed (entries already cleared).
    fn invalidate_secondary(&self, start: u64, end: u64) {
        let hooks: Vec<Arc<dyn SecondaryTlb>> = self
            .notifiers
            .lock()
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        for h in hooks {
            self.invalidations.fetch_add(1, Relaxed);
            h.invalidate_range(self.id, start, end);
        }
    }

    /// Unmaps `[addr, addr + len)` (rounded up to pages; holes are fine, as in Linux). Every
    /// secondary TLB is invalidated before the range's frames and table pages are freed.
    /// `EINVAL` for a misaligned or out-of-range request; after exit this is a no-op.
    pub fn munmap(&self, addr: u64, len: u64) -> Result<()> {
        let end = user_range(addr, len)?;
        let mut inner = self.inner.lock();
        inner.carve(addr, end);
        let vpns: Vec<u64> = inner
            .pages
            .range(addr >> PAGE_SHIFT..end >> PAGE_SHIFT)
            .map(|(v, _)| *v)
            .collect();
        if vpns.is_empty() {
            return Ok(());
        }
        let tables = inner.clear_ptes(addr, end);
        self.invalidate_secondary(addr, end);
        for vpn in vpns {
            if let Some(pfn) = inner.pages.remove(&vpn) {
                self.phys.free_frame(pfn);
            }
        }
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
        let any_resident = inner
            .pages
            .range(addr >> PAGE_SHIFT..end >> PAGE_SHIFT)
            .next()
            .is_some();
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
        if inner.pages.is_empty() {
            return;
        }
        let tables = inner.clear_ptes(0, USER_TOP);
        self.invalidate_secondary(0, USER_TOP);
        for (_, pfn) in std::mem::take(&mut inner.pages) {
            self.phys.free_frame(pfn);
        }
        inner.pt.free_tables(tables);
    }

    /// Copies `buf.len()` bytes from user address `addr`, faulting pages in as the CPU would
    /// (demand-zero). `EFAULT` outside any VMA, `EPERM` without read permission; on error
    /// `buf` may be partly filled.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.cpu_access(
            addr,
            buf.len(),
            IOMMU_FAULT_PERM_READ,
            |frame, off, done, n| {
                read_frame(frame, off, &mut buf[done..done + n]);
            },
        )
    }

    /// Copies `data` to user address `addr`, faulting pages in. `EFAULT` outside any VMA,
    /// `EPERM` without write permission; on error a prefix may have been written.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.cpu_access(
            addr,
            data.len(),
            IOMMU_FAULT_PERM_WRITE,
            |frame, off, done, n| {
                write_frame(frame, off, &data[done..done + n]);
            },
        )
    }

    fn cpu_access(
        &self,
        addr: u64,
        len: usize,
        perm: u32,
        mut f: impl FnMut(&crate::phys::Frame, usize, usize, usize),
    ) -> Result<()> {
        addr.checked_add(len as u64)
            .filter(|&e| e <= USER_TOP)
            .ok_or(efault_v("range leaves the user address space", addr))?;
        // The lock keeps munmap from freeing a frame between translation and copy.
        let mut inner = self.inner.lock();
        let mut done = 0usize;
        while done < len {
            let va = addr + done as u64;
            let off = (va & (PAGE_SIZE - 1)) as usize;
            let n = (PAGE_SIZE as usize - off).min(len - done);
            let access = if perm & IOMMU_FAULT_PERM_WRITE != 0 {
                Access::WRITE.user()
            } else {
                Access::READ.user()
            };
            // The CPU walks first (setting A/D bits); only a miss or a permission fault goes
            // to the fault handler.
            let pfn = match walk::<FirstStage4, PhysMem>(&self.phys, self.root, va, access) {
                Ok(t) => t.pa.pfn(),
                Err(_) => {
                    let (pfn, fresh) = inner.fault_in(&self.phys, va, perm)?;
                    if fresh {
                        self.faults.fetch_add(1, Relaxed);
                    }
                    pfn
                }
            };
            let frame = self
                .phys
                .frame(pfn)
                .ok_or(efault_v("frame outside memory", pfn.0))?;
            f(frame, off, done, n);
            done += n;
        }
        Ok(())
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

    /// Registers a secondary TLB to be invalidated on every unmap/protection change; returns its
    /// registration number for [`Mm::unregister_secondary_tlb`]. The mm holds it weakly.
    pub fn register_secondary_tlb(&self, tlb: Weak<dyn SecondaryTlb>) -> u64 {
        let id = self.next_notifier.fetch_add(1, Relaxed);
        self.notifiers.lock().push((id, tlb));
        id
    }

    /// Removes a registration; unknown numbers are ignored.
    pub fn unregister_secondary_tlb(&self, id: u64) {
        self.notifiers.lock().retain(|(i, _)| *i != id);
    }

    /// Secondary TLBs currently registered.
    pub fn secondary_tlbs(&self) -> usize {
        self.notifiers.lock().len()
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
        let (_, fresh) = self.inner.lock().fault_in(&self.phys, addr, perm)?;
        if fresh {
            self.faults.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // No SVA domain can exist any more (each holds the mm), so no IOMMU caches it.
        let inner = self.inner.get_mut();
        for (_, pfn) in std::mem::take(&mut inner.pages) {
            self.phys.free_frame(pfn);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mm() -> Arc<Mm> {
        Mm::new(&Arc::new(PhysMem::new(256))).unwrap()
    }

    #[test]
    fn demand_zero_then_cpu_readback() {
        let mm = mm();
        let a = mm.mmap(3 * PAGE_SIZE, Prot::READ_WRITE).unwrap();
        assert_eq!(mm.stats().resident_pages, 0, "mmap allocates nothing");
        mm.write(a + 4090, b"hello across a page").unwrap();
        let mut b = [0u8; 19];
        mm.read(a + 4090, &mut b).unwrap();
        assert_eq!(&b, b"hello across a page");
        assert_eq!(mm.stats().resident_pages, 2);
        let mut z = [1u8; 16];
        mm.read(a + 2 * PAGE_SIZE, &mut z).unwrap();
        assert_eq!(z, [0; 16]);
    }

    #[test]
    fn faults_check_vma_and_permissions() {
        let mm = mm();
        let ro = mm.mmap(PAGE_SIZE, Prot::READ).unwrap();
        let none = mm.mmap(PAGE_SIZE, Prot::NONE).unwrap();
        assert_eq!(
            mm.handle_mm_fault(ro, IOMMU_FAULT_PERM_WRITE)
                .unwrap_err()
                .errno_name(),
            "EPERM"
        );
        assert!(mm.handle_mm_fault(ro, IOMMU_FAULT_PERM_READ).is_ok());
        assert_eq!(
            mm.handle_mm_fault(none, IOMMU_FAULT_PERM_READ)
                .unwrap_err()
                .errno_name(),
            "EPERM"
        );
        assert_eq!(
            mm.handle_mm_fault(ro, IOMMU_FAULT_PERM_EXEC)
                .unwrap_err()
                .errno_name(),
            "EPERM"
        );
        assert_eq!(
            mm.handle_mm_fault(0x1000, IOMMU_FAULT_PERM_READ)
                .unwrap_err()
                .errno_name(),
            "EFAULT"
        );
    }

    #[test]
    fn munmap_frees_frames_and_splits_vmas() {
        let phys = Arc::new(PhysMem::new(256));
        let mm = Mm::new(&phys).unwrap();
        let base = phys.frames_in_use();
        let a = mm.mmap(4 * PAGE_SIZE, Prot::READ_WRITE).unwrap();
        mm.write(a, &[1; 4 * PAGE_SIZE as usize]).unwrap();
        mm.munmap(a + PAGE_SIZE, 2 * PAGE_SIZE).unwrap();
        assert_eq!(
            mm.vmas(),
            vec![
                (a, a + PAGE_SIZE, Prot::READ_WRITE),
                (a + 3 * PAGE_SIZE, a + 4 * PAGE_SIZE, Prot::READ_WRITE)
            ]
        );
        assert_eq!(mm.stats().resident_pages, 2);
        assert!(mm.translate(a + PAGE_SIZE).is_none());
        assert_eq!(
            mm.read(a + PAGE_SIZE, &mut [0; 1])
                .unwrap_err()
                .errno_name(),
            "EFAULT"
        );
        mm.exit();
        assert_eq!(
            phys.frames_in_use(),
            base,
            "exit frees every data frame and table"
        );
        assert_eq!(
            mm.handle_mm_fault(a, IOMMU_FAULT_PERM_READ)
                .unwrap_err()
                .errno_name(),
            "EFAULT"
        );
    }

    #[test]
    fn mprotect_none_keeps_data_and_restores_it() {
        let mm = mm();
        let a = mm.mmap(PAGE_SIZE, Prot::READ_WRITE).unwrap();
        mm.write(a, b"kept").unwrap();
        mm.mprotect(a, PAGE_SIZE, Prot::NONE).unwrap();
        assert!(mm.translate(a).is_none());
        assert_eq!(mm.read(a, &mut [0; 4]).unwrap_err().errno_name(), "EPERM");
        mm.mprotect(a, PAGE_SIZE, Prot::READ).unwrap();
        let mut b = [0; 4];
        mm.read(a, &mut b).unwrap();
        assert_eq!(&b, b"kept");
        assert_eq!(mm.write(a, b"x").unwrap_err().errno_name(), "EPERM");
        assert_eq!(
            mm.mprotect(a, 2 * PAGE_SIZE, Prot::READ)
                .unwrap_err()
                .errno_name(),
            "ENOMEM"
        );
    }

    #[test]
    fn fixed_mmap_refuses_overlap() {
        let mm = mm();
        mm.mmap_fixed(0x40_0000, 2 * PAGE_SIZE, Prot::READ).unwrap();
        assert_eq!(
            mm.mmap_fixed(0x40_1000, PAGE_SIZE, Prot::READ)
                .unwrap_err()
                .errno_name(),
            "EEXIST"
        );
        assert_eq!(
            mm.mmap_fixed(0x40_0800, PAGE_SIZE, Prot::READ)
                .unwrap_err()
                .errno_name(),
            "EINVAL"
        );
        mm.mmap_fixed(0x40_2000, PAGE_SIZE, Prot::READ).unwrap();
    }
}

//! Demand paging: making a page present on a fault (device or CPU), and CPU accesses that
//! walk the first-stage table and fault on a miss (Linux `mm/memory.c`, `handle_mm_fault`).

use iommu_core::error::{efault, efault_v, enomem_v, eperm_v};
use iommu_core::{Result, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE};
use iommu_pt::{walk, Access, FirstStage4, Pfn, PhysAddr};

use super::{page_down, Mm, MmInner, USER_TOP};
use crate::phys::{PhysMem, PAGE_SHIFT, PAGE_SIZE};

impl MmInner {
    /// Makes `addr`'s page present for `perm`; returns its frame.
    pub(super) fn fault_in(&mut self, phys: &PhysMem, addr: u64, perm: u32) -> Result<(Pfn, bool)> {
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
        // Only a resident page can be mapped (entries are made here alone), so a page the map
        // does not hold needs no walk to know it is not present.
        let (pfn, fresh) = match self.pages.get(vpn) {
            Some(p) => {
                if let Some(m) = self.pt.query(page) {
                    return Ok((m.pa.pfn(), false));
                }
                (p, false)
            }
            None => (phys.alloc_frame()?, true),
        };
        // A fresh frame gets the page's swapped-out contents before anything can map it.
        let filled = if fresh {
            self.swap_in(phys, vpn, pfn)
        } else {
            Ok(())
        };
        let mapped = filled.and_then(|()| {
            self.pt
                .map(page, pfn.addr(), PAGE_SIZE, vma.prot.pte_perms())
                .map_err(|_| enomem_v("no memory for page tables", addr))
        });
        if let Err(e) = mapped {
            if fresh {
                phys.release_frame(pfn);
            }
            return Err(e);
        }
        self.pages.insert(vpn, pfn);
        self.swapped.remove(&vpn);
        Ok((pfn, true))
    }
}

impl Mm {
    /// Copies `buf.len()` bytes from user address `addr`, faulting pages in as the CPU would
    /// (demand-zero). `EFAULT` outside any VMA, `EPERM` without read permission; on error
    /// `buf` may be partly filled.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.cpu_access(addr, buf.len(), IOMMU_FAULT_PERM_READ, |pa, done, n| {
            self.phys.read(pa, &mut buf[done..done + n])
        })
    }

    /// Copies `data` to user address `addr`, faulting pages in. `EFAULT` outside any VMA,
    /// `EPERM` without write permission; on error a prefix may have been written.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.cpu_access(addr, data.len(), IOMMU_FAULT_PERM_WRITE, |pa, done, n| {
            self.phys.write(pa, &data[done..done + n])
        })
    }

    fn cpu_access(
        &self,
        addr: u64,
        len: usize,
        perm: u32,
        mut f: impl FnMut(PhysAddr, usize, usize) -> Result<()>,
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
                        crate::counter::add_locked(&self.faults, 1);
                    }
                    pfn
                }
            };
            f(PhysAddr(pfn.addr().0 + off as u64), done, n)?;
            done += n;
        }
        Ok(())
    }
}

//! IOVA spaces (Linux `io_pagetable.c` and `ioas.c`): the mappings of an IOAS and their
//! propagation into every paging HWPT on it.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use iommu_core::error::{eexist_v, einval_v, enoent_v, enospc, eoverflow_v};
use iommu_core::{Domain, Result, IOMMU_READ, IOMMU_WRITE};

use super::{Ictx, Object};

/// The IOVA aperture every IOAS reports as allowed: `[0, IOAS_APERTURE_END)` (48-bit).
pub const IOAS_APERTURE_END: u64 = 1 << 48;
const PAGE_SIZE: u64 = 4096;

/// An allowed IOVA range of an IOAS, inclusive (Linux `struct iommu_iova_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// First allowed IOVA.
    pub start: u64,
    /// Last allowed IOVA (inclusive).
    pub last: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct IoasMap {
    len: u64,
    pa: u64,
    prot: u32,
}

#[derive(Default)]
pub(super) struct IoasObj {
    /// IOVA → mapping; mappings never overlap.
    maps: BTreeMap<u64, IoasMap>,
    /// The paging HWPTs on this IOAS (id → domain): every mapping is pushed into each.
    pub(super) hwpts: BTreeMap<u32, Arc<Domain>>,
}

/// Maps each `(domain, iova, mapping)` in turn; on the first refusal unmaps what was mapped
/// (in order) and returns that error, so the domains are as before (Linux's `iopt_fill_domain`
/// and `iopt_map_pages` unwinding).
fn map_or_roll_back<'a>(steps: impl IntoIterator<Item = (&'a Domain, u64, IoasMap)>) -> Result<()> {
    let mut done: Vec<(&Domain, u64, u64)> = Vec::new();
    for (domain, iova, m) in steps {
        if let Err(e) = domain.map(iova, m.pa, m.len, m.prot) {
            for &(domain, iova, len) in &done {
                let _ = domain.unmap(iova, len);
            }
            return Err(e);
        }
        done.push((domain, iova, m.len));
    }
    Ok(())
}

impl IoasObj {
    /// Pushes every mapping into a new paging HWPT's `domain` and adds it as `hwpt_id`; on a
    /// refusal the domain is left empty and the IOAS unchanged.
    pub(super) fn add_hwpt(&mut self, hwpt_id: u32, domain: &Arc<Domain>) -> Result<()> {
        map_or_roll_back(self.maps.iter().map(|(&iova, &m)| (&**domain, iova, m)))?;
        self.hwpts.insert(hwpt_id, domain.clone());
        Ok(())
    }

    /// Removes paging HWPT `hwpt_id` and unmaps every mapping from its `domain`.
    pub(super) fn remove_hwpt(&mut self, hwpt_id: u32, domain: &Domain) {
        self.hwpts.remove(&hwpt_id);
        for (&iova, m) in &self.maps {
            let _ = domain.unmap(iova, m.len);
        }
    }

    /// Checks that `[iova, iova + len)` is aligned, inside the aperture and free.
    fn check_fixed_iova(&self, iova: u64, len: u64) -> Result<u64> {
        if !iova.is_multiple_of(PAGE_SIZE) {
            return Err(einval_v("IOVA not 4 KiB aligned", iova));
        }
        // Linux `iopt_check_iova`: a range whose last byte wraps is EOVERFLOW.
        if iova.checked_add(len - 1).is_none() {
            return Err(eoverflow_v("IOVA + length wraps the address space", iova));
        }
        if iova.checked_add(len).is_none_or(|e| e > IOAS_APERTURE_END) {
            return Err(einval_v(
                "IOVA range beyond the aperture (end 1 << 48)",
                iova,
            ));
        }
        let end = iova + len;
        if let Some((&at, _)) = self
            .maps
            .range(..end)
            .next_back()
            .filter(|(&s, m)| s + m.len > iova)
        {
            return Err(eexist_v("IOVA range already mapped", at));
        }
        Ok(iova)
    }

    /// The lowest free IOVA with `len` bytes free after it.
    fn find_free_iova(&self, len: u64) -> Result<u64> {
        let mut cursor = 0u64;
        for (&s, m) in &self.maps {
            if s - cursor >= len {
                break;
            }
            cursor = s + m.len;
        }
        if IOAS_APERTURE_END - cursor < len {
            return Err(enospc("no free IOVA range large enough"));
        }
        Ok(cursor)
    }
}

impl Ictx {
    /// `IOMMU_IOAS_ALLOC`: a new, empty IOVA space; returns its ID.
    pub fn ioas_alloc(&self) -> Result<u32> {
        let mut t = self.table.lock();
        let id = t.alloc_id()?;
        t.insert_object(id, Object::Ioas(IoasObj::default()));
        Ok(id)
    }

    /// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges mappings may use.
    pub fn ioas_iova_ranges(&self, ioas_id: u32) -> Result<Vec<IovaRange>> {
        let mut t = self.table.lock();
        t.ioas_mut(ioas_id)?;
        Ok(alloc::vec![IovaRange {
            start: 0,
            last: IOAS_APERTURE_END - 1,
        }])
    }

    /// `IOMMU_IOAS_MAP`: maps `len` bytes of physical memory at `pa` into the IOAS at `iova`
    /// (or at the lowest free IOVA with `None`); returns the IOVA used.
    ///
    /// The mapping is pushed into every paging HWPT on the IOAS through `Domain::map`; if one
    /// refuses, the others are rolled back. `ENOENT` for an unknown IOAS; `EINVAL` for a zero
    /// or unaligned (4 KiB) range, a range outside the allowed IOVA ranges, or `prot` not a
    /// non-empty subset of `IOMMU_READ | IOMMU_WRITE`; `EOVERFLOW` when `pa + len` or
    /// `iova + len` wraps (Linux's `check_add_overflow` on the user range); `EEXIST` for an
    /// overlap; `ENOSPC` when no free IOVA range is large enough.
    pub fn ioas_map(
        &self,
        ioas_id: u32,
        iova: Option<u64>,
        pa: u64,
        len: u64,
        prot: u32,
    ) -> Result<u64> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) || !pa.is_multiple_of(PAGE_SIZE) {
            return Err(einval_v("length/address not 4 KiB aligned", len));
        }
        if prot == 0 || prot & !(IOMMU_READ | IOMMU_WRITE) != 0 {
            return Err(einval_v("bad prot", prot.into()));
        }
        if pa.checked_add(len - 1).is_none() {
            return Err(eoverflow_v("physical address + length wraps", pa));
        }
        let iova = match iova {
            Some(iova) => ioas.check_fixed_iova(iova, len)?,
            None => ioas.find_free_iova(len)?,
        };
        let m = IoasMap { len, pa, prot };
        map_or_roll_back(ioas.hwpts.values().map(|d| (&**d, iova, m)))?;
        ioas.maps.insert(iova, m);
        Ok(iova)
    }

    /// `IOMMU_IOAS_UNMAP`: removes every mapping inside `[iova, iova + len)` from the IOAS and
    /// its paging HWPTs; returns the bytes unmapped. `ENOENT` for an unknown IOAS or when
    /// nothing is mapped there; `EINVAL` for a zero length or if a mapping straddles the
    /// range's edge (mappings are not split); `EOVERFLOW` if the range wraps (Linux
    /// `iopt_unmap_iova`).
    pub fn ioas_unmap(&self, ioas_id: u32, iova: u64, len: u64) -> Result<u64> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        if len == 0 {
            return Err(einval_v("zero-length unmap at IOVA", iova));
        }
        if iova.checked_add(len - 1).is_none() {
            return Err(eoverflow_v("IOVA + length wraps the address space", iova));
        }
        let end = iova.saturating_add(len);
        let hit: Vec<(u64, u64)> = ioas
            .maps
            .iter()
            .filter(|(&s, m)| s < end && s + m.len > iova)
            .map(|(&s, m)| (s, m.len))
            .collect();
        if hit.iter().any(|&(s, l)| s < iova || s + l > end) {
            return Err(einval_v("unmap would split a mapping", iova));
        }
        if hit.is_empty() {
            return Err(enoent_v("nothing mapped in range", iova));
        }
        let mut total = 0;
        for (s, l) in hit {
            for d in ioas.hwpts.values() {
                let _ = d.unmap(s, l);
            }
            ioas.maps.remove(&s);
            total += l;
        }
        Ok(total)
    }
}

//! Domains: what a context entry points at. Blocked, identity, paging (a second-stage table
//! this IOMMU owns), SVA (the mm's first-stage table) and nested; their domain IDs, map/unmap
//! of paging domains, and the [`PasidEntry`] each domain is installed as. Linux:
//! `intel/iommu.c` (domain alloc, `map_pages`), `intel/svm.c` (SVA domains), `intel/nested.c`.

use std::sync::{Arc, Weak};

use iommu_core::error::{einval, enomem, enospc, Condition, Error};
use iommu_core::{Domain, DomainRequest, DriverDomain, Result};
use iommu_pt::{PageTable, Perms, Pfn, PhysAddr, SecondStage};
use parking_lot::Mutex;

use super::context::CtxEntry;
use super::EmuIommu;
use crate::mm::{Mm, SecondaryTlb};
use crate::phys::PhysMem;
use crate::spec::pasid::{PasidEntry, Pgtt};

/// A domain ID, given back (and its IOTLB entries flushed) when the last user drops it.
pub(super) struct DidGuard {
    pub did: u16,
    iommu: Weak<EmuIommu>,
}

impl Drop for DidGuard {
    fn drop(&mut self) {
        if let Some(iommu) = self.iommu.upgrade() {
            let did = self.did;
            // No window needed: the last context entry using this DID is gone (removed under
            // the write lock), so no translation can fill an entry with it any more.
            iommu.iotlb.invalidate(|e| e.tag.did == did);
            iommu.dids.lock().push(did);
        }
    }
}

pub(super) enum Backing {
    Blocked,
    Identity,
    Paging(Mutex<PageTable<SecondStage, Arc<PhysMem>>>),
    Sva {
        mm: Arc<Mm>,
        _hook: Arc<SvaHook>,
        reg: u64,
    },
    Nested {
        parent: Arc<DomainInner>,
    },
}

/// The driver-private state of a domain, shared by the PASID/RID entries that point at it.
pub(super) struct DomainInner {
    pub did: DidGuard,
    pub root: Pfn,
    pub backing: Backing,
}

impl Drop for DomainInner {
    fn drop(&mut self) {
        if let Backing::Sva { mm, reg, .. } = &self.backing {
            mm.unregister_secondary_tlb(*reg);
        }
    }
}

/// What `Domain::driver_data` holds for a domain of this IOMMU.
pub(super) struct EmuDomain(pub Arc<DomainInner>);

/// The secondary TLB an SVA domain registers on its mm.
pub(super) struct SvaHook {
    iommu: Weak<EmuIommu>,
    did: u16,
}

impl SecondaryTlb for SvaHook {
    fn invalidate_range(&self, _mm_id: u64, start: u64, end: u64) {
        if let Some(iommu) = self.iommu.upgrade() {
            iommu.invalidate_did_range(self.did, start, end);
        }
    }
}

impl EmuIommu {
    /// The domain ID this IOMMU gave `domain`; `None` for another IOMMU's domain.
    pub fn domain_did(&self, domain: &Domain) -> Option<u16> {
        self.own(domain).ok().map(|d| d.did.did)
    }

    /// `domain`'s driver state, if this instance allocated it (another `EmuIommu`'s domain has
    /// the same type but other caches: using it here would leave stale IOTLB entries there).
    pub(super) fn own<'d>(&self, domain: &'d Domain) -> Result<&'d Arc<DomainInner>> {
        if !std::ptr::addr_eq(Arc::as_ptr(domain.owner()), self as *const EmuIommu) {
            return Err(einval("domain belongs to another IOMMU").because(Condition::ForeignDomain));
        }
        domain
            .driver_data::<EmuDomain>()
            .map(|d| &d.0)
            .ok_or(einval("domain belongs to another driver").because(Condition::ForeignDomain))
    }

    fn paging_inner<'d>(
        &self,
        domain: &'d Domain,
    ) -> Result<&'d Mutex<PageTable<SecondStage, Arc<PhysMem>>>> {
        match &self.own(domain)?.backing {
            Backing::Paging(pt) => Ok(pt),
            _ => Err(einval("not a paging domain")),
        }
    }

    /// Maps `[iova, iova + len)` of paging domain `domain` to `[pa, pa + len)` with `perms`
    /// (iommufd's `IOMMU_IOAS_MAP` lands here). `EINVAL` for another driver's or a non-paging
    /// domain and for bad ranges, `EEXIST` if already mapped, `ENOMEM`. Nothing changes on error.
    pub fn map(
        &self,
        domain: &Domain,
        iova: u64,
        pa: PhysAddr,
        len: u64,
        perms: Perms,
    ) -> Result<()> {
        self.paging_inner(domain)?
            .lock()
            .map(iova, pa, len, perms)
            .map_err(pt_error)
    }

    /// Unmaps `[iova, iova + len)` of paging domain `domain`; returns the bytes unmapped. The
    /// IOTLB and every device TLB are invalidated, and DMA in flight through the old entries has
    /// completed, before the table pages are freed. `ENOENT` if nothing was mapped.
    pub fn unmap(&self, domain: &Domain, iova: u64, len: u64) -> Result<u64> {
        let did = self
            .domain_did(domain)
            .ok_or(einval("domain belongs to another driver").because(Condition::ForeignDomain))?;
        let pt = self.paging_inner(domain)?;
        let mut pt = pt.lock();
        let u = pt.unmap(iova, len).map_err(pt_error)?;
        self.invalidate_did_range(did, iova, iova.saturating_add(len));
        pt.free_tables(u.freed_tables);
        Ok(u.bytes)
    }

    /// What `iova` maps to in paging domain `domain` (no accessed/dirty update).
    pub fn iova_to_phys(&self, domain: &Domain, iova: u64) -> Option<PhysAddr> {
        let pt = self.paging_inner(domain).ok()?.lock();
        pt.query(iova).and_then(|m| m.translate(iova))
    }

    pub(super) fn entry_for(&self, domain: &Domain) -> Result<CtxEntry> {
        let inner = self.own(domain)?;
        let did = inner.did.did;
        let pe = match &inner.backing {
            Backing::Blocked => PasidEntry::not_present(did),
            Backing::Identity => PasidEntry::new(did, Pgtt::PassThrough),
            Backing::Paging(_) => {
                PasidEntry::new(did, Pgtt::SecondStage).with_ssptptr(inner.root.0)
            }
            Backing::Sva { .. } => {
                PasidEntry::new(did, Pgtt::FirstStage).with_fsptptr(inner.root.0)
            }
            Backing::Nested { parent } => {
                PasidEntry::new(did, Pgtt::Nested).with_ssptptr(parent.root.0)
            }
        };
        Ok(CtxEntry {
            words: pe.modelled(),
            fault_capable: domain.is_fault_capable(),
            _domain: inner.clone(),
        })
    }

    fn alloc_did(&self) -> Result<DidGuard> {
        let did = self.dids.lock().pop().ok_or(enospc("no domain ID left"))?;
        Ok(DidGuard {
            did,
            iommu: self.me.clone(),
        })
    }
}

impl EmuIommu {
    /// Linux `domain_alloc`: a domain ID, then the tables (if any) of the requested kind.
    pub(super) fn alloc_domain(&self, req: &DomainRequest<'_>) -> Result<DriverDomain> {
        let did = self.alloc_did()?;
        let (root, backing) = match req {
            DomainRequest::Blocked => (Pfn(0), Backing::Blocked),
            DomainRequest::Identity => (Pfn(0), Backing::Identity),
            DomainRequest::Paging { .. } => self.paging_backing()?,
            DomainRequest::Sva(mm) => self.sva_backing(mm, did.did)?,
            DomainRequest::Nested {
                parent,
                data_type,
                data,
            } => {
                super::nested::VtdS1::parse(*data_type, data)?;
                nested_backing(parent)?
            }
        };
        let inner = Arc::new(DomainInner { did, root, backing });
        Ok(DriverDomain {
            data: Box::new(EmuDomain(inner)),
            // Every kind may sit in a PASID entry except a blocked one (use remove instead).
            set_dev_pasid: !matches!(req, DomainRequest::Blocked),
        })
    }

    /// A fresh, empty second-stage table in this IOMMU's memory.
    fn paging_backing(&self) -> Result<(Pfn, Backing)> {
        let pt = PageTable::<SecondStage, _>::new(self.phys.clone())
            .map_err(|_| enomem("no memory for a second-stage root"))?;
        Ok((pt.root(), Backing::Paging(Mutex::new(pt))))
    }

    /// The mm's own first-stage table, with this IOMMU registered as its secondary TLB.
    fn sva_backing(
        &self,
        mm: &Arc<dyn iommu_core::AddressSpace>,
        did: u16,
    ) -> Result<(Pfn, Backing)> {
        let mm =
            Mm::from_address_space(mm).ok_or(einval("SVA needs an iommu-emu Mm address space"))?;
        if !Arc::ptr_eq(mm.phys(), &self.phys) {
            return Err(einval("the mm lives in another physical memory"));
        }
        let hook = Arc::new(SvaHook {
            iommu: self.me.clone(),
            did,
        });
        let weak: Weak<dyn SecondaryTlb> = Arc::downgrade(&hook) as Weak<dyn SecondaryTlb>;
        let reg = mm.register_secondary_tlb(weak);
        Ok((
            mm.pgd_root(),
            Backing::Sva {
                mm,
                _hook: hook,
                reg,
            },
        ))
    }
}

/// A nested domain translates through its parent's second stage (which must be ours).
fn nested_backing(parent: &Domain) -> Result<(Pfn, Backing)> {
    let p = parent.driver_data::<EmuDomain>().ok_or(
        einval("nested parent belongs to another driver").because(Condition::ForeignDomain),
    )?;
    if !matches!(p.0.backing, Backing::Paging(_)) {
        return Err(einval("nested parent is not a paging domain"));
    }
    Ok((
        Pfn(0),
        Backing::Nested {
            parent: p.0.clone(),
        },
    ))
}

fn pt_error(e: iommu_pt::PtError) -> Error {
    use iommu_core::error::{eexist, enoent};
    match e.errno() {
        iommu_pt::errno::EEXIST => eexist("range already mapped"),
        iommu_pt::errno::ENOMEM => enomem("out of page-table memory"),
        iommu_pt::errno::ENOENT => enoent("nothing mapped in range"),
        _ => einval("invalid range, alignment or permissions"),
    }
}

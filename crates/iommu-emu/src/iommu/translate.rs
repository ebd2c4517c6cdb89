//! Translation inside a DMA window: IOTLB lookup, context-entry lookup, table walk, IOTLB
//! fill, and writing page request groups (Linux: what VT-d hardware does; the driver side of
//! page requests is `intel/prq.c`).

use std::sync::Arc;

use iommu_core::{Device, PageRequest};
use iommu_pt::{
    walk_caching, walk_leaf_table, Access, FaultKind, FirstStage4, Format, Perms, Pfn, PhysAddr,
    SecondStage,
};

use super::context::{CtxEntry, Tr};
use super::{DmaWindow, EmuIommu, FaultReason, TranslationFault};
use crate::phys::{PhysMem, PAGE_SHIFT};
use crate::prq::Pushed;
use crate::psc::SPAN_SHIFT;
use crate::tlb::{perm_bits, perms_allow, pkey, Entry, Tag, P_EXEC, P_READ, P_USER, P_WRITE};

impl DmaWindow<'_> {
    /// Translates an access of `dev` (see [`EmuIommu::translate`]).
    pub fn translate(
        &self,
        dev: &Device,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> core::result::Result<iommu_pt::Translation, TranslationFault> {
        let Some(sid) = self.hw.by_id.get(&dev.id()).copied() else {
            return Err(fault(FaultReason::NoContext, iova, false));
        };
        self.translate_source(sid, pasid, iova, access)
            .map(|(pa, perms)| iommu_pt::Translation {
                pa: PhysAddr(pa | (iova & 0xfff)),
                size: iommu_pt::PageSize::Size4K,
                perms,
            })
    }

    /// Translates an access of the requester with source ID `sid` (see
    /// [`EmuIommu::source_id`]): what hardware does, keyed by the request's requester ID
    /// rather than by a device object. Returns the page-aligned physical address and the
    /// permissions of the page.
    ///
    /// The hot path: an IOTLB hit that allows the access answers at once; anything else looks
    /// up the context entry, walks its table and fills the IOTLB.
    #[inline]
    pub fn translate_source(
        &self,
        sid: u32,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> core::result::Result<(u64, Perms), TranslationFault> {
        let vpn = iova >> PAGE_SHIFT;
        let k = pkey(pasid);
        if let Some(e) = self.iommu.iotlb.lookup(sid, k, vpn) {
            if perms_allow(e.perms, access) {
                self.hits.set(self.hits.get() + 1);
                return Ok((e.pa, perms_of(e.perms)));
            }
        }
        self.misses.set(self.misses.get() + 1);
        let entry = self.context_entry(sid, pasid, iova)?;
        let tr = entry.tr();
        let walked = match tr {
            Tr::Blocked => return Err(fault(FaultReason::Blocked, iova, false)),
            Tr::Identity => return Ok((iova & !0xfff, Perms::ALL)),
            Tr::FirstStage(root) => self.walk::<FirstStage4>(root, iova, access),
            Tr::SecondStage(root) => {
                let a = Access {
                    user: false,
                    ..access
                };
                self.walk::<SecondStage>(root, iova, a)
            }
        };
        match walked {
            Ok(t) => Ok(self.fill(sid, k, vpn, entry, tr, t)),
            Err(w) => Err(walk_fault(w.kind, iova, entry.fault_capable)),
        }
    }

    /// Walks the tables of format `F` at `root`, from the last-level table the
    /// paging-structure cache holds for `iova`'s span when it has one (see `psc.rs`), caching
    /// the one it reaches otherwise.
    #[inline(always)]
    fn walk<F: Format>(
        &self,
        root: Pfn,
        iova: u64,
        access: Access,
    ) -> core::result::Result<iommu_pt::Translation, iommu_pt::WalkFault> {
        let iommu = self.iommu;
        let span = iova >> SPAN_SHIFT;
        let generation = iommu.iotlb.generation();
        if let Some(at) = iommu.psc.lookup(root, span, generation) {
            self.psc_hits.set(self.psc_hits.get() + 1);
            return walk_leaf_table::<F, PhysMem>(&iommu.phys, at, iova, access);
        }
        walk_caching::<F, PhysMem>(&iommu.phys, root, iova, access, |at| {
            iommu.psc.insert(root, span, generation, at);
        })
    }

    #[inline(always)]
    /// The context entry DMA of (`sid`, `pasid`) goes through: the RID entry, or the PASID
    /// table's entry (within the device's PASID range).
    fn context_entry(
        &self,
        sid: u32,
        pasid: Option<u32>,
        iova: u64,
    ) -> core::result::Result<&CtxEntry, TranslationFault> {
        let ctx = self
            .hw
            .devices
            .get(sid as usize)
            .and_then(Option::as_ref)
            .ok_or(fault(FaultReason::NoContext, iova, false))?;
        match pasid {
            None => ctx.rid.as_ref(),
            Some(p) => {
                if p >= ctx.max_pasids {
                    return Err(fault(FaultReason::PasidOutOfRange, iova, false));
                }
                ctx.pasids.get(&p)
            }
        }
        .ok_or(fault(FaultReason::NoContext, iova, false))
    }

    #[inline(always)]
    /// Caches a successful walk in the IOTLB (inside the window: no stale fill) and returns
    /// the page-aligned address and permissions.
    fn fill(
        &self,
        sid: u32,
        k: u32,
        vpn: u64,
        entry: &CtxEntry,
        tr: Tr,
        t: iommu_pt::Translation,
    ) -> (u64, Perms) {
        let pa = t.pa.0 & !0xfff;
        // The second stage has no user/supervisor bit: every access is checked the same
        // way, so the cached entry allows user accesses (else a user-tagged request would
        // never hit the caches).
        let perms = match tr {
            Tr::SecondStage(_) => Perms {
                user: true,
                ..t.perms
            },
            _ => t.perms,
        };
        self.iommu.iotlb.insert(Entry {
            vpn,
            tag: Tag {
                sid,
                pkey: k,
                did: entry.did(),
            },
            pa,
            perms: perm_bits(perms),
        });
        (pa, perms)
    }

    /// Whether `sid`'s `pasid` has a context entry whose domain takes page requests.
    pub(crate) fn fault_capable(&self, sid: u32, pasid: Option<u32>) -> bool {
        let Some(Some(ctx)) = self.hw.devices.get(sid as usize) else {
            return false;
        };
        match pasid {
            None => ctx.rid.as_ref(),
            Some(p) => ctx.pasids.get(&p),
        }
        .is_some_and(|e| e.fault_capable)
    }

    /// Writes a page request group into the queue, if the context still takes page requests
    /// (checked inside the window, so `remove_dev_pasid`'s drain sees it, H2). `None`: the
    /// context is gone. `epoch`: the endpoint's reset epoch of the group, for the trace.
    pub(crate) fn page_request(
        &self,
        sid: u32,
        dev: &Arc<Device>,
        pasid: Option<u32>,
        reqs: impl ExactSizeIterator<Item = PageRequest>,
        epoch: u64,
        helper: bool,
    ) -> Option<Pushed> {
        if !self.fault_capable(sid, pasid) {
            return None;
        }
        Some(self.iommu.prq.push_group(sid, dev, reqs, epoch, helper))
    }

    /// The IOMMU this window belongs to.
    pub fn iommu(&self) -> &EmuIommu {
        self.iommu
    }
}

/// A translation fault at `iova`.
#[inline]
fn fault(reason: FaultReason, iova: u64, recoverable: bool) -> TranslationFault {
    TranslationFault {
        reason,
        iova,
        recoverable,
    }
}

/// The fault a failed walk reports: not-present and permission faults can be fixed by a page
/// request when the context takes them.
#[inline]
fn walk_fault(kind: FaultKind, iova: u64, fault_capable: bool) -> TranslationFault {
    let (reason, fixable) = match kind {
        FaultKind::NotPresent => (FaultReason::NotPresent, true),
        FaultKind::NonCanonical => (FaultReason::AddressSize, false),
        FaultKind::BadTable => (FaultReason::BadTable, false),
        k => (FaultReason::Permission(k), true),
    };
    fault(reason, iova, fixable && fault_capable)
}

fn perms_of(bits: u64) -> Perms {
    Perms {
        read: bits & P_READ != 0,
        write: bits & P_WRITE != 0,
        exec: bits & P_EXEC != 0,
        user: bits & P_USER != 0,
    }
}

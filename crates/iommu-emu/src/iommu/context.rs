//! The hardware state DMA translation reads: each device's RID context and PASID table, kept as
//! VT-d PASID-table entries ([`PasidEntry`]) under the IOMMU's hardware lock. Linux:
//! `intel/pasid.c` (the entries) and `intel/iommu.c` (the context table).

use std::collections::HashMap;
use std::sync::Arc;

use iommu_core::DeviceId;
use iommu_pt::Pfn;

use super::domain::DomainInner;
use crate::hash::FastHash;
use crate::spec::pasid::{PasidEntry, Pgtt};
use crate::tlb::Tlb;

/// How a context translates, decoded from its entry on an IOTLB miss.
#[derive(Clone, Copy)]
pub(super) enum Tr {
    Blocked,
    Identity,
    FirstStage(Pfn),
    SecondStage(Pfn),
}

/// A RID context or PASID-table entry: the encoded entry, plus what software keeps beside it.
#[derive(Clone)]
pub(super) struct CtxEntry {
    /// The words of the entry as hardware would read it that hold the modelled fields (the
    /// other five words of the 64-byte entry are always 0, so they are not stored: an SVA
    /// binding's idle footprint stays that of the decoded entry). A blocking domain is kept as
    /// a not-present entry (VT-d tears the entry down instead; keeping it lets a fault say
    /// `Blocked` rather than `NoContext`).
    pub words: [u64; PasidEntry::MODELLED_WORDS],
    /// The domain takes page requests (its faults are recoverable). In VT-d this is the
    /// driver's choice (PRI enabled and an IOPF queue), not a PASID-entry bit.
    pub fault_capable: bool,
    /// Keeps the domain (and its DID and tables) alive while an entry points at it.
    pub _domain: Arc<DomainInner>,
}

impl CtxEntry {
    /// The PASID-table entry.
    #[inline]
    pub fn pe(&self) -> PasidEntry {
        PasidEntry::from_modelled(self.words)
    }

    /// The domain ID the entry tags cached translations with.
    #[inline]
    pub fn did(&self) -> u16 {
        self.pe().did()
    }

    /// How DMA through this entry is translated. A nested entry walks its second stage with
    /// an identity first stage (the stage-1 table is accepted but not walked yet).
    #[inline]
    pub fn tr(&self) -> Tr {
        let pe = self.pe();
        if !pe.present() {
            return Tr::Blocked;
        }
        match pe.pgtt() {
            Some(Pgtt::PassThrough) => Tr::Identity,
            Some(Pgtt::FirstStage) => Tr::FirstStage(Pfn(pe.fsptptr())),
            Some(Pgtt::SecondStage | Pgtt::Nested) => Tr::SecondStage(Pfn(pe.ssptptr())),
            // Never written by the emulator; a reserved type blocks, as hardware faults it.
            None => Tr::Blocked,
        }
    }
}

/// One probed device: its context entries and its device TLB.
pub(super) struct DevCtx {
    pub id: DeviceId,
    pub max_pasids: u32,
    pub rid: Option<CtxEntry>,
    pub pasids: HashMap<u32, CtxEntry, FastHash>,
    /// The endpoint's ATS device TLB, once an endpoint drives the device.
    pub atc: Option<Arc<Tlb>>,
}

/// Everything DMA translation reads (the "hardware lock" guards it; see the module docs).
#[derive(Default)]
pub(super) struct HwState {
    /// By source ID.
    pub devices: Vec<Option<DevCtx>>,
    pub by_id: HashMap<DeviceId, u32, FastHash>,
}

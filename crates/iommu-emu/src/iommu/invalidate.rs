//! Invalidation: IOTLB and device-TLB flushes by domain ID, by (device, PASID) and by range,
//! each under the write side of the hardware lock so DMA in flight completes first (Linux:
//! `intel/cache.c`, `cache_tag_flush_range`, and the device-TLB flushes of `intel/dmar.c`).

use std::sync::atomic::Ordering::Relaxed;

use iommu_core::{Device, Domain};

use super::context::HwState;
use super::EmuIommu;
use crate::phys::PAGE_SHIFT;
use crate::tlb::{pkey, Entry, Tlb};

impl EmuIommu {
    /// Invalidates the IOTLB entries of domain ID `did` in `[start, end)` and the device-TLB
    /// entries of every (device, PASID) pointing at it, after DMA in flight has completed.
    pub(super) fn invalidate_did_range(&self, did: u16, start: u64, end: u64) {
        let hw = self.hw.write();
        self.counters.invalidations.fetch_add(1, Relaxed);
        let (first, last) = (start >> PAGE_SHIFT, end.saturating_sub(1) >> PAGE_SHIFT);
        self.iotlb
            .invalidate(|e| e.tag.did == did && e.vpn >= first && e.vpn <= last);
        for ctx in hw.devices.iter().flatten() {
            let Some(atc) = &ctx.atc else { continue };
            let mut keys: Vec<u32> = ctx
                .pasids
                .iter()
                .filter(|(_, e)| e.did() == did)
                .map(|(p, _)| pkey(Some(*p)))
                .collect();
            if ctx.rid.as_ref().is_some_and(|e| e.did() == did) {
                keys.push(pkey(None));
            }
            if !keys.is_empty() {
                atc.invalidate(|e| keys.contains(&e.tag.pkey) && e.vpn >= first && e.vpn <= last);
            }
        }
    }

    /// Flushes every cached translation of domain `domain` (IOTLB by DID and device TLBs).
    pub fn flush_domain(&self, domain: &Domain) {
        if let Some(did) = self.domain_did(domain) {
            self.invalidate_did_range(did, 0, u64::MAX);
        }
    }

    /// Flushes the cached translations of `[start, end)` in domain `domain` (IOTLB entries with
    /// its DID and the device-TLB entries of every (device, PASID) attached to it), waiting for
    /// DMA in flight through them.
    pub fn flush_range(&self, domain: &Domain, start: u64, end: u64) {
        if let Some(did) = self.domain_did(domain) {
            self.invalidate_did_range(did, start, end);
        }
    }

    /// Drops the entries of one function's device TLB that `pred` selects, under the write side
    /// of the hardware lock like every other invalidation: DMA passes (and ATS translations)
    /// in flight through them complete first, and none can refill them afterwards without
    /// seeing what the caller changed before (a stopped PASID, a reset, PASID disabled).
    pub(crate) fn invalidate_device_tlb(&self, atc: &Tlb, pred: impl Fn(&Entry) -> bool) {
        let _hw = self.hw.write();
        self.counters.invalidations.fetch_add(1, Relaxed);
        atc.invalidate(pred);
    }

    /// Flushes every cached translation of `dev`'s `pasid` (`None`: its RID).
    pub fn flush_pasid(&self, dev: &Device, pasid: Option<u32>) {
        let hw = self.hw.write();
        if let Some(sid) = hw.by_id.get(&dev.id()).copied() {
            self.flush_sid_pasid(&hw, sid, pasid);
        }
    }

    pub(super) fn flush_sid_pasid(&self, hw: &HwState, sid: u32, pasid: Option<u32>) {
        self.counters.invalidations.fetch_add(1, Relaxed);
        let k = pkey(pasid);
        self.iotlb
            .invalidate(|e| e.tag.sid == sid && e.tag.pkey == k);
        if let Some(Some(ctx)) = hw.devices.get(sid as usize) {
            if let Some(atc) = &ctx.atc {
                atc.invalidate(|e| e.tag.pkey == k);
            }
        }
    }
}

//! Secondary TLBs: caches of an mm's translations outside the CPU (Linux
//! `mm/mmu_notifier.c`), told about every range before its frames are freed.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use super::Mm;

/// A cache of this mm's translations outside the CPU (an IOMMU's IOTLB and the device TLBs
/// behind it): Linux's secondary-TLB `mmu_notifier`.
pub trait SecondaryTlb: Send + Sync {
    /// `[start, end)` of mm `mm_id` changed: its entries are already cleared from the page
    /// table, and its frames and table pages will be freed when this returns. Must drop every
    /// cached translation of the range and wait until no access through one is in flight.
    /// Called with the mm's lock held: must not call back into the mm.
    fn invalidate_range(&self, mm_id: u64, start: u64, end: u64);
}

impl Mm {
    /// Tells every secondary TLB that `[start, end)` changed (entries already cleared).
    pub(super) fn invalidate_secondary(&self, start: u64, end: u64) {
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
}

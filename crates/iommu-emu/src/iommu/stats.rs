//! The IOMMU's counters: [`IommuStats`] and where they are kept.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::EmuIommu;

/// A snapshot of an IOMMU's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IommuStats {
    /// Translations performed (IOTLB hits + misses).
    pub translations: u64,
    /// IOTLB hits.
    pub iotlb_hits: u64,
    /// IOTLB misses (each one a table walk, or a fault without a context).
    pub iotlb_misses: u64,
    /// Walks that started at a last-level table from the paging-structure cache (reading one
    /// entry instead of one per level).
    pub psc_hits: u64,
    /// Page requests written to the queue.
    pub page_requests: u64,
    /// Times the page request queue overflowed.
    pub prq_overflows: u64,
    /// Groups the hardware answered Success itself during an overflow.
    pub prq_auto_responses: u64,
    /// Partial requests dropped during an overflow.
    pub prq_dropped_partials: u64,
    /// Page responses sent by software.
    pub page_responses: u64,
    /// IOTLB invalidation commands executed.
    pub invalidations: u64,
    /// Unrecoverable faults recorded.
    pub unrecoverable_faults: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub psc_hits: AtomicU64,
    pub page_responses: AtomicU64,
    pub invalidations: AtomicU64,
    pub faults: AtomicU64,
}

impl EmuIommu {
    /// The counters.
    pub fn stats(&self) -> IommuStats {
        let c = &self.counters;
        let p = &self.prq.counters;
        let hits = c.hits.load(Relaxed);
        let misses = c.misses.load(Relaxed);
        IommuStats {
            translations: hits + misses,
            iotlb_hits: hits,
            iotlb_misses: misses,
            psc_hits: c.psc_hits.load(Relaxed),
            page_requests: p.requests.load(Relaxed),
            prq_overflows: p.overflows.load(Relaxed),
            prq_auto_responses: p.auto_responses.load(Relaxed),
            prq_dropped_partials: p.dropped_partials.load(Relaxed),
            page_responses: c.page_responses.load(Relaxed),
            invalidations: c.invalidations.load(Relaxed),
            unrecoverable_faults: c.faults.load(Relaxed),
        }
    }

    /// Valid IOTLB entries right now.
    pub fn iotlb_len(&self) -> usize {
        self.iotlb.len()
    }

    /// IOTLB capacity in entries.
    pub fn iotlb_capacity(&self) -> usize {
        self.iotlb.capacity()
    }

    /// Requests currently waiting in the page request queue.
    pub fn prq_len(&self) -> usize {
        self.prq.len()
    }

    /// The page request queue's depth.
    pub fn prq_depth(&self) -> usize {
        self.prq.depth()
    }

    /// Whether the page request queue's overflow flag is set.
    pub fn prq_overflowed(&self) -> bool {
        self.prq.overflowed()
    }
}

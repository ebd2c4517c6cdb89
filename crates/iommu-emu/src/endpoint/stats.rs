//! The function's counters: [`EndpointStats`] and where they are kept.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Endpoint;

/// A snapshot of an endpoint's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// DMA jobs that completed.
    pub dma_ok: u64,
    /// DMA jobs that failed.
    pub dma_failed: u64,
    /// Page request groups sent.
    pub groups_sent: u64,
    /// Page requests sent (all groups).
    pub page_requests: u64,
    /// Groups answered (software responses applied + hardware auto-responses).
    pub groups_answered: u64,
    /// Groups answered Success by software.
    pub success: u64,
    /// Groups answered Invalid.
    pub invalid: u64,
    /// Groups answered Response Failure.
    pub failure: u64,
    /// Groups answered Success by the IOMMU on page request queue overflow.
    pub auto_success: u64,
    /// Responses that matched no outstanding group (late after reset/timeout, or duplicate).
    pub stray_responses: u64,
    /// Groups abandoned by reset or timeout.
    pub abandoned: u64,
    /// Device TLB hits.
    pub atc_hits: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub dma_ok: AtomicU64,
    pub dma_failed: AtomicU64,
    pub groups_sent: AtomicU64,
    pub page_requests: AtomicU64,
    pub answered: AtomicU64,
    pub success: AtomicU64,
    pub invalid: AtomicU64,
    pub failure: AtomicU64,
    pub auto_success: AtomicU64,
    pub stray: AtomicU64,
    pub abandoned: AtomicU64,
    pub atc_hits: AtomicU64,
}

impl Endpoint {
    /// The counters.
    pub fn stats(&self) -> EndpointStats {
        let c = &self.sh.counters;
        EndpointStats {
            dma_ok: c.dma_ok.load(Relaxed),
            dma_failed: c.dma_failed.load(Relaxed),
            groups_sent: c.groups_sent.load(Relaxed),
            page_requests: c.page_requests.load(Relaxed),
            groups_answered: c.answered.load(Relaxed),
            success: c.success.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            failure: c.failure.load(Relaxed),
            auto_success: c.auto_success.load(Relaxed),
            stray_responses: c.stray.load(Relaxed),
            abandoned: c.abandoned.load(Relaxed),
            atc_hits: c.atc_hits.load(Relaxed),
        }
    }
}

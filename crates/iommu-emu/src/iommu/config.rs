//! What the emulated IOMMU supports: [`EmuIommuConfig`] (VT-d capability and extended
//! capability registers, in spirit).

use iommu_core::{DefaultDomainKind, PASID_WIDTH_MAX};

#[cfg(doc)]
use super::EmuIommu;
#[cfg(doc)]
use crate::mm::Mm;

/// Configuration of an [`EmuIommu`]. `Default` is a fully featured VT-d-like IOMMU.
#[derive(Debug, Clone)]
pub struct EmuIommuConfig {
    /// PASID width in bits (0: no PASID support; at most 20).
    pub pasid_bits: u32,
    /// Page Request Interface support.
    pub pri: bool,
    /// Address Translation Services support (device TLBs).
    pub ats: bool,
    /// Nested translation support.
    pub nesting: bool,
    /// SVA support (first-stage tables shared with an [`Mm`]).
    pub sva: bool,
    /// Kind of each group's default (DMA API) domain.
    pub default_domain: DefaultDomainKind,
    /// IOTLB entries (rounded up to a power of two; at most [`Self::MAX_IOTLB_ENTRIES`]: they
    /// are allocated up front).
    pub iotlb_entries: usize,
    /// Page request queue depth (VT-d: 2,048).
    pub prq_depth: usize,
    /// Unrecoverable faults kept in the fault log (older ones are counted, not kept).
    pub fault_log_depth: usize,
    /// Run the page request queue thread `prq/<name>` (default true). When false no thread is
    /// spawned: queued page requests are reported only by [`EmuIommu::prq_step`] (and inline by
    /// `remove_dev_pasid`'s drain), so a single-threaded scheduler can drive the IOMMU step by
    /// step.
    pub prq_thread: bool,
}

impl EmuIommuConfig {
    /// Most IOTLB entries.
    pub const MAX_IOTLB_ENTRIES: usize = crate::tlb::Tlb::MAX_ENTRIES;
}

impl Default for EmuIommuConfig {
    fn default() -> Self {
        EmuIommuConfig {
            pasid_bits: PASID_WIDTH_MAX,
            pri: true,
            ats: true,
            nesting: true,
            sva: true,
            default_domain: DefaultDomainKind::Paging,
            iotlb_entries: 4096,
            prq_depth: 2048,
            fault_log_depth: 256,
            prq_thread: true,
        }
    }
}

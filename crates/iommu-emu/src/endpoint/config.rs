//! What a PCIe function supports and how it behaves: [`EndpointConfig`] (its ATS and PRI
//! capabilities, in spirit).

use std::time::Duration;

#[cfg(doc)]
use super::{DmaError, Endpoint};

/// Configuration of an [`Endpoint`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Address Translation Services: the device caches translations in its device TLB and may
    /// use PRI. Ignored (off) when the IOMMU has no ATS support.
    pub ats: bool,
    /// Device TLB (ATC) entries (at most [`EndpointConfig::MAX_ATC_ENTRIES`]: they are
    /// allocated up front).
    pub atc_entries: usize,
    /// Page Request Interface enabled (needs `ats` and an IOMMU with PRI).
    pub pri: bool,
    /// Outstanding page request allocation: page requests in flight at once (PCIe PRI
    /// capability). At least 1.
    pub pri_credits: u32,
    /// Most page requests in one group.
    pub max_group_pages: u32,
    /// How long a DMA waits for a page response before failing with
    /// [`DmaError::ResponseTimeout`] (a guard against a lost response, not a protocol timer).
    pub response_timeout: Duration,
}

impl EndpointConfig {
    /// Most device-TLB entries.
    pub const MAX_ATC_ENTRIES: usize = crate::tlb::Tlb::MAX_ENTRIES;
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            ats: true,
            atc_entries: 64,
            pri: true,
            pri_credits: 512,
            max_group_pages: 256,
            response_timeout: Duration::from_secs(10),
        }
    }
}

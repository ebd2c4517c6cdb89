//! ATS for callers outside the endpoint: [`Endpoint::ats_translate`] (a translation request for
//! a range, with PRI on a miss) and [`Endpoint::atc_generation`] (has the device TLB been
//! invalidated since?). Both exist so that a cache *above* the device TLB — rust-vmm's
//! `Iotlb` inside an `IommuMemory` — can be filled from, and kept coherent with, this function.

use super::{DmaError, Endpoint};

impl Endpoint {
    /// An ATS translation request for every page of `[iova, iova + len)` (with `pasid`, or on
    /// the RID), calling `f(chunk_iova, chunk_pa, chunk_len)` once per page chunk in address
    /// order (the first and last chunk may be partial pages). `write` asks for write permission;
    /// read is implied.
    ///
    /// It is the DMA engine itself with an operation that records the physical address instead
    /// of copying: a page is answered from the device TLB, else by the IOMMU's walk (which
    /// fills the device TLB); pages that are not present and recoverable are sent as one page
    /// request group through the real path (page request queue → `report_device_fault` →
    /// the domain's handler → page response) and retried once answered, waiting up to the
    /// endpoint's response timeout. So the errors are the DMA's: Invalid is
    /// [`DmaError::PageRequestInvalid`], Failure [`DmaError::ResponseFailure`], no answer
    /// [`DmaError::ResponseTimeout`], a stopped PASID [`DmaError::PasidStopped`], a reset
    /// [`DmaError::Reset`], and an unrecoverable fault — including any miss on a function
    /// without PRI, or without ATS (whose requests are untranslated) — is [`DmaError::Fault`]
    /// at once, recorded in the IOMMU's fault log. On error, `f` may already have been called
    /// for some chunks. A resident page translates even without ATS (the IOMMU translates
    /// untranslated requests too), but nothing is then cached in a device TLB.
    ///
    /// Not counted as a DMA in [`Endpoint::stats`]; the device-TLB hits and page requests it
    /// causes are.
    pub fn ats_translate(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        mut f: impl FnMut(u64, u64, u64),
    ) -> Result<(), DmaError> {
        self.run_inner(pasid, iova, len, write, |pa, done, n| {
            f(iova + done as u64, pa, n as u64);
            Ok(())
        })
    }

    /// A counter that increases whenever anything in this function's device TLB may have been
    /// invalidated: every IOMMU invalidation reaching it (munmap, mprotect, swap-out, unmap,
    /// detach, replace), [`Endpoint::stop_pasid`] and [`Endpoint::reset`].
    ///
    /// How a cache above the device TLB stays coherent with it: read the counter before
    /// [`Endpoint::ats_translate`], and keep what it returned only if the counter is unchanged
    /// after the cache is filled; discard the cache whenever a lookup finds the counter moved
    /// since the fill. The counter moves (sequentially consistent) before the device TLB's
    /// entries are removed and before the invalidating call returns, so an entry that was
    /// stale when filled, or became stale later, is never used after the invalidation
    /// completes.
    pub fn atc_generation(&self) -> u64 {
        self.sh.atc.generation()
    }
}

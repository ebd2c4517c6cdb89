//! Why a DMA failed: [`DmaError`], one variant per condition a caller may act on.

use std::fmt;

use crate::iommu::TranslationFault;

#[cfg(doc)]
use super::Endpoint;

/// Why a DMA failed. Every failure is one of these; the engine never panics on bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaError {
    /// The range wraps around the address space.
    InvalidRange {
        /// Start of the range.
        iova: u64,
        /// Its length.
        len: u64,
    },
    /// A PASID was given but the function has no PASID capability, PASID is not enabled, or
    /// the PASID is out of range.
    PasidNotSupported {
        /// The PASID.
        pasid: u32,
    },
    /// The PASID was stopped ([`Endpoint::stop_pasid`]).
    PasidStopped {
        /// The PASID.
        pasid: u32,
    },
    /// An unrecoverable translation fault (recorded in the IOMMU's fault log).
    Fault(TranslationFault),
    /// The page request group was answered Invalid: the page cannot be made accessible.
    PageRequestInvalid {
        /// First page of the group.
        iova: u64,
    },
    /// The group was answered Response Failure: PRI is disabled until reset.
    ResponseFailure {
        /// First page of the group.
        iova: u64,
    },
    /// The function was reset while the DMA waited for a page response.
    Reset,
    /// No response arrived within the configured timeout.
    ResponseTimeout {
        /// The group's PRG index.
        grpid: u32,
    },
    /// No PRG index or credit became free, or the page request queue kept overflowing, for
    /// the whole response timeout.
    PriStalled,
    /// The translated address is not in physical memory (Unsupported Request).
    BadAddress {
        /// The physical address.
        pa: u64,
    },
    /// Page requests kept succeeding without the access ever completing.
    RetryLimit {
        /// A page that kept faulting.
        iova: u64,
    },
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRange { iova, len } => write!(f, "range {iova:#x}+{len:#x} wraps"),
            Self::PasidNotSupported { pasid } => write!(f, "PASID {pasid} not supported"),
            Self::PasidStopped { pasid } => write!(f, "PASID {pasid} is stopped"),
            Self::Fault(t) => write!(f, "unrecoverable translation fault: {t}"),
            Self::PageRequestInvalid { iova } => {
                write!(f, "page request for {iova:#x} answered Invalid")
            }
            Self::ResponseFailure { iova } => write!(
                f,
                "page request for {iova:#x} answered Response Failure; PRI disabled until reset"
            ),
            Self::Reset => write!(f, "function reset while waiting for a page response"),
            Self::ResponseTimeout { grpid } => {
                write!(f, "no page response for PRG index {grpid}")
            }
            Self::PriStalled => write!(
                f,
                "page request interface stalled (no credits or queue overflow)"
            ),
            Self::BadAddress { pa } => write!(f, "physical address {pa:#x} outside memory"),
            Self::RetryLimit { iova } => write!(f, "page {iova:#x} faults again after every retry"),
        }
    }
}

impl std::error::Error for DmaError {}

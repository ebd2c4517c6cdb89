//! Translation faults: why one failed ([`FaultReason`], [`TranslationFault`]) and the log of
//! unrecoverable ones ([`FaultRecord`], VT-d's fault recording registers; Linux
//! `intel/dmar.c` reports them).

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use iommu_core::DeviceId;
use iommu_pt::FaultKind;

use super::EmuIommu;

/// Why a translation failed (what the IOMMU would record in its fault reason field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// No context for the requester: device unknown, RID not attached, or PASID entry not
    /// present.
    NoContext,
    /// The PASID is beyond the IOMMU's or the device's PASID range.
    PasidOutOfRange,
    /// The context is a blocking domain.
    Blocked,
    /// The walk found no present entry.
    NotPresent,
    /// The walk found the page but the access is not permitted.
    Permission(FaultKind),
    /// The address is outside the domain's address space (non-canonical, beyond 48 bits).
    AddressSize,
    /// A table entry points outside physical memory (corrupt table).
    BadTable,
    /// The access needs PRI, but the device has none or disabled it (after Response Failure).
    PriUnavailable,
}

/// A failed translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranslationFault {
    /// Why.
    pub reason: FaultReason,
    /// The faulting address.
    pub iova: u64,
    /// Whether a page request can resolve it: a not-present or permission fault in a context
    /// whose domain is fault capable.
    pub recoverable: bool,
}

impl fmt::Display for TranslationFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} fault at iova {:#x}", self.reason, self.iova)
    }
}

/// One entry of the unrecoverable-fault log (VT-d fault recording registers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    /// The requester.
    pub device: DeviceId,
    /// The PASID of the request, if any.
    pub pasid: Option<u32>,
    /// The faulting address.
    pub iova: u64,
    /// Whether the request was a write.
    pub write: bool,
    /// Why.
    pub reason: FaultReason,
}

impl EmuIommu {
    /// Records an unrecoverable fault in the fault log.
    pub fn log_fault(&self, rec: FaultRecord) {
        self.counters.faults.fetch_add(1, Relaxed);
        let mut log = self.fault_log.lock();
        if log.len() >= self.cfg.fault_log_depth.max(1) {
            log.pop_front();
        }
        log.push_back(rec);
    }

    /// The most recent unrecoverable faults, oldest first.
    pub fn fault_log(&self) -> Vec<FaultRecord> {
        self.fault_log.lock().iter().cloned().collect()
    }
}

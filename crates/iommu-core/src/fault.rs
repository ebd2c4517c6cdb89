//! Page requests, page responses and fault handlers (Linux `iommu_fault_page_request`,
//! `iommu_page_response`, `domain->iopf_handler`).
//!
//! A domain is *fault capable* when it carries an [`IopfHandler`]; page requests routed to an
//! attachment whose domain has none are answered Invalid at once (SPEC §4.3). The handler is
//! also the routing key of the fault path: each handler only ever receives groups from the
//! domains it was installed on, so it can trust the owner type of their attach handles (the
//! "iopf_handler as type key" idea of the seed thread).

use crate::iopf::IopfGroup;

/// The request carries a valid PASID.
pub const IOMMU_FAULT_PAGE_REQUEST_PASID_VALID: u32 = 1 << 0;
/// The last request of its page request group.
pub const IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE: u32 = 1 << 1;
/// The PCI response must carry the PASID (driver-to-driver; the core does not interpret it).
pub const IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID: u32 = 1 << 2;

/// Read access requested.
pub const IOMMU_FAULT_PERM_READ: u32 = 1 << 0;
/// Write access requested.
pub const IOMMU_FAULT_PERM_WRITE: u32 = 1 << 1;
/// Execute access requested.
pub const IOMMU_FAULT_PERM_EXEC: u32 = 1 << 2;
/// Privileged (supervisor) access requested.
pub const IOMMU_FAULT_PERM_PRIV: u32 = 1 << 3;

/// One page request from a device (Linux `iommu_fault_page_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// `IOMMU_FAULT_PAGE_REQUEST_*` bits.
    pub flags: u32,
    /// The PASID, meaningful only with `PASID_VALID`.
    pub pasid: u32,
    /// The page request group index (PRG index), shared by the requests of one group.
    pub grpid: u32,
    /// `IOMMU_FAULT_PERM_*` bits.
    pub perm: u32,
    /// The faulting page address.
    pub addr: u64,
}

impl PageRequest {
    /// Whether the request carries a PASID.
    pub fn pasid_valid(&self) -> bool {
        self.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID != 0
    }

    /// Whether this is the last request of its group.
    pub fn is_last(&self) -> bool {
        self.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE != 0
    }
}

/// How a page request group is answered (Linux `iommu_page_response_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PageResponseCode {
    /// Pages are resident: the device retries the translation and the access.
    Success = 0,
    /// At least one page cannot be made accessible: the access fails, PRI stays enabled.
    Invalid = 1,
    /// Catastrophic: the device disables its Page Request Interface until reset.
    Failure = 2,
}

/// The response to one page request group (Linux `iommu_page_response`), addressed with the
/// group's last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageResponse {
    /// The PASID of the group's last request.
    pub pasid: u32,
    /// The group's PRG index.
    pub grpid: u32,
    /// The answer.
    pub code: PageResponseCode,
}

/// The fault handler of a fault-capable domain (SVA's, or iommufd's fault queue).
pub trait IopfHandler: Send + Sync + 'static {
    /// The handler's name, for traces and reports (`"sva"`, `"iommufd"`).
    fn name(&self) -> &str;

    /// Takes ownership of a complete page request group routed to this handler's domain. The
    /// handler answers it with [`IopfGroup::respond`] now or later, from any thread; dropping it
    /// unanswered answers Invalid. Returning the group refuses it: the core answers Failure.
    ///
    /// Called on the reporting thread with the attachment's PASID array read-locked — this is
    /// what lets detach wait for reports in flight — so it must not block, and must not attach,
    /// detach or look up on the same group. Queue the group and return.
    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup>;
}

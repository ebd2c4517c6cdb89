//! `iommu-core`: the IOMMU core of iommu-rs — devices, groups, domains, PASID attach handles and
//! PASID allocation, after Linux's `drivers/iommu/iommu.c` as reshaped by the 2024 series
//! "iommu: Replace sva_iommu with iommu_attach_handle".
//!
//! * [`Group`]s of [`Device`]s behind an IOMMU driver ([`IommuDriver`]) are attached to
//!   [`Domain`]s: on the RID through the group-handle APIs, on a PASID through
//!   [`attach_device_pasid`], [`replace_device_pasid`] and [`detach_device_pasid`].
//! * Each attachment records its owner's data in an [`AttachHandle<T>`]; the fault path and the
//!   owners find it again with [`attach_handle_get`], which checks the owner type under the PASID
//!   array's lock and returns a counted reference (SPEC H1).
//! * [`PasidAllocator`] hands out global PASIDs as move-only [`GlobalPasid`] tokens.
//! * Every failure is an [`Error`] whose variant is one errno; a rejected call changes nothing.
//!
//! Where Linux leaves a rule to callers ("callers must synchronise with detach"), this crate
//! enforces it by construction: handles are created by the core from owned data, lookups return
//! `Arc`s, handles are published only after the driver accepted the attach.
//!
//! ```
//! use iommu_core::{attach_device_pasid, attach_handle_get, detach_device_pasid, Domain, Group};
//! use iommu_core::mock::MockDriver;
//!
//! # fn main() -> Result<(), iommu_core::Error> {
//! let iommu = MockDriver::new("iommu0");
//! let group = Group::new(iommu, "group0");
//! let nic = group.add_device("nic0", 1 << 16)?;
//! let domain = Domain::alloc_paging(&nic)?;
//!
//! // An owner (here: a string) attaches the domain to PASID 7 and is found again by type.
//! let handle = attach_device_pasid(&domain, &nic, 7, String::from("vmm-a"))?;
//! assert_eq!(**attach_handle_get::<String>(&group, 7)?, "vmm-a");
//! // Another owner type gets EBUSY; an empty slot ENOENT.
//! assert_eq!(attach_handle_get::<u64>(&group, 7).unwrap_err().errno_name(), "EBUSY");
//! assert_eq!(attach_handle_get::<String>(&group, 8).unwrap_err().errno_name(), "ENOENT");
//!
//! let old = detach_device_pasid(&domain, &nic, 7)?;
//! assert!(old.is_handle(&handle));
//! assert_eq!(attach_handle_get::<String>(&group, 7).unwrap_err().errno_name(), "ENOENT");
//! # Ok(()) }
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod attach;
mod device;
mod domain;
mod driver;
pub mod error;
mod fault;
mod group;
mod handle;
mod iopf;
#[cfg(feature = "std")]
mod iopf_queue;
mod mm;
#[cfg(any(feature = "mock", all(test, feature = "std")))]
pub mod mock;
mod ownership;
mod pasid;
mod pasid_table;
mod sva;
#[doc(hidden)]
pub mod sync;
pub mod trace;

#[cfg(all(test, loom))]
mod loom_models;

pub use attach::{
    attach_device_pasid, attach_group, attach_group_handle, attach_handle_get,
    attach_handle_get_any, detach_device_pasid, detach_group, detach_group_handle,
    replace_device_pasid, replace_group_handle, Replaced,
};
pub use device::{Device, DeviceId};
pub use domain::{Domain, DomainId, DomainKind, IOMMU_READ, IOMMU_WRITE};
pub use driver::{Capabilities, DefaultDomainKind, DomainRequest, DriverDomain, IommuDriver};
pub use error::{Condition, Error, Reason, Result};
pub use fault::{
    IopfHandler, PageRequest, PageResponse, PageResponseCode, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
    IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_PRIV, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE,
};
pub use group::{Group, GroupId, GroupSnapshot, SlotSnapshot};
pub use handle::{AttachHandle, Attachment};
pub use iopf::{
    iopf_disable, iopf_discard_partial, iopf_enable, iopf_stats, report_device_fault, FaultParam,
    FaultStats, FaultStatsSnapshot, IopfGroup,
};
#[cfg(feature = "std")]
pub use iopf_queue::{
    iopf_queue_add_device, iopf_queue_flush_dev, iopf_queue_of, IopfHelper, IopfQueue,
};
pub use mm::{AddressSpace, MmIommuData};
pub use ownership::{
    device_claim_dma_owner, device_release_dma_owner, device_unuse_default_domain,
    device_use_default_domain, group_claim_dma_owner, group_dma_owned_by, group_release_dma_owner,
    DmaOwner,
};
pub use pasid::{
    GlobalPasid, PasidAllocator, IOMMU_FIRST_GLOBAL_PASID, IOMMU_NO_PASID, IOMMU_PASID_INVALID,
    PASID_LIMIT, PASID_WIDTH_MAX,
};
pub use sva::{sva_bind_device, SvaBond, SvaHandleData};

/// The README's examples, run as doctests.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

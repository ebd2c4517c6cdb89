//! The boundary between the core and IOMMU hardware: [`IommuDriver`].
//!
//! The core never touches hardware formats; it asks a driver to allocate domains and to program
//! a device's RID or one of its PASIDs. A driver instance stands for one IOMMU (Linux's
//! `iommu_device` with its ops): a domain may only be attached to devices behind the instance
//! that allocated it. The software IOMMU of `iommu-emu` implements this trait; so could a real
//! driver in a Rust kernel.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::any::Any;

use crate::device::Device;
use crate::domain::{Domain, DomainKind};
use crate::error::Result;
use crate::fault::{PageRequest, PageResponse};
use crate::mm::AddressSpace;

/// Which domain kind a group gets as its kernel DMA-API (default) domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultDomainKind {
    /// Passthrough (`IOMMU_DOMAIN_IDENTITY`).
    Identity,
    /// Translated (`IOMMU_DOMAIN_DMA`): a paging domain managed by the kernel.
    Paging,
}

/// What an IOMMU instance can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// PASIDs the IOMMU supports (`1 << pasid_width`); 0 when it has no PASID support. A device's
    /// usable count is the minimum of this and its own capability.
    pub max_pasids: u32,
    /// Page Request Interface: recoverable I/O page faults can be reported.
    pub pri: bool,
    /// Address Translation Services: devices may cache translations.
    pub ats: bool,
    /// Nested translation (a user stage 1 on a kernel stage 2).
    pub nesting: bool,
    /// Shared virtual addressing: SVA domains can be allocated.
    pub sva: bool,
    /// The guest owns the whole PASID table (faults on unattached PASIDs fall back to the nested
    /// domain on the RID, SPEC §4.3).
    pub user_pasid_table: bool,
    /// The kind of each group's default domain.
    pub default_domain: DefaultDomainKind,
}

impl Default for Capabilities {
    /// A fully featured IOMMU with 20-bit PASIDs and translated default domains.
    fn default() -> Self {
        Self {
            max_pasids: crate::pasid::PASID_LIMIT,
            pri: true,
            ats: true,
            nesting: true,
            sva: true,
            user_pasid_table: false,
            default_domain: DefaultDomainKind::Paging,
        }
    }
}

/// What the core asks a driver to allocate.
#[derive(Clone, Copy)]
pub enum DomainRequest<'a> {
    /// A domain that blocks all DMA.
    Blocked,
    /// A passthrough domain.
    Identity,
    /// A paging (unmanaged) domain; `dma_api` is set for a group's default domain.
    Paging {
        /// The domain serves the kernel DMA API (Linux `IOMMU_DOMAIN_DMA`).
        dma_api: bool,
    },
    /// An SVA domain sharing `mm`'s page tables.
    Sva(&'a Arc<dyn AddressSpace>),
    /// A user-managed stage 1 nested on `parent`, described by driver-specific `data`.
    Nested {
        /// The stage-2 paging domain beneath.
        parent: &'a Arc<Domain>,
        /// Driver-specific data type (iommufd `data_type`).
        data_type: u32,
        /// Driver-specific configuration bytes.
        data: &'a [u8],
    },
}

impl DomainRequest<'_> {
    /// The kind of domain this request produces.
    pub fn kind(&self) -> DomainKind {
        match self {
            Self::Blocked => DomainKind::Blocked,
            Self::Identity => DomainKind::Identity,
            Self::Paging { .. } => DomainKind::Paging,
            Self::Sva(_) => DomainKind::Sva,
            Self::Nested { .. } => DomainKind::Nested,
        }
    }
}

/// A driver's answer to a domain allocation: its private state and what the domain supports.
pub struct DriverDomain {
    /// Driver-private state (page-table root, domain ID, ...); the driver downcasts it back with
    /// [`Domain::driver_data`]. Dropped when the domain is freed.
    pub data: Box<dyn Any + Send + Sync>,
    /// The domain can be attached to a PASID (Linux: `ops->set_dev_pasid` is present).
    pub set_dev_pasid: bool,
}

impl DriverDomain {
    /// A domain with driver state `data` that can be attached to PASIDs.
    pub fn new(data: impl Any + Send + Sync) -> Self {
        Self {
            data: Box::new(data),
            set_dev_pasid: true,
        }
    }
}

/// An IOMMU driver instance: one IOMMU and the operations the core needs from it.
///
/// Calls come with the device's group lock held (configuration is serialised per group), so a
/// driver sees at most one configuration change per group at a time. A call that returns an
/// error must leave the hardware as it was; the core then rolls back the other devices.
pub trait IommuDriver: Send + Sync + 'static {
    /// The instance's name, for messages and thread names.
    fn name(&self) -> &str;

    /// What this IOMMU supports.
    fn capabilities(&self) -> Capabilities;

    /// A device joins this IOMMU (Linux `probe_device`). Called before any attach.
    fn probe_device(&self, _dev: &Device) -> Result<()> {
        Ok(())
    }

    /// A device leaves this IOMMU. Nothing is attached to it any more.
    fn release_device(&self, _dev: &Device) {}

    /// Whether `dev` itself has a usable Page Request Interface (Linux: the driver's
    /// `pri_supported`, PRI needing ATS too). Fault reporting is refused (`ENODEV`) for a device
    /// without, as Linux's drivers refuse to enable IOPF for it: its faults could never be
    /// reported, so a fault-capable attach would silently never fault.
    fn dev_has_pri(&self, _dev: &Device) -> bool {
        true
    }

    /// Allocates a domain of the requested kind for use with `dev` (and compatible devices).
    /// Unsupported kinds fail with `EOPNOTSUPP`.
    fn domain_alloc(&self, dev: &Device, req: &DomainRequest<'_>) -> Result<DriverDomain>;

    /// Points `dev`'s RID (DMA without PASID) at `domain`.
    fn attach_dev(&self, domain: &Domain, dev: &Device) -> Result<()>;

    /// Points `dev`'s `pasid` at `domain`. `old` is the domain it replaces (a replace must be
    /// atomic for DMA: no window where the PASID is blocked), `None` for a fresh attach.
    fn set_dev_pasid(
        &self,
        domain: &Domain,
        dev: &Device,
        pasid: u32,
        old: Option<&Domain>,
    ) -> Result<()>;

    /// Blocks `dev`'s `pasid`, which `domain` translated. Must not fail. The driver drains its
    /// hardware page-request queue for the PASID before returning (SPEC H2).
    fn remove_dev_pasid(&self, dev: &Device, pasid: u32, domain: &Domain);

    /// Maps `len` bytes at `iova` of paging `domain` to physical `pa` with `prot`
    /// (`IOMMU_READ`/`IOMMU_WRITE`), Linux `map_pages`. Overlaps and misalignment are the
    /// driver's `EEXIST`/`EINVAL`; nothing changes on error. Default: `EOPNOTSUPP`.
    fn map_pages(
        &self,
        _domain: &Domain,
        _iova: u64,
        _pa: u64,
        _len: u64,
        _prot: u32,
    ) -> Result<()> {
        Err(crate::error::eopnotsupp("driver cannot map pages"))
    }

    /// Unmaps `len` bytes at `iova` of paging `domain` and invalidates the IOTLBs caching them;
    /// returns the bytes unmapped. Default: `EOPNOTSUPP`.
    fn unmap_pages(&self, _domain: &Domain, _iova: u64, _len: u64) -> Result<u64> {
        Err(crate::error::eopnotsupp("driver cannot unmap pages"))
    }

    /// The physical address `iova` translates to in `domain`, if mapped. Default: `None`.
    fn iova_to_phys(&self, _domain: &Domain, _iova: u64) -> Option<u64> {
        None
    }

    /// Sends a page response for the group whose last request was `req` to `dev`. Called
    /// exactly once per group (the core guarantees it), from any thread.
    fn page_response(&self, dev: &Device, req: &PageRequest, resp: PageResponse);
}

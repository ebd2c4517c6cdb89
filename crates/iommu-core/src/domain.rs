//! Translation domains (Linux `struct iommu_domain`).
//!
//! A domain is what a device's RID or PASID is attached to. It is allocated by the driver of one
//! IOMMU (its *owner*) and may only be attached to devices behind that IOMMU. Domains are shared
//! (`Arc`): the group, every PASID slot that holds it, and the handles on it keep it alive, so a
//! domain cannot be freed while anything still translates through it.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::any::Any;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::device::Device;
use crate::driver::{DomainRequest, IommuDriver};
use crate::error::{einval, einval_v, enodev, eopnotsupp, Result};
use crate::fault::IopfHandler;
use crate::mm::AddressSpace;

/// The kind of a domain. [`DomainKind::linux_type`] gives Linux's `IOMMU_DOMAIN_*` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// Blocks all DMA.
    Blocked,
    /// Passthrough: IOVA equals physical address.
    Identity,
    /// Map/unmap by an API user (a kernel DMA domain or an iommufd paging HWPT).
    Paging,
    /// Shares a process address space.
    Sva,
    /// A user-managed stage 1 nested on a paging parent.
    Nested,
}

impl DomainKind {
    /// Linux's `IOMMU_DOMAIN_*` value for the kind (paging as `IOMMU_DOMAIN_UNMANAGED`).
    pub const fn linux_type(self) -> u32 {
        match self {
            Self::Blocked => 0,
            Self::Paging => 0x01,
            Self::Identity => 0x04,
            Self::Sva => 0x10,
            Self::Nested => 0x40,
        }
    }
}

/// A domain's identity, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u64);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dom{}", self.0)
    }
}

static NEXT_DOMAIN_ID: AtomicU64 = AtomicU64::new(1);

/// A translation domain.
pub struct Domain {
    id: DomainId,
    kind: DomainKind,
    dma_api: bool,
    owner: Arc<dyn IommuDriver>,
    driver_data: Box<dyn Any + Send + Sync>,
    set_dev_pasid: bool,
    iopf_handler: Option<Arc<dyn IopfHandler>>,
    mm: Option<Arc<dyn AddressSpace>>,
    parent: Option<Arc<Domain>>,
}

impl Domain {
    /// Allocates a domain for use with `dev`, through the driver of `dev`'s IOMMU.
    ///
    /// `iopf_handler` makes the domain fault capable. Errors: `ENODEV` if `dev` is not behind
    /// an IOMMU; `EOPNOTSUPP` if the IOMMU lacks the capability (SVA, nesting) or the driver
    /// refuses the kind; `EINVAL` for a nested parent that is not a paging domain of the same
    /// IOMMU, or a handler on a domain that cannot fault (blocked, identity).
    pub fn alloc(
        dev: &Device,
        req: DomainRequest<'_>,
        iopf_handler: Option<Arc<dyn IopfHandler>>,
    ) -> Result<Arc<Domain>> {
        let owner = dev
            .iommu()
            .ok_or(enodev("device is not behind an IOMMU"))?
            .clone();
        let caps = owner.capabilities();
        let kind = req.kind();
        match req {
            DomainRequest::Sva(_) if !caps.sva => {
                return Err(eopnotsupp("IOMMU does not support SVA domains"))
            }
            DomainRequest::Nested { .. } if !caps.nesting => {
                return Err(eopnotsupp("IOMMU does not support nested translation"))
            }
            DomainRequest::Nested { parent, .. } => {
                if parent.kind != DomainKind::Paging {
                    return Err(einval("nested parent must be a paging domain"));
                }
                if !Arc::ptr_eq(&parent.owner, &owner) {
                    return Err(einval("nested parent belongs to another IOMMU"));
                }
            }
            _ => {}
        }
        if iopf_handler.is_some() && matches!(kind, DomainKind::Blocked | DomainKind::Identity) {
            return Err(einval(
                "blocked and identity domains cannot take page faults",
            ));
        }
        let drv = owner.domain_alloc(dev, &req)?;
        let (mm, parent, dma_api) = match req {
            DomainRequest::Sva(mm) => (Some(mm.clone()), None, false),
            DomainRequest::Nested { parent, .. } => (None, Some(parent.clone()), false),
            DomainRequest::Paging { dma_api } => (None, None, dma_api),
            _ => (None, None, false),
        };
        Ok(Arc::new(Domain {
            id: DomainId(NEXT_DOMAIN_ID.fetch_add(1, Ordering::Relaxed)),
            kind,
            dma_api,
            owner,
            driver_data: drv.data,
            set_dev_pasid: drv.set_dev_pasid,
            iopf_handler,
            mm,
            parent,
        }))
    }

    /// A paging domain with no fault handler.
    pub fn alloc_paging(dev: &Device) -> Result<Arc<Domain>> {
        Self::alloc(dev, DomainRequest::Paging { dma_api: false }, None)
    }

    /// The domain's identity.
    pub fn id(&self) -> DomainId {
        self.id
    }

    /// The domain's kind.
    pub fn kind(&self) -> DomainKind {
        self.kind
    }

    /// Whether this paging domain serves the kernel DMA API (a group's default domain).
    pub fn is_dma_api(&self) -> bool {
        self.dma_api
    }

    /// The driver instance (IOMMU) that allocated the domain.
    pub fn owner(&self) -> &Arc<dyn IommuDriver> {
        &self.owner
    }

    /// Whether the domain may be attached to devices behind `iommu`.
    pub fn is_compatible_with(&self, iommu: &Arc<dyn IommuDriver>) -> bool {
        Arc::ptr_eq(&self.owner, iommu)
    }

    /// The driver's private state, if it is a `T`.
    pub fn driver_data<T: Any>(&self) -> Option<&T> {
        self.driver_data.downcast_ref()
    }

    /// Whether the domain can be attached to a PASID.
    pub fn supports_pasid(&self) -> bool {
        self.set_dev_pasid
    }

    /// The fault handler; `Some` makes the domain fault capable.
    pub fn iopf_handler(&self) -> Option<&Arc<dyn IopfHandler>> {
        self.iopf_handler.as_ref()
    }

    /// Whether page requests routed here can be handled.
    pub fn is_fault_capable(&self) -> bool {
        self.iopf_handler.is_some()
    }

    /// The address space an SVA domain shares.
    pub fn mm(&self) -> Option<&Arc<dyn AddressSpace>> {
        self.mm.as_ref()
    }

    /// The stage-2 parent of a nested domain.
    pub fn parent(&self) -> Option<&Arc<Domain>> {
        self.parent.as_ref()
    }
}

/// Read permission for [`Domain::map`] (Linux `IOMMU_READ`).
pub const IOMMU_READ: u32 = 1 << 0;
/// Write permission for [`Domain::map`] (Linux `IOMMU_WRITE`).
pub const IOMMU_WRITE: u32 = 1 << 1;

impl Domain {
    fn check_paging(&self) -> Result<()> {
        if self.kind != DomainKind::Paging {
            return Err(einval("only paging domains are mapped by their user"));
        }
        Ok(())
    }

    /// Maps `len` bytes at `iova` to `pa` (Linux `iommu_map`). `EINVAL` for a domain that is not
    /// a paging domain, a zero or unaligned (4 KiB) range, an IOVA or physical range that wraps,
    /// or no permission in `prot`; otherwise
    /// the driver's answer (`EEXIST` for an overlap). Nothing changes on error.
    pub fn map(&self, iova: u64, pa: u64, len: u64, prot: u32) -> Result<()> {
        self.check_paging()?;
        check_range(iova, len)?;
        if pa & 0xfff != 0 {
            return Err(einval_v("physical address not 4 KiB aligned", pa));
        }
        // Checked here, not left to the driver: one that adds unchecked would map at a
        // wrapped address.
        if pa.checked_add(len).is_none() {
            return Err(einval_v("physical range wraps the address space", pa));
        }
        if prot & (IOMMU_READ | IOMMU_WRITE) == 0 || prot & !(IOMMU_READ | IOMMU_WRITE) != 0 {
            return Err(einval_v(
                "prot must be IOMMU_READ and/or IOMMU_WRITE",
                prot.into(),
            ));
        }
        self.owner.map_pages(self, iova, pa, len, prot)
    }

    /// Unmaps `len` bytes at `iova` (Linux `iommu_unmap`); returns the bytes unmapped. `EINVAL`
    /// as for [`Domain::map`].
    pub fn unmap(&self, iova: u64, len: u64) -> Result<u64> {
        self.check_paging()?;
        check_range(iova, len)?;
        self.owner.unmap_pages(self, iova, len)
    }

    /// The physical address `iova` translates to, if mapped (Linux `iommu_iova_to_phys`).
    pub fn iova_to_phys(&self, iova: u64) -> Option<u64> {
        self.owner.iova_to_phys(self, iova)
    }
}

fn check_range(iova: u64, len: u64) -> Result<()> {
    if len == 0 || (iova | len) & 0xfff != 0 {
        return Err(einval_v("range empty or not 4 KiB aligned", iova));
    }
    if iova.checked_add(len).is_none() {
        return Err(einval_v("range wraps the address space", iova));
    }
    Ok(())
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("owner", &self.owner.name())
            .field("fault_capable", &self.is_fault_capable())
            .finish_non_exhaustive()
    }
}

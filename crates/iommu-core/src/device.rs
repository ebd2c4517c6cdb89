//! Devices as the IOMMU core sees them (Linux `struct device` plus its `dev_iommu`).

use alloc::string::String;
use alloc::sync::{Arc, Weak};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::driver::IommuDriver;
use crate::error::{einval_v, enodev, Result};
use crate::group::Group;
use crate::iopf::FaultParam;
use crate::pasid::PASID_LIMIT;
use crate::sync::{AtomicBool, RwLock};

/// A device's identity, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u64);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dev{}", self.0)
    }
}

static NEXT_DEVICE_ID: AtomicU64 = AtomicU64::new(1);

/// A DMA-capable device: a PCIe function, or a platform device.
///
/// A device behind an IOMMU is created by [`Group::add_device`], which probes it with the
/// group's IOMMU; one created with [`Device::new_unmanaged`] is not behind any IOMMU and every
/// IOMMU operation on it fails with `ENODEV`.
pub struct Device {
    id: DeviceId,
    name: String,
    max_pasids: u32,
    iommu: Option<Arc<dyn IommuDriver>>,
    /// Weak: the group owns its members, not the other way round. Set at creation and never
    /// changed, so reading it takes no lock (the fault path reads it per page request);
    /// removal sets `removed` instead.
    group: Weak<Group>,
    /// The device left its group: [`Device::group`] is `ENODEV` from now on.
    removed: AtomicBool,
    /// Fault state while fault reporting is enabled (Linux publishes it with RCU).
    pub(crate) fault_param: RwLock<Option<Arc<FaultParam>>>,
}

impl Device {
    pub(crate) fn new_in_group(
        name: String,
        max_pasids: u32,
        iommu: Arc<dyn IommuDriver>,
        group: Weak<Group>,
    ) -> Self {
        Self {
            id: DeviceId(NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed)),
            name,
            max_pasids,
            iommu: Some(iommu),
            group,
            removed: AtomicBool::new(false),
            fault_param: RwLock::new(None),
        }
    }

    /// A device that is not behind an IOMMU (it has no group). `max_pasids` is its own PASID
    /// capability; `EINVAL` beyond 2^20.
    pub fn new_unmanaged(name: impl Into<String>, max_pasids: u32) -> Result<Arc<Device>> {
        check_max_pasids(max_pasids)?;
        Ok(Arc::new(Self {
            id: DeviceId(NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed)),
            name: name.into(),
            max_pasids,
            iommu: None,
            group: Weak::new(),
            removed: AtomicBool::new(false),
            fault_param: RwLock::new(None),
        }))
    }

    /// The device's identity.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The device's name (`"0000:00:04.0"`, `"nic0"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PASIDs usable by this device: valid PASIDs are `1 .. max_pasids`. 0 means the device
    /// does not support PASID. For a device behind an IOMMU this is the minimum of the device's
    /// capability and the IOMMU's.
    pub fn max_pasids(&self) -> u32 {
        self.max_pasids
    }

    /// Whether the device can issue DMA with a PASID.
    pub fn supports_pasid(&self) -> bool {
        self.max_pasids > 0
    }

    /// The IOMMU driver instance the device is behind, if any.
    pub fn iommu(&self) -> Option<&Arc<dyn IommuDriver>> {
        self.iommu.as_ref()
    }

    /// The device's IOMMU group. `ENODEV` when it has none (not behind an IOMMU, or removed).
    pub fn group(&self) -> Result<Arc<Group>> {
        if self.removed.load(Ordering::Acquire) {
            return Err(enodev("device has no IOMMU group"));
        }
        self.group
            .upgrade()
            .ok_or(enodev("device has no IOMMU group"))
    }

    pub(crate) fn fault_param(&self) -> Option<Arc<FaultParam>> {
        self.fault_param.read().clone()
    }

    pub(crate) fn clear_group(&self) {
        self.removed.store(true, Ordering::Release);
    }
}

pub(crate) fn check_max_pasids(max_pasids: u32) -> Result<()> {
    if max_pasids > PASID_LIMIT {
        return Err(einval_v(
            "max_pasids beyond the 20-bit PASID space",
            max_pasids.into(),
        ));
    }
    Ok(())
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("max_pasids", &self.max_pasids)
            .finish_non_exhaustive()
    }
}

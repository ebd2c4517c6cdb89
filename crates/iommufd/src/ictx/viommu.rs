//! vIOMMU and vDEVICE objects (Linux `viommu.c`): a vIOMMU is a guest-visible IOMMU instance
//! on a nest-parent paging HWPT; nested HWPTs may be allocated on it; a vDEVICE gives a bound
//! device its virtual ID on the vIOMMU, and a device attaches to a nested HWPT of a vIOMMU
//! only once it has one there.

use alloc::sync::Arc;

use iommu_core::error::{eexist_v, einval_v, enoent_v, eopnotsupp, eopnotsupp_v, Condition};
use iommu_core::Result;

use super::hw_pagetable::{Hwpt, HwptKind};
use super::{Ictx, Object, Table};

/// `IOMMU_VIOMMU_TYPE_SELFTEST`: the only vIOMMU type this model's drivers offer (the selftest
/// mock's).
pub const IOMMU_VIOMMU_TYPE_SELFTEST: u32 = 0xdeadbeef;

/// A vIOMMU: its type and the nest-parent HWPT it holds.
pub(super) struct Viommu {
    pub(super) parent: Arc<Hwpt>,
}

/// A vDEVICE: device object `idev_id` as `virt_id` on `viommu`.
pub(super) struct Vdevice {
    pub(super) viommu: Arc<Viommu>,
    pub(super) idev_id: u32,
    virt_id: u64,
}

impl Table {
    pub(super) fn viommu(&self, id: u32) -> Result<&Arc<Viommu>> {
        self.typed(id, "no such vIOMMU", |o| match o {
            Object::Viommu(v) => Some(v),
            _ => None,
        })
    }

    /// `ENOENT` when `hwpt` is a nested HWPT of a vIOMMU on which `dev_id` has no vDEVICE:
    /// the (mock) IOMMU cannot translate for a device the guest has not been told about.
    pub(super) fn check_vdevice(&self, dev_id: u32, hwpt: &Hwpt) -> Result<()> {
        let HwptKind::Nested {
            viommu: Some(v), ..
        } = &hwpt.kind
        else {
            return Ok(());
        };
        let has = self.objects.values().any(
            |o| matches!(o, Object::Vdevice(d) if d.idev_id == dev_id && Arc::ptr_eq(&d.viommu, v)),
        );
        if !has {
            return Err(enoent_v(
                "device has no vDEVICE on the HWPT's vIOMMU",
                dev_id.into(),
            ));
        }
        Ok(())
    }

    /// Removes every vDEVICE of `dev_id` (its device is being unbound, as Linux 7.3 does).
    pub(super) fn remove_vdevices_of(&mut self, dev_id: u32) {
        let ids: alloc::vec::Vec<u32> = self
            .objects
            .iter()
            .filter_map(|(&id, o)| match o {
                Object::Vdevice(d) if d.idev_id == dev_id => Some(id),
                _ => None,
            })
            .collect();
        for id in ids {
            self.remove_object(id);
        }
    }
}

impl Ictx {
    /// `IOMMU_VIOMMU_ALLOC`: a vIOMMU of `viommu_type` for device `dev_id`'s IOMMU on
    /// nest-parent paging HWPT `hwpt_id`, which it keeps busy; returns its ID.
    ///
    /// Errors, in Linux's order: type 0 (`DEFAULT`) ⇒ `EOPNOTSUPP`; unknown device ⇒ `ENOENT`;
    /// an IOMMU without vIOMMUs (every one but the selftest mock's) or another type ⇒
    /// `EOPNOTSUPP`; `hwpt_id` not a paging HWPT ⇒ `ENOENT`; not a nest parent ⇒ `EINVAL`;
    /// driver data ⇒ `EOPNOTSUPP` (the mock's `iommu_viommu_selftest` is not modelled).
    pub fn viommu_alloc(
        &self,
        dev_id: u32,
        hwpt_id: u32,
        viommu_type: u32,
        data: &[u8],
    ) -> Result<u32> {
        if viommu_type == 0 {
            return Err(eopnotsupp("vIOMMU type DEFAULT").because(Condition::UnsupportedFlags));
        }
        let mut t = self.table.lock();
        let dev = t.idev(dev_id)?.dev.clone();
        let mock = t
            .mock
            .as_ref()
            .is_some_and(|m| dev.iommu().is_some_and(|i| Arc::ptr_eq(i, m)));
        if !mock || viommu_type != IOMMU_VIOMMU_TYPE_SELFTEST {
            return Err(eopnotsupp_v(
                "the device's IOMMU has no such vIOMMU type",
                viommu_type.into(),
            )
            .because(Condition::UnsupportedFlags));
        }
        let parent = t.typed(hwpt_id, "no such paging HWPT", |o| match o {
            Object::Hwpt(h) if matches!(h.kind, HwptKind::Paging { .. }) => Some(h.clone()),
            _ => None,
        })?;
        super::hw_pagetable::require_nest_parent(&parent, hwpt_id)?;
        if !data.is_empty() {
            return Err(eopnotsupp("vIOMMU driver data is not modelled"));
        }
        let id = t.alloc_id()?;
        t.insert_object(id, Object::Viommu(Arc::new(Viommu { parent })));
        Ok(id)
    }

    /// `IOMMU_VDEVICE_ALLOC`: device `dev_id` as `virt_id` on vIOMMU `viommu_id`; returns the
    /// vDEVICE's ID. `ENOENT` for no such vIOMMU or device; `EINVAL` for a device behind
    /// another IOMMU; `EEXIST` when the device already has a vDEVICE or `virt_id` is taken.
    pub fn vdevice_alloc(&self, viommu_id: u32, dev_id: u32, virt_id: u64) -> Result<u32> {
        let mut t = self.table.lock();
        let viommu = t.viommu(viommu_id)?.clone();
        let dev = t.idev(dev_id)?.dev.clone();
        let same_iommu = dev
            .iommu()
            .is_some_and(|i| viommu.parent.domain.is_compatible_with(i));
        if !same_iommu {
            return Err(einval_v("device is behind another IOMMU", dev_id.into()));
        }
        for o in t.objects.values() {
            if let Object::Vdevice(d) = o {
                if d.idev_id == dev_id {
                    return Err(eexist_v("device already has a vDEVICE", dev_id.into()));
                }
                if Arc::ptr_eq(&d.viommu, &viommu) && d.virt_id == virt_id {
                    return Err(eexist_v("virt_id in use on the vIOMMU", virt_id));
                }
            }
        }
        let id = t.alloc_id()?;
        t.insert_object(
            id,
            Object::Vdevice(Vdevice {
                viommu,
                idev_id: dev_id,
                virt_id,
            }),
        );
        Ok(id)
    }
}

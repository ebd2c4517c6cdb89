//! The selftest mock device (the `IOMMU_TEST_OP_MOCK_DOMAIN*` and `*_CHECK_*` operations of
//! Linux's `selftest.c`, followed for behaviour only): a core [`Device`] alone in its own
//! [`Group`] behind this context's [`MockDriver`], bound to the context and attached at
//! creation, owned by a selftest object whose destruction unbinds and removes it.

use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use iommu_core::error::{efault_v, einval_v, enoent_v, Condition};
use iommu_core::mock::MockDriver;
use iommu_core::{Capabilities, Device, Group, IommuDriver, Result, IOMMU_NO_PASID};

use super::hw_pagetable::HwptKind;
use super::{lookup_error, Ictx, Object, Table};

/// `MOCK_FLAGS_DEVICE_NO_DIRTY`: the device refuses dirty-tracking domains.
pub const MOCK_FLAGS_DEVICE_NO_DIRTY: u32 = 1 << 0;
/// `MOCK_FLAGS_DEVICE_PASID`: the device has `MOCK_PASID_WIDTH` PASID bits.
pub const MOCK_FLAGS_DEVICE_PASID: u32 = 1 << 2;
/// PASID bits of a PASID-capable mock device.
pub const MOCK_PASID_WIDTH: u32 = 20;
/// Entries of a mock device's cache (`MOCK_DEV_CACHE_NUM`).
pub const MOCK_DEV_CACHE_NUM: usize = 4;
/// What every mock device cache entry holds until invalidated.
pub const IOMMU_TEST_DEV_CACHE_DEFAULT: u32 = 0xbaddad;
/// The granule `MD_CHECK_MAP` walks: the kernel mock's page size (`MOCK_PAGE_SIZE`).
pub const MOCK_PAGE_SIZE: u64 = 2048;

/// Names the mock devices of every context apart.
static NEXT_MOCK_DEV: AtomicU64 = AtomicU64::new(0);

/// A selftest object: the mock device it created and the device object binding it.
#[derive(Clone)]
pub(super) struct MockDevObj {
    /// The device object (0 while being created).
    pub(super) idev_id: u32,
    dev: Arc<Device>,
    group: Arc<Group>,
    /// The device's cache entries (`IOMMU_TEST_OP_DEV_CHECK_CACHE`).
    cache: [u32; MOCK_DEV_CACHE_NUM],
}

/// The IDs `IOMMU_TEST_OP_MOCK_DOMAIN` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockDomainIds {
    /// The selftest object (destroy it to unbind and remove the device).
    pub stdev_id: u32,
    /// The HWPT the device was attached to (the automatic one for an IOAS).
    pub hwpt_id: u32,
    /// The device object.
    pub idev_id: u32,
}

impl Table {
    /// This context's mock IOMMU: nesting, PRI, 20-bit PASIDs, as the kernel's mock.
    fn mock_driver(&mut self) -> Arc<MockDriver> {
        self.mock
            .get_or_insert_with(|| {
                let caps = Capabilities {
                    max_pasids: 1 << MOCK_PASID_WIDTH,
                    ..Capabilities::default()
                };
                MockDriver::with_capabilities("iommufd-selftest", caps)
            })
            .clone()
    }

    fn mock_dev(&self, stdev_id: u32) -> Result<&MockDevObj> {
        self.typed(stdev_id, "no such selftest object", |o| match o {
            Object::Selftest(m) => Some(m),
            _ => None,
        })
    }
}

/// Destroys selftest object `id`: unbinds its device (detaching it everywhere), then removes
/// the device from its group.
pub(super) fn destroy_mock_dev(t: &mut Table, id: u32, m: &MockDevObj) -> Result<()> {
    if m.idev_id != 0 {
        t.unbind(m.idev_id)?;
    }
    t.remove_object(id);
    // Unbound and detached: the group holds no PASIDs and no owner, so this cannot fail.
    let _ = m.group.remove_device(&m.dev);
    Ok(())
}

impl Ictx {
    /// `IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS)`: creates a mock device (PASID-capable with
    /// [`MOCK_FLAGS_DEVICE_PASID`]) in a group of its own, binds it and attaches its RID to
    /// `pt_id` (a HWPT, or an IOAS for its automatic HWPT). IDs are taken in Linux's order:
    /// the selftest object, the device object, then a new automatic HWPT.
    ///
    /// `EINVAL` for unknown `dev_flags`; then the errors of [`Ictx::bind_device`] and
    /// [`Ictx::device_attach`]. No side effects on error.
    pub fn mock_domain(&self, pt_id: u32, dev_flags: u32) -> Result<MockDomainIds> {
        let known = MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID;
        if dev_flags & !known != 0 {
            return Err(einval_v("unknown mock device flags", dev_flags.into())
                .because(Condition::UnsupportedFlags));
        }
        let mut t = self.table.lock();
        let stdev_id = t.alloc_id()?;
        let drv = t.mock_driver();
        let n = NEXT_MOCK_DEV.fetch_add(1, Relaxed);
        let group = Group::new(drv as Arc<dyn IommuDriver>, format!("mock{n}"));
        let max_pasids = if dev_flags & MOCK_FLAGS_DEVICE_PASID != 0 {
            1 << MOCK_PASID_WIDTH
        } else {
            0
        };
        let dev = group.add_device(format!("mock{n}"), max_pasids)?;
        let obj = MockDevObj {
            idev_id: 0,
            dev: dev.clone(),
            group: group.clone(),
            cache: [IOMMU_TEST_DEV_CACHE_DEFAULT; MOCK_DEV_CACHE_NUM],
        };
        t.insert_object(stdev_id, Object::Selftest(obj));
        let undo = |t: &mut Table, idev_id: Option<u32>| {
            if let Some(idev_id) = idev_id {
                let _ = t.unbind(idev_id);
                t.reap_auto_hwpts();
            }
            t.remove_object(stdev_id);
            let _ = group.remove_device(&dev);
        };
        let idev_id = match t.bind(self.owner, dev.clone()) {
            Ok(id) => id,
            Err(e) => {
                undo(&mut t, None);
                return Err(e);
            }
        };
        if let Err(e) = t.attach(idev_id, IOMMU_NO_PASID, pt_id) {
            undo(&mut t, Some(idev_id));
            return Err(e);
        }
        if let Some(Object::Selftest(m)) = t.objects.get_mut(&stdev_id) {
            m.idev_id = idev_id;
        }
        let hwpt_id = t
            .attached_hwpt_id(idev_id, IOMMU_NO_PASID)?
            .expect("attached above");
        Ok(MockDomainIds {
            stdev_id,
            hwpt_id,
            idev_id,
        })
    }

    /// `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`: replaces the RID attachment of selftest object
    /// `stdev_id`'s device with `pt_id` (a HWPT or an IOAS) as [`Ictx::device_replace`];
    /// returns the HWPT now attached. `ENOENT` when `stdev_id` is not a selftest object.
    pub fn mock_domain_replace(&self, stdev_id: u32, pt_id: u32) -> Result<u32> {
        let mut t = self.table.lock();
        let idev_id = t.mock_dev(stdev_id)?.idev_id;
        let r = t.replace(idev_id, IOMMU_NO_PASID, pt_id);
        t.reap_auto_hwpts();
        r?;
        Ok(t.attached_hwpt_id(idev_id, IOMMU_NO_PASID)?
            .expect("replaced above"))
    }

    /// The core device of selftest object `stdev_id`.
    pub fn mock_device(&self, stdev_id: u32) -> Result<Arc<Device>> {
        Ok(self.table.lock().mock_dev(stdev_id)?.dev.clone())
    }

    /// `IOMMU_TEST_OP_MD_CHECK_MAP`: every [`MOCK_PAGE_SIZE`] step of `[iova, iova + length)`
    /// in paging HWPT `hwpt_id` translates to the same step of user memory from `uptr` (in
    /// this model the user VA is the physical address). `ENOENT` for no such paging HWPT;
    /// `EINVAL` for a range not aligned to the granule, one that wraps, or a page that is not
    /// mapped there; `EFAULT` for user memory that is not there.
    pub fn md_check_map(&self, hwpt_id: u32, iova: u64, length: u64, uptr: u64) -> Result<()> {
        let domain = {
            let t = self.table.lock();
            t.typed(hwpt_id, "no such paging HWPT", |o| match o {
                Object::Hwpt(h) if matches!(h.kind, HwptKind::Paging { .. }) => {
                    Some(h.domain.clone())
                }
                _ => None,
            })?
        };
        let misaligned = [iova, length, uptr]
            .iter()
            .any(|v| !v.is_multiple_of(MOCK_PAGE_SIZE));
        if misaligned || uptr.checked_add(length).is_none() || iova.checked_add(length).is_none() {
            return Err(einval_v(
                "check_map range not aligned to MOCK_PAGE_SIZE",
                iova,
            ));
        }
        let mut byte = [0u8; 1];
        for off in (0..length).step_by(MOCK_PAGE_SIZE as usize) {
            self.mem
                .read(uptr + off, &mut byte)
                .map_err(|_| efault_v("user memory not present", uptr + off))?;
            if domain.iova_to_phys(iova + off) != Some(uptr + off) {
                return Err(einval_v(
                    "IOVA does not translate to the user page",
                    iova + off,
                ));
            }
        }
        Ok(())
    }

    /// `IOMMU_TEST_OP_DEV_CHECK_CACHE`: `EINVAL` unless cache entry `cache_id` of the mock
    /// device behind device object `idev_id` holds `value`; `ENOENT` for no such mock device.
    pub fn dev_check_cache(&self, idev_id: u32, cache_id: u32, value: u32) -> Result<()> {
        let t = self.table.lock();
        t.idev(idev_id)?;
        let m = t
            .objects
            .values()
            .find_map(|o| match o {
                Object::Selftest(m) if m.idev_id == idev_id => Some(m),
                _ => None,
            })
            .ok_or(lookup_error(true, enoent_v, "not a mock device", idev_id))?;
        match m.cache.get(cache_id as usize) {
            Some(&v) if v == value => Ok(()),
            Some(_) => Err(einval_v("cache entry differs", cache_id.into())),
            None => Err(einval_v(
                "cache_id above MOCK_DEV_CACHE_ID_MAX",
                cache_id.into(),
            )),
        }
    }
}

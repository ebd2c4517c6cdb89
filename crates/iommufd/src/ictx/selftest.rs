//! The selftest mock device (the `IOMMU_TEST_OP_MOCK_DOMAIN*` and `*_CHECK_*` operations of
//! Linux's `selftest.c`, followed for behaviour only): a core [`Device`] alone in its own
//! [`Group`] behind this context's [`MockDriver`], bound to the context and attached at
//! creation, owned by a selftest object whose destruction unbinds and removes it.

use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use iommu_core::error::{efault_v, einval, einval_v, enoent_v, eopnotsupp_v, Condition};
use iommu_core::mock::MockDriver;
use iommu_core::sync::Mutex;
use iommu_core::{
    report_device_fault, Capabilities, Device, Domain, DomainRequest, DriverDomain, Group,
    IommuDriver, PageRequest, PageResponse, Result, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, IOMMU_NO_PASID,
};

use super::hw_pagetable::HwptKind;
use super::{lookup_error, Ictx, Object, Table};
use crate::uapi::IOMMU_HWPT_DATA_SELFTEST;

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

/// `IOMMU_HWPT_INVALIDATE_DATA_SELFTEST`: the invalidation record,
/// `struct iommu_hwpt_invalidate_selftest { u32 flags; u32 iotlb_id }`.
pub const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: u32 = 0xdeadbeef;
/// `IOMMU_TEST_INVALIDATE_FLAG_ALL`: invalidate every IOTLB entry, ignoring `iotlb_id`.
pub const IOMMU_TEST_INVALIDATE_FLAG_ALL: u32 = 1;
/// Entries of a mock nested domain's IOTLB (`MOCK_NESTED_DOMAIN_IOTLB_NUM`).
pub const MOCK_NESTED_DOMAIN_IOTLB_NUM: usize = 4;
/// What a nested domain's IOTLB entries start as, in the selftest (`IOMMU_TEST_IOTLB_DEFAULT`).
pub const IOMMU_TEST_IOTLB_DEFAULT: u32 = 0xbadbeef;

/// The selftest IOMMU: the core's [`MockDriver`] (books, hardware state, page tables), plus
/// what the kernel mock's nested domains carry: the selftest data format and an IOTLB array
/// that user invalidation clears.
///
/// SPEC §6.1 \[6.16\], as in Linux 7.3: there is no IOPF feature call; fault reporting is on
/// while a fault-capable domain is attached to the RID or a PASID of the device. Here
/// iommufd's per-device count enables it on the first such attachment and disables it after
/// the last one's auto-response (H22), which is the same window.
struct SelftestIommu {
    inner: Arc<MockDriver>,
    /// Devices whose next `set_dev_pasid` of [`IOMMU_TEST_PASID_RESERVED`] fails with
    /// `ENOMEM`: the kernel mock arms this on the first attach of that PASID, so a replace
    /// exercises the core's error path; detaching disarms it.
    pasid_fake_error: Mutex<alloc::collections::BTreeSet<iommu_core::DeviceId>>,
}

/// The PASID whose replace the mock fails on purpose (`IOMMU_TEST_PASID_RESERVED`).
pub const IOMMU_TEST_PASID_RESERVED: u32 = 1024;

/// The driver state of a selftest nested domain.
pub(super) struct SelftestNested {
    iotlb: Mutex<[u32; MOCK_NESTED_DOMAIN_IOTLB_NUM]>,
}

/// Reads a driver record of `len` bytes (`src`) into `N` bytes as Linux's
/// `iommu_copy_struct_from_user`: `EINVAL` below `min` or above `N`.
fn driver_record<const N: usize>(src: &[u8], min: usize) -> Result<[u8; N]> {
    if src.len() < min || src.len() > N {
        return Err(einval_v("driver data length", src.len() as u64));
    }
    let mut out = [0u8; N];
    out[..src.len()].copy_from_slice(src);
    Ok(out)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl IommuDriver for SelftestIommu {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn probe_device(&self, dev: &Device) -> Result<()> {
        self.inner.probe_device(dev)
    }
    fn release_device(&self, dev: &Device) {
        self.inner.release_device(dev)
    }
    /// SPEC §6.1 \[6.16\], as in Linux 7.3: PRI does not need PASID; a mock device without
    /// PASID bits still reports page faults (to its RID's domain, or with the user-owned PASID
    /// table, to the nested domain on its RID).
    fn dev_has_pri(&self, dev: &Device) -> bool {
        self.inner.dev_has_pri(dev)
    }
    /// Nested domains take only `IOMMU_HWPT_DATA_SELFTEST` (`EOPNOTSUPP` otherwise) with 4 to
    /// 8 bytes of data (`EINVAL` otherwise); their IOTLB starts filled with the given value.
    fn domain_alloc(&self, dev: &Device, req: &DomainRequest<'_>) -> Result<DriverDomain> {
        let nested = match req {
            DomainRequest::Nested {
                data_type, data, ..
            } => {
                if *data_type != IOMMU_HWPT_DATA_SELFTEST {
                    return Err(eopnotsupp_v("nested data type", (*data_type).into())
                        .because(Condition::UnsupportedFlags));
                }
                // `struct iommu_hwpt_selftest { u32 iotlb; u32 pagetable_type }`, at least
                // `iotlb`; the page-table type means nothing to a nested domain.
                let cfg: [u8; 8] = driver_record(data, 4)?;
                Some(SelftestNested {
                    iotlb: Mutex::new([u32_at(&cfg, 0); MOCK_NESTED_DOMAIN_IOTLB_NUM]),
                })
            }
            _ => None,
        };
        let mut d = self.inner.domain_alloc(dev, req)?;
        if let Some(n) = nested {
            d.data = alloc::boxed::Box::new(n);
        }
        Ok(d)
    }
    fn attach_dev(&self, domain: &Domain, dev: &Device) -> Result<()> {
        self.inner.attach_dev(domain, dev)
    }
    fn set_dev_pasid(
        &self,
        domain: &Domain,
        dev: &Device,
        pasid: u32,
        old: Option<&Domain>,
    ) -> Result<()> {
        if pasid == IOMMU_TEST_PASID_RESERVED {
            let mut armed = self.pasid_fake_error.lock();
            if armed.remove(&dev.id()) {
                return Err(iommu_core::error::enomem_v(
                    "selftest: the second set_dev_pasid of PASID 1024 fails",
                    pasid.into(),
                ));
            }
            armed.insert(dev.id());
        }
        self.inner.set_dev_pasid(domain, dev, pasid, old)
    }
    fn remove_dev_pasid(&self, dev: &Device, pasid: u32, domain: &Domain) {
        if pasid == IOMMU_TEST_PASID_RESERVED {
            self.pasid_fake_error.lock().remove(&dev.id());
        }
        self.inner.remove_dev_pasid(dev, pasid, domain)
    }
    fn map_pages(&self, domain: &Domain, iova: u64, pa: u64, len: u64, prot: u32) -> Result<()> {
        self.inner.map_pages(domain, iova, pa, len, prot)
    }
    fn unmap_pages(&self, domain: &Domain, iova: u64, len: u64) -> Result<u64> {
        self.inner.unmap_pages(domain, iova, len)
    }
    fn iova_to_phys(&self, domain: &Domain, iova: u64) -> Option<u64> {
        self.inner.iova_to_phys(domain, iova)
    }
    fn page_response(&self, dev: &Device, req: &PageRequest, resp: PageResponse) {
        self.inner.page_response(dev, req, resp)
    }
}

impl SelftestNested {
    /// The mock's user cache invalidation: each record (`read(i, buf)` fills record `i`, of
    /// `entry_len` bytes) clears one IOTLB entry or, with `IOMMU_TEST_INVALIDATE_FLAG_ALL`,
    /// all. Returns how many records were applied, and the error that stopped it: `EINVAL`
    /// for another data type, a record length other than 8 or an `iotlb_id` above 3,
    /// `EOPNOTSUPP` for unknown flags, the reader's error.
    pub(super) fn invalidate(
        &self,
        data_type: u32,
        entry_len: u32,
        entry_num: u32,
        read: &mut dyn FnMut(u32, &mut [u8]) -> Result<()>,
    ) -> (u32, Result<()>) {
        if data_type != IOMMU_HWPT_INVALIDATE_DATA_SELFTEST {
            return (0, Err(einval_v("invalidation data type", data_type.into())));
        }
        let mut done = 0;
        for i in 0..entry_num {
            let rec = if entry_len as usize > 8 || entry_len < 8 {
                Err(einval_v("invalidation entry_len", entry_len.into()))
            } else {
                let mut b = [0u8; 8];
                read(i, &mut b).map(|()| b)
            };
            let rec = match rec {
                Ok(r) => r,
                Err(e) => return (done, Err(e)),
            };
            let (flags, id) = (u32_at(&rec, 0), u32_at(&rec, 4));
            if flags & !IOMMU_TEST_INVALIDATE_FLAG_ALL != 0 {
                return (
                    done,
                    Err(eopnotsupp_v("invalidation flags", flags.into())
                        .because(Condition::UnsupportedFlags)),
                );
            }
            let mut iotlb = self.iotlb.lock();
            if flags & IOMMU_TEST_INVALIDATE_FLAG_ALL != 0 {
                *iotlb = [0; MOCK_NESTED_DOMAIN_IOTLB_NUM];
            } else if let Some(e) = iotlb.get_mut(id as usize) {
                *e = 0;
            } else {
                return (done, Err(einval_v("iotlb_id above 3", id.into())));
            }
            done += 1;
        }
        (done, Ok(()))
    }
}

/// `IOMMU_HW_INFO_SELFTEST_REGVAL`: the `test_reg` of the mock's hardware information.
pub const IOMMU_HW_INFO_SELFTEST_REGVAL: u32 = 0xdeadbeef;

/// What `IOMMU_GET_HW_INFO` reports about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwInfo {
    /// `out_data_type`: the format of `data` (`IOMMU_HW_INFO_TYPE_NONE` without data).
    pub data_type: u32,
    /// The driver's hardware information.
    pub data: alloc::vec::Vec<u8>,
    /// `log2` of the device's PASIDs, 0 without PASID support.
    pub max_pasid_log2: u8,
    /// `IOMMU_HW_CAP_*` bits.
    pub capabilities: u64,
}

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
    /// This context's mock IOMMU: nesting, PRI, 20-bit PASIDs and a user-owned PASID table
    /// (a fault on an unattached PASID goes to the nested domain on the RID), as the kernel's
    /// mock.
    fn mock_driver(&mut self) -> Arc<dyn IommuDriver> {
        self.mock
            .get_or_insert_with(|| {
                let caps = Capabilities {
                    max_pasids: 1 << MOCK_PASID_WIDTH,
                    user_pasid_table: true,
                    ..Capabilities::default()
                };
                Arc::new(SelftestIommu {
                    inner: MockDriver::with_capabilities("iommufd-selftest", caps),
                    pasid_fake_error: Mutex::default(),
                }) as Arc<dyn IommuDriver>
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
    // The device object may already be gone (unbound through the Rust API).
    if m.idev_id != 0 && t.idev(m.idev_id).is_ok() {
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
        let group = Group::new(drv, format!("mock{n}"));
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
    /// this model the user VA is the physical address; [`crate::user_memory::UserMemory::same_page`] also
    /// recognises two views of one file page). `ENOENT` for no such paging HWPT;
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
            let phys = domain.iova_to_phys(iova + off);
            if !phys.is_some_and(|p| self.mem.same_page(p, uptr + off)) {
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

    /// `IOMMU_TEST_OP_MD_CHECK_IOTLB`: `EINVAL` unless IOTLB entry `iotlb_id` of selftest
    /// nested HWPT `hwpt_id` holds `value`; `ENOENT` for no such nested HWPT, `EINVAL` for one
    /// of another driver.
    pub fn md_check_iotlb(&self, hwpt_id: u32, iotlb_id: u32, value: u32) -> Result<()> {
        let domain = {
            let t = self.table.lock();
            t.typed(hwpt_id, "no such nested HWPT", |o| match o {
                Object::Hwpt(h) if matches!(h.kind, HwptKind::Nested { .. }) => {
                    Some(h.domain.clone())
                }
                _ => None,
            })?
        };
        let nested = domain
            .driver_data::<SelftestNested>()
            .ok_or(einval("not a selftest nested HWPT"))?;
        let entry = nested.iotlb.lock().get(iotlb_id as usize).copied();
        match entry {
            Some(v) if v == value => Ok(()),
            Some(_) => Err(einval_v("IOTLB entry differs", iotlb_id.into())),
            None => Err(einval_v("iotlb_id above 3", iotlb_id.into())),
        }
    }

    /// `IOMMU_TEST_OP_TRIGGER_IOPF`: the mock device behind device object `idev_id` reports a
    /// one-request page request group (with a PASID unless `pasid` is `IOMMU_NO_PASID`), as
    /// its hardware would; where it goes is the core's business. `ENOENT` for no such device
    /// object, `EINVAL` for one that is not a mock device.
    pub fn trigger_iopf(
        &self,
        idev_id: u32,
        pasid: u32,
        grpid: u32,
        perm: u32,
        addr: u64,
    ) -> Result<()> {
        let dev = {
            let t = self.table.lock();
            t.idev(idev_id)?;
            t.objects
                .values()
                .find_map(|o| match o {
                    Object::Selftest(m) if m.idev_id == idev_id => Some(m.dev.clone()),
                    _ => None,
                })
                .ok_or(einval_v("not a mock device", idev_id.into()))?
        };
        let mut flags = IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE;
        if pasid != IOMMU_NO_PASID {
            flags |= IOMMU_FAULT_PAGE_REQUEST_PASID_VALID;
        }
        let req = PageRequest {
            flags,
            pasid,
            grpid,
            perm,
            addr,
        };
        // Linux reports and returns 0 whatever became of the fault (an unhandled one is
        // answered by the core).
        let _ = report_device_fault(&dev, req);
        Ok(())
    }

    /// The device object behind selftest object `stdev_id` (`ENOENT` if it is none).
    fn mock_idev(&self, stdev_id: u32) -> Result<u32> {
        Ok(self.table.lock().mock_dev(stdev_id)?.idev_id)
    }

    /// `IOMMU_TEST_OP_PASID_ATTACH`: [`Ictx::device_attach`] of selftest object `stdev_id`'s
    /// device at `pasid`; returns the HWPT now attached there.
    pub fn mock_pasid_attach(&self, stdev_id: u32, pasid: u32, pt_id: u32) -> Result<u32> {
        let idev_id = self.mock_idev(stdev_id)?;
        self.device_attach(idev_id, pasid, pt_id)?;
        Ok(self.attached_hwpt(idev_id, pasid)?.unwrap_or(pt_id))
    }

    /// `IOMMU_TEST_OP_PASID_REPLACE`: [`Ictx::device_replace`] of selftest object
    /// `stdev_id`'s device at `pasid`; returns the HWPT now attached there.
    pub fn mock_pasid_replace(&self, stdev_id: u32, pasid: u32, pt_id: u32) -> Result<u32> {
        let idev_id = self.mock_idev(stdev_id)?;
        self.device_replace(idev_id, pasid, pt_id)?;
        Ok(self.attached_hwpt(idev_id, pasid)?.unwrap_or(pt_id))
    }

    /// `IOMMU_TEST_OP_PASID_DETACH`: detaches selftest object `stdev_id`'s device from
    /// `pasid`; like Linux's `iommufd_device_detach` it cannot fail (detaching what is not
    /// attached does nothing). `ENOENT` only for no such selftest object.
    pub fn mock_pasid_detach(&self, stdev_id: u32, pasid: u32) -> Result<()> {
        let idev_id = self.mock_idev(stdev_id)?;
        let _ = self.device_detach(idev_id, pasid);
        Ok(())
    }

    /// `IOMMU_TEST_OP_PASID_CHECK_HWPT`: `EINVAL` unless what the core has attached at
    /// `pasid` of selftest object `stdev_id`'s group is HWPT `hwpt_id`'s domain (`hwpt_id` 0:
    /// nothing attached). `ENOENT` for no such selftest object or HWPT.
    pub fn mock_pasid_check_hwpt(&self, stdev_id: u32, pasid: u32, hwpt_id: u32) -> Result<()> {
        let t = self.table.lock();
        let m = t.mock_dev(stdev_id)?;
        let attached = iommu_core::attach_handle_get_any(&m.group, pasid)
            .ok()
            .map(|h| h.domain().id());
        let want = match hwpt_id {
            0 => None,
            id => Some(t.hwpt(id)?.domain.id()),
        };
        if attached != want {
            return Err(einval_v("PASID is attached elsewhere", pasid.into()));
        }
        Ok(())
    }

    /// `IOMMU_GET_HW_INFO` of device `dev_id` asking for info type `in_type`
    /// (`IOMMU_HW_INFO_TYPE_DEFAULT`: the driver's own). The selftest mock reports
    /// `struct iommu_test_hw_info { flags 0, test_reg IOMMU_HW_INFO_SELFTEST_REGVAL }` and
    /// refuses other types with `EOPNOTSUPP`; other drivers report no data. `ENOENT` for no
    /// such device. Dirty tracking is not modelled, so that capability is never reported.
    pub fn hw_info(&self, dev_id: u32, in_type: u32) -> Result<HwInfo> {
        use crate::uapi::{
            IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED, IOMMU_HW_INFO_TYPE_DEFAULT,
            IOMMU_HW_INFO_TYPE_NONE, IOMMU_HW_INFO_TYPE_SELFTEST,
        };
        let t = self.table.lock();
        let dev = t.idev(dev_id)?.dev.clone();
        let iommu = dev.iommu().cloned();
        let mock = matches!((&t.mock, &iommu), (Some(m), Some(i)) if Arc::ptr_eq(m, i));
        let (data_type, data) = if mock {
            if in_type != IOMMU_HW_INFO_TYPE_DEFAULT && in_type != IOMMU_HW_INFO_TYPE_SELFTEST {
                return Err(eopnotsupp_v("hw info type", in_type.into())
                    .because(Condition::UnsupportedFlags));
            }
            let mut d = alloc::vec![0u8; 8];
            d[4..].copy_from_slice(&IOMMU_HW_INFO_SELFTEST_REGVAL.to_ne_bytes());
            (IOMMU_HW_INFO_TYPE_SELFTEST, d)
        } else {
            (IOMMU_HW_INFO_TYPE_NONE, alloc::vec::Vec::new())
        };
        let ats = iommu.is_some_and(|i| i.capabilities().ats);
        let max = dev.max_pasids();
        Ok(HwInfo {
            data_type,
            data,
            max_pasid_log2: if max == 0 { 0 } else { max.ilog2() as u8 },
            capabilities: if ats {
                0
            } else {
                IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED
            },
        })
    }
}

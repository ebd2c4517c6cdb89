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

mod ops;

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
                    inner: MockDriver::unrecorded("iommufd-selftest", caps),
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

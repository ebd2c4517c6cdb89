//! The `IOMMU_TEST_CMD` operations of the context: mock devices, their checks and their PASIDs.

use super::*;

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

//! The selftest's `IOMMU_TEST_CMD` and its `IOMMU_TEST_OP_*` numbers.

use super::*;

/// The `IOMMU_TEST_OP_*` numbers of the selftest command.
pub mod test_op {
    /// `IOMMU_TEST_OP_ADD_RESERVED`.
    pub const ADD_RESERVED: u32 = 1;
    /// `IOMMU_TEST_OP_MOCK_DOMAIN`.
    pub const MOCK_DOMAIN: u32 = 2;
    /// `IOMMU_TEST_OP_MD_CHECK_MAP`.
    pub const MD_CHECK_MAP: u32 = 3;
    /// `IOMMU_TEST_OP_MD_CHECK_REFS`.
    pub const MD_CHECK_REFS: u32 = 4;
    /// `IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT`.
    pub const SET_TEMP_MEMORY_LIMIT: u32 = 9;
    /// `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`.
    pub const MOCK_DOMAIN_REPLACE: u32 = 10;
    /// `IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS`.
    pub const MOCK_DOMAIN_FLAGS: u32 = 12;
    /// `IOMMU_TEST_OP_MD_CHECK_IOTLB`.
    pub const MD_CHECK_IOTLB: u32 = 14;
    /// `IOMMU_TEST_OP_TRIGGER_IOPF`.
    pub const TRIGGER_IOPF: u32 = 15;
    /// `IOMMU_TEST_OP_DEV_CHECK_CACHE`.
    pub const DEV_CHECK_CACHE: u32 = 16;
    /// `IOMMU_TEST_OP_PASID_ATTACH`.
    pub const PASID_ATTACH: u32 = 18;
    /// `IOMMU_TEST_OP_PASID_REPLACE`.
    pub const PASID_REPLACE: u32 = 19;
    /// `IOMMU_TEST_OP_PASID_DETACH`.
    pub const PASID_DETACH: u32 = 20;
    /// `IOMMU_TEST_OP_PASID_CHECK_HWPT`.
    pub const PASID_CHECK_HWPT: u32 = 21;
}

impl Ictx {
    /// The selftest's `IOMMU_TEST_CMD`: `ADD_RESERVED`, `MD_CHECK_REFS`,
    /// `SET_TEMP_MEMORY_LIMIT` and the mock device's operations (see [`Ictx::mock_domain`]);
    /// the rest are `EOPNOTSUPP`, as Linux's switch answers an unknown op.
    pub(super) fn uapi_test_cmd(&self, cmd: &mut [u8], min: usize) -> Result<IoctlOutput> {
        let c: IommuTestCmd = copy_struct_from_user(cmd, min)?;
        match c.op {
            test_op::ADD_RESERVED => {
                let (start, length) = (c.payload[0], c.payload[1]);
                if length == 0 {
                    return Err(einval_v("reserved length is 0", 0));
                }
                let last = start
                    .checked_add(length - 1)
                    .ok_or(iommu_core::error::eoverflow_v(
                        "reserved range wraps",
                        start,
                    ))?;
                self.ioas_reserve(c.id, start, last)?;
                Ok(IoctlOutput::default())
            }
            test_op::MD_CHECK_REFS => {
                let (length, uptr, refs) = (c.payload[0], c.payload[1], c.payload[2] as u32);
                if !length.is_multiple_of(4096)
                    || !uptr.is_multiple_of(4096)
                    || uptr.checked_add(length).is_none()
                {
                    return Err(einval_v("check_refs range not page aligned", uptr));
                }
                for page in (uptr..uptr + length).step_by(4096) {
                    let n = self.mem.pin_count(page)?;
                    if n != refs {
                        return Err(eio_v("page pin count differs", page));
                    }
                }
                Ok(IoctlOutput::default())
            }
            test_op::MOCK_DOMAIN | test_op::MOCK_DOMAIN_FLAGS => {
                let flags = if c.op == test_op::MOCK_DOMAIN_FLAGS {
                    (c.payload[1] >> 32) as u32
                } else {
                    0
                };
                let ids = self.mock_domain(c.id, flags)?;
                // `mock_domain`: out_stdev_id, out_hwpt_id, out_idev_id from byte 16.
                put_u32(cmd, 16, ids.stdev_id);
                put_u32(cmd, 20, ids.hwpt_id);
                put_u32(cmd, 24, ids.idev_id);
                Ok(IoctlOutput::default())
            }
            test_op::MOCK_DOMAIN_REPLACE => {
                let hwpt_id = self.mock_domain_replace(c.id, c.payload[0] as u32)?;
                put_u32(cmd, 16, hwpt_id);
                Ok(IoctlOutput::default())
            }
            test_op::MD_CHECK_MAP => {
                let (iova, length, uptr) = (c.payload[0], c.payload[1], c.payload[2]);
                self.md_check_map(c.id, iova, length, uptr)?;
                Ok(IoctlOutput::default())
            }
            test_op::MD_CHECK_IOTLB => {
                let (iotlb_id, value) = (c.payload[0] as u32, (c.payload[0] >> 32) as u32);
                self.md_check_iotlb(c.id, iotlb_id, value)?;
                Ok(IoctlOutput::default())
            }
            test_op::TRIGGER_IOPF => {
                // `trigger_iopf`: dev_id, pasid, grpid, perm, then the 64-bit addr.
                let (dev_id, pasid) = (c.payload[0] as u32, (c.payload[0] >> 32) as u32);
                let (grpid, perm) = (c.payload[1] as u32, (c.payload[1] >> 32) as u32);
                self.trigger_iopf(dev_id, pasid, grpid, perm, c.payload[2])?;
                Ok(IoctlOutput::default())
            }
            test_op::PASID_ATTACH | test_op::PASID_REPLACE => {
                // `pasid_attach`/`pasid_replace`: pasid, then pt_id (updated to the HWPT).
                let (pasid, pt_id) = (c.payload[0] as u32, (c.payload[0] >> 32) as u32);
                let hwpt_id = if c.op == test_op::PASID_ATTACH {
                    self.mock_pasid_attach(c.id, pasid, pt_id)?
                } else {
                    self.mock_pasid_replace(c.id, pasid, pt_id)?
                };
                put_u32(cmd, 20, hwpt_id);
                Ok(IoctlOutput::default())
            }
            test_op::PASID_DETACH => {
                self.mock_pasid_detach(c.id, c.payload[0] as u32)?;
                Ok(IoctlOutput::default())
            }
            test_op::PASID_CHECK_HWPT => {
                let (pasid, hwpt_id) = (c.payload[0] as u32, (c.payload[0] >> 32) as u32);
                self.mock_pasid_check_hwpt(c.id, pasid, hwpt_id)?;
                Ok(IoctlOutput::default())
            }
            test_op::DEV_CHECK_CACHE => {
                let (cache_id, value) = (c.payload[0] as u32, (c.payload[0] >> 32) as u32);
                self.dev_check_cache(c.id, cache_id, value)?;
                Ok(IoctlOutput::default())
            }
            // Accepted: the model takes no temporary memory such a limit could bound.
            test_op::SET_TEMP_MEMORY_LIMIT => Ok(IoctlOutput::default()),
            op => Err(eopnotsupp_v("selftest op not modelled yet", op.into())),
        }
    }
}

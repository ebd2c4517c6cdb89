//! The driver data of a nested domain (iommufd `IOMMU_HWPT_DATA_VTD_S1`, Linux
//! `struct iommu_hwpt_vtd_s1`): validated as Intel's driver does before a nested domain exists.

use iommu_core::error::{e2big_v, einval_v, eopnotsupp_v};
use iommu_core::Result;

/// `IOMMU_HWPT_DATA_VTD_S1`: the only nested data type this (VT-d-like) IOMMU accepts.
pub const HWPT_DATA_VTD_S1: u32 = 1;
/// Bytes of `struct iommu_hwpt_vtd_s1`: `flags u64, pgtbl_addr u64, addr_width u32,
/// __reserved u32`. Shorter data is `EINVAL`; longer data must be zero beyond it (`E2BIG`).
pub const VTD_S1_SIZE: usize = 24;
/// Every `IOMMU_VTD_S1_*` flag: SRE, EAFE, WPE.
pub const VTD_S1_FLAGS: u64 = 0b111;

/// A stage-1 table description as user space passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtdS1 {
    /// `IOMMU_VTD_S1_*` flags.
    pub flags: u64,
    /// The guest's stage-1 root (a guest physical address).
    pub pgtbl_addr: u64,
    /// 48 (4-level) or 57 (5-level).
    pub addr_width: u32,
}

impl VtdS1 {
    /// The bytes user space hands `IOMMU_HWPT_ALLOC` (little endian, `__reserved` zero).
    pub fn to_bytes(self) -> [u8; VTD_S1_SIZE] {
        let mut b = [0u8; VTD_S1_SIZE];
        b[0..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.pgtbl_addr.to_le_bytes());
        b[16..20].copy_from_slice(&self.addr_width.to_le_bytes());
        b
    }

    /// Parses and checks nested driver data: `EOPNOTSUPP` for another `data_type`; `EINVAL`
    /// for data shorter than the struct, unknown flags or an address width other than 48/57;
    /// `E2BIG` for non-zero bytes beyond the struct (Linux `copy_struct_from_user`).
    pub fn parse(data_type: u32, data: &[u8]) -> Result<VtdS1> {
        if data_type != HWPT_DATA_VTD_S1 {
            return Err(eopnotsupp_v(
                "nested data_type: only IOMMU_HWPT_DATA_VTD_S1 (1)",
                data_type.into(),
            ));
        }
        let (head, tail) = data.split_at_checked(VTD_S1_SIZE).ok_or(einval_v(
            "nested data shorter than iommu_hwpt_vtd_s1 (24 bytes)",
            data.len() as u64,
        ))?;
        if let Some(at) = tail.iter().position(|&b| b != 0) {
            return Err(e2big_v(
                "non-zero nested data beyond iommu_hwpt_vtd_s1 (24 bytes), at byte",
                (VTD_S1_SIZE + at) as u64,
            ));
        }
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&head[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let mut w = [0u8; 4];
        w.copy_from_slice(&head[16..20]);
        let s1 = VtdS1 {
            flags: u64_at(0),
            pgtbl_addr: u64_at(8),
            addr_width: u32::from_le_bytes(w),
        };
        if s1.flags & !VTD_S1_FLAGS != 0 {
            return Err(einval_v("unknown IOMMU_VTD_S1 flags", s1.flags));
        }
        if s1.addr_width != 48 && s1.addr_width != 57 {
            return Err(einval_v(
                "nested addr_width must be 48 or 57",
                s1.addr_width.into(),
            ));
        }
        Ok(s1)
    }
}

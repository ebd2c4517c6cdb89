//! Byte-exact `include/uapi/linux/iommufd.h` records and constants used by the fault path (a
//! spec module in the OpenVMM style: plain `#[repr(C)]` types, no logic beyond the generic
//! extensible-struct rule of [`copy_struct_from_user`]).
//!
//! Every record has explicit reserved fields, no implicit padding (the zerocopy derives refuse
//! to compile otherwise) and `const` assertions on its size and on every field offset, so the
//! 32/64-bit ABI mismatch and the stack-padding info leak fixed upstream in 6.14 cannot come
//! back (SPEC §5.8, H24). Records are built from `Default` (all zero) and then filled.

use core::mem::{offset_of, size_of};

use iommu_core::error::{e2big_v, einval_v, Condition};
use iommu_core::Result;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The ioctl type byte of iommufd (`IOMMUFD_TYPE`, `';'`).
pub const IOMMUFD_TYPE: u32 = b';' as u32;
/// `IOMMUFD_CMD_HWPT_ALLOC`.
pub const IOMMUFD_CMD_HWPT_ALLOC: u32 = 0x89;
/// `IOMMUFD_CMD_FAULT_QUEUE_ALLOC`.
pub const IOMMUFD_CMD_FAULT_QUEUE_ALLOC: u32 = 0x8e;
/// `IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC)`.
pub const IOMMU_HWPT_ALLOC: u32 = (IOMMUFD_TYPE << 8) | IOMMUFD_CMD_HWPT_ALLOC;
/// `IOMMU_FAULT_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC)`.
pub const IOMMU_FAULT_QUEUE_ALLOC: u32 = (IOMMUFD_TYPE << 8) | IOMMUFD_CMD_FAULT_QUEUE_ALLOC;

/// `IOMMU_HWPT_ALLOC_NEST_PARENT`: the paging HWPT may be the stage 2 of nested HWPTs.
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = 1 << 0;
/// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: dirty tracking on the paging HWPT.
pub const IOMMU_HWPT_ALLOC_DIRTY_TRACKING: u32 = 1 << 1;
/// `IOMMU_HWPT_FAULT_ID_VALID`: `fault_id` names the fault queue the HWPT delivers to.
pub const IOMMU_HWPT_FAULT_ID_VALID: u32 = 1 << 2;
/// `IOMMU_HWPT_ALLOC_PASID` \[6.15\]: the HWPT may be attached to a PASID.
pub const IOMMU_HWPT_ALLOC_PASID: u32 = 1 << 3;

/// `IOMMU_HWPT_DATA_NONE`: no driver data (a paging HWPT).
pub const IOMMU_HWPT_DATA_NONE: u32 = 0;
/// `IOMMU_HWPT_DATA_VTD_S1`: Intel VT-d stage-1 page table.
pub const IOMMU_HWPT_DATA_VTD_S1: u32 = 1;
/// `IOMMU_HWPT_DATA_ARM_SMMUV3`: ARM SMMUv3 stream table entry.
pub const IOMMU_HWPT_DATA_ARM_SMMUV3: u32 = 2;
/// `IOMMU_HWPT_DATA_SELFTEST`: the selftest mock's nested data.
pub const IOMMU_HWPT_DATA_SELFTEST: u32 = 0xdead;

/// `IOMMU_PGFAULT_FLAGS_PASID_VALID`: the `pasid` field is valid.
pub const IOMMU_PGFAULT_FLAGS_PASID_VALID: u32 = 1 << 0;
/// `IOMMU_PGFAULT_FLAGS_LAST_PAGE`: the last record of its page request group.
pub const IOMMU_PGFAULT_FLAGS_LAST_PAGE: u32 = 1 << 1;

/// `IOMMU_PGFAULT_PERM_READ`.
pub const IOMMU_PGFAULT_PERM_READ: u32 = 1 << 0;
/// `IOMMU_PGFAULT_PERM_WRITE`.
pub const IOMMU_PGFAULT_PERM_WRITE: u32 = 1 << 1;
/// `IOMMU_PGFAULT_PERM_EXEC`.
pub const IOMMU_PGFAULT_PERM_EXEC: u32 = 1 << 2;
/// `IOMMU_PGFAULT_PERM_PRIV`.
pub const IOMMU_PGFAULT_PERM_PRIV: u32 = 1 << 3;

/// `IOMMUFD_PAGE_RESP_SUCCESS`: the pages are resident, the device retries.
pub const IOMMUFD_PAGE_RESP_SUCCESS: u32 = 0;
/// `IOMMUFD_PAGE_RESP_INVALID`: the access fails; PRI stays enabled. (There is no user-space
/// Failure code: it was removed before 6.11 shipped so user space cannot disable PRI, H19.)
pub const IOMMUFD_PAGE_RESP_INVALID: u32 = 1;

/// `struct iommu_hwpt_pgfault`: one fault record read from the fault fd (40 bytes).
#[repr(C)]
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IommuHwptPgfault {
    /// `IOMMU_PGFAULT_FLAGS_*`.
    pub flags: u32,
    /// The iommufd device object ID of the faulting attachment.
    pub dev_id: u32,
    /// The PASID, valid when `IOMMU_PGFAULT_FLAGS_PASID_VALID`.
    pub pasid: u32,
    /// The page request group index.
    pub grpid: u32,
    /// `IOMMU_PGFAULT_PERM_*`.
    pub perm: u32,
    /// Must be zero (explicit since the 6.14 padding fix).
    pub __reserved: u32,
    /// The faulting address.
    pub addr: u64,
    /// A size hint; always 0.
    pub length: u32,
    /// The group's response cookie, identical on every record of the group.
    pub cookie: u32,
}

/// `struct iommu_hwpt_page_response`: one response written to the fault fd (8 bytes).
#[repr(C)]
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IommuHwptPageResponse {
    /// The cookie of the group being answered.
    pub cookie: u32,
    /// `IOMMUFD_PAGE_RESP_SUCCESS` or `IOMMUFD_PAGE_RESP_INVALID`.
    pub code: u32,
}

/// `struct iommu_fault_alloc`: the `IOMMU_FAULT_QUEUE_ALLOC` command (16 bytes).
#[repr(C)]
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IommuFaultAlloc {
    /// `sizeof(struct iommu_fault_alloc)` as user space knows it.
    pub size: u32,
    /// Must be 0.
    pub flags: u32,
    /// Output: the fault object ID.
    pub out_fault_id: u32,
    /// Output: the fault fd.
    pub out_fault_fd: u32,
}

/// `struct iommu_hwpt_alloc`: the `IOMMU_HWPT_ALLOC` command (48 bytes).
#[repr(C)]
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IommuHwptAlloc {
    /// `sizeof(struct iommu_hwpt_alloc)` as user space knows it (at least 24).
    pub size: u32,
    /// `IOMMU_HWPT_ALLOC_*` and `IOMMU_HWPT_FAULT_ID_VALID`.
    pub flags: u32,
    /// The device the HWPT is allocated for.
    pub dev_id: u32,
    /// An IOAS (paging HWPT) or a nest-parent paging HWPT (nested HWPT).
    pub pt_id: u32,
    /// Output: the HWPT ID.
    pub out_hwpt_id: u32,
    /// Must be 0.
    pub __reserved: u32,
    /// `IOMMU_HWPT_DATA_*`.
    pub data_type: u32,
    /// Length of the driver data at `data_uptr`.
    pub data_len: u32,
    /// User pointer to the driver data.
    pub data_uptr: u64,
    /// The fault queue, with `IOMMU_HWPT_FAULT_ID_VALID`.
    pub fault_id: u32,
    /// Documented "must be 0"; not checked, as in Linux.
    pub __reserved2: u32,
}

/// `offsetofend(struct iommu_hwpt_alloc, __reserved)`: the smallest size old user space sends.
pub const IOMMU_HWPT_ALLOC_MIN_SIZE: usize = 24;
/// `offsetofend(struct iommu_fault_alloc, out_fault_fd)`.
pub const IOMMU_FAULT_ALLOC_MIN_SIZE: usize = 16;

const _: () = {
    assert!(size_of::<IommuHwptPgfault>() == 40);
    assert!(core::mem::align_of::<IommuHwptPgfault>() == 8);
    assert!(offset_of!(IommuHwptPgfault, flags) == 0);
    assert!(offset_of!(IommuHwptPgfault, dev_id) == 4);
    assert!(offset_of!(IommuHwptPgfault, pasid) == 8);
    assert!(offset_of!(IommuHwptPgfault, grpid) == 12);
    assert!(offset_of!(IommuHwptPgfault, perm) == 16);
    assert!(offset_of!(IommuHwptPgfault, __reserved) == 20);
    assert!(offset_of!(IommuHwptPgfault, addr) == 24);
    assert!(offset_of!(IommuHwptPgfault, length) == 32);
    assert!(offset_of!(IommuHwptPgfault, cookie) == 36);

    assert!(size_of::<IommuHwptPageResponse>() == 8);
    assert!(offset_of!(IommuHwptPageResponse, cookie) == 0);
    assert!(offset_of!(IommuHwptPageResponse, code) == 4);

    assert!(size_of::<IommuFaultAlloc>() == 16);
    assert!(offset_of!(IommuFaultAlloc, size) == 0);
    assert!(offset_of!(IommuFaultAlloc, flags) == 4);
    assert!(offset_of!(IommuFaultAlloc, out_fault_id) == 8);
    assert!(offset_of!(IommuFaultAlloc, out_fault_fd) == 12);

    assert!(size_of::<IommuHwptAlloc>() == 48);
    assert!(offset_of!(IommuHwptAlloc, size) == 0);
    assert!(offset_of!(IommuHwptAlloc, flags) == 4);
    assert!(offset_of!(IommuHwptAlloc, dev_id) == 8);
    assert!(offset_of!(IommuHwptAlloc, pt_id) == 12);
    assert!(offset_of!(IommuHwptAlloc, out_hwpt_id) == 16);
    assert!(offset_of!(IommuHwptAlloc, __reserved) == 20);
    assert!(offset_of!(IommuHwptAlloc, data_type) == 24);
    assert!(offset_of!(IommuHwptAlloc, data_len) == 28);
    assert!(offset_of!(IommuHwptAlloc, data_uptr) == 32);
    assert!(offset_of!(IommuHwptAlloc, fault_id) == 40);
    assert!(offset_of!(IommuHwptAlloc, __reserved2) == 44);
};

/// Reads an extensible command struct the way Linux's `copy_struct_from_user` does.
///
/// `user` is the whole user buffer, whose length is the `size` user space declared. Shorter
/// than `min_size` ⇒ `EINVAL`; longer than `T` with any non-zero byte beyond `T` ⇒ `E2BIG`;
/// shorter than `T` (but at least `min_size`) ⇒ the missing tail reads as zero, so old user
/// space keeps working. The errors name [`Condition::RecordTooShort`] and
/// [`Condition::UnknownTrailingBytes`].
pub fn copy_struct_from_user<T: FromBytes + IntoBytes + Default>(
    user: &[u8],
    min_size: usize,
) -> Result<T> {
    if user.len() < min_size {
        return Err(
            einval_v("command size below the minimum", user.len() as u64)
                .because(Condition::RecordTooShort),
        );
    }
    let mut out = T::default();
    let ksize = size_of::<T>();
    if user.len() > ksize {
        if let Some(pos) = user[ksize..].iter().position(|&b| b != 0) {
            return Err(e2big_v(
                "non-zero bytes beyond the known struct",
                (ksize + pos) as u64,
            )
            .because(Condition::UnknownTrailingBytes));
        }
    }
    let n = user.len().min(ksize);
    out.as_mut_bytes()[..n].copy_from_slice(&user[..n]);
    Ok(out)
}

/// Writes a command struct back to the user buffer (the part of it user space knows).
pub fn copy_struct_to_user<T: IntoBytes + Immutable>(user: &mut [u8], cmd: &T) {
    let bytes = cmd.as_bytes();
    let n = user.len().min(bytes.len());
    user[..n].copy_from_slice(&bytes[..n]);
}

macro_rules! uapi_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(
            Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable,
            KnownLayout,
        )]
        #[allow(missing_docs)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
    };
}

mod numbers;
mod op_size;
mod records;

pub use numbers::*;
pub use op_size::*;
pub use records::*;

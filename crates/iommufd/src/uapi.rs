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

// ---- The rest of the `IOMMUFD_CMD_*` numbers, the commands the dispatch decodes, and the
// ---- VFIO type1 compatibility numbers (`include/uapi/linux/vfio.h`).

/// `IOMMUFD_CMD_BASE`: the first iommufd command number.
pub const IOMMUFD_CMD_BASE: u32 = 0x80;
/// `IOMMUFD_CMD_DESTROY`.
pub const IOMMUFD_CMD_DESTROY: u32 = 0x80;
/// `IOMMUFD_CMD_IOAS_ALLOC`.
pub const IOMMUFD_CMD_IOAS_ALLOC: u32 = 0x81;
/// `IOMMUFD_CMD_IOAS_ALLOW_IOVAS`.
pub const IOMMUFD_CMD_IOAS_ALLOW_IOVAS: u32 = 0x82;
/// `IOMMUFD_CMD_IOAS_COPY`.
pub const IOMMUFD_CMD_IOAS_COPY: u32 = 0x83;
/// `IOMMUFD_CMD_IOAS_IOVA_RANGES`.
pub const IOMMUFD_CMD_IOAS_IOVA_RANGES: u32 = 0x84;
/// `IOMMUFD_CMD_IOAS_MAP`.
pub const IOMMUFD_CMD_IOAS_MAP: u32 = 0x85;
/// `IOMMUFD_CMD_IOAS_UNMAP`.
pub const IOMMUFD_CMD_IOAS_UNMAP: u32 = 0x86;
/// `IOMMUFD_CMD_OPTION`.
pub const IOMMUFD_CMD_OPTION: u32 = 0x87;
/// `IOMMUFD_CMD_VFIO_IOAS`.
pub const IOMMUFD_CMD_VFIO_IOAS: u32 = 0x88;
/// `IOMMUFD_CMD_GET_HW_INFO`.
pub const IOMMUFD_CMD_GET_HW_INFO: u32 = 0x8a;
/// `IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING`.
pub const IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: u32 = 0x8b;
/// `IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP`.
pub const IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: u32 = 0x8c;
/// `IOMMUFD_CMD_HWPT_INVALIDATE`.
pub const IOMMUFD_CMD_HWPT_INVALIDATE: u32 = 0x8d;
/// `IOMMUFD_CMD_IOAS_MAP_FILE`.
pub const IOMMUFD_CMD_IOAS_MAP_FILE: u32 = 0x8f;
/// `IOMMUFD_CMD_VIOMMU_ALLOC`.
pub const IOMMUFD_CMD_VIOMMU_ALLOC: u32 = 0x90;
/// `IOMMUFD_CMD_VDEVICE_ALLOC`.
pub const IOMMUFD_CMD_VDEVICE_ALLOC: u32 = 0x91;
/// `IOMMUFD_CMD_IOAS_CHANGE_PROCESS`.
pub const IOMMUFD_CMD_IOAS_CHANGE_PROCESS: u32 = 0x92;
/// `IOMMUFD_CMD_VEVENTQ_ALLOC`.
pub const IOMMUFD_CMD_VEVENTQ_ALLOC: u32 = 0x93;
/// `IOMMUFD_CMD_HW_QUEUE_ALLOC`.
pub const IOMMUFD_CMD_HW_QUEUE_ALLOC: u32 = 0x94;
/// `IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA`.
pub const IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA: u32 = 0x95;
/// The selftest's `IOMMU_TEST_CMD` number (`IOMMUFD_CMD_BASE + 32`).
pub const IOMMUFD_CMD_TEST: u32 = 0xa0;

/// `_IO(IOMMUFD_TYPE, nr)`: the full request number of iommufd command `nr`.
pub const fn iommufd_io(nr: u32) -> u32 {
    (IOMMUFD_TYPE << 8) | nr
}

/// `IOMMU_DESTROY`.
pub const IOMMU_DESTROY: u32 = iommufd_io(IOMMUFD_CMD_DESTROY);
/// `IOMMU_IOAS_ALLOC`.
pub const IOMMU_IOAS_ALLOC: u32 = iommufd_io(IOMMUFD_CMD_IOAS_ALLOC);
/// `IOMMU_IOAS_ALLOW_IOVAS`.
pub const IOMMU_IOAS_ALLOW_IOVAS: u32 = iommufd_io(IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
/// `IOMMU_IOAS_COPY`.
pub const IOMMU_IOAS_COPY: u32 = iommufd_io(IOMMUFD_CMD_IOAS_COPY);
/// `IOMMU_IOAS_IOVA_RANGES`.
pub const IOMMU_IOAS_IOVA_RANGES: u32 = iommufd_io(IOMMUFD_CMD_IOAS_IOVA_RANGES);
/// `IOMMU_IOAS_MAP`.
pub const IOMMU_IOAS_MAP: u32 = iommufd_io(IOMMUFD_CMD_IOAS_MAP);
/// `IOMMU_IOAS_UNMAP`.
pub const IOMMU_IOAS_UNMAP: u32 = iommufd_io(IOMMUFD_CMD_IOAS_UNMAP);
/// `IOMMU_OPTION`.
pub const IOMMU_OPTION: u32 = iommufd_io(IOMMUFD_CMD_OPTION);
/// `IOMMU_VFIO_IOAS`.
pub const IOMMU_VFIO_IOAS: u32 = iommufd_io(IOMMUFD_CMD_VFIO_IOAS);
/// `IOMMU_GET_HW_INFO`.
pub const IOMMU_GET_HW_INFO: u32 = iommufd_io(IOMMUFD_CMD_GET_HW_INFO);
/// `IOMMU_IOAS_MAP_FILE`.
pub const IOMMU_IOAS_MAP_FILE: u32 = iommufd_io(IOMMUFD_CMD_IOAS_MAP_FILE);
/// `IOMMU_HWPT_INVALIDATE`.
pub const IOMMU_HWPT_INVALIDATE: u32 = iommufd_io(IOMMUFD_CMD_HWPT_INVALIDATE);
/// `IOMMU_TEST_CMD` (the selftest module's command).
pub const IOMMU_TEST_CMD: u32 = iommufd_io(IOMMUFD_CMD_TEST);

/// `IOMMU_IOAS_MAP_FIXED_IOVA`: map at the given IOVA instead of choosing one.
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_READABLE`.
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// `IOMMU_OPTION_RLIMIT_MODE`: account pinned pages to the user (0) or the mm (1).
pub const IOMMU_OPTION_RLIMIT_MODE: u32 = 0;
/// `IOMMU_OPTION_HUGE_PAGES`: an IOAS may use huge pages (1, the default) or not (0).
pub const IOMMU_OPTION_HUGE_PAGES: u32 = 1;
/// `IOMMU_OPTION_OP_SET`.
pub const IOMMU_OPTION_OP_SET: u16 = 0;
/// `IOMMU_OPTION_OP_GET`.
pub const IOMMU_OPTION_OP_GET: u16 = 1;

/// `IOMMU_VFIO_IOAS_GET`.
pub const IOMMU_VFIO_IOAS_GET: u16 = 0;
/// `IOMMU_VFIO_IOAS_SET`.
pub const IOMMU_VFIO_IOAS_SET: u16 = 1;
/// `IOMMU_VFIO_IOAS_CLEAR`.
pub const IOMMU_VFIO_IOAS_CLEAR: u16 = 2;

/// `IOMMU_HW_INFO_TYPE_NONE`: the driver reports no hardware information.
pub const IOMMU_HW_INFO_TYPE_NONE: u32 = 0;
/// `IOMMU_HW_INFO_TYPE_DEFAULT`: whatever type the driver reports (input only).
pub const IOMMU_HW_INFO_TYPE_DEFAULT: u32 = 0;
/// `IOMMU_HW_INFO_TYPE_SELFTEST`: the selftest mock's `struct iommu_test_hw_info`.
pub const IOMMU_HW_INFO_TYPE_SELFTEST: u32 = 0xfeedbeef;
/// `IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`: ATS cannot be used for the device.
pub const IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: u64 = 1 << 3;
/// `IOMMU_HW_INFO_FLAG_INPUT_TYPE`: `in_data_type` selects the info type.
pub const IOMMU_HW_INFO_FLAG_INPUT_TYPE: u32 = 1 << 0;

/// `VFIO_TYPE` (the same `';'`).
pub const VFIO_BASE: u32 = 100;
/// `VFIO_GET_API_VERSION`.
pub const VFIO_GET_API_VERSION: u32 = iommufd_io(VFIO_BASE);
/// `VFIO_CHECK_EXTENSION`.
pub const VFIO_CHECK_EXTENSION: u32 = iommufd_io(VFIO_BASE + 1);
/// `VFIO_SET_IOMMU`.
pub const VFIO_SET_IOMMU: u32 = iommufd_io(VFIO_BASE + 2);
/// `VFIO_IOMMU_GET_INFO`.
pub const VFIO_IOMMU_GET_INFO: u32 = iommufd_io(VFIO_BASE + 12);
/// `VFIO_IOMMU_MAP_DMA`.
pub const VFIO_IOMMU_MAP_DMA: u32 = iommufd_io(VFIO_BASE + 13);
/// `VFIO_IOMMU_UNMAP_DMA`.
pub const VFIO_IOMMU_UNMAP_DMA: u32 = iommufd_io(VFIO_BASE + 14);
/// `VFIO_API_VERSION`.
pub const VFIO_API_VERSION: i32 = 0;
/// `VFIO_TYPE1_IOMMU`.
pub const VFIO_TYPE1_IOMMU: u64 = 1;
/// `VFIO_TYPE1v2_IOMMU`.
pub const VFIO_TYPE1V2_IOMMU: u64 = 3;
/// `VFIO_DMA_CC_IOMMU`.
pub const VFIO_DMA_CC_IOMMU: u64 = 4;
/// `VFIO_UNMAP_ALL`.
pub const VFIO_UNMAP_ALL: u64 = 9;
/// `VFIO_DMA_MAP_FLAG_READ`.
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
/// `VFIO_DMA_MAP_FLAG_WRITE`.
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
/// `VFIO_DMA_UNMAP_FLAG_ALL`.
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
/// `VFIO_IOMMU_INFO_PGSIZES`.
pub const VFIO_IOMMU_INFO_PGSIZES: u32 = 1 << 0;

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

uapi_struct!(
    /// `struct iommu_destroy` (8 bytes).
    IommuDestroy { size: u32, id: u32 }
);
uapi_struct!(
    /// `struct iommu_ioas_alloc` (12 bytes).
    IommuIoasAlloc { size: u32, flags: u32, out_ioas_id: u32 }
);
uapi_struct!(
    /// `struct iommu_iova_range` (16 bytes, inclusive).
    IommuIovaRange { start: u64, last: u64 }
);
uapi_struct!(
    /// `struct iommu_ioas_iova_ranges` (32 bytes).
    IommuIoasIovaRanges {
        size: u32, ioas_id: u32, num_iovas: u32, __reserved: u32, allowed_iovas: u64,
        out_iova_alignment: u64,
    }
);
uapi_struct!(
    /// `struct iommu_ioas_allow_iovas` (24 bytes).
    IommuIoasAllowIovas { size: u32, ioas_id: u32, num_iovas: u32, __reserved: u32, allowed_iovas: u64 }
);
uapi_struct!(
    /// `struct iommu_ioas_map` (40 bytes).
    IommuIoasMap {
        size: u32, flags: u32, ioas_id: u32, __reserved: u32, user_va: u64, length: u64, iova: u64,
    }
);
uapi_struct!(
    /// `struct iommu_ioas_map_file` (40 bytes).
    IommuIoasMapFile {
        size: u32, flags: u32, ioas_id: u32, fd: i32, start: u64, length: u64, iova: u64,
    }
);
uapi_struct!(
    /// `struct iommu_ioas_copy` (40 bytes).
    IommuIoasCopy {
        size: u32, flags: u32, dst_ioas_id: u32, src_ioas_id: u32, length: u64, dst_iova: u64,
        src_iova: u64,
    }
);
uapi_struct!(
    /// `struct iommu_ioas_unmap` (24 bytes).
    IommuIoasUnmap { size: u32, ioas_id: u32, iova: u64, length: u64 }
);
uapi_struct!(
    /// `struct iommu_option` (24 bytes).
    IommuOption { size: u32, option_id: u32, op: u16, __reserved: u16, object_id: u32, val64: u64 }
);
uapi_struct!(
    /// `struct iommu_vfio_ioas` (12 bytes).
    IommuVfioIoas { size: u32, ioas_id: u32, op: u16, __reserved: u16 }
);
uapi_struct!(
    /// `struct iommu_hw_info` (40 bytes; `in_data_type` and `out_data_type` share a field).
    IommuHwInfo {
        size: u32, flags: u32, dev_id: u32, data_len: u32, data_uptr: u64, data_type: u32,
        out_max_pasid_log2: u8, __reserved: [u8; 3], out_capabilities: u64,
    }
);
uapi_struct!(
    /// `struct iommu_hwpt_invalidate` (32 bytes).
    IommuHwptInvalidate {
        size: u32, hwpt_id: u32, data_uptr: u64, data_type: u32, entry_len: u32, entry_num: u32,
        __reserved: u32,
    }
);
uapi_struct!(
    /// The selftest's `struct iommu_test_cmd` (72 bytes): a header and a 56-byte union whose
    /// layout depends on `op`.
    IommuTestCmd { size: u32, op: u32, id: u32, __reserved: u32, payload: [u64; 7] }
);
uapi_struct!(
    /// `struct vfio_iommu_type1_dma_map` (32 bytes).
    VfioDmaMap { argsz: u32, flags: u32, vaddr: u64, iova: u64, size: u64 }
);
uapi_struct!(
    /// `struct vfio_iommu_type1_dma_unmap` without its flexible array (24 bytes).
    VfioDmaUnmap { argsz: u32, flags: u32, iova: u64, size: u64 }
);
uapi_struct!(
    /// `struct vfio_iommu_type1_info` (24 bytes).
    VfioIommuInfo { argsz: u32, flags: u32, iova_pgsizes: u64, cap_offset: u32, pad: u32 }
);

const _: () = {
    assert!(size_of::<IommuDestroy>() == 8);
    assert!(size_of::<IommuIoasAlloc>() == 12);
    assert!(size_of::<IommuIovaRange>() == 16);
    assert!(size_of::<IommuIoasIovaRanges>() == 32);
    assert!(offset_of!(IommuIoasIovaRanges, allowed_iovas) == 16);
    assert!(offset_of!(IommuIoasIovaRanges, out_iova_alignment) == 24);
    assert!(size_of::<IommuIoasAllowIovas>() == 24);
    assert!(size_of::<IommuIoasMap>() == 40);
    assert!(offset_of!(IommuIoasMap, user_va) == 16);
    assert!(offset_of!(IommuIoasMap, iova) == 32);
    assert!(size_of::<IommuIoasCopy>() == 40);
    assert!(size_of::<IommuIoasMapFile>() == 40);
    assert!(offset_of!(IommuIoasMapFile, start) == 16);
    assert!(offset_of!(IommuIoasCopy, src_iova) == 32);
    assert!(size_of::<IommuIoasUnmap>() == 24);
    assert!(offset_of!(IommuIoasUnmap, iova) == 8);
    assert!(size_of::<IommuOption>() == 24);
    assert!(offset_of!(IommuOption, op) == 8);
    assert!(offset_of!(IommuOption, object_id) == 12);
    assert!(offset_of!(IommuOption, val64) == 16);
    assert!(size_of::<IommuVfioIoas>() == 12);
    assert!(size_of::<IommuHwInfo>() == 40);
    assert!(offset_of!(IommuHwInfo, data_uptr) == 16);
    assert!(offset_of!(IommuHwInfo, data_type) == 24);
    assert!(offset_of!(IommuHwInfo, out_max_pasid_log2) == 28);
    assert!(offset_of!(IommuHwInfo, out_capabilities) == 32);
    assert!(size_of::<IommuTestCmd>() == 72);
    assert!(size_of::<IommuHwptInvalidate>() == 32);
    assert!(offset_of!(IommuHwptInvalidate, entry_num) == 24);
    assert!(size_of::<VfioDmaMap>() == 32);
    assert!(size_of::<VfioDmaUnmap>() == 24);
    assert!(size_of::<VfioIommuInfo>() == 24);
};

/// The size rules of one iommufd command (Linux's `iommufd_ioctl_ops` table): `size` is the
/// struct as this model knows it, `min_size` `offsetofend` of its last original field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSize {
    /// The command number (`_IOC_NR`).
    pub nr: u32,
    /// `sizeof` the struct.
    pub size: usize,
    /// The smallest `size` user space may declare.
    pub min_size: usize,
}

/// Every command of Linux 7.3's table (and the selftest's), with its sizes.
pub const OP_SIZES: &[OpSize] = &[
    OpSize {
        nr: IOMMUFD_CMD_DESTROY,
        size: 8,
        min_size: 8,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_ALLOC,
        size: 12,
        min_size: 12,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_ALLOW_IOVAS,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_COPY,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_IOVA_RANGES,
        size: 32,
        min_size: 32,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_MAP,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_UNMAP,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_OPTION,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_VFIO_IOAS,
        size: 12,
        min_size: 12,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_ALLOC,
        size: 48,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_GET_HW_INFO,
        size: 40,
        min_size: 32,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING,
        size: 16,
        min_size: 16,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP,
        size: 48,
        min_size: 48,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_INVALIDATE,
        size: 32,
        min_size: 32,
    },
    OpSize {
        nr: IOMMUFD_CMD_FAULT_QUEUE_ALLOC,
        size: 16,
        min_size: 16,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_MAP_FILE,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_VIOMMU_ALLOC,
        size: 40,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_VDEVICE_ALLOC,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_CHANGE_PROCESS,
        size: 8,
        min_size: 8,
    },
    OpSize {
        nr: IOMMUFD_CMD_VEVENTQ_ALLOC,
        size: 32,
        min_size: 28,
    },
    OpSize {
        nr: IOMMUFD_CMD_HW_QUEUE_ALLOC,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_TEST,
        size: 72,
        min_size: 68,
    },
];

/// The size rules of command `nr`, if it is one.
pub fn op_size(nr: u32) -> Option<OpSize> {
    OP_SIZES.iter().copied().find(|o| o.nr == nr)
}

uapi_struct!(
    /// `struct iommu_viommu_alloc` (40 bytes).
    IommuViommuAlloc {
        size: u32, flags: u32, r#type: u32, dev_id: u32, hwpt_id: u32, out_viommu_id: u32,
        data_len: u32, __reserved: u32, data_uptr: u64,
    }
);
uapi_struct!(
    /// `struct iommu_vdevice_alloc` (24 bytes).
    IommuVdeviceAlloc { size: u32, viommu_id: u32, dev_id: u32, out_vdevice_id: u32, virt_id: u64 }
);

const _: () = {
    assert!(size_of::<IommuViommuAlloc>() == 40);
    assert!(offset_of!(IommuViommuAlloc, data_uptr) == 32);
    assert!(size_of::<IommuVdeviceAlloc>() == 24);
    assert!(offset_of!(IommuVdeviceAlloc, virt_id) == 16);
};

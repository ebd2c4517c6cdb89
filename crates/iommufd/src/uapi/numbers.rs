//! The rest of the `IOMMUFD_CMD_*` numbers, their full request numbers, the command flags
//! and options, and the VFIO type1 compatibility numbers (`include/uapi/linux/vfio.h`).

use super::IOMMUFD_TYPE;

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

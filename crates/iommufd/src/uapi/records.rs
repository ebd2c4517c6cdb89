//! The command records the dispatch decodes, each with its size and offset assertions.

use core::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

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

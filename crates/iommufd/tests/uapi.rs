//! uAPI layouts (SPEC §5.8, H24) and the extensible-struct rules of the ioctl entry points
//! (SPEC §5.1: EINVAL below the minimum size, E2BIG for non-zero bytes beyond the struct).

use core::mem::{offset_of, size_of};

use iommufd::uapi::*;
use iommufd::Ictx;
use zerocopy::{FromBytes, IntoBytes};

#[test]
fn record_sizes_and_offsets_match_linux() {
    assert_eq!(size_of::<IommuHwptPgfault>(), 40);
    assert_eq!(offset_of!(IommuHwptPgfault, __reserved), 20);
    assert_eq!(offset_of!(IommuHwptPgfault, addr), 24);
    assert_eq!(offset_of!(IommuHwptPgfault, cookie), 36);
    assert_eq!(size_of::<IommuHwptPageResponse>(), 8);
    assert_eq!(size_of::<IommuFaultAlloc>(), 16);
    assert_eq!(size_of::<IommuHwptAlloc>(), 48);
    assert_eq!(offset_of!(IommuHwptAlloc, data_uptr), 32);
    assert_eq!(offset_of!(IommuHwptAlloc, fault_id), 40);
}

#[test]
fn pgfault_bytes_are_little_endian_fields_at_their_offsets() {
    let rec = IommuHwptPgfault {
        flags: 3,
        dev_id: 0x11,
        pasid: 0x22,
        grpid: 0x33,
        perm: 0x44,
        __reserved: 0,
        addr: 0x0102_0304_0506_0708,
        length: 0,
        cookie: 0x55,
    };
    let b = rec.as_bytes();
    assert_eq!(b[0..4], 3u32.to_le_bytes());
    assert_eq!(b[24..32], 0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(b[36..40], 0x55u32.to_le_bytes());
    assert_eq!(IommuHwptPgfault::read_from_bytes(b).unwrap(), rec);
    assert_eq!(IommuHwptPgfault::default().as_bytes(), &[0u8; 40][..]);
}

#[test]
fn constants_match_linux() {
    assert_eq!(IOMMU_FAULT_QUEUE_ALLOC, 0x3b8e);
    assert_eq!(IOMMU_HWPT_ALLOC, 0x3b89);
    assert_eq!(
        [
            IOMMU_HWPT_ALLOC_NEST_PARENT,
            IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
            IOMMU_HWPT_FAULT_ID_VALID,
            IOMMU_HWPT_ALLOC_PASID
        ],
        [1, 2, 4, 8]
    );
    assert_eq!(
        (
            IOMMU_PGFAULT_FLAGS_PASID_VALID,
            IOMMU_PGFAULT_FLAGS_LAST_PAGE
        ),
        (1, 2)
    );
    assert_eq!(
        [
            IOMMU_PGFAULT_PERM_READ,
            IOMMU_PGFAULT_PERM_WRITE,
            IOMMU_PGFAULT_PERM_EXEC,
            IOMMU_PGFAULT_PERM_PRIV
        ],
        [1, 2, 4, 8]
    );
    assert_eq!(
        (IOMMUFD_PAGE_RESP_SUCCESS, IOMMUFD_PAGE_RESP_INVALID),
        (0, 1)
    );
    // The uAPI flag bits equal the core's, so records carry the raw request flags.
    assert_eq!(
        IOMMU_PGFAULT_FLAGS_LAST_PAGE,
        iommu_core::IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
    );
    assert_eq!(
        IOMMU_PGFAULT_FLAGS_PASID_VALID,
        iommu_core::IOMMU_FAULT_PAGE_REQUEST_PASID_VALID
    );
}

#[test]
fn copy_struct_from_user_sizes() {
    let mut user = vec![0u8; 64];
    user[4] = 7; // flags
    let c: IommuHwptAlloc = copy_struct_from_user(&user, 24).unwrap();
    assert_eq!(c.flags, 7);
    assert_eq!(
        copy_struct_from_user::<IommuHwptAlloc>(&user[..23], 24)
            .unwrap_err()
            .errno_name(),
        "EINVAL"
    );
    user[50] = 1;
    assert_eq!(
        copy_struct_from_user::<IommuHwptAlloc>(&user, 24)
            .unwrap_err()
            .errno_name(),
        "E2BIG"
    );
    // A 24-byte (pre-fault-queue) struct reads fault_id as 0.
    let old = vec![0u8; 24];
    let c: IommuHwptAlloc = copy_struct_from_user(&old, 24).unwrap();
    assert_eq!(c.fault_id, 0);
}

#[test]
fn ioctl_fault_queue_alloc_and_hwpt_alloc_write_outputs_back() {
    let mock = iommu_core::mock::MockDriver::new("m");
    let group = iommu_core::Group::new(mock as std::sync::Arc<dyn iommu_core::IommuDriver>, "g");
    let dev = group.add_device("d", 16).unwrap();
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(dev).unwrap();
    let ioas = ictx.ioas_alloc().unwrap();

    let mut fa = IommuFaultAlloc {
        size: 16,
        flags: 1,
        ..Default::default()
    };
    let err = ictx.ioctl_fault_queue_alloc(fa.as_mut_bytes()).unwrap_err();
    assert_eq!(err.errno_name(), "EOPNOTSUPP");
    fa.flags = 0;
    let fd = ictx.ioctl_fault_queue_alloc(fa.as_mut_bytes()).unwrap();
    assert_eq!(fa.out_fault_id, 3);
    assert_eq!(
        fa.out_fault_fd,
        std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&fd)) as u32
    );

    let mut ha = IommuHwptAlloc {
        size: 48,
        dev_id,
        pt_id: ioas,
        flags: IOMMU_HWPT_FAULT_ID_VALID,
        fault_id: fa.out_fault_id,
        ..Default::default()
    };
    let id = ictx.ioctl_hwpt_alloc(ha.as_mut_bytes(), &[]).unwrap();
    assert_eq!(ha.out_hwpt_id, id);
    ha.__reserved = 1;
    let err = ictx.ioctl_hwpt_alloc(ha.as_mut_bytes(), &[]).unwrap_err();
    assert_eq!(err.errno_name(), "EOPNOTSUPP");
    ha.__reserved = 0;
    ha.data_len = 4;
    let err = ictx.ioctl_hwpt_alloc(ha.as_mut_bytes(), &[]).unwrap_err();
    assert_eq!(err.errno_name(), "EINVAL");
    // Old 24-byte user space: no fault_id field, FAULT_ID_VALID then names fault 0 (ENOENT).
    ha.data_len = 0;
    let err = ictx
        .ioctl_hwpt_alloc(&mut ha.as_mut_bytes()[..24], &[])
        .unwrap_err();
    assert_eq!(err.errno_name(), "ENOENT");
    ha.flags = 0;
    let id2 = ictx
        .ioctl_hwpt_alloc(&mut ha.as_mut_bytes()[..24], &[])
        .unwrap();
    assert_eq!(ha.out_hwpt_id, id2);
}

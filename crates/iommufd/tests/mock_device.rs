//! The selftest mock device and automatic paging HWPTs (attaching to an IOAS), through the
//! Rust API: what Linux 7.3's `iommufd_mock_domain.{basic,replace,alloc_hwpt}` rely on.

mod common;

use std::sync::Arc;

use common::{Fx, RID};
use iommu_core::IOMMU_READ;
use iommufd::selftest::*;
use iommufd::user_memory::SimMemory;
use iommufd::{Ictx, ObjectType};

const BUF: u64 = 0x40_0000;
const PAGE: u64 = 4096;

fn e<T: std::fmt::Debug>(r: iommu_core::Result<T>) -> &'static str {
    r.unwrap_err().errno_name()
}

#[test]
fn attaching_to_an_ioas_uses_a_shared_automatic_hwpt_that_dies_with_its_last_attachment() {
    let fx = Fx::new(2);
    let (d0, d1) = (fx.dev_ids[0], fx.dev_ids[1]);
    fx.ictx.device_attach(d0, RID, fx.ioas).unwrap();
    let auto = fx.ictx.attached_hwpt(d0, RID).unwrap().unwrap();
    assert_eq!(fx.ictx.object_type(auto).unwrap(), ObjectType::HwptPaging);
    // A second device of the same IOMMU shares it.
    fx.ictx.device_attach(d1, RID, fx.ioas).unwrap();
    assert_eq!(fx.ictx.attached_hwpt(d1, RID).unwrap(), Some(auto));
    // Attached: neither it nor its IOAS can be destroyed.
    assert_eq!(e(fx.ictx.destroy(auto)), "EBUSY");
    assert_eq!(e(fx.ictx.destroy(fx.ioas)), "EBUSY");
    // Replacing onto the IOAS it is already on is a no-op.
    fx.ictx.device_replace(d0, RID, fx.ioas).unwrap();
    assert_eq!(fx.ictx.attached_hwpt(d0, RID).unwrap(), Some(auto));
    fx.ictx.device_detach(d0, RID).unwrap();
    assert!(fx.ictx.object_type(auto).is_ok(), "still used by d1");
    // Moving the last user to another IOAS destroys it.
    let other = fx.ictx.ioas_alloc().unwrap();
    fx.ictx.device_replace(d1, RID, other).unwrap();
    assert_eq!(e(fx.ictx.object_type(auto)), "ENOENT");
    assert_ne!(fx.ictx.attached_hwpt(d1, RID).unwrap(), Some(auto));
    fx.ictx.destroy(fx.ioas).unwrap();
    // An attach that fails leaves no automatic HWPT behind.
    let before = fx.ictx.attached_hwpt(d1, RID).unwrap();
    assert_eq!(e(fx.ictx.device_attach(d1, RID, other)), "EBUSY");
    assert_eq!(fx.ictx.attached_hwpt(d1, RID).unwrap(), before);
}

#[test]
fn mock_domain_creates_binds_and_attaches_and_destroy_takes_it_all_down() {
    let mem = Arc::new(SimMemory::new());
    mem.map(BUF, 4 * PAGE, true).unwrap();
    let ictx = Ictx::with_user_memory(mem.clone());
    let ioas = ictx.ioas_alloc().unwrap();
    assert_eq!(e(ictx.mock_domain(ioas, 1 << 1)), "EINVAL", "unknown flag");
    assert_eq!(e(ictx.mock_domain(99, 0)), "ENOENT");
    assert!(ictx.object_type(1).is_ok() && ictx.object_type(2).is_err());

    let a = ictx.mock_domain(ioas, 0).unwrap();
    // Linux's order: selftest object, device object, automatic HWPT.
    assert_eq!((a.stdev_id, a.idev_id, a.hwpt_id), (2, 3, 4));
    assert_eq!(ictx.object_type(a.stdev_id).unwrap(), ObjectType::Selftest);
    assert_eq!(ictx.object_type(a.idev_id).unwrap(), ObjectType::Device);
    assert!(!ictx.mock_device(a.stdev_id).unwrap().supports_pasid());
    let b = ictx.mock_domain(ioas, MOCK_FLAGS_DEVICE_PASID).unwrap();
    assert_eq!(b.hwpt_id, a.hwpt_id, "the automatic HWPT is shared");
    assert!(ictx.mock_device(b.stdev_id).unwrap().supports_pasid());

    // MD_CHECK_MAP: the IOVA translates to the user VA, granule by granule.
    let iova = ictx
        .ioas_map_user(ioas, None, BUF, 2 * PAGE, IOMMU_READ)
        .unwrap();
    ictx.md_check_map(a.hwpt_id, iova, 2 * PAGE, BUF).unwrap();
    ictx.md_check_map(
        a.hwpt_id,
        iova + MOCK_PAGE_SIZE,
        MOCK_PAGE_SIZE,
        BUF + MOCK_PAGE_SIZE,
    )
    .unwrap();
    let check = |i, l, u| e(ictx.md_check_map(a.hwpt_id, i, l, u));
    assert_eq!(check(iova, 2 * PAGE, BUF + PAGE), "EINVAL", "wrong page");
    assert_eq!(check(iova + 1, PAGE, BUF), "EINVAL", "misaligned");
    assert_eq!(
        check(iova + 2 * PAGE, PAGE, BUF),
        "EINVAL",
        "IOVA not mapped"
    );
    assert_eq!(check(iova, PAGE, BUF + 4 * PAGE), "EFAULT", "no user page");
    assert_eq!(e(ictx.md_check_map(a.stdev_id, iova, PAGE, BUF)), "ENOENT");

    // DEV_CHECK_CACHE: every entry starts at the default.
    for c in 0..MOCK_DEV_CACHE_NUM as u32 {
        ictx.dev_check_cache(a.idev_id, c, IOMMU_TEST_DEV_CACHE_DEFAULT)
            .unwrap();
    }
    assert_eq!(e(ictx.dev_check_cache(a.idev_id, 0, 0)), "EINVAL");
    assert_eq!(
        e(ictx.dev_check_cache(a.idev_id, 4, IOMMU_TEST_DEV_CACHE_DEFAULT)),
        "EINVAL"
    );
    assert_eq!(e(ictx.dev_check_cache(a.stdev_id, 0, 0)), "ENOENT");

    // Replace onto a new IOAS, then back onto a HWPT.
    let ioas2 = ictx.ioas_alloc().unwrap();
    let h2 = ictx.mock_domain_replace(a.stdev_id, ioas2).unwrap();
    assert_ne!(h2, a.hwpt_id);
    assert_eq!(
        ictx.mock_domain_replace(a.stdev_id, a.hwpt_id).unwrap(),
        a.hwpt_id
    );
    assert_eq!(
        e(ictx.object_type(h2)),
        "ENOENT",
        "auto HWPT went with its last user"
    );
    assert_eq!(e(ictx.mock_domain_replace(a.idev_id, ioas)), "ENOENT");

    // The device object cannot be destroyed; its selftest object can, taking it along.
    assert_eq!(e(ictx.destroy(a.idev_id)), "EBUSY");
    ictx.destroy(a.stdev_id).unwrap();
    assert_eq!(e(ictx.object_type(a.idev_id)), "ENOENT");
    assert!(ictx.object_type(a.hwpt_id).is_ok(), "b still uses it");
    ictx.destroy(b.stdev_id).unwrap();
    assert_eq!(e(ictx.object_type(a.hwpt_id)), "ENOENT");
    // Nothing is left pinned once the IOAS has no HWPT.
    assert_eq!(
        iommufd::user_memory::UserMemory::pin_count(&*mem, BUF).unwrap(),
        0
    );
}

#[test]
fn selftest_nested_hwpts_carry_an_iotlb_that_invalidation_clears() {
    use iommufd::uapi::{IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_SELFTEST};
    let ictx = Ictx::new();
    let ioas = ictx.ioas_alloc().unwrap();
    let m = ictx.mock_domain(ioas, 0).unwrap();
    let dev = m.idev_id;
    let parent = ictx
        .hwpt_alloc(dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT, 0, 0, &[])
        .unwrap();
    let data = IOMMU_TEST_IOTLB_DEFAULT.to_ne_bytes();
    let nested = |ty, d: &[u8]| ictx.hwpt_alloc(dev, parent, 0, 0, ty, d);
    assert_eq!(e(nested(IOMMU_HWPT_DATA_SELFTEST + 1, &data)), "EOPNOTSUPP");
    assert_eq!(e(nested(IOMMU_HWPT_DATA_SELFTEST, &data[..3])), "EINVAL");
    assert_eq!(e(nested(IOMMU_HWPT_DATA_SELFTEST, &[0; 9])), "EINVAL");
    let h = nested(IOMMU_HWPT_DATA_SELFTEST, &data).unwrap();
    for i in 0..MOCK_NESTED_DOMAIN_IOTLB_NUM as u32 {
        ictx.md_check_iotlb(h, i, IOMMU_TEST_IOTLB_DEFAULT).unwrap();
    }
    assert_eq!(
        e(ictx.md_check_iotlb(h, 4, IOMMU_TEST_IOTLB_DEFAULT)),
        "EINVAL"
    );
    assert_eq!(e(ictx.md_check_iotlb(parent, 0, 0)), "ENOENT");

    // Records: (flags, iotlb_id) pairs.
    let recs = |r: &[(u32, u32)]| -> Vec<u8> {
        r.iter()
            .flat_map(|&(f, i)| f.to_ne_bytes().into_iter().chain(i.to_ne_bytes()))
            .collect()
    };
    let inv = |hwpt, ty, len, bytes: &[u8]| {
        let n = (bytes.len() / 8) as u32;
        let (done, r) = ictx.hwpt_invalidate(hwpt, ty, len, n, &mut |i, buf| {
            buf.copy_from_slice(&bytes[i as usize * 8..][..8]);
            Ok(())
        });
        (done, r.map(|_| "ok").unwrap_or_else(|e| e.errno_name()))
    };
    let sel = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
    assert_eq!(
        inv(parent, sel, 8, &recs(&[(0, 0)])),
        (0, "EINVAL"),
        "not nested"
    );
    assert_eq!(
        inv(h, sel + 1, 8, &recs(&[(0, 0)])),
        (0, "EINVAL"),
        "data type"
    );
    assert_eq!(inv(h, sel, 9, &recs(&[(0, 0)])), (0, "EINVAL"), "entry_len");
    assert_eq!(
        inv(h, sel, 4097, &recs(&[(0, 0)])),
        (0, "EINVAL"),
        "entry_len bound"
    );
    assert_eq!(inv(99, sel, 8, &recs(&[(0, 0)])), (0, "ENOENT"));
    // The first record applies, the second stops it.
    assert_eq!(inv(h, sel, 8, &recs(&[(0, 0), (2, 1)])), (1, "EOPNOTSUPP"));
    assert_eq!(inv(h, sel, 8, &recs(&[(0, 1), (0, 4)])), (1, "EINVAL"));
    ictx.md_check_iotlb(h, 0, 0).unwrap();
    ictx.md_check_iotlb(h, 1, 0).unwrap();
    ictx.md_check_iotlb(h, 2, IOMMU_TEST_IOTLB_DEFAULT).unwrap();
    assert_eq!(
        inv(h, sel, 8, &recs(&[(IOMMU_TEST_INVALIDATE_FLAG_ALL, 77)])),
        (1, "ok")
    );
    ictx.md_check_iotlb(h, 3, 0).unwrap();
}

#[test]
fn viommu_nested_hwpts_need_a_vdevice_and_fault_through_the_rid() {
    use iommufd::uapi::{
        IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_SELFTEST, IOMMU_HWPT_FAULT_ID_VALID,
    };
    use iommufd::IOMMU_VIOMMU_TYPE_SELFTEST as SELFTEST;
    let ictx = Ictx::new();
    let ioas = ictx.ioas_alloc().unwrap();
    let m = ictx.mock_domain(ioas, 0).unwrap();
    let dev = m.idev_id;
    let parent = ictx
        .hwpt_alloc(dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT, 0, 0, &[])
        .unwrap();
    let plain = ictx.hwpt_alloc(dev, ioas, 0, 0, 0, &[]).unwrap();
    assert_eq!(e(ictx.viommu_alloc(dev, parent, 0, &[])), "EOPNOTSUPP");
    assert_eq!(
        e(ictx.viommu_alloc(dev, parent, SELFTEST + 1, &[])),
        "EOPNOTSUPP"
    );
    assert_eq!(e(ictx.viommu_alloc(99, parent, SELFTEST, &[])), "ENOENT");
    assert_eq!(e(ictx.viommu_alloc(dev, ioas, SELFTEST, &[])), "ENOENT");
    assert_eq!(e(ictx.viommu_alloc(dev, plain, SELFTEST, &[])), "EINVAL");
    let viommu = ictx.viommu_alloc(dev, parent, SELFTEST, &[]).unwrap();
    assert_eq!(ictx.object_type(viommu).unwrap(), ObjectType::Viommu);
    assert_eq!(
        e(ictx.destroy(parent)),
        "EBUSY",
        "the vIOMMU holds its parent"
    );

    let (fault_id, fd) = ictx.fault_queue_alloc(0).unwrap();
    let data = IOMMU_TEST_IOTLB_DEFAULT.to_ne_bytes();
    let iopf = ictx
        .hwpt_alloc(
            dev,
            viommu,
            IOMMU_HWPT_FAULT_ID_VALID,
            fault_id,
            IOMMU_HWPT_DATA_SELFTEST,
            &data,
        )
        .unwrap();
    assert_eq!(e(ictx.destroy(viommu)), "EBUSY", "a nested HWPT is on it");
    assert_eq!(
        e(ictx.mock_domain_replace(m.stdev_id, iopf)),
        "ENOENT",
        "no vDEVICE yet"
    );
    assert_eq!(e(ictx.vdevice_alloc(parent, dev, 0x99)), "ENOENT");
    let vdev = ictx.vdevice_alloc(viommu, dev, 0x99).unwrap();
    assert_eq!(e(ictx.vdevice_alloc(viommu, dev, 0x98)), "EEXIST");
    ictx.mock_domain_replace(m.stdev_id, iopf).unwrap();

    // A fault on PASID 1 of a device without PASIDs reaches the nested domain on its RID.
    ictx.trigger_iopf(dev, 1, 2, 3, 0xdeadbeaf).unwrap();
    let mut buf = vec![0u8; iommufd::FAULT_RECORD_SIZE];
    assert_eq!(fd.read(&mut buf).unwrap(), iommufd::FAULT_RECORD_SIZE);
    assert_eq!(e(ictx.trigger_iopf(m.stdev_id, 1, 2, 3, 0)), "ENOENT");

    ictx.mock_domain_replace(m.stdev_id, ioas).unwrap();
    ictx.destroy(iopf).unwrap();
    ictx.destroy(vdev).unwrap();
    ictx.destroy(viommu).unwrap();
    ictx.destroy(parent).unwrap();
}

#[test]
fn pasid_ops_of_the_mock_device_follow_the_pasid_compat_rules() {
    use iommufd::uapi::IOMMU_HWPT_ALLOC_PASID;
    let ictx = Ictx::new();
    let ioas = ictx.ioas_alloc().unwrap();
    let m = ictx.mock_domain(ioas, MOCK_FLAGS_DEVICE_PASID).unwrap();
    let plain = ictx.mock_domain(ioas, 0).unwrap();
    let s2 = ictx
        .hwpt_alloc(m.idev_id, ioas, IOMMU_HWPT_ALLOC_PASID, 0, 0, &[])
        .unwrap();
    let s2b = ictx
        .hwpt_alloc(m.idev_id, ioas, IOMMU_HWPT_ALLOC_PASID, 0, 0, &[])
        .unwrap();
    // Detaching what is not attached is not an error.
    ictx.mock_pasid_detach(m.stdev_id, 100).unwrap();
    // The RID is on the (non PASID compatible) automatic HWPT.
    assert_eq!(e(ictx.mock_pasid_attach(m.stdev_id, 100, s2)), "EINVAL");
    ictx.mock_domain_replace(m.stdev_id, s2).unwrap();
    assert_eq!(ictx.mock_pasid_attach(m.stdev_id, 100, s2).unwrap(), s2);
    ictx.mock_pasid_check_hwpt(m.stdev_id, 100, s2).unwrap();
    assert_eq!(e(ictx.mock_pasid_check_hwpt(m.stdev_id, 100, 0)), "EINVAL");
    assert_eq!(
        e(ictx.mock_pasid_attach(m.stdev_id, 100, s2b)),
        "EBUSY",
        "EBUSY before EINVAL"
    );
    assert_eq!(
        e(ictx.mock_pasid_attach(m.stdev_id, 101, ioas)),
        "EINVAL",
        "auto HWPT: no PASID"
    );
    assert_eq!(
        e(ictx.mock_pasid_attach(plain.stdev_id, 100, s2)),
        "EINVAL",
        "no PASID bits"
    );
    assert_eq!(ictx.mock_pasid_replace(m.stdev_id, 100, s2b).unwrap(), s2b);
    ictx.mock_pasid_detach(m.stdev_id, 100).unwrap();
    ictx.mock_pasid_check_hwpt(m.stdev_id, 100, 0).unwrap();
    // PASID 1024: the mock fails the second set_dev_pasid on purpose; the replace changes
    // nothing.
    ictx.mock_pasid_attach(m.stdev_id, 1024, s2).unwrap();
    assert_eq!(e(ictx.mock_pasid_replace(m.stdev_id, 1024, s2b)), "ENOMEM");
    ictx.mock_pasid_check_hwpt(m.stdev_id, 1024, s2).unwrap();
    ictx.mock_pasid_detach(m.stdev_id, 1024).unwrap();
    assert_eq!(e(ictx.mock_pasid_detach(m.idev_id, 1)), "ENOENT");
}

#[test]
fn hw_info_reports_the_mock_registers_and_pasid_width() {
    use iommufd::uapi::{IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_SELFTEST};
    let ictx = Ictx::new();
    let ioas = ictx.ioas_alloc().unwrap();
    let plain = ictx.mock_domain(ioas, 0).unwrap();
    let pasid = ictx.mock_domain(ioas, MOCK_FLAGS_DEVICE_PASID).unwrap();
    let info = ictx
        .hw_info(plain.idev_id, IOMMU_HW_INFO_TYPE_DEFAULT)
        .unwrap();
    assert_eq!(info.data_type, IOMMU_HW_INFO_TYPE_SELFTEST);
    let mut want = vec![0u8; 4];
    want.extend(IOMMU_HW_INFO_SELFTEST_REGVAL.to_ne_bytes());
    assert_eq!(info.data, want, "flags 0, test_reg");
    assert_eq!(info.max_pasid_log2, 0);
    let info = ictx
        .hw_info(pasid.idev_id, IOMMU_HW_INFO_TYPE_SELFTEST)
        .unwrap();
    assert_eq!(info.max_pasid_log2, MOCK_PASID_WIDTH as u8);
    assert_eq!(
        e(ictx.hw_info(plain.idev_id, IOMMU_HW_INFO_TYPE_SELFTEST + 1)),
        "EOPNOTSUPP"
    );
    assert_eq!(e(ictx.hw_info(plain.stdev_id, 0)), "ENOENT");
}

#[test]
fn a_mock_device_unbound_through_the_rust_api_still_destroys_cleanly() {
    let ictx = Ictx::new();
    let ioas = ictx.ioas_alloc().unwrap();
    let m = ictx.mock_domain(ioas, 0).unwrap();
    ictx.unbind_device(m.idev_id).unwrap();
    assert_eq!(
        e(ictx.object_type(m.hwpt_id)),
        "ENOENT",
        "its auto HWPT went too"
    );
    ictx.destroy(m.stdev_id).unwrap();
    ictx.destroy(ioas).unwrap();
    assert!(ictx.is_empty());
}

#[test]
fn ioas_map_file_needs_memory_with_files_and_changes_nothing_without() {
    let mem = Arc::new(SimMemory::new());
    let ictx = Ictx::with_user_memory(mem);
    let ioas = ictx.ioas_alloc().unwrap();
    assert_eq!(
        e(ictx.ioas_map_file(ioas, None, 3, 0, PAGE, IOMMU_READ)),
        "EOPNOTSUPP"
    );
    assert_eq!(
        e(ictx.ioas_map_file(99, None, 3, 0, PAGE, IOMMU_READ)),
        "ENOENT"
    );
    assert_eq!(
        e(ictx.ioas_map_file(ioas, None, 3, 0, 0, IOMMU_READ)),
        "EINVAL"
    );
    assert_eq!(
        e(ictx.ioas_unmap(ioas, 0, PAGE)),
        "ENOENT",
        "nothing was mapped"
    );
}

//! The object table, IOAS, device binding, HWPT allocation and attach rules: every error path
//! with its errno (SPEC §5.1-§5.3), and that a rejected call changes nothing.

mod common;

use common::{Fx, RID};
use iommu_core::mock::Op;
use iommu_core::{group_dma_owned_by, DomainKind, IOMMU_READ, IOMMU_WRITE};
use iommufd::uapi::*;
use iommufd::{Ictx, ObjectType, IOAS_APERTURE_END};

const RW: u32 = IOMMU_READ | IOMMU_WRITE;

fn domain_allocs(fx: &Fx) -> usize {
    fx.mock
        .calls()
        .iter()
        .filter(|c| c.op() == Op::DomainAlloc)
        .count()
}

#[test]
fn ids_start_at_one_and_the_lowest_free_is_reused() {
    let ictx = Ictx::new();
    let a = ictx.ioas_alloc().unwrap();
    let b = ictx.ioas_alloc().unwrap();
    let c = ictx.ioas_alloc().unwrap();
    assert_eq!((a, b, c), (1, 2, 3));
    ictx.destroy(b).unwrap();
    ictx.destroy(a).unwrap();
    assert_eq!(ictx.ioas_alloc().unwrap(), 1);
    assert_eq!(ictx.ioas_alloc().unwrap(), 2);
    assert_eq!(ictx.ioas_alloc().unwrap(), 4);
}

#[test]
fn ids_freed_at_the_top_fold_back_and_many_objects_keep_the_lowest_free_rule() {
    let ictx = Ictx::new();
    const N: u32 = 20_000;
    for want in 1..=N {
        assert_eq!(ictx.ioas_alloc().unwrap(), want);
    }
    // Free the top two and one in the middle: the middle one comes back first, then the top
    // ones in order (no gap left behind by the freed top).
    ictx.destroy(N).unwrap();
    ictx.destroy(N - 1).unwrap();
    ictx.destroy(7).unwrap();
    assert_eq!(ictx.ioas_alloc().unwrap(), 7);
    assert_eq!(ictx.ioas_alloc().unwrap(), N - 1);
    assert_eq!(ictx.ioas_alloc().unwrap(), N);
    // Everything destroyed: numbering starts again at 1.
    for id in (1..=N).rev() {
        ictx.destroy(id).unwrap();
    }
    assert_eq!(ictx.object_type(1).unwrap_err().errno_name(), "ENOENT");
    assert_eq!(ictx.ioas_alloc().unwrap(), 1);
}

#[test]
fn destroy_errors_enoent_unknown_and_ebusy_while_referenced() {
    let fx = Fx::new(1);
    let (fault_id, fd, hwpt) = fx.fault_hwpt(0, 0);
    assert_eq!(fx.ictx.destroy(999).unwrap_err().errno_name(), "ENOENT");
    assert_eq!(fx.ictx.destroy(0).unwrap_err().errno_name(), "ENOENT");
    assert_eq!(
        fx.ictx.destroy(fx.dev_ids[0]).unwrap_err().errno_name(),
        "EBUSY"
    );
    assert_eq!(fx.ictx.destroy(fx.ioas).unwrap_err().errno_name(), "EBUSY");
    assert_eq!(fx.ictx.destroy(fault_id).unwrap_err().errno_name(), "EBUSY");
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    assert_eq!(fx.ictx.destroy(hwpt).unwrap_err().errno_name(), "EBUSY");
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    fx.ictx.destroy(hwpt).unwrap();
    assert_eq!(
        fx.ictx.destroy(fault_id).unwrap_err().errno_name(),
        "EBUSY",
        "fd open"
    );
    drop(fd);
    fx.ictx.destroy(fault_id).unwrap();
    fx.ictx.destroy(fx.ioas).unwrap();
    assert_eq!(
        fx.ictx.object_type(fx.ioas).unwrap_err().errno_name(),
        "ENOENT"
    );
}

#[test]
fn nest_parent_cannot_be_destroyed_while_a_nested_child_exists() {
    let fx = Fx::new(1);
    let d = fx.dev_ids[0];
    let parent = fx.plain_hwpt(0, IOMMU_HWPT_ALLOC_NEST_PARENT);
    let nested = fx
        .ictx
        .hwpt_alloc(d, parent, 0, 0, IOMMU_HWPT_DATA_SELFTEST, &[1])
        .unwrap();
    assert_eq!(fx.ictx.object_type(nested).unwrap(), ObjectType::HwptNested);
    assert_eq!(fx.ictx.object_type(parent).unwrap(), ObjectType::HwptPaging);
    assert_eq!(
        fx.ictx.hwpt_domain(nested).unwrap().kind(),
        DomainKind::Nested
    );
    assert_eq!(fx.ictx.destroy(parent).unwrap_err().errno_name(), "EBUSY");
    fx.ictx.destroy(nested).unwrap();
    fx.ictx.destroy(parent).unwrap();
}

#[test]
fn hwpt_alloc_errors_in_linux_order_with_no_side_effects() {
    let fx = Fx::new(1);
    let d = fx.dev_ids[0];
    let (fault_id, _fd) = fx.ictx.fault_queue_alloc(0).unwrap();
    let parent = fx.plain_hwpt(0, IOMMU_HWPT_ALLOC_NEST_PARENT);
    let not_parent = fx.plain_hwpt(0, 0);
    let allocs = domain_allocs(&fx);
    let fv = IOMMU_HWPT_FAULT_ID_VALID;
    let st = IOMMU_HWPT_DATA_SELFTEST;
    let (io, n) = (fx.ioas, IOMMU_HWPT_DATA_NONE);
    let np = IOMMU_HWPT_ALLOC_NEST_PARENT;
    // (what, dev_id, pt_id, flags, fault_id, data_type, data, errno)
    type Case<'a> = (&'a str, u32, u32, u32, u32, u32, &'a [u8], &'a str);
    let cases: &[Case] = &[
        ("unknown flag", d, io, 1 << 9, 0, n, &[], "EOPNOTSUPP"),
        ("NONE with data", d, io, 0, 0, n, &[1], "EINVAL"),
        ("type without data", d, parent, 0, 0, st, &[], "EINVAL"),
        ("unknown dev_id", 77, io, 0, 0, n, &[], "ENOENT"),
        ("dev_id not a device", io, io, 0, 0, n, &[], "ENOENT"),
        ("unknown pt_id", d, 77, 0, 0, n, &[], "EINVAL"),
        ("pt_id a fault object", d, fault_id, 0, 0, n, &[], "EINVAL"),
        ("pt_id a device", d, d, 0, 0, n, &[], "EINVAL"),
        (
            "NEST_PARENT|FAULT_ID_VALID",
            d,
            io,
            np | fv,
            fault_id,
            n,
            &[],
            "EOPNOTSUPP",
        ),
        (
            "dirty tracking",
            d,
            io,
            IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
            0,
            n,
            &[],
            "EOPNOTSUPP",
        ),
        (
            "paging with driver data",
            d,
            io,
            0,
            0,
            st,
            &[1],
            "EOPNOTSUPP",
        ),
        (
            "nested with NEST_PARENT",
            d,
            parent,
            np,
            0,
            st,
            &[1],
            "EOPNOTSUPP",
        ),
        (
            "nested on a non-parent",
            d,
            not_parent,
            0,
            0,
            st,
            &[1],
            "EINVAL",
        ),
        ("fault_id u32::MAX", d, io, fv, u32::MAX, n, &[], "ENOENT"),
        ("fault_id not a fault", d, io, fv, io, n, &[], "ENOENT"),
        (
            "nested fault_id unknown",
            d,
            parent,
            fv,
            999,
            st,
            &[1],
            "ENOENT",
        ),
    ];
    for &(what, dev, pt, flags, fault, data_type, data, errno) in cases {
        let r = fx.ictx.hwpt_alloc(dev, pt, flags, fault, data_type, data);
        assert_eq!(r.unwrap_err().errno_name(), errno, "{what}");
    }
    assert_eq!(
        domain_allocs(&fx),
        allocs,
        "no rejected alloc reached the driver"
    );
    let nested = fx.ictx.hwpt_alloc(d, parent, 0, 0, st, &[1]);
    let nested = nested.unwrap();
    let r = fx.ictx.hwpt_alloc(d, nested, 0, 0, st, &[1]);
    assert_eq!(
        r.unwrap_err().errno_name(),
        "EINVAL",
        "nested parent must be paging"
    );
    // Faulting paging HWPTs are fine [6.13].
    let paging_fault = fx
        .ictx
        .hwpt_alloc(d, fx.ioas, fv, fault_id, 0, &[])
        .unwrap();
    assert!(fx
        .ictx
        .hwpt_domain(paging_fault)
        .unwrap()
        .is_fault_capable());
    assert!(!fx.ictx.hwpt_domain(not_parent).unwrap().is_fault_capable());
}

#[test]
fn fault_queue_alloc_rejects_flags() {
    let ictx = Ictx::new();
    assert_eq!(
        ictx.fault_queue_alloc(1).unwrap_err().errno_name(),
        "EOPNOTSUPP"
    );
    let (id, _fd) = ictx.fault_queue_alloc(0).unwrap();
    assert_eq!((id, ictx.object_type(id).unwrap()), (1, ObjectType::Fault));
}

#[test]
fn attach_replace_detach_errors() {
    let fx = Fx::new(2);
    let (d0, d1) = (fx.dev_ids[0], fx.dev_ids[1]);
    let a = fx.plain_hwpt(0, 0);
    let b = fx.plain_hwpt(0, 0);
    let (fault_id, _fd) = fx.ictx.fault_queue_alloc(0).unwrap();
    let e = |r: Result<(), iommu_core::Error>| r.unwrap_err().errno_name();
    assert_eq!(
        e(fx.ictx.device_replace(d0, RID, a)),
        "EINVAL",
        "replace unattached"
    );
    assert_eq!(
        e(fx.ictx.device_detach(d0, RID)),
        "EINVAL",
        "detach unattached"
    );
    assert_eq!(e(fx.ictx.device_attach(99, RID, a)), "ENOENT");
    assert_eq!(e(fx.ictx.device_attach(d0, RID, 99)), "ENOENT");
    assert_eq!(e(fx.ictx.device_attach(d0, RID, fault_id)), "EINVAL");
    assert_eq!(e(fx.ictx.device_attach(d0, RID, d1)), "EINVAL");
    assert_eq!(
        e(fx.ictx.device_attach(d0, 5, a)),
        "EINVAL",
        "not PASID compatible"
    );
    fx.ictx.device_attach(d0, RID, a).unwrap();
    assert_eq!(e(fx.ictx.device_attach(d0, RID, a)), "EBUSY");
    // Linux checks the device's own entry first: attached already is EBUSY whatever the HWPT.
    assert_eq!(
        e(fx.ictx.device_attach(d0, RID, b)),
        "EBUSY",
        "already on another"
    );
    assert_eq!(
        e(fx.ictx.device_replace(d1, RID, b)),
        "EINVAL",
        "d1 not attached"
    );
    assert_eq!(e(fx.ictx.device_detach(d0, 3)), "EINVAL");
    fx.ictx.device_replace(d0, RID, b).unwrap();
    assert_eq!(fx.ictx.attached_hwpt(d0, RID).unwrap(), Some(b));
    fx.ictx.destroy(a).unwrap();
    fx.ictx.device_detach(d0, RID).unwrap();
    assert_eq!(fx.ictx.attached_hwpt(d0, RID).unwrap(), None);
}

#[test]
fn pasid_attach_needs_pasid_compatible_hwpts_on_the_pasid_and_the_rid() {
    let fx = Fx::new(1);
    let d = fx.dev_ids[0];
    let plain = fx.plain_hwpt(0, 0);
    let pc = fx.plain_hwpt(0, IOMMU_HWPT_ALLOC_PASID);
    let pc2 = fx.plain_hwpt(0, IOMMU_HWPT_ALLOC_PASID);
    fx.ictx.device_attach(d, RID, plain).unwrap();
    let err = fx.ictx.device_attach(d, 3, pc).unwrap_err();
    assert_eq!(
        err.errno_name(),
        "EINVAL",
        "RID HWPT is not PASID compatible"
    );
    fx.ictx.device_replace(d, RID, pc2).unwrap();
    fx.ictx.device_attach(d, 3, pc).unwrap();
    let err = fx.ictx.device_replace(d, RID, plain).unwrap_err();
    assert_eq!(
        err.errno_name(),
        "EINVAL",
        "PASIDs attached: RID must stay compatible"
    );
    assert_eq!(fx.ictx.attached_hwpt(d, 3).unwrap(), Some(pc));
    fx.ictx.device_detach(d, 3).unwrap();
    fx.ictx.device_replace(d, RID, plain).unwrap();
}

#[test]
fn bind_claims_dma_ownership_and_unbind_releases_it() {
    let fx = Fx::new(1);
    let owner = fx.ictx.dma_owner();
    assert!(group_dma_owned_by(&fx.groups[0], owner));
    let err = fx.ictx.bind_device(fx.devs[0].clone()).unwrap_err();
    assert_eq!(err.errno_name(), "EBUSY");
    let other = Ictx::new();
    let err = other.bind_device(fx.devs[0].clone()).unwrap_err();
    assert_eq!(err.errno_name(), "EPERM", "another context owns the group");
    fx.ictx.unbind_device(fx.dev_ids[0]).unwrap();
    assert!(!group_dma_owned_by(&fx.groups[0], owner));
    assert_eq!(
        fx.ictx
            .unbind_device(fx.dev_ids[0])
            .unwrap_err()
            .errno_name(),
        "ENOENT"
    );
    other.bind_device(fx.devs[0].clone()).unwrap();
}

#[test]
fn ioas_mappings_reach_every_paging_hwpt_including_later_ones() {
    let fx = Fx::new(1);
    let early = fx.plain_hwpt(0, 0);
    let iova = fx
        .ictx
        .ioas_map(fx.ioas, Some(0x10000), 0x80_0000, 0x2000, RW)
        .unwrap();
    assert_eq!(iova, 0x10000);
    let late = fx.plain_hwpt(0, 0);
    for h in [early, late] {
        let dom = fx.ictx.hwpt_domain(h).unwrap();
        assert_eq!(dom.iova_to_phys(0x11234), Some(0x80_1234));
    }
    let auto = fx
        .ictx
        .ioas_map(fx.ioas, None, 0x90_0000, 0x1000, IOMMU_READ)
        .unwrap();
    assert_eq!(
        auto, 0x1000,
        "lowest free IOVA; Linux never hands out IOVA 0"
    );
    let auto2 = fx
        .ictx
        .ioas_map(fx.ioas, None, 0x90_0000, 0x10000, IOMMU_READ)
        .unwrap();
    assert_eq!(
        auto2, 0x20000,
        "first gap large enough at the length's alignment (64 KiB, Linux's rule)"
    );
    assert_eq!(
        fx.ictx.ioas_unmap(fx.ioas, 0x10000, 0x2000).unwrap(),
        0x2000
    );
    assert_eq!(
        fx.ictx.hwpt_domain(late).unwrap().iova_to_phys(0x10000),
        None
    );
    let ranges = fx.ictx.ioas_iova_ranges(fx.ioas).unwrap();
    assert_eq!(
        (ranges[0].start, ranges[0].last),
        (0, IOAS_APERTURE_END - 1)
    );
}

#[test]
fn ioas_map_and_unmap_errors_change_nothing() {
    let fx = Fx::new(1);
    let h = fx.plain_hwpt(0, 0);
    fx.ictx
        .ioas_map(fx.ioas, Some(0x4000), 0x1000, 0x2000, RW)
        .unwrap();
    let before = fx.mock.hw();
    let e = |r: Result<u64, iommu_core::Error>| r.unwrap_err().errno_name();
    assert_eq!(e(fx.ictx.ioas_map(99, None, 0, 0x1000, RW)), "ENOENT");
    assert_eq!(
        e(fx.ictx.ioas_map(h, None, 0, 0x1000, RW)),
        "ENOENT",
        "not an IOAS"
    );
    assert_eq!(e(fx.ictx.ioas_map(fx.ioas, None, 0, 0, RW)), "EINVAL");
    assert_eq!(
        e(fx.ictx.ioas_map(fx.ioas, None, 0x10, 0x1000, RW)),
        "EINVAL"
    );
    assert_eq!(
        e(fx.ictx.ioas_map(fx.ioas, Some(0x123), 0, 0x1000, RW)),
        "EINVAL"
    );
    assert_eq!(e(fx.ictx.ioas_map(fx.ioas, None, 0, 0x1000, 0)), "EINVAL");
    assert_eq!(e(fx.ictx.ioas_map(fx.ioas, None, 0, 0x1000, 4)), "EINVAL");
    let end = Some(IOAS_APERTURE_END - 0x1000);
    assert_eq!(e(fx.ictx.ioas_map(fx.ioas, end, 0, 0x2000, RW)), "EINVAL");
    assert_eq!(
        e(fx.ictx.ioas_map(fx.ioas, Some(0x5000), 0, 0x1000, RW)),
        "EEXIST"
    );
    assert_eq!(
        e(fx.ictx.ioas_map(fx.ioas, Some(0x3000), 0, 0x2000, RW)),
        "EEXIST"
    );
    assert_eq!(e(fx.ictx.ioas_unmap(fx.ioas, 0x8000, 0x1000)), "ENOENT");
    assert_eq!(
        e(fx.ictx.ioas_unmap(fx.ioas, 0x5000, 0x1000)),
        "ENOENT",
        "would split (Linux: ENOENT)"
    );
    assert_eq!(fx.mock.hw(), before);
}

//! `attach_device_pasid`, `detach_device_pasid`, `replace_device_pasid`: success paths and
//! every error case of SPEC §2.2-§2.4, each asserting the errno and that nothing changed.

mod common;

use std::sync::Arc;

use common::{assert_rejected, Fixture};
use iommu_core::error::enomem;
use iommu_core::mock::{Call, MockDriver, Op};
use iommu_core::{
    attach_device_pasid, attach_handle_get, attach_handle_get_any, detach_device_pasid,
    replace_device_pasid, Capabilities, Device, Domain, DomainKind, DomainRequest, PASID_LIMIT,
};

#[derive(Debug, PartialEq)]
struct Owner(&'static str);

#[test]
fn attach_programs_every_pasid_capable_member_and_publishes_handle() {
    let fx = Fixture::new(&[64, 64, 0]);
    let dom = fx.paging();
    let h = attach_device_pasid(&dom, fx.dev(1), 5, Owner("a")).unwrap();
    assert_eq!((h.pasid(), h.domain().id()), (5, dom.id()));
    let hw = fx.iommu.hw();
    assert_eq!(hw.pasids.get(&(fx.dev(0).id(), 5)), Some(&dom.id()));
    assert_eq!(hw.pasids.get(&(fx.dev(1).id(), 5)), Some(&dom.id()));
    assert_eq!(
        hw.pasids.get(&(fx.dev(2).id(), 5)),
        None,
        "no-PASID member skipped"
    );
    let found = attach_handle_get::<Owner>(&fx.group, 5).unwrap();
    assert!(Arc::ptr_eq(&found, &h));
    fx.assert_contract_kept();
}

#[test]
fn attach_pasid_on_group_mixing_pasid_and_non_pasid_devices_checks_only_capable_ones() {
    // The no-PASID device (max 0) must not make every PASID out of range (6.15-rc7 fix).
    let fx = Fixture::new(&[0, 16]);
    let dom = fx.paging();
    attach_device_pasid(&dom, fx.dev(0), 15, ()).unwrap();
    assert_eq!(fx.group.pasid_attachments(), 1);
}

#[test]
fn attach_with_domain_lacking_set_dev_pasid_returns_eopnotsupp() {
    let iommu =
        MockDriver::without_pasid_for("m", Capabilities::default(), &[DomainKind::Identity]);
    let fx = Fixture::with_iommu(iommu, &[64]);
    let ident = Domain::alloc(fx.dev(0), DomainRequest::Identity, None).unwrap();
    assert_rejected(&fx, "EOPNOTSUPP", false, || {
        attach_device_pasid(&ident, fx.dev(0), 1, ())
    });
}

#[test]
fn attach_to_device_without_group_returns_enodev() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    let loose = Device::new_unmanaged("loose", 64).unwrap();
    assert_rejected(&fx, "ENODEV", false, || {
        attach_device_pasid(&dom, &loose, 1, ())
    });
}

#[test]
fn attach_domain_of_another_iommu_returns_einval() {
    let fx = Fixture::new(&[64]);
    let other = Fixture::new(&[64]);
    let foreign = other.paging();
    assert_rejected(&fx, "EINVAL", false, || {
        attach_device_pasid(&foreign, fx.dev(0), 1, ())
    });
}

#[test]
fn attach_pasid_zero_returns_einval() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    assert_rejected(&fx, "EINVAL", false, || {
        attach_device_pasid(&dom, fx.dev(0), 0, ())
    });
}

#[test]
fn attach_pasid_at_a_members_max_returns_einval() {
    // Device 1 supports 8 PASIDs (1..=7); attaching 8 through device 0 must still fail.
    let fx = Fixture::new(&[64, 8]);
    let dom = fx.paging();
    assert_rejected(&fx, "EINVAL", false, || {
        attach_device_pasid(&dom, fx.dev(0), 8, ())
    });
    attach_device_pasid(&dom, fx.dev(0), 7, ()).unwrap();
}

#[test]
fn attach_pasid_beyond_20_bits_returns_einval() {
    let fx = Fixture::new(&[0]);
    let dom = fx.paging();
    assert_rejected(&fx, "EINVAL", false, || {
        attach_device_pasid(&dom, fx.dev(0), PASID_LIMIT, ())
    });
}

#[test]
fn attach_pasid_twice_returns_ebusy() {
    let fx = Fixture::new(&[64, 64]);
    let dom = fx.paging();
    let other = fx.paging();
    attach_device_pasid(&dom, fx.dev(0), 3, Owner("first")).unwrap();
    assert_rejected(&fx, "EBUSY", false, || {
        attach_device_pasid(&dom, fx.dev(1), 3, ())
    });
    assert_rejected(&fx, "EBUSY", false, || {
        attach_device_pasid(&other, fx.dev(0), 3, Owner("second"))
    });
    assert_eq!(
        attach_handle_get::<Owner>(&fx.group, 3).unwrap().data(),
        &Owner("first")
    );
}

#[test]
fn attach_driver_error_is_returned_and_nothing_is_published() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    fx.iommu.fail_nth(Op::SetDevPasid, 1, enomem("injected"));
    assert_rejected(&fx, "ENOMEM", true, || {
        attach_device_pasid(&dom, fx.dev(0), 9, ())
    });
    assert_eq!(
        attach_handle_get_any(&fx.group, 9)
            .unwrap_err()
            .errno_name(),
        "ENOENT"
    );
}

#[test]
fn handle_is_invisible_while_the_driver_programs_the_pasid() {
    // H3: publish only after success. A lookup made from inside the driver call sees nothing.
    let fx = Fixture::new(&[64, 64]);
    let dom = fx.paging();
    let group = fx.group.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    fx.iommu.fail_matching(
        move |c| {
            if let Call::SetDevPasid { pasid: 4, .. } = c {
                log.lock()
                    .unwrap()
                    .push(attach_handle_get_any(&group, 4).map(|a| a.addr()));
            }
            false
        },
        enomem("never"),
    );
    attach_device_pasid(&dom, fx.dev(0), 4, ()).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|r| r.as_ref().unwrap_err().errno_name() == "ENOENT"));
}

#[test]
fn detach_blocks_every_member_then_unpublishes_and_returns_the_handle() {
    let fx = Fixture::new(&[64, 64]);
    let dom = fx.paging();
    let h = attach_device_pasid(&dom, fx.dev(0), 6, Owner("x")).unwrap();
    let old = detach_device_pasid(&dom, fx.dev(1), 6).unwrap();
    assert!(old.is_handle(&h));
    assert!(fx.iommu.hw().pasids.is_empty());
    assert_eq!(fx.group.pasid_attachments(), 0);
    assert_eq!(
        attach_handle_get::<Owner>(&fx.group, 6)
            .unwrap_err()
            .errno_name(),
        "ENOENT"
    );
    // The caller's reference still reads the owner's data: nothing was freed under it.
    assert_eq!(h.data(), &Owner("x"));
    fx.assert_contract_kept();
}

#[test]
fn detach_error_cases_change_nothing() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    let other = fx.paging();
    attach_device_pasid(&dom, fx.dev(0), 2, ()).unwrap();
    let loose = Device::new_unmanaged("loose", 64).unwrap();
    assert_rejected(&fx, "ENODEV", false, || {
        detach_device_pasid(&dom, &loose, 2)
    });
    assert_rejected(&fx, "EINVAL", false, || {
        detach_device_pasid(&dom, fx.dev(0), 0)
    });
    assert_rejected(&fx, "ENOENT", false, || {
        detach_device_pasid(&dom, fx.dev(0), 3)
    });
    assert_rejected(&fx, "EINVAL", false, || {
        detach_device_pasid(&other, fx.dev(0), 2)
    });
}

#[test]
fn replace_switches_domain_without_blocking_and_installs_a_fresh_handle() {
    let fx = Fixture::new(&[64, 64]);
    let a = fx.paging();
    let b = fx.paging();
    let h1 = attach_device_pasid(&a, fx.dev(0), 7, Owner("one")).unwrap();
    let since = fx.iommu.call_count();
    let r = replace_device_pasid(&b, fx.dev(0), 7, Owner("two")).unwrap();
    assert!(r.old.as_ref().unwrap().is_handle(&h1));
    assert!(!Arc::ptr_eq(&r.new, &h1));
    let calls = fx.calls_since(since);
    assert!(
        calls.iter().all(|c| c.op() == Op::SetDevPasid),
        "no remove: {calls:?}"
    );
    assert!(calls
        .iter()
        .all(|c| matches!(c, Call::SetDevPasid { old: Some(o), .. } if *o == a.id())));
    assert_eq!(calls.len(), 2);
    assert!(fx.iommu.hw().pasids.values().all(|d| *d == b.id()));
    assert!(Arc::ptr_eq(
        &attach_handle_get::<Owner>(&fx.group, 7).unwrap(),
        &r.new
    ));
    fx.assert_contract_kept();
}

#[test]
fn replace_with_same_domain_swaps_only_the_handle() {
    let fx = Fixture::new(&[64]);
    let a = fx.paging();
    let h1 = attach_device_pasid(&a, fx.dev(0), 7, Owner("one")).unwrap();
    let since = fx.iommu.call_count();
    let r = replace_device_pasid(&a, fx.dev(0), 7, Owner("two")).unwrap();
    assert_eq!(fx.calls_since(since), vec![]);
    assert!(r.old.unwrap().is_handle(&h1));
    assert_eq!(
        attach_handle_get::<Owner>(&fx.group, 7).unwrap().data(),
        &Owner("two")
    );
}

#[test]
fn replace_may_change_the_owner_type() {
    let fx = Fixture::new(&[64]);
    let a = fx.paging();
    attach_device_pasid(&a, fx.dev(0), 7, Owner("one")).unwrap();
    replace_device_pasid(&a, fx.dev(0), 7, 42u64).unwrap();
    assert_eq!(
        attach_handle_get::<Owner>(&fx.group, 7)
            .unwrap_err()
            .errno_name(),
        "EBUSY"
    );
    assert_eq!(**attach_handle_get::<u64>(&fx.group, 7).unwrap(), 42);
}

#[test]
fn replace_error_cases_change_nothing() {
    let iommu =
        MockDriver::without_pasid_for("m", Capabilities::default(), &[DomainKind::Identity]);
    let fx = Fixture::with_iommu(iommu, &[64]);
    let a = fx.paging();
    attach_device_pasid(&a, fx.dev(0), 2, ()).unwrap();
    let ident = Domain::alloc(fx.dev(0), DomainRequest::Identity, None).unwrap();
    let foreign = Fixture::new(&[64]).paging();
    let loose = Device::new_unmanaged("loose", 64).unwrap();
    assert_rejected(&fx, "EOPNOTSUPP", false, || {
        replace_device_pasid(&ident, fx.dev(0), 2, ())
    });
    assert_rejected(&fx, "ENODEV", false, || {
        replace_device_pasid(&a, &loose, 2, ())
    });
    assert_rejected(&fx, "EINVAL", false, || {
        replace_device_pasid(&foreign, fx.dev(0), 2, ())
    });
    assert_rejected(&fx, "EINVAL", false, || {
        replace_device_pasid(&a, fx.dev(0), 0, ())
    });
    // Nothing attached at PASID 3: "not a replace".
    assert_rejected(&fx, "EINVAL", false, || {
        replace_device_pasid(&a, fx.dev(0), 3, ())
    });
}

#[test]
fn attach_handle_get_of_an_out_of_range_pasid_is_enoent() {
    let fx = Fixture::new(&[64]);
    assert_eq!(
        attach_handle_get::<()>(&fx.group, u32::MAX)
            .unwrap_err()
            .errno_name(),
        "ENOENT"
    );
    assert_eq!(
        attach_handle_get_any(&fx.group, PASID_LIMIT)
            .unwrap_err()
            .errno_name(),
        "ENOENT"
    );
}

#[test]
fn attached_domain_is_kept_alive_by_its_handle() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    let id = dom.id();
    let weak = Arc::downgrade(&dom);
    attach_device_pasid(&dom, fx.dev(0), 1, ()).unwrap();
    drop(dom);
    let a = attach_handle_get_any(&fx.group, 1).unwrap();
    assert_eq!(a.domain().id(), id);
    let dom = weak.upgrade().expect("slot keeps the domain");
    detach_device_pasid(&dom, fx.dev(0), 1).unwrap();
    drop((dom, a));
    assert!(
        weak.upgrade().is_none(),
        "domain freed after detach and last reference"
    );
}

#[test]
fn domain_kinds_report_linux_type_values() {
    let kinds = [
        (DomainKind::Blocked, 0),
        (DomainKind::Paging, 1),
        (DomainKind::Identity, 4),
        (DomainKind::Sva, 0x10),
        (DomainKind::Nested, 0x40),
    ];
    for (k, v) in kinds {
        assert_eq!(k.linux_type(), v);
    }
}

//! A group of three PASID-capable devices whose driver fails on the second: every operation
//! must undo what it did to the first and leave the old configuration intact (SPEC §2.2 step 8,
//! §2.4, H27).

mod common;

use std::sync::Arc;

use common::{assert_rejected, Fixture};
use iommu_core::error::{einval, enomem};
use iommu_core::mock::{Call, Op};
use iommu_core::{
    attach_device_pasid, attach_group_handle, attach_handle_get, group_claim_dma_owner,
    replace_device_pasid, replace_group_handle, DmaOwner,
};

fn three() -> Fixture {
    Fixture::new(&[256, 256, 256])
}

#[test]
fn attach_failing_on_second_device_removes_the_first_and_publishes_nothing() {
    let fx = three();
    let dom = fx.paging();
    fx.iommu
        .fail_nth(Op::SetDevPasid, 2, enomem("second device refuses"));
    let since = fx.iommu.call_count();
    assert_rejected(&fx, "ENOMEM", true, || {
        attach_device_pasid(&dom, fx.dev(0), 9, "owner")
    });
    let (d0, d1) = (fx.dev(0).id(), fx.dev(1).id());
    assert_eq!(
        fx.calls_since(since),
        vec![
            Call::SetDevPasid {
                domain: dom.id(),
                dev: d0,
                pasid: 9,
                old: None
            },
            Call::SetDevPasid {
                domain: dom.id(),
                dev: d1,
                pasid: 9,
                old: None
            },
            Call::RemoveDevPasid {
                dev: d0,
                pasid: 9,
                domain: dom.id()
            },
        ]
    );
    // The slot is free again: a retry succeeds.
    attach_device_pasid(&dom, fx.dev(0), 9, "owner").unwrap();
    assert_eq!(fx.iommu.hw().pasids.len(), 3);
}

#[test]
fn replace_failing_on_second_device_restores_the_first_and_keeps_the_old_handle() {
    let fx = three();
    let (a, b) = (fx.paging(), fx.paging());
    let old = attach_device_pasid(&a, fx.dev(0), 9, "old").unwrap();
    fx.iommu
        .fail_nth(Op::SetDevPasid, 2, enomem("second device refuses"));
    let since = fx.iommu.call_count();
    assert_rejected(&fx, "ENOMEM", true, || {
        replace_device_pasid(&b, fx.dev(2), 9, "new")
    });
    let (d0, d1) = (fx.dev(0).id(), fx.dev(1).id());
    assert_eq!(
        fx.calls_since(since),
        vec![
            Call::SetDevPasid {
                domain: b.id(),
                dev: d0,
                pasid: 9,
                old: Some(a.id())
            },
            Call::SetDevPasid {
                domain: b.id(),
                dev: d1,
                pasid: 9,
                old: Some(a.id())
            },
            Call::SetDevPasid {
                domain: a.id(),
                dev: d0,
                pasid: 9,
                old: Some(b.id())
            },
        ]
    );
    assert!(Arc::ptr_eq(
        &attach_handle_get::<&str>(&fx.group, 9).unwrap(),
        &old
    ));
    assert!(fx.iommu.hw().pasids.values().all(|d| *d == a.id()));
}

#[test]
fn replace_whose_rollback_also_fails_blocks_the_pasid_rather_than_leave_it_on_the_new_domain() {
    let fx = three();
    let (a, b) = (fx.paging(), fx.paging());
    attach_device_pasid(&a, fx.dev(0), 9, ()).unwrap();
    // Second device refuses b; then the first device refuses to go back to a (a broken driver).
    let (d0, d1, a_id, b_id) = (fx.dev(0).id(), fx.dev(1).id(), a.id(), b.id());
    fx.iommu.fail_matching(
        move |c| matches!(c, Call::SetDevPasid { dev, domain, .. } if *dev == d1 && *domain == b_id),
        enomem("second device refuses"),
    );
    fx.iommu.fail_matching(
        move |c| matches!(c, Call::SetDevPasid { dev, domain, .. } if *dev == d0 && *domain == a_id),
        einval("broken driver refuses the old domain"),
    );
    let err = replace_device_pasid(&b, fx.dev(0), 9, ()).unwrap_err();
    assert_eq!(err.errno_name(), "ENOMEM");
    let hw = fx.iommu.hw();
    assert_eq!(
        hw.pasids.get(&(fx.dev(0).id(), 9)),
        None,
        "blocked, not left on b"
    );
    assert!(hw.pasids.values().all(|d| *d == a.id()));
    fx.assert_contract_kept();
}

#[test]
fn group_handle_attach_failing_on_second_device_returns_the_first_to_its_old_domain() {
    let fx = three();
    let dom = fx.paging();
    fx.iommu
        .fail_nth(Op::AttachDev, 2, enomem("second device refuses"));
    let default = fx.group.default_domain().unwrap().id();
    assert_rejected(&fx, "ENOMEM", true, || {
        attach_group_handle(&dom, &fx.group, ())
    });
    assert!(fx.iommu.hw().rid.values().all(|d| *d == default));
}

#[test]
fn group_handle_replace_failing_on_second_device_keeps_old_domain_and_handle() {
    let fx = three();
    let (a, b) = (fx.paging(), fx.paging());
    let old = attach_group_handle(&a, &fx.group, "a").unwrap();
    fx.iommu
        .fail_nth(Op::AttachDev, 2, enomem("second device refuses"));
    assert_rejected(&fx, "ENOMEM", true, || {
        replace_group_handle(&b, &fx.group, "b")
    });
    assert!(Arc::ptr_eq(
        &attach_handle_get::<&str>(&fx.group, 0).unwrap(),
        &old
    ));
    assert!(fx.iommu.hw().rid.values().all(|d| *d == a.id()));
}

#[test]
fn ownership_claim_failing_on_second_device_leaves_group_unowned_on_default() {
    let fx = three();
    fx.iommu
        .fail_nth(Op::AttachDev, 2, enomem("second device refuses"));
    let before = fx.state();
    let err = group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap_err();
    assert_eq!(err.errno_name(), "ENOMEM");
    let after = fx.state();
    // The blocking domain was not kept, ownership not taken, hardware back on default.
    assert_eq!(after, before);
    // Healed, the claim succeeds.
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
    assert_eq!(fx.group.dma_owner_count(), 1);
}

//! RID attach with handles (SPEC §2.5) and the handle-less group attach.

mod common;

use std::sync::Arc;

use common::{assert_rejected, Fixture, Mm};
use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_group, attach_group_handle, attach_handle_get, attach_handle_get_any, detach_group,
    detach_group_handle, group_claim_dma_owner, replace_group_handle, DmaOwner, Domain,
    DomainRequest, Group, IommuDriver, IOMMU_NO_PASID,
};

#[test]
fn attach_group_handle_moves_every_rid_and_publishes_at_key_zero() {
    let fx = Fixture::new(&[0, 64]);
    let dom = fx.paging();
    let h = attach_group_handle(&dom, &fx.group, "vmm").unwrap();
    assert_eq!(h.pasid(), IOMMU_NO_PASID);
    assert!(fx.iommu.hw().rid.values().all(|d| *d == dom.id()));
    assert_eq!(fx.group.domain().unwrap().id(), dom.id());
    assert!(Arc::ptr_eq(
        &attach_handle_get::<&str>(&fx.group, 0).unwrap(),
        &h
    ));
}

#[test]
fn detach_group_handle_returns_to_default_or_to_blocking_when_owned() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    let default = fx.group.default_domain().unwrap();
    attach_group_handle(&dom, &fx.group, ()).unwrap();
    detach_group_handle(&dom, &fx.group).unwrap();
    assert_eq!(fx.group.domain().unwrap().id(), default.id());

    group_claim_dma_owner(&fx.group, DmaOwner(7)).unwrap();
    let blocking = fx.group.blocking_domain().unwrap();
    attach_group_handle(&dom, &fx.group, ()).unwrap();
    let old = detach_group_handle(&dom, &fx.group).unwrap();
    assert_eq!(old.domain().id(), dom.id());
    assert_eq!(fx.group.domain().unwrap().id(), blocking.id());
    assert_eq!(
        attach_handle_get_any(&fx.group, 0)
            .unwrap_err()
            .errno_name(),
        "ENOENT"
    );
}

#[test]
fn attach_group_handle_error_cases_change_nothing() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    let foreign = Fixture::new(&[64]).paging();
    let sva = Domain::alloc(fx.dev(0), DomainRequest::Sva(&(Mm::new(1) as _)), None).unwrap();
    let empty = Group::new(MockDriver::new("e") as Arc<dyn IommuDriver>, "empty");
    assert_rejected(&fx, "ENODEV", false, || {
        attach_group_handle(&dom, &empty, ())
    });
    assert_rejected(&fx, "EINVAL", false, || {
        attach_group_handle(&foreign, &fx.group, ())
    });
    assert_rejected(&fx, "EINVAL", false, || {
        attach_group_handle(&sva, &fx.group, ())
    });
    attach_group_handle(&dom, &fx.group, 1u8).unwrap();
    assert_rejected(&fx, "EBUSY", false, || {
        attach_group_handle(&dom, &fx.group, 2u8)
    });
}

#[test]
fn attach_group_handle_on_a_group_someone_else_attached_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    let (a, b) = (fx.paging(), fx.paging());
    attach_group(&a, &fx.group).unwrap();
    assert_rejected(&fx, "EBUSY", false, || {
        attach_group_handle(&b, &fx.group, ())
    });
    assert_rejected(&fx, "EBUSY", false, || attach_group(&b, &fx.group));
    detach_group(&a, &fx.group).unwrap();
    attach_group_handle(&b, &fx.group, ()).unwrap();
}

#[test]
fn detach_group_error_cases_change_nothing() {
    let fx = Fixture::new(&[64]);
    let (a, b) = (fx.paging(), fx.paging());
    assert_rejected(&fx, "EINVAL", false, || detach_group(&a, &fx.group));
    attach_group_handle(&a, &fx.group, ()).unwrap();
    assert_rejected(&fx, "EBUSY", false, || detach_group(&a, &fx.group));
    assert_rejected(&fx, "EINVAL", false, || detach_group_handle(&b, &fx.group));
    detach_group_handle(&a, &fx.group).unwrap();
    assert_rejected(&fx, "ENOENT", false, || detach_group_handle(&a, &fx.group));
}

#[test]
fn replace_group_handle_installs_fresh_handle_and_returns_old() {
    let fx = Fixture::new(&[64, 64]);
    let (a, b) = (fx.paging(), fx.paging());
    let h1 = attach_group_handle(&a, &fx.group, "a").unwrap();
    let r = replace_group_handle(&b, &fx.group, "b").unwrap();
    assert!(r.old.unwrap().is_handle(&h1));
    assert!(fx.iommu.hw().rid.values().all(|d| *d == b.id()));
    assert!(Arc::ptr_eq(
        &attach_handle_get::<&str>(&fx.group, 0).unwrap(),
        &r.new
    ));
    // Replacing onto the same domain calls no driver op and still swaps the handle.
    let since = fx.iommu.call_count();
    let r2 = replace_group_handle(&b, &fx.group, "b2").unwrap();
    assert_eq!(fx.calls_since(since), vec![]);
    assert!(r2.old.unwrap().is_handle(&r.new));
}

#[test]
fn replace_group_handle_without_previous_handle_returns_none_as_old() {
    let fx = Fixture::new(&[64]);
    let a = fx.paging();
    let r = replace_group_handle(&a, &fx.group, ()).unwrap();
    assert!(r.old.is_none());
}

#[test]
fn replace_group_handle_error_cases_change_nothing() {
    let fx = Fixture::new(&[64]);
    let foreign = Fixture::new(&[64]).paging();
    let sva = Domain::alloc(fx.dev(0), DomainRequest::Sva(&(Mm::new(1) as _)), None).unwrap();
    let empty = Group::new(MockDriver::new("e") as Arc<dyn IommuDriver>, "empty");
    let dom = fx.paging();
    assert_rejected(&fx, "ENODEV", false, || {
        replace_group_handle(&dom, &empty, ())
    });
    assert_rejected(&fx, "EINVAL", false, || {
        replace_group_handle(&foreign, &fx.group, ())
    });
    assert_rejected(&fx, "EINVAL", false, || {
        replace_group_handle(&sva, &fx.group, ())
    });
}

#[test]
fn rid_handle_and_pasid_handles_are_independent_slots() {
    let fx = Fixture::new(&[64]);
    let (a, b) = (fx.paging(), fx.paging());
    attach_group_handle(&a, &fx.group, "rid").unwrap();
    iommu_core::attach_device_pasid(&b, fx.dev(0), 1, 5u32).unwrap();
    assert_eq!(**attach_handle_get::<&str>(&fx.group, 0).unwrap(), "rid");
    assert_eq!(**attach_handle_get::<u32>(&fx.group, 1).unwrap(), 5);
    assert_eq!(fx.group.pasid_attachments(), 2);
}

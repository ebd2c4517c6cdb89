//! SVA bind/unbind (SPEC §3.2-§3.5) and its acceptance cases (§6.4): bond sharing and counting,
//! one PASID per mm kept until the mm dies, domain sharing per IOMMU, every error, and the SVA
//! fault handler resolving page request groups against the mm.

mod common;

use std::sync::Arc;

use common::{Fixture, Mm};
use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_handle_get, iopf_queue_add_device, iopf_stats, report_device_fault,
    sva_bind_device, AddressSpace, Capabilities, Device, IopfQueue, PageRequest, PageResponseCode,
    SvaHandleData, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID as PV, IOMMU_FAULT_PERM_READ as R,
    IOMMU_FAULT_PERM_WRITE as W,
};

fn as_mm(mm: &Arc<Mm>) -> Arc<dyn AddressSpace> {
    mm.clone()
}

#[test]
fn second_bind_of_same_device_and_mm_returns_the_same_bond_and_needs_two_unbinds() {
    let fx = Fixture::new(&[1 << 16]);
    let mm = as_mm(&Mm::new(1));
    let b1 = sva_bind_device(fx.dev(0), &mm).unwrap();
    let b2 = sva_bind_device(fx.dev(0), &mm).unwrap();
    assert!(b1.same_bond(&b2));
    assert_eq!(b1.data().users(), 2);
    let pasid = b1.pasid();
    drop(b1);
    assert!(
        attach_handle_get::<SvaHandleData>(&fx.group, pasid).is_ok(),
        "still bound"
    );
    b2.unbind();
    let err = attach_handle_get::<SvaHandleData>(&fx.group, pasid).unwrap_err();
    assert_eq!(err.errno_name(), "ENOENT");
    assert!(fx.iommu.hw().pasids.is_empty());
    fx.assert_contract_kept();
}

#[test]
fn second_device_of_the_group_shares_the_first_devices_bond() {
    let fx = Fixture::new(&[1 << 16, 1 << 16]);
    let mm = as_mm(&Mm::new(1));
    let b0 = sva_bind_device(fx.dev(0), &mm).unwrap();
    let b1 = sva_bind_device(fx.dev(1), &mm).unwrap();
    assert!(b0.same_bond(&b1));
    assert_eq!(
        b1.data().device().id(),
        fx.dev(0).id(),
        "bonds are per (group, mm)"
    );
}

#[test]
fn one_pasid_per_mm_for_every_device_and_one_domain_per_iommu() {
    let iommu = MockDriver::new("shared");
    let a = Fixture::with_iommu(iommu.clone(), &[1 << 16]);
    let b = Fixture::with_iommu(iommu, &[1 << 16]); // another group, same IOMMU
    let c = Fixture::new(&[1 << 16]); // another IOMMU
    let mm = Mm::new(1);
    let dmm = as_mm(&mm);
    let ba = sva_bind_device(a.dev(0), &dmm).unwrap();
    let bb = sva_bind_device(b.dev(0), &dmm).unwrap();
    let bc = sva_bind_device(c.dev(0), &dmm).unwrap();
    assert_eq!((ba.pasid(), bb.pasid()), (bc.pasid(), bc.pasid()));
    assert!(!ba.same_bond(&bb));
    assert!(
        Arc::ptr_eq(ba.domain(), bb.domain()),
        "one SVA domain shared behind one IOMMU"
    );
    assert!(!Arc::ptr_eq(ba.domain(), bc.domain()));
    assert_eq!(mm.iommu.domain_count(), 2);
    drop((ba, bc));
    assert_eq!(mm.iommu.domain_count(), 1);
    drop(bb);
    assert_eq!(mm.iommu.domain_count(), 0);
}

#[test]
fn bind_where_the_pasid_slot_holds_another_owner_returns_ebusy() {
    let fx = Fixture::new(&[1 << 16]);
    let mm = Mm::new(1);
    let bond = sva_bind_device(fx.dev(0), &as_mm(&mm)).unwrap();
    let pasid = bond.pasid();
    drop(bond);
    let dom = fx.paging();
    attach_device_pasid(&dom, fx.dev(0), pasid, "iommufd").unwrap();
    let before = fx.state();
    let err = sva_bind_device(fx.dev(0), &as_mm(&mm)).unwrap_err();
    assert_eq!(err.errno_name(), "EBUSY");
    assert_eq!(fx.state(), before);
}

#[test]
fn bind_errors_for_devices_and_iommus_that_cannot_do_sva() {
    let mm = as_mm(&Mm::new(1));
    let loose = Device::new_unmanaged("loose", 64).unwrap();
    assert_eq!(
        sva_bind_device(&loose, &mm).unwrap_err().errno_name(),
        "ENODEV"
    );
    let no_sva = Capabilities {
        sva: false,
        ..Capabilities::default()
    };
    let fx = Fixture::with_iommu(MockDriver::with_capabilities("m", no_sva), &[64]);
    assert_eq!(
        sva_bind_device(fx.dev(0), &mm).unwrap_err().errno_name(),
        "EOPNOTSUPP"
    );
    let fx = Fixture::new(&[0]);
    let fresh = Mm::new(2);
    assert_eq!(
        sva_bind_device(fx.dev(0), &as_mm(&fresh))
            .unwrap_err()
            .errno_name(),
        "ENOSPC"
    );
    assert_eq!(fresh.iommu.pasid(), None);
}

#[test]
fn bind_whose_attach_fails_leaves_no_domain_and_no_bond() {
    let fx = Fixture::new(&[1 << 16]);
    let mm = Mm::new(1);
    fx.iommu.fail_nth(
        iommu_core::mock::Op::SetDevPasid,
        1,
        iommu_core::error::enomem("x"),
    );
    let err = sva_bind_device(fx.dev(0), &as_mm(&mm)).unwrap_err();
    assert_eq!(err.errno_name(), "ENOMEM");
    assert_eq!(mm.iommu.domain_count(), 0);
    assert_eq!(fx.group.pasid_attachments(), 0);
    assert!(
        mm.iommu.pasid().is_some(),
        "the mm keeps its PASID, as in Linux"
    );
}

fn sva_fixture() -> (Fixture, Arc<Mm>, Arc<IopfQueue>) {
    let fx = Fixture::new(&[1 << 16]);
    let queue = IopfQueue::new("test", 2).unwrap();
    iopf_queue_add_device(&queue, fx.dev(0)).unwrap();
    (fx, Mm::new(1), queue)
}

fn pr(flags: u32, pasid: u32, grpid: u32, perm: u32, addr: u64) -> PageRequest {
    PageRequest {
        flags,
        pasid,
        grpid,
        perm,
        addr,
    }
}

#[test]
fn sva_fault_group_is_resolved_against_the_mm_on_the_queue_and_answered_success() {
    let (fx, mm, _q) = sva_fixture();
    let bond = sva_bind_device(fx.dev(0), &as_mm(&mm)).unwrap();
    let p = bond.pasid();
    report_device_fault(fx.dev(0), pr(PV, p, 1, R, 0x1000)).unwrap();
    report_device_fault(fx.dev(0), pr(PV | LAST, p, 1, W, 0x2000)).unwrap();
    iommu_core::iopf_queue_flush_dev(fx.dev(0)).unwrap();
    assert_eq!(*mm.faults.lock().unwrap(), vec![(0x1000, R), (0x2000, W)]);
    let responses = fx.iommu.responses();
    assert_eq!(responses.len(), 1);
    assert_eq!(
        (responses[0].1.grpid, responses[0].1.code),
        (1, PageResponseCode::Success)
    );
}

#[test]
fn sva_fault_error_is_sticky_for_the_rest_of_the_group() {
    let (fx, mm, _q) = sva_fixture();
    let bond = sva_bind_device(fx.dev(0), &as_mm(&mm)).unwrap();
    let p = bond.pasid();
    let outside = mm.limit + 0x1000;
    report_device_fault(fx.dev(0), pr(PV, p, 2, R, 0x1000)).unwrap();
    report_device_fault(fx.dev(0), pr(PV, p, 2, R, outside)).unwrap();
    report_device_fault(fx.dev(0), pr(PV | LAST, p, 2, R, 0x3000)).unwrap();
    iommu_core::iopf_queue_flush_dev(fx.dev(0)).unwrap();
    let seen: Vec<u64> = mm.faults.lock().unwrap().iter().map(|f| f.0).collect();
    assert_eq!(
        seen,
        [0x1000, outside],
        "requests after the first error are not handled"
    );
    assert_eq!(fx.iommu.responses()[0].1.code, PageResponseCode::Invalid);
}

#[test]
fn unbind_while_faults_are_in_flight_answers_each_once_and_none_run_after() {
    let (fx, mm, _q) = sva_fixture();
    let bond = sva_bind_device(fx.dev(0), &as_mm(&mm)).unwrap();
    let p = bond.pasid();
    for g in 0..200 {
        report_device_fault(fx.dev(0), pr(PV | LAST, p, g, R, 0x1000 * g as u64)).unwrap();
    }
    bond.unbind();
    let handled = mm.faults.lock().unwrap().len();
    assert_eq!(
        handled, 200,
        "unbind returned only after the queued work ran"
    );
    // Requests after unbind are refused by the core, answered Invalid, and reach no mm.
    let err = report_device_fault(fx.dev(0), pr(PV | LAST, p, 7, R, 0)).unwrap_err();
    assert_eq!(err.errno_name(), "EINVAL");
    assert_eq!(mm.faults.lock().unwrap().len(), 200);
    assert_eq!(fx.iommu.responses().len(), 201);
    let s = iopf_stats(fx.dev(0)).unwrap();
    assert_eq!((s.success, s.invalid, s.dropped_unanswered), (200, 1, 0));
}

#[test]
fn request_without_pasid_to_an_sva_domain_is_never_routed_there() {
    let (fx, mm, _q) = sva_fixture();
    let _bond = sva_bind_device(fx.dev(0), &as_mm(&mm)).unwrap();
    let err = report_device_fault(fx.dev(0), pr(LAST, 0, 1, R, 0x1000)).unwrap_err();
    assert_eq!(err.errno_name(), "EINVAL");
    assert!(mm.faults.lock().unwrap().is_empty());
}

//! The manual IOPF queue: work runs only when its owner says so; flushes and shutdown run it
//! inline.

mod common;

use common::{last, manual_fixture};
use iommu_core::{
    report_device_fault, sva_bind_device, PageResponseCode, IOMMU_FAULT_PERM_READ as R,
};

#[test]
fn manual_queue_runs_a_group_only_when_asked_oldest_first() {
    let (fx, space, mm, queue) = manual_fixture();
    assert!(queue.is_manual());
    let bond = sva_bind_device(fx.dev(0), &space).unwrap();
    report_device_fault(fx.dev(0), last(bond.pasid(), 1, 0x1000)).unwrap();
    report_device_fault(fx.dev(0), last(bond.pasid(), 2, 0x2000)).unwrap();
    assert_eq!(queue.pending(), 2);
    assert!(fx.iommu.responses().is_empty(), "nothing runs by itself");
    assert!(queue.run_one());
    assert_eq!(mm.faults.lock().unwrap().clone(), vec![(0x1000, R)]);
    assert_eq!(fx.iommu.responses()[0].1.grpid, 1);
    assert!(queue.run_one());
    assert!(!queue.run_one(), "empty");
    let codes: Vec<_> = fx.iommu.responses().iter().map(|r| r.1.code).collect();
    assert_eq!(codes, [PageResponseCode::Success; 2]);
}

#[test]
fn unbind_on_a_manual_queue_runs_the_queued_work_before_it_returns() {
    let (fx, space, mm, queue) = manual_fixture();
    let bond = sva_bind_device(fx.dev(0), &space).unwrap();
    for g in 0..5 {
        report_device_fault(fx.dev(0), last(bond.pasid(), g, 0x1000 * u64::from(g))).unwrap();
    }
    bond.unbind();
    assert_eq!(queue.pending(), 0);
    assert_eq!(mm.faults.lock().unwrap().len(), 5);
    assert_eq!(fx.iommu.responses().len(), 5);
}

#[test]
fn manual_queue_shutdown_runs_what_is_queued_and_then_refuses_work() {
    let (fx, space, _mm, queue) = manual_fixture();
    let bond = sva_bind_device(fx.dev(0), &space).unwrap();
    report_device_fault(fx.dev(0), last(bond.pasid(), 1, 0x1000)).unwrap();
    queue.shutdown();
    assert_eq!(fx.iommu.responses().len(), 1);
    // A shut-down queue hands the group back; the SVA handler resolves it at once, inline,
    // against the mm (never Failure, which would disable the device's PRI).
    report_device_fault(fx.dev(0), last(bond.pasid(), 2, 0x2000)).unwrap();
    assert_eq!(fx.iommu.responses().len(), 2);
    let r = fx.iommu.responses()[1].1;
    assert_eq!((r.grpid, r.code), (2, PageResponseCode::Success));
    assert_eq!(queue.pending(), 0);
}

#[test]
fn a_shut_down_queue_takes_no_new_device() {
    let fx = common::Fixture::new(&[1 << 16, 1 << 16]);
    for queue in [
        iommu_core::IopfQueue::new_manual("manual"),
        iommu_core::IopfQueue::new("threads", 1).unwrap(),
    ] {
        assert!(!queue.is_shut_down());
        queue.shutdown();
        assert!(queue.is_shut_down());
        let err = iommu_core::iopf_queue_add_device(&queue, fx.dev(1)).unwrap_err();
        assert_eq!(err.errno_name(), "EINVAL");
        // Nothing was enabled: the device can still get a live queue.
        let live = iommu_core::IopfQueue::new_manual("live");
        iommu_core::iopf_queue_add_device(&live, fx.dev(1)).unwrap();
        iommu_core::iopf_disable(fx.dev(1)).unwrap();
    }
}

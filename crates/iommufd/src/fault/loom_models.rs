//! Model check of the fault object's exactly-once protocol (DESIGN §5, SPEC H9, H11, H17, H21).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p iommufd --release loom`.
//!
//! Under `--cfg loom` the fault object's two locks, the `Ictx` table lock, and iommu-core's
//! group lock and PASID-array lock are all loom primitives, so loom explores every order in
//! which a fd read, a fd write, a fault report and a detach (with its auto-response) can meet.
//! The eventfd is left out of the model (a fault object built under loom has none); its
//! readiness bookkeeping (`signalled`, the wake-up counter) is the same code and is modelled.
//! The mock driver's books lock is a leaf never held across a loom operation.

use alloc::sync::Arc;
use alloc::vec::Vec;
use std::collections::BTreeMap;

use iommu_core::mock::MockDriver;
use iommu_core::{
    iopf_enable, report_device_fault, Device, Group, IommuDriver, PageRequest, PageResponseCode,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_NO_PASID,
};
use loom::thread;
use zerocopy::{FromBytes, IntoBytes};

use crate::uapi::{IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_SUCCESS};
use crate::{FaultFd, Ictx};

fn req(grpid: u32) -> PageRequest {
    PageRequest {
        flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
        pasid: 0,
        grpid,
        perm: 1,
        addr: 0x1000,
    }
}

fn setup() -> (Arc<MockDriver>, Arc<Device>, Arc<Ictx>, u32, FaultFd) {
    let (mock, dev, ictx, dev_id, _, fd) = setup_with_hwpt();
    (mock, dev, ictx, dev_id, fd)
}

/// As [`setup`], also returning the attached HWPT's ID.
fn setup_with_hwpt() -> (Arc<MockDriver>, Arc<Device>, Arc<Ictx>, u32, u32, FaultFd) {
    let mock = MockDriver::new("loom");
    let group = Group::new(mock.clone() as Arc<dyn IommuDriver>, "g");
    let dev = group.add_device("d", 16).unwrap();
    iopf_enable(&dev).unwrap();
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(dev.clone()).unwrap();
    let ioas = ictx.ioas_alloc().unwrap();
    let (fault_id, fd) = ictx.fault_queue_alloc(0).unwrap();
    let hwpt = ictx
        .hwpt_alloc(
            dev_id,
            ioas,
            crate::uapi::IOMMU_HWPT_FAULT_ID_VALID,
            fault_id,
            0,
            &[],
        )
        .unwrap();
    ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt).unwrap();
    (mock, dev, Arc::new(ictx), dev_id, ioas, fd)
}

/// Reads at most one group and answers it Success.
fn read_and_answer(fd: &FaultFd) {
    let mut buf = [0u8; 40];
    if fd.read(&mut buf).unwrap() == 40 {
        let rec = IommuHwptPgfault::read_from_bytes(&buf[..]).unwrap();
        let resp = IommuHwptPageResponse {
            cookie: rec.cookie,
            code: IOMMUFD_PAGE_RESP_SUCCESS,
        };
        // Auto-response may have taken the cookie first: then the write is EINVAL.
        match fd.write(resp.as_bytes()) {
            Ok(n) => assert_eq!(n, 8),
            Err(e) => assert_eq!(e.errno_name(), "EINVAL"),
        }
    }
}

fn per_group(mock: &MockDriver) -> BTreeMap<u32, Vec<PageResponseCode>> {
    let mut m: BTreeMap<u32, Vec<PageResponseCode>> = BTreeMap::new();
    for (_, r) in mock.responses() {
        m.entry(r.grpid).or_default().push(r.code);
    }
    m
}

/// A reader answering one group, a second reader that never answers, and a detach
/// (auto-response) race with one group already queued and one reported concurrently: every group is answered exactly once,
/// and nothing is left in the queue or the cookie map.
#[test]
fn loom_read_write_racing_detach_answers_every_group_exactly_once() {
    // Exhaustive: no preemption bound (about 16 k executions, under a second in release).
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = None;
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    builder.check(|| {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (mock, dev, ictx, dev_id, fd) = setup();
        report_device_fault(&dev, req(1)).unwrap();
        let fd = Arc::new(fd);

        let reader = {
            let fd = fd.clone();
            thread::spawn(move || read_and_answer(&fd))
        };
        let detacher = {
            let ictx = ictx.clone();
            thread::spawn(move || ictx.device_detach(dev_id, IOMMU_NO_PASID).unwrap())
        };
        // A report racing the detach: delivered (then answered by someone) or, after the
        // detach unpublished the handle, answered Invalid by the core at once.
        let _ = report_device_fault(&dev, req(2));
        // A slow VMM: reads a group and never answers it; only auto-response can.
        let mut buf = [0u8; 40];
        fd.read(&mut buf).unwrap();

        reader.join().unwrap();
        detacher.join().unwrap();
        let got = per_group(&mock);
        assert_eq!(got.len(), 2, "every group answered: {got:?}");
        assert!(got.values().all(|v| v.len() == 1), "none twice: {got:?}");
        assert_eq!((fd.pending(), fd.unanswered()), (0, 0));
        // Readiness bookkeeping: the queue is empty, so the fd is not readable.
        assert!(!fd.poll().readable);
    });
    std::eprintln!(
        "loom explored {} executions",
        RUNS.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// Replace between two fault queues racing a reader of the old queue and a report (H21, the
/// 2026 fix): groups of the old attachment are answered on the *old* queue — by its reader or
/// by auto-response — and groups reported after the switch land on the new queue. Closing the
/// new queue's endpoint then answers what it holds; every group is answered exactly once.
#[test]
fn loom_replace_racing_old_queue_reader_answers_every_group_exactly_once() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = None;
    builder.check(|| {
        let (mock, dev, ictx, dev_id, ioas, fd_a) = setup_with_hwpt();
        let (fault_b, fd_b) = ictx.fault_queue_alloc(0).unwrap();
        let hwpt_b = ictx
            .hwpt_alloc(
                dev_id,
                ioas,
                crate::uapi::IOMMU_HWPT_FAULT_ID_VALID,
                fault_b,
                0,
                &[],
            )
            .unwrap();
        report_device_fault(&dev, req(1)).unwrap();
        let fd_a = Arc::new(fd_a);

        let reader = {
            let fd_a = fd_a.clone();
            thread::spawn(move || read_and_answer(&fd_a))
        };
        let replacer = {
            let ictx = ictx.clone();
            thread::spawn(move || ictx.device_replace(dev_id, IOMMU_NO_PASID, hwpt_b).unwrap())
        };
        report_device_fault(&dev, req(2)).unwrap();

        reader.join().unwrap();
        replacer.join().unwrap();
        // The old queue holds nothing once replace returned and its reader is done.
        assert_eq!((fd_a.pending(), fd_a.unanswered()), (0, 0));
        drop(fd_b);
        let got = per_group(&mock);
        assert_eq!(got.len(), 2, "every group answered: {got:?}");
        assert!(got.values().all(|v| v.len() == 1), "none twice: {got:?}");
    });
}

/// The fd's readiness as a sleeping reader would see it: readable, or nothing queued.
fn readable_or_empty(fd: &FaultFd) -> bool {
    let d = fd.fault.lock.lock();
    d.signalled || d.list.is_empty()
}

/// Lazy readiness ("Readiness" in `fault/mod.rs`): a reader that keeps reading leaves the fd
/// readable, and only a reader about to sleep clears it. Racing two reports against a reader
/// that reads, then prepares to sleep (as [`FaultFd::wait_readable`] does), no group ever waits
/// behind an unreadable fd — the lost wake-up a lazy clear could cause — and every group is
/// answered once.
#[test]
fn loom_lazy_readiness_never_hides_a_queued_group() {
    loom::model(|| {
        let (mock, dev, _ictx, _dev_id, fd) = setup();
        let fd = Arc::new(fd);
        let reporter = {
            let dev = dev.clone();
            thread::spawn(move || {
                report_device_fault(&dev, req(1)).unwrap();
                report_device_fault(&dev, req(2)).unwrap();
            })
        };
        for _ in 0..2 {
            read_and_answer(&fd);
            assert!(
                readable_or_empty(&fd),
                "a queued group behind an unreadable fd"
            );
        }
        // About to sleep: drop a readiness left from a draining read.
        fd.fault.clear_if_empty(&mut fd.fault.lock.lock());
        assert!(
            readable_or_empty(&fd),
            "a queued group behind an unreadable fd"
        );
        reporter.join().unwrap();
        assert!(
            readable_or_empty(&fd),
            "lost wake-up: group queued, fd unreadable"
        );
        while fd.pending() > 0 {
            read_and_answer(&fd);
        }
        let got = per_group(&mock);
        assert_eq!(got.len(), 2, "every group answered: {got:?}");
        assert!(got.values().all(|v| v.len() == 1), "none twice: {got:?}");
    });
}

//! Auto-response (SPEC §5.3, §5.7; H9, H21, H23): detach, replace, unbind, endpoint close and
//! context drop answer Invalid every group they strand — queued or read-but-unanswered —
//! exactly once, and only the groups of the attachment concerned.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::{read_records, responses, Fx, RID};
use iommu_core::PageResponseCode::{Invalid, Success};
use iommufd::uapi::{IOMMUFD_PAGE_RESP_SUCCESS as OK, IOMMU_HWPT_ALLOC_PASID};

#[test]
fn detach_answers_queued_and_read_groups_once_and_their_cookies_go_stale() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    for g in 1..=4 {
        fx.report_group(0, RID, g, 1);
    }
    read_records(&fd, 4); // groups 1 and 2 read (cookies 1, 2)
    fd.write(&responses(&[(1, OK)])).unwrap();
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    fx.assert_answered(&[(1, Success), (2, Invalid), (3, Invalid), (4, Invalid)]);
    assert_eq!((fd.pending(), fd.unanswered()), (0, 0));
    assert_eq!(
        fd.write(&responses(&[(2, OK)])).unwrap_err().errno_name(),
        "EINVAL"
    );
    assert!(!fd.poll().readable);
    assert_eq!(fd.stats().auto_responses, 3);
    // Faults after detach reach nobody: the core answers them itself.
    assert!(iommu_core::report_device_fault(
        &fx.devs[0],
        iommu_core::PageRequest {
            flags: iommu_core::IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
            pasid: 0,
            grpid: 9,
            perm: 1,
            addr: 0
        }
    )
    .is_err());
    fx.assert_answered(&[
        (1, Success),
        (2, Invalid),
        (3, Invalid),
        (4, Invalid),
        (9, Invalid),
    ]);
}

#[test]
fn replace_fault_capable_to_plain_drains_the_old_queue() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    let plain = fx.plain_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.report_group(0, RID, 1, 0);
    fx.report_group(0, RID, 2, 0);
    read_records(&fd, 1);
    fx.ictx.device_replace(fx.dev_ids[0], RID, plain).unwrap();
    fx.assert_answered(&[(1, Invalid), (2, Invalid)]);
    assert_eq!((fd.pending(), fd.unanswered()), (0, 0));
    assert_eq!(
        fx.ictx.attached_hwpt(fx.dev_ids[0], RID).unwrap(),
        Some(plain)
    );
    assert_eq!(fx.ictx.destroy(hwpt), Ok(()), "old HWPT no longer attached");
}

#[test]
fn replace_between_two_queues_answers_only_the_old_queue_and_delivers_new_faults_to_the_new() {
    let fx = Fx::new(1);
    let (_, fd_a, a) = fx.fault_hwpt(0, 0);
    let (_, fd_b, b) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, a).unwrap();
    fx.report_group(0, RID, 1, 0);
    fx.ictx.device_replace(fx.dev_ids[0], RID, b).unwrap();
    fx.assert_answered(&[(1, Invalid)]);
    fx.report_group(0, RID, 2, 0);
    assert_eq!(fd_a.pending(), 0);
    let recs = read_records(&fd_b, 1);
    assert_eq!((recs[0].grpid, recs[0].cookie), (2, 1));
    fd_b.write(&responses(&[(1, OK)])).unwrap();
    fx.assert_answered(&[(1, Invalid), (2, Success)]);
}

#[test]
fn replace_with_the_current_hwpt_is_a_no_op_that_keeps_pending_groups() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.report_group(0, RID, 1, 0);
    fx.ictx.device_replace(fx.dev_ids[0], RID, hwpt).unwrap();
    assert_eq!(fd.pending(), 1);
    fx.assert_answered(&[]);
}

#[test]
fn detach_of_one_attachment_leaves_other_attachments_groups_on_a_shared_queue() {
    let fx = Fx::new(2); // two groups
    let (fault_id, fd) = fx.ictx.fault_queue_alloc(0).unwrap();
    let h0 = fx.hwpt_on(0, fault_id, 0);
    let h1 = fx.hwpt_on(1, fault_id, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, h0).unwrap();
    fx.ictx.device_attach(fx.dev_ids[1], RID, h1).unwrap();
    fx.report_group(0, RID, 10, 0);
    fx.report_group(1, RID, 20, 0);
    fx.report_group(0, RID, 11, 0);
    fx.report_group(1, RID, 21, 0);
    read_records(&fd, 2); // 10 (cookie 1) and 20 (cookie 2)
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    fx.assert_answered(&[(10, Invalid), (11, Invalid)]);
    assert_eq!((fd.pending(), fd.unanswered()), (1, 1));
    let recs = read_records(&fd, 2);
    assert_eq!(
        (recs[0].grpid, recs[0].dev_id, recs[0].cookie),
        (21, fx.dev_ids[1], 1)
    );
    fd.write(&responses(&[(2, OK), (1, OK)])).unwrap();
    fx.assert_answered(&[(10, Invalid), (11, Invalid), (20, Success), (21, Success)]);
}

#[test]
fn pasid_attachment_delivers_with_pasid_and_its_detach_auto_responds() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, IOMMU_HWPT_ALLOC_PASID);
    let rid = fx.plain_hwpt(0, IOMMU_HWPT_ALLOC_PASID);
    fx.ictx.device_attach(fx.dev_ids[0], RID, rid).unwrap();
    fx.ictx.device_attach(fx.dev_ids[0], 7, hwpt).unwrap();
    fx.report_group(0, 7, 1, 0);
    fx.report_group(0, 7, 2, 0);
    let r = read_records(&fd, 1);
    assert_eq!(
        (r[0].pasid, r[0].flags & 1, r[0].dev_id),
        (7, 1, fx.dev_ids[0])
    );
    fx.ictx.device_detach(fx.dev_ids[0], 7).unwrap();
    fx.assert_answered(&[(1, Invalid), (2, Invalid)]);
    assert_eq!(
        fx.ictx.attached_hwpt(fx.dev_ids[0], RID).unwrap(),
        Some(rid)
    );
}

#[test]
fn unbind_detaches_and_auto_responds() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.report_group(0, RID, 1, 0);
    read_records(&fd, 1);
    fx.report_group(0, RID, 2, 0);
    fx.ictx.unbind_device(fx.dev_ids[0]).unwrap();
    fx.assert_answered(&[(1, Invalid), (2, Invalid)]);
    assert_eq!(fx.ictx.destroy(hwpt), Ok(()));
}

#[test]
fn closing_the_endpoint_answers_read_and_queued_groups_and_later_arrivals() {
    let fx = Fx::new(1);
    let (fault_id, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    for g in 1..=3 {
        fx.report_group(0, RID, g, 0);
    }
    read_records(&fd, 2);
    fd.write(&responses(&[(1, OK)])).unwrap();
    drop(fd);
    fx.assert_answered(&[(1, Success), (2, Invalid), (3, Invalid)]);
    fx.report_group(0, RID, 4, 0);
    fx.assert_answered(&[(1, Success), (2, Invalid), (3, Invalid), (4, Invalid)]);
    // Detach later finds nothing left to answer twice.
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    fx.ictx.destroy(hwpt).unwrap();
    fx.ictx.destroy(fault_id).unwrap();
    assert_eq!(fx.responses().values().map(Vec::len).sum::<usize>(), 4);
}

#[test]
fn dropping_the_context_answers_everything_left_once() {
    let fx = Fx::new(2);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    let (_, fd1, hwpt1) = fx.fault_hwpt(1, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.ictx.device_attach(fx.dev_ids[1], RID, hwpt1).unwrap();
    fx.report_group(0, RID, 1, 0);
    fx.report_group(0, RID, 2, 0);
    fx.report_group(1, RID, 3, 0);
    read_records(&fd, 1);
    let Fx { ictx, mock, .. } = fx;
    drop(ictx);
    let mut got: Vec<_> = mock
        .responses()
        .iter()
        .map(|(_, r)| (r.grpid, r.code))
        .collect();
    got.sort_by_key(|&(g, _)| g);
    assert_eq!(got, [(1, Invalid), (2, Invalid), (3, Invalid)]);
    assert_eq!((fd.pending(), fd.unanswered(), fd1.pending()), (0, 0, 0));
    drop((fd, fd1));
    assert_eq!(mock.responses().len(), 3);
}

#[test]
fn group_attachment_shared_by_two_devices_auto_responds_when_the_last_leaves() {
    let fx = Fx::with_groups(&[2]);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.ictx.device_attach(fx.dev_ids[1], RID, hwpt).unwrap();
    fx.report_group(1, RID, 1, 0);
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    fx.assert_answered(&[]);
    assert_eq!(fd.pending(), 1);
    fx.ictx.device_detach(fx.dev_ids[1], RID).unwrap();
    fx.assert_answered(&[(1, Invalid)]);
}

/// A reader/responder, a reporter and a detach racing: every reported group is answered
/// exactly once, by user space or by auto-response.
#[test]
fn racing_reader_reporter_and_detach_answer_every_group_exactly_once() {
    for round in 0..20 {
        let fx = Arc::new(Fx::new(1));
        let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
        fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
        let fd = Arc::new(fd);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (fd, done) = (fd.clone(), done.clone());
            thread::spawn(move || loop {
                let finished = done.load(Ordering::SeqCst);
                let recs = read_records(&fd, 8);
                let resp: Vec<(u32, u32)> = recs.iter().map(|r| (r.cookie, OK)).collect();
                let _ = fd.write(&responses(&resp));
                if finished && recs.is_empty() {
                    break;
                }
            })
        };
        let reporter = {
            let fx = fx.clone();
            thread::spawn(move || {
                let mut reported = 0u32;
                for g in 1..=200 {
                    let req = iommu_core::PageRequest {
                        flags: iommu_core::IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
                        pasid: 0,
                        grpid: g,
                        perm: 1,
                        addr: 0,
                    };
                    if iommu_core::report_device_fault(&fx.devs[0], req).is_ok() {
                        reported += 1;
                    }
                }
                reported
            })
        };
        if round % 2 == 0 {
            thread::yield_now();
        }
        fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
        reporter.join().unwrap();
        done.store(true, Ordering::SeqCst);
        reader.join().unwrap();
        let per_group = fx.responses();
        assert_eq!(per_group.len(), 200, "every group answered");
        assert!(per_group.values().all(|v| v.len() == 1), "none twice");
        assert_eq!((fd.pending(), fd.unanswered()), (0, 0));
    }
}

/// SPEC §6.4 (the CVE-2026-74520 shape): fault reporting disabled under iommufd's feet while it
/// holds queued and read groups — the groups stay iommufd's alone and are answered once.
#[test]
fn iopf_disable_while_iommufd_holds_groups_answers_each_once() {
    let fx = Fx::new(1);
    let (_, fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    fx.report_group(0, RID, 1, 0);
    fx.report_group(0, RID, 2, 0);
    read_records(&fd, 1);
    iommu_core::iopf_disable(&fx.devs[0]).unwrap();
    fx.assert_answered(&[]);
    fd.write(&responses(&[(1, OK)])).unwrap();
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    fx.assert_answered(&[(1, Success), (2, Invalid)]);
}

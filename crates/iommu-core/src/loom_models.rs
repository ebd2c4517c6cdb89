//! Model checks of the attach/lookup protocol, and of the IOPF queue's run-to-completion
//! protocol (helpers, lazy wakes, flush), under every interleaving loom can produce.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p iommu-core --release loom`.
//!
//! The group lock, the PASID-array lock and the device's group link are loom primitives under
//! `--cfg loom` (see `crate::sync`), so these models explore every order in which a lookup can
//! meet a configuration change. The mock driver's own lock is never held across a loom
//! operation, so it does not hide interleavings.

use alloc::sync::Arc;

use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::thread;

use crate::mock::MockDriver;
use crate::{
    attach_device_pasid, attach_handle_get, detach_device_pasid, replace_device_pasid, Domain,
    Group, IommuDriver,
};

#[derive(Debug)]
struct OwnerA(u32);
#[derive(Debug)]
struct OwnerB(u32);

fn setup() -> (Arc<Group>, Arc<crate::Device>, Arc<Domain>, Arc<Domain>) {
    let iommu: Arc<dyn IommuDriver> = MockDriver::new("loom");
    let group = Group::new(iommu, "g");
    let dev = group.add_device("d", 16).unwrap();
    let a = Domain::alloc_paging(&dev).unwrap();
    let b = Domain::alloc_paging(&dev).unwrap();
    (group, dev, a, b)
}

/// (a) A typed lookup racing detach (and a re-attach by another owner type) never returns the
/// detached attachment once detach has returned, and never a handle of the wrong type: it
/// returns the live A handle, ENOENT, or EBUSY (slot now owned by B).
#[test]
fn loom_typed_lookup_racing_detach() {
    loom::model(|| {
        let (group, dev, a, b) = setup();
        let h = attach_device_pasid(&a, &dev, 1, OwnerA(1)).unwrap();
        let detached = Arc::new(AtomicBool::new(false));

        let owner = {
            let (dev, a, b, detached) = (dev.clone(), a.clone(), b.clone(), detached.clone());
            thread::spawn(move || {
                let old = detach_device_pasid(&a, &dev, 1).unwrap();
                detached.store(true, SeqCst);
                drop(old); // the owner frees its attachment
                attach_device_pasid(&b, &dev, 1, OwnerB(2)).unwrap();
            })
        };

        let detach_returned = detached.load(SeqCst);
        match attach_handle_get::<OwnerA>(&group, 1) {
            Ok(got) => {
                assert!(
                    !detach_returned,
                    "lookup found an attachment detached before it began"
                );
                assert!(Arc::ptr_eq(&got, &h));
                assert_eq!(got.0, 1); // still readable: the counted reference keeps it alive
            }
            Err(e) => assert!(matches!(e.errno_name(), "ENOENT" | "EBUSY"), "{e}"),
        }
        if let Ok(got) = attach_handle_get::<OwnerB>(&group, 1) {
            assert_eq!((got.0, got.domain().id()), (2, b.id()));
        }
        owner.join().unwrap();
        let err = attach_handle_get::<OwnerA>(&group, 1).unwrap_err();
        assert_eq!(err.errno_name(), "EBUSY");
    });
}

/// (b) Two concurrent attaches to one PASID: exactly one wins, the other gets EBUSY, and the
/// loser never reached the hardware.
#[test]
fn loom_concurrent_attach_exactly_one_wins() {
    loom::model(|| {
        let iommu = MockDriver::new("loom");
        let group = Group::new(iommu.clone(), "g");
        let dev = group.add_device("d", 16).unwrap();
        let a = Domain::alloc_paging(&dev).unwrap();
        let b = Domain::alloc_paging(&dev).unwrap();

        let t = {
            let (dev, b) = (dev.clone(), b.clone());
            thread::spawn(move || attach_device_pasid(&b, &dev, 5, OwnerB(2)).map(|_| ()))
        };
        let mine = attach_device_pasid(&a, &dev, 5, OwnerA(1)).map(|_| ());
        let theirs = t.join().unwrap();

        let (winner, loser) = match (&mine, &theirs) {
            (Ok(()), Err(e)) => (a.id(), e),
            (Err(e), Ok(())) => (b.id(), e),
            other => panic!("exactly one attach must win: {other:?}"),
        };
        assert_eq!(loser.errno_name(), "EBUSY");
        let hw = iommu.hw();
        assert_eq!(hw.pasids.get(&(dev.id(), 5)), Some(&winner));
        let programmed = iommu
            .calls()
            .iter()
            .filter(|c| matches!(c, crate::mock::Call::SetDevPasid { pasid: 5, .. }))
            .count();
        assert_eq!(programmed, 1, "the loser must not program the hardware");
        assert!(iommu.contract_violations().is_empty());
    });
}

/// A replace is atomic for lookups: a racing lookup sees the old or the new handle, never an
/// empty slot.
#[test]
fn loom_replace_never_exposes_an_empty_slot() {
    loom::model(|| {
        let (group, dev, a, b) = setup();
        let old = attach_device_pasid(&a, &dev, 3, OwnerA(1)).unwrap();
        let t = {
            let (dev, b) = (dev.clone(), b.clone());
            thread::spawn(move || replace_device_pasid(&b, &dev, 3, OwnerA(2)).unwrap().new)
        };
        let seen = attach_handle_get::<OwnerA>(&group, 3).expect("never empty during replace");
        let new = t.join().unwrap();
        assert!(Arc::ptr_eq(&seen, &old) || Arc::ptr_eq(&seen, &new));
    });
}

/// An owner's fault queue, as iommufd keeps one: the handler only enqueues; the owner answers.
struct OwnerQueue {
    groups: loom::sync::Mutex<alloc::vec::Vec<crate::IopfGroup>>,
    detach_returned: Arc<AtomicBool>,
    delivered_late: AtomicBool,
}

impl crate::IopfHandler for OwnerQueue {
    fn name(&self) -> &str {
        "owner-queue"
    }
    fn handle_iopf(&self, group: crate::IopfGroup) -> Result<(), crate::IopfGroup> {
        if self.detach_returned.load(SeqCst) {
            self.delivered_late.store(true, SeqCst);
        }
        self.groups.lock().unwrap().push(group);
        Ok(())
    }
}

/// Report vs detach (the seed thread's use-after-free, and iommufd's auto-response): a page
/// request reported while its PASID is detached is either delivered before detach returns (and
/// then answered by the owner's auto-response) or answered Invalid by the core; never delivered
/// after detach returned, and answered exactly once either way.
#[test]
fn loom_report_racing_detach_answers_every_group_exactly_once() {
    use crate::{iopf_enable, report_device_fault, DomainRequest, PageRequest, PageResponseCode};
    use crate::{IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID};

    loom::model(|| {
        let iommu = MockDriver::new("loom");
        let group = Group::new(iommu.clone(), "g");
        let dev = group.add_device("d", 16).unwrap();
        let detach_returned = Arc::new(AtomicBool::new(false));
        let queue = Arc::new(OwnerQueue {
            groups: loom::sync::Mutex::new(alloc::vec::Vec::new()),
            detach_returned: detach_returned.clone(),
            delivered_late: AtomicBool::new(false),
        });
        let req = DomainRequest::Paging { dma_api: false };
        let dom = Domain::alloc(
            &dev,
            req,
            Some(queue.clone() as Arc<dyn crate::IopfHandler>),
        )
        .unwrap();
        attach_device_pasid(&dom, &dev, 1, OwnerA(1)).unwrap();
        iopf_enable(&dev).unwrap();

        let reporter = {
            let dev = dev.clone();
            thread::spawn(move || {
                let flags =
                    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE;
                let r = PageRequest {
                    flags,
                    pasid: 1,
                    grpid: 7,
                    perm: 1,
                    addr: 0x1000,
                };
                report_device_fault(&dev, r)
            })
        };

        detach_device_pasid(&dom, &dev, 1).unwrap();
        detach_returned.store(true, SeqCst);
        // Auto-response: answer everything queued for the detached attachment.
        let queued = core::mem::take(&mut *queue.groups.lock().unwrap());
        for g in queued {
            g.respond(PageResponseCode::Invalid);
        }

        let reported = reporter.join().unwrap();
        assert!(
            !queue.delivered_late.load(SeqCst),
            "delivered after detach returned"
        );
        assert!(
            queue.groups.lock().unwrap().is_empty(),
            "a group escaped auto-response"
        );
        let responses = iommu.responses();
        assert_eq!(
            responses.len(),
            1,
            "exactly one response: {responses:?} ({reported:?})"
        );
        assert_eq!(responses[0].1.code, PageResponseCode::Invalid);
    });
}

struct LoomMm {
    iommu: crate::MmIommuData,
}

impl crate::AddressSpace for LoomMm {
    fn mm_id(&self) -> u64 {
        1
    }
    fn iommu_mm(&self) -> &crate::MmIommuData {
        &self.iommu
    }
    fn handle_mm_fault(&self, _addr: u64, _perm: u32) -> crate::Result<()> {
        Ok(())
    }
}

/// Bind vs unbind of the same bond: one thread gives back its bind while another binds the same
/// (device, mm). Whatever the order, the second bind ends up with a live, programmed bond
/// counted once, and giving it back leaves nothing attached, no SVA domain, and the PASID still
/// with the mm.
#[test]
fn loom_bind_racing_unbind_of_the_same_bond() {
    use crate::{attach_handle_get_any, sva_bind_device, AddressSpace};

    loom::model(|| {
        let iommu = MockDriver::new("loom");
        let group = Group::new(iommu.clone(), "g");
        let dev = group.add_device("d", 16).unwrap();
        let mm: Arc<dyn AddressSpace> = Arc::new(LoomMm {
            iommu: Default::default(),
        });
        let first = sva_bind_device(&dev, &mm).unwrap();
        let pasid = first.pasid();

        let unbinder = thread::spawn(move || first.unbind());
        let second = sva_bind_device(&dev, &mm).unwrap();
        unbinder.join().unwrap();

        assert_eq!(second.pasid(), pasid);
        assert_eq!(second.data().users(), 1);
        let slot = attach_handle_get_any(&group, pasid).unwrap();
        assert!(Arc::ptr_eq(slot.domain(), second.domain()));
        assert_eq!(
            iommu.hw().pasids.get(&(dev.id(), pasid)),
            Some(&second.domain().id())
        );
        assert_eq!(mm.iommu_mm().domain_count(), 1);

        second.unbind();
        assert_eq!(group.pasid_attachments(), 0);
        assert!(iommu.hw().pasids.is_empty());
        assert_eq!(mm.iommu_mm().domain_count(), 0);
        assert_eq!(mm.iommu_mm().pasid(), Some(pasid));
        assert!(iommu.contract_violations().is_empty());
    });
}

/// The IOPF queue's run-to-completion protocol (`iopf_queue.rs`, "Waking"): a handler that
/// queues its group on the device's IOPF queue, for the models below.
struct QueueIt;

impl crate::IopfHandler for QueueIt {
    fn name(&self) -> &str {
        "queue-it"
    }
    fn handle_iopf(&self, group: crate::IopfGroup) -> Result<(), crate::IopfGroup> {
        // The path the SVA handler takes (helper shortcut included).
        crate::iopf_queue::IopfQueue::submit_to_device_queue(group, |g| {
            g.respond(crate::PageResponseCode::Success)
        })
    }
}

/// A device on a one-worker IOPF queue, with a fault-capable RID attachment queueing there.
fn queued_device() -> (
    Arc<MockDriver>,
    Arc<Group>,
    Arc<crate::Device>,
    Arc<Domain>,
    Arc<crate::IopfQueue>,
) {
    let iommu = MockDriver::new("loom");
    let group = Group::new(iommu.clone(), "g");
    let dev = group.add_device("d", 16).unwrap();
    let handler: Arc<dyn crate::IopfHandler> = Arc::new(QueueIt);
    let dom = Domain::alloc(
        &dev,
        crate::DomainRequest::Paging { dma_api: false },
        Some(handler),
    )
    .unwrap();
    crate::attach_group_handle(&dom, &group, ()).unwrap();
    let queue = crate::IopfQueue::new("loom", 1).unwrap();
    crate::iopf_queue_add_device(&queue, &dev).unwrap();
    (iommu, group, dev, dom, queue)
}

fn last_request() -> crate::PageRequest {
    crate::PageRequest {
        flags: crate::IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
        grpid: 1,
        addr: 0x1000,
        ..Default::default()
    }
}

/// (h1) A helper that queues work and leaves without running it hands it to the worker: a
/// flush after it returns waits for the work, which answers the group exactly once; nothing
/// sleeps for ever (loom reports a deadlock otherwise).
#[test]
fn loom_helper_leftovers_reach_the_worker() {
    loom::model(|| {
        let (iommu, _group, dev, _dom, queue) = queued_device();
        let reporter = {
            let (dev, queue) = (dev.clone(), queue.clone());
            thread::spawn(move || {
                let helper = queue.help().expect("a threaded queue");
                crate::report_device_fault(&dev, last_request()).unwrap();
                drop(helper);
            })
        };
        reporter.join().unwrap();
        // Nothing here wakes the worker (a flush or a shutdown would): the helper's drop did.
        while iommu.responses().is_empty() {
            thread::yield_now();
        }
        crate::iopf_queue_flush_dev(&dev).unwrap();
        queue.shutdown();
        assert_eq!(iommu.responses().len(), 1);
    });
}

/// (h2) A helper runs the work it queued itself while a flusher waits for the device's work:
/// the flush returns (the count reaches zero and the flusher is woken, never lost), and the
/// group is answered exactly once whether the helper or the worker ran it.
#[test]
fn loom_helper_runs_its_work_while_a_flush_waits() {
    loom::model(|| {
        let (iommu, _group, dev, _dom, queue) = queued_device();
        let helper_thread = {
            let (dev, queue) = (dev.clone(), queue.clone());
            thread::spawn(move || {
                let helper = queue.help().expect("a threaded queue");
                crate::report_device_fault(&dev, last_request()).unwrap();
                while helper.run_one() {}
            })
        };
        crate::iopf_queue_flush_dev(&dev).unwrap();
        helper_thread.join().unwrap();
        crate::iopf_queue_flush_dev(&dev).unwrap();
        assert_eq!(iommu.responses().len(), 1);
        queue.shutdown();
    });
}

/// (h3) Work queued by a thread that does not help wakes the sleeping worker: no lost wake-up
/// between the worker deciding to sleep and the submit.
#[test]
fn loom_plain_submit_wakes_the_worker() {
    loom::model(|| {
        let (iommu, _group, dev, _dom, queue) = queued_device();
        let reporter = {
            let dev = dev.clone();
            thread::spawn(move || crate::report_device_fault(&dev, last_request()).unwrap())
        };
        reporter.join().unwrap();
        // Nothing here wakes the worker (a flush or a shutdown would): only the submit did.
        while iommu.responses().is_empty() {
            thread::yield_now();
        }
        crate::iopf_queue_flush_dev(&dev).unwrap();
        assert_eq!(iommu.responses().len(), 1);
        queue.shutdown();
    });
}

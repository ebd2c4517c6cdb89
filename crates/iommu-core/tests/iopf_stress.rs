//! Report vs detach on real threads, the companion of the loom model
//! `loom_report_racing_detach_answers_every_group_exactly_once`: a reporter fires page request
//! groups at a PASID that an owner keeps attaching, detaching and auto-responding. Every group
//! is answered exactly once, and none is delivered to an owner after its detach returned.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;

use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, detach_device_pasid, iopf_enable, report_device_fault, Domain,
    DomainRequest, Group, IopfGroup, IopfHandler, PageRequest, PageResponseCode,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
};

const REPORTS: u32 = 20_000;

struct Owner {
    queue: Mutex<Vec<(u64, IopfGroup)>>,
    /// Generation of the attachment whose detach last returned.
    detached_gen: AtomicU64,
    late: AtomicBool,
}

impl IopfHandler for Owner {
    fn name(&self) -> &str {
        "stress-owner"
    }
    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup> {
        let gen = **group.handle::<u64>().expect("owner type");
        if gen <= self.detached_gen.load(SeqCst) {
            self.late.store(true, SeqCst);
        }
        self.queue.lock().unwrap().push((gen, group));
        Ok(())
    }
}

#[test]
fn every_group_answered_once_and_none_delivered_after_detach() {
    let iommu = MockDriver::new("stress");
    let group = Group::new(iommu.clone(), "g");
    let dev = group.add_device("d", 64).unwrap();
    let owner = Arc::new(Owner {
        queue: Mutex::new(Vec::new()),
        detached_gen: AtomicU64::new(0),
        late: AtomicBool::new(false),
    });
    let req = DomainRequest::Paging { dma_api: false };
    let dom = Domain::alloc(&dev, req, Some(owner.clone() as Arc<dyn IopfHandler>)).unwrap();
    iopf_enable(&dev).unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let reporter = {
        let (dev, done) = (dev.clone(), done.clone());
        thread::spawn(move || {
            let flags = IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE;
            for i in 0..REPORTS {
                let r = PageRequest {
                    flags,
                    pasid: 3,
                    grpid: i % 512,
                    perm: 1,
                    addr: 0,
                };
                let _ = report_device_fault(&dev, r); // Err: answered Invalid by the core
            }
            done.store(true, SeqCst);
        })
    };

    let mut gen = 0u64;
    while !done.load(SeqCst) {
        gen += 1;
        attach_device_pasid(&dom, &dev, 3, gen).unwrap();
        // Answer some groups while attached, as a live owner does.
        for (_, g) in std::mem::take(&mut *owner.queue.lock().unwrap()) {
            g.respond(PageResponseCode::Success);
        }
        detach_device_pasid(&dom, &dev, 3).unwrap();
        owner.detached_gen.store(gen, SeqCst);
        // Auto-response of everything the detached attachment still holds.
        for (_, g) in std::mem::take(&mut *owner.queue.lock().unwrap()) {
            g.respond(PageResponseCode::Invalid);
        }
    }
    reporter.join().unwrap();
    assert!(
        !owner.late.load(SeqCst),
        "a group was delivered after its detach returned"
    );
    assert!(owner.queue.lock().unwrap().is_empty());
    assert_eq!(
        iommu.responses().len(),
        REPORTS as usize,
        "one response per group"
    );
}

//! Stress test of typed lookups against attach/detach/replace churn on real threads: the
//! run-time companion of the loom models in `src/loom_models.rs`.
//!
//! Each attachment carries a generation; the churn thread publishes "generation g is detached"
//! only after detach (or replace) of g returned. A lookup that starts after that must never
//! return g, and must never return a handle of the type it did not ask for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;

use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_handle_get, detach_device_pasid, replace_device_pasid, Domain,
    Group, IommuDriver,
};

struct Fd(u64);
struct Sva(u64);

const CHURN_ROUNDS: u64 = 20_000;
const PASID: u32 = 11;

#[test]
fn lookups_never_see_an_attachment_detached_before_they_began() {
    let iommu: Arc<dyn IommuDriver> = MockDriver::new("stress");
    let group = Group::new(iommu, "g");
    let dev = group.add_device("d", 64).unwrap();
    let doms = [
        Domain::alloc_paging(&dev).unwrap(),
        Domain::alloc_paging(&dev).unwrap(),
    ];
    let retired = Arc::new(AtomicU64::new(0)); // highest generation known detached
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (group, retired, done) = (group.clone(), retired.clone(), done.clone());
            thread::spawn(move || {
                let (mut hits, mut misses) = (0u64, 0u64);
                while !done.load(SeqCst) {
                    let floor = retired.load(SeqCst);
                    match attach_handle_get::<Fd>(&group, PASID) {
                        Ok(h) => {
                            assert!(
                                h.0 > floor,
                                "got gen {} after gen {floor} was detached",
                                h.0
                            );
                            hits += 1;
                        }
                        Err(e) => {
                            assert!(matches!(e.errno_name(), "ENOENT" | "EBUSY"));
                            misses += 1;
                        }
                    }
                    if let Ok(h) = attach_handle_get::<Sva>(&group, PASID) {
                        assert!(h.0 > floor);
                    }
                }
                (hits, misses)
            })
        })
        .collect();

    for gen in 1..=CHURN_ROUNDS {
        let dom = &doms[(gen % 2) as usize];
        // Alternate owner types and operations: attach Fd, replace by Sva, detach.
        attach_device_pasid(dom, &dev, PASID, Fd(gen * 2)).unwrap();
        let r = replace_device_pasid(
            &doms[((gen + 1) % 2) as usize],
            &dev,
            PASID,
            Sva(gen * 2 + 1),
        )
        .unwrap();
        retired.store(gen * 2, SeqCst); // the Fd attachment is gone
        detach_device_pasid(r.new.domain(), &dev, PASID).unwrap();
        retired.store(gen * 2 + 1, SeqCst);
    }
    done.store(true, SeqCst);
    let (hits, misses) = readers
        .into_iter()
        .map(|r| r.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(hits + misses > 0);
    assert_eq!(group.pasid_attachments(), 0);
}

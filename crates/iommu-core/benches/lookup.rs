//! The fault path's lookup: `attach_handle_get` against the floor of an uncontended map
//! lookup that returns the same counted reference, with 1,024 live PASIDs (as in ANCHORS.md),
//! alone and while another thread churns attach/detach on the same group.
//!
//! Run: `cargo bench -p iommu-core --bench lookup`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion};
use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_handle_get, detach_device_pasid, AttachHandle, Domain, Group,
    IommuDriver,
};

const LIVE: u32 = 1024;

struct Owner(u32);

fn lookup(c: &mut Criterion) {
    let iommu: Arc<dyn IommuDriver> = MockDriver::new("bench");
    let group = Group::new(iommu, "g");
    let dev = group.add_device("d", 1 << 20).unwrap();
    let dom = Domain::alloc_paging(&dev).unwrap();
    let mut floor: HashMap<u32, Arc<AttachHandle<Owner>>> = HashMap::new();
    for pasid in 1..=LIVE {
        let h = attach_device_pasid(&dom, &dev, pasid, Owner(pasid)).unwrap();
        floor.insert(pasid, h);
    }

    let mut g = c.benchmark_group("pasid_lookup_1024_live");
    let mut pasid = 0u32;
    let mut next = move || {
        pasid = pasid % LIVE + 1;
        pasid
    };
    g.bench_function("floor_hashmap_get_clone", |b| {
        b.iter(|| black_box(floor.get(&black_box(next())).cloned()))
    });
    g.bench_function("attach_handle_get", |b| {
        b.iter(|| black_box(attach_handle_get::<Owner>(&group, black_box(next())).map(|h| h.0)))
    });
    g.bench_function("attach_handle_get_wrong_type_ebusy", |b| {
        b.iter(|| black_box(attach_handle_get::<u8>(&group, black_box(next())).is_err()))
    });

    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (dev, dom, stop) = (dev.clone(), dom.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = LIVE + 1 + (n % 64) as u32;
                attach_device_pasid(&dom, &dev, p, Owner(p)).unwrap();
                detach_device_pasid(&dom, &dev, p).unwrap();
                n += 1;
            }
            n
        })
    };
    g.bench_function("attach_handle_get_under_attach_detach_churn", |b| {
        b.iter(|| black_box(attach_handle_get::<Owner>(&group, black_box(next())).ok()))
    });
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);

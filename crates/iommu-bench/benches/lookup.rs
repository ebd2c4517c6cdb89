//! The fault path's lookup (`iommu_bench::lookup`): `attach_handle_get` with 1,024 live PASIDs
//! against an uncontended `HashMap` get returning the same counted reference, alone and under
//! attach/detach churn on the same group.
//!
//! Run: `cargo bench -p iommu-bench --bench lookup`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use iommu_bench::lookup::{pick, Lookup};

fn lookup(c: &mut Criterion) {
    let w = Lookup::new();
    let mut g = c.benchmark_group("pasid_lookup_1024_live");
    let mut i = 0u64;
    let mut next = move || {
        i += 1;
        pick(i)
    };
    g.bench_function("floor_hashmap_get_clone", |b| {
        b.iter(|| black_box(w.floor(black_box(next()))))
    });
    g.bench_function("attach_handle_get", |b| {
        b.iter(|| black_box(w.get(black_box(next()))))
    });
    g.bench_function("attach_handle_get_wrong_type_ebusy", |b| {
        b.iter(|| black_box(w.get_wrong_type(black_box(next()))))
    });
    let churn = w.churn();
    g.bench_function("attach_handle_get_under_attach_detach_churn", |b| {
        b.iter(|| black_box(w.get(black_box(next()))))
    });
    drop(churn);
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);

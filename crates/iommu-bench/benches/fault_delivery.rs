//! The user-space fault round trip through the fault fd (`iommu_bench::fault_fd`), in batches of
//! 1, 16 and 256 one-fault groups, and the core-only floor.
//!
//! Targets (ANCHORS.md): ≥ 1 M records/s one at a time, ≥ 5 M records/s in batches of 256.
//!
//! Run: `cargo bench -p iommu-bench --bench fault_delivery -- --warm-up-time 1 --measurement-time 3`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iommu_bench::fault_fd::{CoreFloor, FdRoundTrip};

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("fault_round_trip");
    for batch in [1usize, 16, 256] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                let mut w = FdRoundTrip::new(batch);
                let start = Instant::now();
                for _ in 0..iters {
                    w.round();
                }
                let t = start.elapsed();
                w.finish();
                t
            })
        });
    }
    g.finish();
}

fn core_floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_floor");
    g.throughput(Throughput::Elements(256));
    g.bench_function("batch_256", |b| {
        b.iter_custom(|iters| {
            let mut w = CoreFloor::new();
            let start = Instant::now();
            for _ in 0..iters {
                w.round(256);
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = round_trip, core_floor
}
criterion_main!(benches);

//! What one uncontended synchronisation operation costs on this machine, in a tight loop on
//! one thread: the unit the fault path's per-group cost is made of (see BENCHMARKS.md, "Where
//! the time goes now"). Best of 3 runs of 20 M operations each.
//!
//! `cargo run --release -p iommu-bench --example atomics_probe`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

const N: u32 = 20_000_000;

fn best_ns(mut op: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..N {
                op();
            }
            t.elapsed().as_nanos() as f64 / f64::from(N)
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let word = AtomicU64::new(0);
    let mutex = parking_lot::Mutex::new(0u64);
    let rwlock = parking_lot::RwLock::new(0u64);
    let arc = Arc::new(0u64);
    let rows: [(&str, f64); 5] = [
        (
            "load + store (no lock prefix)",
            best_ns(|| {
                let w = black_box(&word);
                w.store(w.load(Relaxed) + 1, Relaxed);
            }),
        ),
        (
            "fetch_add (one locked RMW)",
            best_ns(|| {
                black_box(&word).fetch_add(1, Relaxed);
            }),
        ),
        (
            "parking_lot Mutex lock + unlock",
            best_ns(|| *black_box(&mutex).lock() += 1),
        ),
        (
            "parking_lot RwLock read + unlock",
            best_ns(|| {
                black_box(*black_box(&rwlock).read());
            }),
        ),
        (
            "Arc clone + drop",
            best_ns(|| drop(black_box(black_box(&arc).clone()))),
        ),
    ];
    for (name, ns) in rows {
        println!("{name:34} {ns:5.2} ns");
    }
}

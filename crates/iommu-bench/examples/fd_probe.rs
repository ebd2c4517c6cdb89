//! Times the iommufd fault fd round trip ([`iommu_bench::fault_fd`]) quickly, for profiling:
//! best of 5. `cargo run --release -p iommu-bench --example fd_probe -- [BATCH]`.

use iommu_bench::fault_fd::FdRoundTrip;
fn main() {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let mut w = FdRoundTrip::new(batch);
    let rounds = 4_000_000 / batch;
    for _ in 0..rounds / 10 {
        w.round();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            w.round();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (rounds * batch) as f64);
    }
    println!("batch {batch}: {best:.1} ns/record ({:.2} M/s)", 1e3 / best);
    w.finish();
}

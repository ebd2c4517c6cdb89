//! Times the iommufd fault fd round trip ([`iommu_bench::fault_fd`]) quickly, for profiling:
//! best of 5. `cargo run --release -p iommu-bench --example fd_probe -- [BATCH]`.

use iommu_bench::fault_fd::FdRoundTrip;
use iommu_bench::probe_args::Probe;

/// Records per timed run.
const RECORDS: usize = 4_000_000;

const PROBE: Probe = Probe {
    name: "fd_probe",
    usage: "[BATCH 1-4000000]",
};

fn main() {
    let batch: usize = PROBE.arg(1, "BATCH", 256, 1..=RECORDS);
    PROBE.at_most(1);
    let mut w = FdRoundTrip::new(batch);
    let rounds = RECORDS / batch;
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

//! Times the end-to-end fault-group workload ([`iommu_bench::e2e`]) quickly, for profiling
//! (`perf record -g`) and for comparing commits: best of 3 runs.
//!
//! `cargo run --release -p iommu-bench --example e2e_probe -- [GROUPS] [IN_FLIGHT] [p|f]`
//! (`p`: pages prepared off the path, `f`: fresh zeroed pages; default: 1, 4, 16, 64 and 256
//! in flight, both kinds). `THREADS=N` splits the jobs over N DMA threads sharing one device
//! (each drives IN_FLIGHT / N jobs, at least one, on chunks of its own; the threads fault each
//! chunk together and the wall-clock time counts, as in `E2e::run_at_once`).

use iommu_bench::e2e::{E2e, Pages};
use iommu_bench::probe_args::Probe;

const PROBE: Probe = Probe {
    name: "e2e_probe",
    usage: "[GROUPS] [IN_FLIGHT 1-512] [p|f]   (THREADS=1-64 in the environment)",
};

fn main() {
    let n: u64 = PROBE.arg(1, "GROUPS", 200_000, 1..=10_000_000_000);
    let only: Option<usize> = std::env::args()
        .nth(2)
        .map(|a| PROBE.number("IN_FLIGHT", &a, 1..=512));
    let kinds = match PROBE.word(3, "the page kind", &["p", "f"]) {
        Some("p") => vec![Pages::Prepared],
        Some(_) => vec![Pages::Fresh],
        None => vec![Pages::Prepared, Pages::Fresh],
    };
    PROBE.at_most(3);
    let threads: usize = PROBE.env("THREADS", 1, 1..=64);
    if n < threads as u64 {
        PROBE.refuse(format_args!(
            "{n} groups cannot be split over {threads} threads"
        ));
    }
    let counts = only.map_or(vec![1usize, 4, 16, 64, 256], |o| vec![o]);
    for pages in kinds {
        for &in_flight in &counts {
            // With THREADS faulting at once, each thread's chunk is its share of 4,096 pages,
            // and the memory holds one chunk per thread (and one to spare).
            let w = E2e::with_runners(pages, 4096 / threads as u64, threads);
            w.run(n / 10, in_flight, None);
            // With several threads, each drives its share of the jobs (at least one) on its own
            // chunks; they fault each chunk together and the chunks' wall-clock time counts.
            let per = (in_flight / threads).max(1);
            let each = n / threads as u64;
            let runners = vec![&w; threads];
            let mut best = f64::MAX;
            for _ in 0..3 {
                let d = E2e::run_at_once(&runners, each, per);
                best = best.min(d.as_nanos() as f64 / (each * threads as u64) as f64);
            }
            let s = w.iommu_stats();
            let split = if threads > 1 {
                format!(" ({threads} threads of {per} each)")
            } else {
                String::new()
            };
            println!(
                "{pages:?} in_flight {in_flight}{split}: {best:.0} ns/group ({:.2} M/s); {:.0} % of walks from the paging-structure cache",
                1e3 / best,
                100.0 * s.psc_hits as f64 / s.iotlb_misses.max(1) as f64
            );
        }
    }
}

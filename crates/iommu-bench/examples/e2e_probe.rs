//! Times the end-to-end fault-group workload ([`iommu_bench::e2e`]) quickly, for profiling
//! (`perf record -g`) and for comparing commits: best of 3 runs.
//!
//! `cargo run --release -p iommu-bench --example e2e_probe -- [GROUPS] [IN_FLIGHT] [p|f]`
//! (`p`: pages prepared off the path, `f`: fresh zeroed pages; default: 1, 4, 16, 64 and 256
//! in flight, both kinds). `THREADS=N` splits the jobs over N DMA threads sharing one device
//! (each drives IN_FLIGHT / N jobs, at least one; the result line says so).

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
            let mut best = f64::MAX;
            for _ in 0..3 {
                // The slowest thread's timed share: the runs overlap.
                let w = &w;
                let d = std::thread::scope(|s| {
                    let per = (in_flight / threads).max(1);
                    let hs: Vec<_> = (0..threads)
                        .map(|_| s.spawn(move || w.run(n / threads as u64, per, None)))
                        .collect();
                    hs.into_iter()
                        .map(|h| h.join().expect("run"))
                        .max()
                        .unwrap_or_default()
                });
                best = best.min(d.as_nanos() as f64 / (n / threads as u64 * threads as u64) as f64);
            }
            let s = w.iommu_stats();
            // With several threads, each drives its share of the jobs (at least one).
            let split = if threads > 1 {
                format!(
                    " ({threads} threads of {} each)",
                    (in_flight / threads).max(1)
                )
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

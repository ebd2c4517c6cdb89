//! Times the end-to-end fault-group workload ([`iommu_bench::e2e`]) quickly, for profiling
//! (`perf record -g`) and for comparing commits: best of 3 runs.
//!
//! `cargo run --release -p iommu-bench --example e2e_probe -- [GROUPS] [IN_FLIGHT] [p|f]`
//! (`p`: pages prepared off the path, `f`: fresh zeroed pages; default: every in-flight count,
//! both kinds). `THREADS=N` splits the jobs over N DMA threads sharing one device.

use iommu_bench::e2e::{E2e, Pages};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let only: Option<usize> = args.get(2).and_then(|a| a.parse().ok());
    let kinds = match args.get(3).map(String::as_str) {
        Some("p") => vec![Pages::Prepared],
        Some("f") => vec![Pages::Fresh],
        _ => vec![Pages::Prepared, Pages::Fresh],
    };
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    for pages in kinds {
        for in_flight in [1usize, 4, 16, 64, 256] {
            if only.is_some_and(|o| o != in_flight) {
                continue;
            }
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
                best = best.min(d.as_nanos() as f64 / n as f64);
            }
            let s = w.iommu_stats();
            println!(
                "{pages:?} in_flight {in_flight}: {best:.0} ns/group ({:.2} M/s); {:.0} % of walks from the paging-structure cache",
                1e3 / best,
                100.0 * s.psc_hits as f64 / s.iotlb_misses.max(1) as f64
            );
        }
    }
}

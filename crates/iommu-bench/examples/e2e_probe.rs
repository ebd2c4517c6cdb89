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
    for pages in kinds {
        for inflight in [1usize, 4, 16, 64, 256] {
            if only.is_some_and(|o| o != inflight) {
                continue;
            }
            let w = E2e::new(pages, 4096);
            w.run(n / 10, inflight, None);
            let threads: usize = std::env::var("THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(1);
            let mut best = f64::MAX;
            for _ in 0..3 {
                let d = std::thread::scope(|s| {
                    let hs: Vec<_> = (0..threads)
                        .map(|_| {
                            s.spawn(|| w.run(n / threads as u64, (inflight / threads).max(1), None))
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
                });
                best = best.min(d.as_nanos() as f64 / n as f64);
            }
            println!(
                "{pages:?} in_flight {inflight}: {best:.0} ns/group ({:.2} M/s)",
                1e3 / best
            );
        }
    }
}
#[allow(dead_code)]
fn two() {}

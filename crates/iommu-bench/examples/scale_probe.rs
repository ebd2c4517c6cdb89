//! How the pipelined fault path scales across CPUs: the end-to-end workload
//! ([`iommu_bench::e2e`], prepared pages, 64 groups in flight per device) driven by one DMA
//! thread, then by two at once, each driving its own SVA-bound function. Best of 3 runs; the
//! figure is groups per second of all devices together.
//!
//! `cargo run --release -p iommu-bench --example scale_probe -- [GROUPS] [shared|independent]`
//! - `shared` (default): the second function sits behind the same IOMMU, IOPF queue and
//!   physical memory as the first ([`E2e::sibling`]): one machine with two devices.
//! - `independent`: a second, separate stack (its own IOMMU, queue and memory): what two CPUs
//!   give when nothing is shared, the ceiling for `shared`.

use iommu_bench::e2e::{E2e, Pages};

const IN_FLIGHT: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300_000);
    let shared = match args.get(2).map(String::as_str) {
        None | Some("shared") => true,
        Some("independent") => false,
        Some(other) => {
            eprintln!("scale_probe: unknown mode {other:?} (shared or independent)");
            std::process::exit(2);
        }
    };
    let chunk = 8192;
    for devices in [1usize, 2] {
        let first = E2e::new(Pages::Prepared, chunk);
        let mut stacks = vec![];
        if devices == 2 {
            stacks.push(if shared {
                first.sibling("dev1")
            } else {
                E2e::new(Pages::Prepared, chunk)
            });
        }
        stacks.push(first);
        for s in &stacks {
            s.run(n / 10, IN_FLIGHT, None);
        }
        let mut best = f64::MAX;
        for _ in 0..3 {
            // Each thread times only its fault groups (not its untimed munmaps); the runs
            // overlap, so the slowest thread's time is the time of all.
            let slowest = std::thread::scope(|scope| {
                let runs: Vec<_> = stacks
                    .iter()
                    .map(|s| scope.spawn(move || s.run(n, IN_FLIGHT, None)))
                    .collect();
                runs.into_iter()
                    .map(|r| r.join().expect("run"))
                    .max()
                    .unwrap_or_default()
            });
            best = best.min(slowest.as_nanos() as f64 / (n * devices as u64) as f64);
        }
        println!(
            "{} {devices} device(s), {IN_FLIGHT} in flight each: {best:.0} ns/group ({:.2} M groups/s)",
            if shared { "shared IOMMU," } else { "independent stacks," },
            1e3 / best
        );
    }
}

//! The latency of one fault, one at a time (prepared pages), in detail: percentiles down to
//! p99.99, the slowest, and how many took over 5 µs, for four runs of 200,000 faults after a
//! warm-up. `iommu-sim bench` reports p50/p99/p99.9 only; this shows where the tail is.
//!
//! `cargo run --release -p iommu-bench --example lat_probe -- [load]`
//! (`load`: every other CPU is kept busy beside the run, as `iommu-sim bench --load` does).

use std::io::Write;

use iommu_bench::e2e::{E2e, Pages};
use iommu_bench::probe_args::Probe;

const FAULTS: u64 = 200_000;

fn main() {
    let _load = Probe {
        name: "lat_probe",
        usage: "[load]",
    }
    .load_if_asked();
    let w = E2e::new(Pages::Prepared, 4096);
    w.run(FAULTS / 4, 1, None);
    for _ in 0..4 {
        let mut ns: Vec<u64> = Vec::with_capacity(FAULTS as usize);
        w.run(FAULTS, 1, Some(&mut |t| ns.push(t)));
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
        let line = format!(
            "p50 {} p99 {} p99.9 {} p99.99 {} max {} ns; over 5 µs: {}",
            at(0.5),
            at(0.99),
            at(0.999),
            at(0.9999),
            ns.last().copied().unwrap_or(0),
            ns.iter().filter(|&&t| t > 5_000).count()
        );
        // A closed pipe (`| head`) ends the probe quietly.
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return;
        }
    }
}

//! How often this machine takes the CPU away from a thread that never blocks: a loop that only
//! reads the clock for a second, counting the gaps between two reads longer than 5, 20 and
//! 40 µs. Those stalls are not the fault path's, yet they set the latency tail of any run
//! (`lat_probe`, the p99.9 of `iommu-sim bench`). Three seconds, one line each.
//!
//! `cargo run --release -p iommu-bench --example stall_probe -- [load]`
//! (`load`: every other CPU is kept busy meanwhile, as `iommu-sim bench --load` does).

use std::io::Write;
use std::time::{Duration, Instant};

use iommu_bench::probe_args::Probe;

fn main() {
    let _load = Probe {
        name: "stall_probe",
        usage: "[load]",
    }
    .load_if_asked();
    for _ in 0..3 {
        let (mut over5, mut over20, mut over40, mut lost, mut max) =
            (0, 0, 0, Duration::ZERO, Duration::ZERO);
        let start = Instant::now();
        let mut prev = start;
        while prev - start < Duration::from_secs(1) {
            let now = Instant::now();
            let gap = now - prev;
            prev = now;
            if gap > Duration::from_micros(5) {
                over5 += 1;
                lost += gap;
                max = max.max(gap);
                over20 += usize::from(gap > Duration::from_micros(20));
                over40 += usize::from(gap > Duration::from_micros(40));
            }
        }
        let secs = (prev - start).as_secs_f64();
        let line = format!(
            "{secs:.2} s: gaps over 5 µs {over5}, over 20 µs {over20}, over 40 µs {over40}; {:.1} % of the time lost; longest {} µs",
            100.0 * lost.as_secs_f64() / secs,
            max.as_micros()
        );
        // A closed pipe (`| head`) ends the probe quietly.
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return;
        }
    }
}

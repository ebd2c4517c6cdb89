//! How the pipelined fault path scales across CPUs: the end-to-end workload
//! ([`iommu_bench::e2e`], prepared pages, 64 groups in flight per device) driven by one DMA
//! thread, then by two at once, each driving its own SVA-bound function. Best of 3 runs; the
//! figure is groups per second of all devices together.
//!
//! `cargo run --release -p iommu-bench --example scale_probe -- [GROUPS] [shared|units|independent]`
//! - `shared` (default): the second function sits behind the same IOMMU, IOPF queue and
//!   physical memory as the first ([`E2e::sibling`]): one machine with two devices.
//! - `units`: the second function sits behind an IOMMU unit and IOPF queue of its own, over the
//!   same physical memory ([`E2e::other_unit`]): one machine with two IOMMU units.
//! - `independent`: a second, separate stack (its own IOMMU, queue and memory): what two CPUs
//!   give when nothing is shared, the ceiling for the other two.

use iommu_bench::e2e::{E2e, Pages};
use iommu_bench::probe_args::Probe;

const IN_FLIGHT: usize = 64;

const PROBE: Probe = Probe {
    name: "scale_probe",
    usage: "[GROUPS] [shared|units|independent]",
};

fn main() {
    let n: u64 = PROBE.arg(1, "GROUPS", 300_000, 1..=10_000_000_000);
    let mode = PROBE
        .word(2, "the mode", &["shared", "units", "independent"])
        .unwrap_or("shared");
    PROBE.at_most(2);
    let chunk = 8192;
    for devices in [1usize, 2] {
        let first = E2e::new(Pages::Prepared, chunk);
        let mut stacks = vec![];
        if devices == 2 {
            stacks.push(match mode {
                "shared" => first.sibling("dev1"),
                "units" => first.other_unit(),
                _ => E2e::new(Pages::Prepared, chunk),
            });
        }
        stacks.push(first);
        for s in &stacks {
            s.run(n / 10, IN_FLIGHT, None);
        }
        let stacks: Vec<&E2e> = stacks.iter().collect();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let slowest = E2e::run_at_once(&stacks, n, IN_FLIGHT);
            best = best.min(slowest.as_nanos() as f64 / (n * devices as u64) as f64);
        }
        let setting = match mode {
            "shared" => "one IOMMU,",
            "units" => "one IOMMU unit each, one memory,",
            _ => "independent stacks,",
        };
        println!(
            "{setting} {devices} device(s), {IN_FLIGHT} in flight each: {best:.0} ns/group ({:.2} M groups/s)",
            1e3 / best
        );
    }
}

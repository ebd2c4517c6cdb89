//! The fault path's figures (issue 10): its floors, end-to-end groups with 1 to 256 in flight
//! (pages prepared off the path, and fresh zeroed pages), two devices on two CPUs behind two
//! IOMMU units, the latency of one fault, and the iommufd fault fd — each measured in the same
//! run as its floor, quiet or under load.

use std::hint::black_box;
use std::time::Instant;

use hdrhistogram::Histogram;
use iommu_bench::e2e::{E2e, Pages};
use iommu_bench::fault_fd::FdRoundTrip;
use iommu_bench::floor::{Handoff, MemoryFloor, RoutingFloor};

use super::{median, Figure, RUNS};

/// Groups in flight of the end-to-end figures.
pub const IN_FLIGHT: [usize; 5] = [1, 4, 16, 64, 256];
/// Records per read/write of the fault fd figures.
pub const FD_BATCHES: [usize; 3] = [1, 16, 256];
/// Pages per chunk of the end-to-end runs (mapped before, unmapped after, untimed).
const CHUNK: u64 = 4096;
/// Groups in flight on each device of the two-unit figure.
pub const UNITS_IN_FLIGHT: usize = 64;
/// Where [`UNITS_IN_FLIGHT`] is in [`IN_FLIGHT`]: the two-unit figure's floor.
const UNITS_FLOOR: usize = 3;
const _: () = assert!(IN_FLIGHT[UNITS_FLOOR] == UNITS_IN_FLIGHT);

/// Latency percentiles of one fault, in ns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// Every figure of one pass, in ns per operation.
#[derive(Debug, Clone, Default)]
pub struct FaultFigures {
    /// The routing floor, per group, at each of [`IN_FLIGHT`].
    pub routing_floor: Vec<f64>,
    /// Zeroing plus writing one 4 KiB frame.
    pub memory_floor: f64,
    /// A cross-thread round trip.
    pub handoff_floor: f64,
    /// End-to-end groups, pages prepared off the path, at each of [`IN_FLIGHT`].
    pub routing: Vec<f64>,
    /// End-to-end groups with fresh zeroed pages, at each of [`IN_FLIGHT`].
    pub fresh: Vec<f64>,
    /// The fastest and slowest of the runs behind each `routing` median: how far this
    /// machine's noise moved the figure within the one pass.
    pub routing_runs: Vec<(f64, f64)>,
    /// The same for `fresh`.
    pub fresh_runs: Vec<(f64, f64)>,
    /// Two devices driven at once from two threads, each behind an IOMMU unit of its own over
    /// one physical memory, [`UNITS_IN_FLIGHT`] groups in flight each, pages prepared off the
    /// path: ns per group of both together (the machine's throughput, not one device's).
    pub two_units: f64,
    /// The fastest and slowest of the runs behind `two_units`.
    pub two_units_runs: (f64, f64),
    /// One fault at a time: each percentile the median of the runs' percentiles.
    pub latency: Latency,
    /// The lowest and highest p99.9 of those runs: a tail that one burst of this machine's
    /// noise moved shows here, not in the median.
    pub latency_p999_runs: (f64, f64),
    /// Fault fd records (read and answered), at each of [`FD_BATCHES`].
    pub fd: Vec<f64>,
}

/// The minimum of [`RUNS`] runs of `run` (floors keep the minimum; figures the median).
fn min_of(mut run: impl FnMut() -> f64) -> f64 {
    (0..RUNS).map(|_| run()).fold(f64::INFINITY, f64::min)
}

/// The routing floor with `in_flight` groups at a time: ns per group (minimum of runs).
fn routing_floor_ns(groups: u64, in_flight: usize) -> f64 {
    let mut f = RoutingFloor::new(CHUNK as usize);
    let rounds = (groups / in_flight as u64).max(1);
    let mut run = || {
        let t = Instant::now();
        let mut sum = 0;
        for r in 0..rounds {
            sum += f.groups((r as usize * in_flight) % CHUNK as usize, in_flight);
        }
        black_box(sum);
        t.elapsed().as_nanos() as f64 / (rounds * in_flight as u64) as f64
    };
    run();
    min_of(run)
}

/// The memory floor: ns per page (minimum of runs).
fn memory_floor_ns(pages: u64) -> f64 {
    let mut f = MemoryFloor::new(CHUNK as usize);
    let mut run = || {
        let t = Instant::now();
        let mut sum = 0u64;
        for i in 0..pages {
            sum += u64::from(f.page(i as usize));
        }
        black_box(sum);
        t.elapsed().as_nanos() as f64 / pages as f64
    };
    run();
    min_of(run)
}

/// The handoff floor: ns per round trip, the minimum of many short runs (a round trip is
/// cheap only while both threads are on a CPU; a short run is likelier to find that).
fn handoff_floor_ns(iters: u64) -> f64 {
    let mut h = Handoff::new();
    let mut run = || {
        let t = Instant::now();
        for _ in 0..iters {
            h.round_trip();
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    };
    run();
    (0..4 * RUNS).map(|_| run()).fold(f64::INFINITY, f64::min)
}

/// End-to-end groups with each of [`IN_FLIGHT`] groups in flight: ns per group, the median of
/// [`RUNS`] runs, and the fastest and slowest run. The runs are interleaved (every in-flight
/// count once per round) so that a burst of noise on this shared machine spreads over the
/// counts instead of skewing one of them, and the figures of different counts stay comparable.
fn e2e_ns(pages: Pages, groups: u64) -> (Vec<f64>, Vec<(f64, f64)>) {
    let w = E2e::new(pages, CHUNK);
    for n in IN_FLIGHT {
        w.run(groups / 4, n, None);
    }
    let runs = interleaved(IN_FLIGHT.len(), |i| {
        w.run(groups, IN_FLIGHT[i], None).as_nanos() as f64 / groups as f64
    });
    let spread = runs.iter().map(|r| spread(r)).collect();
    (runs.into_iter().map(median).collect(), spread)
}

/// [`RUNS`] runs of each of `items` workloads, interleaved: every workload once per round, so
/// that a burst of noise on this shared machine spreads over them instead of skewing one.
/// `run(i)` times workload `i` once; the result holds each workload's runs.
fn interleaved(items: usize, mut run: impl FnMut(usize) -> f64) -> Vec<Vec<f64>> {
    let mut runs = vec![Vec::with_capacity(RUNS); items];
    for _ in 0..RUNS {
        for (i, r) in runs.iter_mut().enumerate() {
            r.push(run(i));
        }
    }
    runs
}

/// The fastest and slowest of `runs` (ns).
fn spread(runs: &[f64]) -> (f64, f64) {
    let lo = runs.iter().copied().fold(f64::INFINITY, f64::min);
    (lo, runs.iter().copied().fold(lo, f64::max))
}

/// Two devices on two IOMMU units over one memory, driven at once from two threads: ns per
/// group of both together, the median of [`RUNS`] runs, and the fastest and slowest run
/// ([`E2e::run_at_once`]: both devices fault each chunk together and the chunks' wall-clock
/// time counts; mapping, unmapping and zeroing freed frames are untimed, as in the one-device
/// figures).
fn two_units_ns(groups: u64) -> (f64, (f64, f64)) {
    let first = E2e::with_runners(Pages::Prepared, CHUNK, 2);
    let second = first.other_unit();
    let devices = [&first, &second];
    let run = |groups: u64| {
        let slowest = E2e::run_at_once(&devices, groups, UNITS_IN_FLIGHT);
        slowest.as_nanos() as f64 / (groups * devices.len() as u64) as f64
    };
    run(groups / 4);
    let runs: Vec<f64> = (0..RUNS).map(|_| run(groups)).collect();
    let spread = spread(&runs);
    (median(runs), spread)
}

/// The latency of one fault, one at a time, pages prepared off the path: [`RUNS`] runs of
/// `groups` faults, each with a histogram of its own; each percentile is the median of the
/// runs' (as every other figure is the median of its runs), with the lowest and highest p99.9.
/// One histogram over all the runs would let one noisy stretch set the tail of the whole
/// figure: on the 2-vCPU machine of BENCHMARKS.md a loop that only reads the clock loses the
/// CPU for over 40 µs about 350 times a second, with the other CPU idle or busy
/// (`iommu-bench`'s `stall_probe`).
fn latency(groups: u64) -> (Latency, (f64, f64)) {
    let w = E2e::new(Pages::Prepared, CHUNK);
    w.run(groups / 4, 1, None);
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let runs: Vec<[f64; 3]> = (0..RUNS)
        .map(|_| {
            h.reset();
            let mut record = |ns: u64| {
                let _ = h.record(ns.max(1));
            };
            w.run(groups, 1, Some(&mut record));
            [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64)
        })
        .collect();
    let at = |i: usize| median(runs.iter().map(|r| r[i]).collect());
    let p999: Vec<f64> = runs.iter().map(|r| r[2]).collect();
    let latency = Latency {
        p50: at(0),
        p99: at(1),
        p999: at(2),
    };
    (latency, spread(&p999))
}

/// Fault fd records read and answered in batches of each of [`FD_BATCHES`]: ns per record, the
/// median of [`RUNS`] runs of `records` records. The runs are interleaved (every batch size once
/// per round), as the end-to-end ones are: measured one size after another, a few noisy seconds
/// once made one run's quiet figures for batches of 1 and of 16 1.6-1.7× its loaded ones.
fn fd_ns(records: u64) -> Vec<f64> {
    let mut loads: Vec<(FdRoundTrip, u64)> = FD_BATCHES
        .iter()
        .map(|&b| (FdRoundTrip::new(b), (records / b as u64).max(1)))
        .collect();
    // ns per round of `n` rounds.
    let run = |w: &mut FdRoundTrip, n: u64| {
        let t = Instant::now();
        for _ in 0..n {
            w.round();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    for (w, rounds) in &mut loads {
        run(w, (*rounds / 10).max(1));
    }
    let runs = interleaved(loads.len(), |i| {
        let (w, rounds) = &mut loads[i];
        run(w, *rounds) / FD_BATCHES[i] as f64
    });
    for (w, _) in loads {
        w.finish();
    }
    runs.into_iter().map(median).collect()
}

/// Measures every figure; `scale` multiplies the iteration counts (1: `--quick`).
pub fn measure(scale: u64) -> FaultFigures {
    let groups = 20_000 * scale;
    let (routing, routing_runs) = e2e_ns(Pages::Prepared, groups);
    let (fresh, fresh_runs) = e2e_ns(Pages::Fresh, groups);
    let (two_units, two_units_runs) = two_units_ns(groups);
    let (latency, latency_p999_runs) = latency(groups);
    FaultFigures {
        routing_floor: IN_FLIGHT
            .iter()
            .map(|&n| routing_floor_ns(groups * 4, n))
            .collect(),
        memory_floor: memory_floor_ns(groups),
        handoff_floor: handoff_floor_ns(500 * scale),
        routing,
        fresh,
        routing_runs,
        fresh_runs,
        two_units,
        two_units_runs,
        latency,
        latency_p999_runs,
        fd: fd_ns(groups * 2),
    }
}

/// Per-second rate of an operation costing `ns`.
fn per_s(ns: f64) -> f64 {
    1e9 / ns
}

fn keyed(keys: &[usize], ns: &[f64]) -> serde_json::Value {
    keys.iter()
        .zip(ns)
        .map(|(k, &v)| (k.to_string(), serde_json::json!(per_s(v).round())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// `[fastest, slowest]` ns per group of each in-flight count's runs, keyed by the count.
fn runs_keyed(runs: &[(f64, f64)]) -> serde_json::Value {
    IN_FLIGHT
        .iter()
        .zip(runs)
        .map(|(k, &(lo, hi))| (k.to_string(), serde_json::json!([lo, hi])))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl FaultFigures {
    /// One line per page kind: the fastest and slowest run behind each end-to-end median.
    pub fn spread_lines(&self) -> String {
        let mut out = String::new();
        for (kind, runs) in [
            ("prepared", &self.routing_runs),
            ("fresh", &self.fresh_runs),
        ] {
            let each: Vec<String> = IN_FLIGHT
                .iter()
                .zip(runs)
                .map(|(n, (lo, hi))| format!("{n}: {lo:.0}-{hi:.0}"))
                .collect();
            out += &format!("  {kind:<9} {}\n", each.join(", "));
        }
        let (lo, hi) = self.two_units_runs;
        out += &format!("  two units {UNITS_IN_FLIGHT} each: {lo:.0}-{hi:.0}\n");
        let (lo, hi) = self.latency_p999_runs;
        out += &format!("  latency p99.9 (ns of one fault): {lo:.0}-{hi:.0}\n");
        out
    }

    /// The figures under their stable JSON names (see BENCHMARKS.md).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "e2e_routing_groups_per_s": keyed(&IN_FLIGHT, &self.routing),
            "e2e_fresh_groups_per_s": keyed(&IN_FLIGHT, &self.fresh),
            "e2e_two_units_groups_per_s": per_s(self.two_units).round(),
            "latency_ns": {
                "p50": self.latency.p50,
                "p99": self.latency.p99,
                "p999": self.latency.p999,
            },
            "fd_records_per_s": keyed(&FD_BATCHES, &self.fd),
            "e2e_runs_ns": {
                "routing": runs_keyed(&self.routing_runs),
                "fresh": runs_keyed(&self.fresh_runs),
                "two_units": [self.two_units_runs.0, self.two_units_runs.1],
            },
            "latency_runs_ns": {
                "p999": [self.latency_p999_runs.0, self.latency_p999_runs.1],
            },
            "floors_ns": {
                "routing": self.routing_floor[0],
                "memory": self.memory_floor,
                "handoff": self.handoff_floor,
                "routing_in_flight": IN_FLIGHT
                    .iter()
                    .zip(&self.routing_floor)
                    .map(|(k, &v)| (k.to_string(), serde_json::json!(v)))
                    .collect::<serde_json::Map<_, _>>(),
            },
        })
    }

    /// Every figure, in table order, each with the floor it is compared against (none for
    /// the floors themselves).
    pub fn figures(&self) -> Vec<Figure> {
        let fig = |name: String, ns: f64, floor: Option<(&str, f64)>| Figure {
            name,
            ns_per_op: ns,
            floor: floor.map(|(n, f)| (n.to_string(), f)),
        };
        let one = Some(("routing floor, 1 in flight", self.routing_floor[0]));
        let mut out = vec![
            fig(
                "floor: routing pipeline, 1 group (no iommu-rs code)".into(),
                self.routing_floor[0],
                None,
            ),
            fig(
                "floor: zero + write one 4 KiB frame (memset+memcpy)".into(),
                self.memory_floor,
                None,
            ),
            fig(
                "floor: cross-thread handoff round trip".into(),
                self.handoff_floor,
                None,
            ),
        ];
        for (i, n) in IN_FLIGHT.iter().enumerate() {
            out.push(Figure {
                name: format!("e2e fault group, prepared pages, {n} in flight"),
                ns_per_op: self.routing[i],
                floor: Some((
                    format!("routing floor, {n} in flight"),
                    self.routing_floor[i],
                )),
            });
        }
        out.push(Figure {
            name: format!("e2e, 2 devices on 2 IOMMU units, {UNITS_IN_FLIGHT} in flight each"),
            ns_per_op: self.two_units,
            floor: Some((
                format!("routing floor, {UNITS_IN_FLIGHT} in flight"),
                self.routing_floor[UNITS_FLOOR],
            )),
        });
        for (i, n) in IN_FLIGHT.iter().enumerate() {
            out.push(fig(
                format!("e2e fault group, fresh zeroed pages, {n} in flight"),
                self.fresh[i],
                Some(("memory floor", self.memory_floor)),
            ));
        }
        for (name, v) in [
            ("p50", self.latency.p50),
            ("p99", self.latency.p99),
            ("p99.9", self.latency.p999),
        ] {
            out.push(fig(format!("latency of one fault, {name}"), v, one));
        }
        for (i, b) in FD_BATCHES.iter().enumerate() {
            out.push(fig(
                format!("fault fd record (read + response), batches of {b}"),
                self.fd[i],
                one,
            ));
        }
        out
    }
}

/// Share of CPU time idle over one second, from two samples of `/proc/stat` (`None` where it
/// cannot be read).
pub fn cpu_idle_percent() -> Option<f64> {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        Some((idle, v.iter().sum()))
    }
    let (i0, t0) = sample()?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (i1, t1) = sample()?;
    let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
    Some(100.0 * (i1 - i0) as f64 / total as f64)
}

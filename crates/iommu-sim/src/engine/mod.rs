//! Runs a validated [`Scenario`] on the software IOMMU, in one of two modes:
//!
//! * **threads** (the default): real concurrency — one thread per DMA job, one firing the
//!   scenario's events, one fault handler per iommufd owner, each IOMMU's page request queue
//!   thread and IOPF workers (`threads`);
//! * **deterministic** (`--seed N`): no thread but the caller's; one scheduler picks the next
//!   actor (a DMA job's next step, a page request queue's next request, an IOPF queue's next
//!   group, an owner's next batch) from a seeded RNG, so the same file and seed give the same
//!   event sequence, summed up in the report's event-log hash (`deterministic`).
//!
//! Both build the same world (`world`, its iommufd owners in `owner`), fire the scenario's
//! events the same way (`events`) and end the same way (`verify`): every job's data is read back
//! and compared, and everything the run observed — the core's and the emulator's trace points
//! and the engine's own observations — went through the invariant checker as it happened
//! ([`crate::observe`]).

mod deterministic;
mod events;
mod owner;
mod pattern;
mod progress;
mod threads;
mod verify;
mod world;

use std::time::{Duration, Instant};

use crate::invariants::{CheckReport, Invariant, Violation};
use crate::observe::Observer;
use crate::report::{GroupLedger, RunReport, StageLatency};
use crate::scenario::Scenario;
use world::World;

/// Bytes per page, of memory and of IOVA space.
const PAGE: u64 = 4096;
/// Size of one job-level DMA call: events interleave with jobs at this granularity.
const CHUNK: u64 = 256 << 10;
/// Pages each flooding actor touches on an `overflow` event.
const FLOOD_PAGES: u64 = 32;
/// Flooding actors per device on an `overflow` event.
const FLOOD_THREADS: u64 = 8;
/// Virtual nanoseconds per deterministic scheduler step: a stage that completes within the
/// step it started in costs one step.
pub const VIRTUAL_STEP_NS: u64 = 1_000;

/// How the scenario's actors are interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real threads, real concurrency.
    Threads,
    /// One scheduler driven by a seeded RNG: same file and seed, same event sequence.
    Deterministic {
        /// The RNG seed.
        seed: u64,
    },
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Divides every job's length (at least one page, two for copies): 1 runs the file as is.
    pub scale: u64,
    /// Record a trace span per job.
    pub trace: bool,
    /// Threads or deterministic.
    pub mode: Mode,
    /// Show a progress bar on stderr once the run has taken a second (terminals only).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            scale: 1,
            trace: true,
            mode: Mode::Threads,
            progress: false,
        }
    }
}

/// What a job produced.
#[derive(Default)]
struct JobOutcome {
    error: Option<String>,
    last_read: Vec<u8>,
    bytes: u64,
    latency: StageLatency,
    span: Option<(u64, u64)>,
}

/// What a mode's runner hands back for verification.
struct Ran {
    outcomes: Vec<JobOutcome>,
    /// Per job: owner jobs' data read back through the device (None: not read).
    owner_reads: Vec<Option<Result<Vec<u8>, String>>>,
    /// (event index, start ns, duration ns) of every event fired.
    fired: Vec<(usize, u64, u64)>,
    /// Scheduler steps (deterministic mode).
    steps: Option<u64>,
    /// Actors the deterministic scheduler found waiting for a response nobody would send.
    stuck: Vec<String>,
}

/// Runs `scenario` and reports what happened; the report's invariants say whether it was
/// correct. A world that cannot be built (see [`try_run`]) runs nothing and is reported as a
/// `data_verified` violation naming why.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> RunReport {
    try_run(scenario, opts).unwrap_or_else(|why| {
        let mut check = CheckReport {
            events: 0,
            counts: Invariant::ALL.iter().map(|&i| (i, 0)).collect(),
            violations: Vec::new(),
            never_answered: 0,
        };
        add_violation(
            &mut check,
            Violation {
                invariant: Invariant::DataVerified,
                event_index: None,
                message: format!("nothing ran: {why}"),
            },
        );
        RunReport {
            scenario: scenario.name.clone(),
            mode: match opts.mode {
                Mode::Threads => "threads".into(),
                Mode::Deterministic { .. } => "deterministic".into(),
            },
            invariants: Some(check),
            ..RunReport::default()
        }
    })
}

/// [`run`], or why the scenario's world could not be built (the host out of memory, threads
/// or PASIDs: validation refuses every configuration that would fail there).
pub fn try_run(scenario: &Scenario, opts: &RunOptions) -> Result<RunReport, String> {
    let start = Instant::now();
    let obs = Observer::with_log(matches!(opts.mode, Mode::Deterministic { .. }));
    let dispatch = obs.dispatch();
    tracing::dispatcher::with_default(&dispatch, || {
        let manual = matches!(opts.mode, Mode::Deterministic { .. });
        let world = World::build(scenario, opts.scale, manual, obs.clone())?;
        let ran = match opts.mode {
            Mode::Threads => threads::run(&world, opts, &dispatch),
            Mode::Deterministic { seed } => deterministic::run(&world, seed, opts),
        };
        let (mut report, mut late) = verify::verify(&world, &ran, opts);
        world.teardown();
        // Teardown's detaches answer what owners still held: the ledger is taken after them.
        report.groups_ledger = obs.ledger();
        report.page_requests = world.eps.iter().map(|e| e.stats().page_requests).sum();
        late.extend(reconcile(&report.groups_ledger, &world.device_totals()));
        drop(world);
        let (mut check, hash, _lines) = obs.finish();
        for v in late {
            add_violation(&mut check, v);
        }
        match opts.mode {
            Mode::Deterministic { seed } => {
                report.mode = "deterministic".into();
                report.seed = Some(seed);
                report.event_log_hash = Some(hash);
                report.virtual_time = true;
            }
            Mode::Threads => {
                report.mode = "threads".into();
                report.elapsed_s = Some(start.elapsed().as_secs_f64());
            }
        }
        report.invariants = Some(check);
        Ok(report)
    })
}

/// The devices' own counters, summed, to check the ledger against.
#[derive(Debug, Default, Clone, Copy)]
struct DeviceTotals {
    groups_sent: u64,
    /// Software responses applied (Success + Invalid + Failure).
    answered_by_software: u64,
    /// Groups the IOMMU answered itself.
    answered_by_iommu: u64,
    stray: u64,
}

/// Checks that every group sent went exactly one way, and that the trace's figures agree
/// with the devices' counters; each disagreement is an `every_group_accounted` violation.
fn reconcile(l: &GroupLedger, d: &DeviceTotals) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut fail = |message: String| {
        v.push(Violation {
            invariant: Invariant::EveryGroupAccounted,
            event_index: None,
            message,
        })
    };
    if l.accounted() != l.sent {
        fail(format!(
            "{} groups sent but {} accounted for ({l:?})",
            l.sent,
            l.accounted()
        ));
    }
    if l.outstanding != 0 {
        fail(format!("{} groups never concluded ({l:?})", l.outstanding));
    }
    if l.unattributed != 0 {
        fail(format!(
            "{} groups answered by no traced responder",
            l.unattributed
        ));
    }
    let checks = [
        ("groups sent", l.sent, d.groups_sent),
        (
            "groups answered by software",
            l.handler_total() + l.auto_total(),
            d.answered_by_software,
        ),
        (
            "groups answered by the IOMMU",
            l.iommu_overflow + l.stray_iommu_responses,
            d.answered_by_iommu,
        ),
        ("stray responses", l.stray_responses, d.stray),
    ];
    for (what, traced, counted) in checks {
        if traced != counted {
            fail(format!(
                "{what}: {traced} in the trace, {counted} in the devices' counters"
            ));
        }
    }
    v
}

/// Adds a violation found after the run to the checker's report.
fn add_violation(check: &mut CheckReport, v: Violation) {
    if let Some(c) = check.counts.iter_mut().find(|(i, _)| *i == v.invariant) {
        c.1 += 1;
    }
    check.violations.push(v);
}

/// Keeps wall-clock durations in nanoseconds.
fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balanced() -> (GroupLedger, DeviceTotals) {
        let l = GroupLedger {
            sent: 10,
            handler: [5, 1, 0],
            auto_iommufd: 1,
            iommu_overflow: 2,
            abandoned_reset: 1,
            stray_responses: 1,
            ..GroupLedger::default()
        };
        let d = DeviceTotals {
            groups_sent: 10,
            answered_by_software: 7,
            answered_by_iommu: 2,
            stray: 1,
        };
        (l, d)
    }

    #[test]
    fn a_balanced_ledger_agreeing_with_the_devices_passes() {
        let (l, d) = balanced();
        assert!(reconcile(&l, &d).is_empty());
    }

    /// Breaks a balanced ledger or the devices' totals one way.
    type Break = fn(&mut GroupLedger, &mut DeviceTotals);

    /// Every way the figures can disagree fails the run as `every_group_accounted`.
    #[test]
    fn every_disagreement_is_a_violation() {
        let cases: [(&str, Break); 5] = [
            ("a group nobody accounts for", |l, d| {
                l.sent += 1;
                d.groups_sent += 1;
            }),
            ("an unattributed answer", |l, d| {
                l.sent += 1;
                l.unattributed += 1;
                d.groups_sent += 1;
                d.answered_by_software += 1;
            }),
            ("devices sent more", |_, d| d.groups_sent += 1),
            ("devices saw more IOMMU answers", |_, d| {
                d.answered_by_iommu += 1;
            }),
            ("devices saw more strays", |_, d| d.stray += 1),
        ];
        for (what, break_it) in cases {
            let (mut l, mut d) = balanced();
            break_it(&mut l, &mut d);
            let v = reconcile(&l, &d);
            assert!(!v.is_empty(), "{what}: not caught");
            assert!(
                v.iter()
                    .all(|v| v.invariant == Invariant::EveryGroupAccounted),
                "{what}: {v:?}"
            );
        }
    }
}

//! The end of a run: every job's data is read back and compared with what it should be (each
//! comparison goes to the checker as a `JobVerified` event), nothing may be left outstanding at
//! a device, and the report's counters, latencies and trace spans are gathered (the groups'
//! ledger is taken after teardown, in `engine::run`).

use std::sync::atomic::Ordering::Relaxed;

use super::pattern::{name_seed, pattern};
use super::world::World;
use super::{JobOutcome, Ran, RunOptions};
use crate::invariants::{Event, Invariant, Violation};
use crate::report::{RunReport, StageLatency, TraceSpan};
use crate::scenario::{JobOp, JobSpec, JobTarget};

/// Reads every job's data back and compares it, and gathers the report's figures.
/// Returns the report and the violations found at the end (added to the checker's).
pub(super) fn verify(
    world: &World<'_>,
    ran: &Ran,
    opts: &RunOptions,
) -> (RunReport, Vec<Violation>) {
    let scenario = world.scenario;
    let fired: Vec<usize> = ran.fired.iter().map(|f| f.0).collect();
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        jobs: scenario.jobs.len() as u64,
        virtual_time: ran.steps.is_some(),
        ..RunReport::default()
    };
    if opts.trace {
        trace_events(world, ran, &mut report);
    }
    let mut extra = world.extra.clone();
    let mut dma_lat = StageLatency::default();
    let mut expected_failures = 0u64;
    for (i, out) in ran.outcomes.iter().enumerate() {
        report.bytes += out.bytes;
        dma_lat.merge(&out.latency);
        if let (true, Some((st, dur))) = (opts.trace, out.span) {
            let j = &scenario.jobs[i];
            report.trace.push(TraceSpan {
                name: j.name.clone(),
                category: "job".into(),
                track: format!("device {}", scenario.devices[j.device].name),
                start_ns: st,
                duration_ns: dur,
            });
        }
        if world.affected(&fired, i) {
            if out.error.is_some() {
                expected_failures += 1;
            }
            continue;
        }
        if let Err(problem) = verify_job(world, ran, i) {
            extra.push(problem);
        }
    }

    for (k, o) in world.live_owners() {
        let n = o.errors.load(Relaxed);
        if n > 0 {
            let first = o.first_errors.lock().unwrap_or_else(|p| p.into_inner());
            extra.push(format!(
                "owner {}: {n} fault handler errors (groups answered Invalid), first: {}",
                scenario.owners[k].0,
                first.join("; ")
            ));
        }
    }
    let mut late: Vec<Violation> = ran
        .stuck
        .iter()
        .map(|m| Violation {
            invariant: Invariant::ExactlyOneResponse,
            event_index: None,
            message: m.clone(),
        })
        .collect();
    check_outstanding(world, &mut late);
    late.extend(extra.into_iter().map(|m| Violation {
        invariant: Invariant::DataVerified,
        event_index: None,
        message: m,
    }));
    count(
        world,
        ran,
        &mut report,
        expected_failures,
        fired.len() as u64,
    );
    gather_latencies(world, &mut report, dma_lat, ran.steps.is_some());
    (report, late)
}

/// A trace span per event fired, named by its action as the file spells it, on the track of
/// the agent it acts on (device, process, owner, IOMMU's queue).
fn trace_events(world: &World<'_>, ran: &Ran, report: &mut RunReport) {
    let scenario = world.scenario;
    for &(k, st, dur) in &ran.fired {
        let e = &scenario.events[k];
        report.trace.push(TraceSpan {
            name: super::events::action_name(e.action).into(),
            category: "event".into(),
            track: super::events::event_agent(scenario, e),
            start_ns: st,
            duration_ns: dur.max(1),
        });
    }
}

/// Reads job `i`'s data back and hands the checker its count of wrong bytes; `Err` is a
/// problem that makes the data unverifiable (a failure no event explains, a failed read-back).
fn verify_job(world: &World<'_>, ran: &Ran, i: usize) -> Result<(), String> {
    let j = &world.scenario.jobs[i];
    let out = &ran.outcomes[i];
    if let Some(err) = &out.error {
        return Err(format!(
            "job {} failed with no event to explain it: {err}",
            j.name
        ));
    }
    let len = world.job_len[i];
    let got = read_back(world, ran, i, len)
        .map_err(|e| format!("job {}: read-back failed: {e}", j.name))?;
    world.obs.observe(Event::JobVerified {
        job: j.name.clone(),
        mismatched_bytes: mismatched(j, out, &got, len),
    });
    Ok(())
}

/// Job `i`'s memory now: read through the process for SVA jobs, or what the mode read back
/// through the device for owner jobs.
fn read_back(world: &World<'_>, ran: &Ran, i: usize, len: u64) -> Result<Vec<u8>, String> {
    let j = &world.scenario.jobs[i];
    let mut got = vec![0u8; len as usize];
    match j.target {
        JobTarget::Process(p, v) => world.mms[p]
            .read(world.vma_addr[p][v] + j.offset, &mut got)
            .map_err(|e| e.to_string())?,
        JobTarget::Owner(..) => match &ran.owner_reads[i] {
            Some(Ok(data)) => got.clone_from(data),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err("not read back".into()),
        },
    }
    Ok(got)
}

/// How many bytes of `got` differ from what job `j` should have left.
fn mismatched(j: &JobSpec, out: &JobOutcome, got: &[u8], len: u64) -> u64 {
    let seed = name_seed(&j.name);
    match j.op {
        JobOp::Write => got
            .iter()
            .enumerate()
            .filter(|(k, b)| **b != pattern(seed, j.offset + *k as u64))
            .count() as u64,
        JobOp::Fill => got.iter().filter(|b| **b != (seed as u8 | 1)).count() as u64,
        JobOp::Read => {
            got.iter()
                .zip(&out.last_read)
                .filter(|(a, b)| a != b)
                .count() as u64
                + (got.len() as u64).abs_diff(out.last_read.len() as u64)
        }
        JobOp::Copy => {
            let h = (len / 2) as usize;
            got[..h]
                .iter()
                .zip(&got[h..2 * h])
                .filter(|(a, b)| a != b)
                .count() as u64
        }
    }
}

/// A group still outstanding at a device at the end is a violation.
fn check_outstanding(world: &World<'_>, late: &mut Vec<Violation>) {
    for (i, ep) in world.eps.iter().enumerate() {
        let outstanding = ep.outstanding_groups();
        if outstanding != 0 {
            late.push(Violation {
                invariant: Invariant::ExactlyOneResponse,
                event_index: None,
                message: format!(
                    "device {}: {outstanding} page request groups still outstanding at the end",
                    world.scenario.devices[i].name
                ),
            });
        }
    }
}

/// The report's counters, each named `what/which` (docs/scenarios.md lists them).
fn count(
    world: &World<'_>,
    ran: &Ran,
    report: &mut RunReport,
    expected_failures: u64,
    events_fired: u64,
) {
    let c = &mut report.counters;
    let mut put = |k: &str, v: u64| {
        c.insert(k.to_string(), v);
    };
    put(
        "requests/sva_pages_faulted_in",
        world.mms.iter().map(|m| m.stats().faults).sum(),
    );
    put(
        "requests/iommufd_records_read",
        world
            .live_owners()
            .map(|(_, o)| o.records.load(Relaxed))
            .sum(),
    );
    put(
        "iommufd/handler_errors",
        world
            .live_owners()
            .map(|(_, o)| o.errors.load(Relaxed))
            .sum(),
    );
    put(
        "iommufd/stale_responses",
        world
            .live_owners()
            .map(|(_, o)| o.stale.load(Relaxed))
            .sum(),
    );
    put(
        "prq/overflows",
        world.iommus.iter().map(|m| m.stats().prq_overflows).sum(),
    );
    put(
        "prq/overflow_responses",
        world
            .iommus
            .iter()
            .map(|m| m.stats().prq_auto_responses)
            .sum(),
    );
    put(
        "prq/dropped_partial_requests",
        world
            .iommus
            .iter()
            .map(|m| m.stats().prq_dropped_partials)
            .sum(),
    );
    put("dma/expected_failures", expected_failures);
    put("events/fired", events_fired);
    if let Some(steps) = ran.steps {
        put("scheduler/steps", steps);
    }
}

/// The report's latencies: the jobs' DMA calls, the stages the observer timed, and the
/// owners' fault-handler batches.
/// In virtual time (deterministic mode) a stage that runs inside one scheduler step (a
/// handler, an owner's batch) takes no time and is not shown.
fn gather_latencies(
    world: &World<'_>,
    report: &mut RunReport,
    dma_lat: StageLatency,
    virtual_time: bool,
) {
    report.latency.insert("dma_job".into(), dma_lat);
    for (stage, lat) in world.obs.stage_latencies() {
        let within_one_step = virtual_time && stage == "fault_handler";
        if !lat.is_empty() && !within_one_step {
            report.latency.insert(stage.into(), lat);
        }
    }
    if virtual_time {
        return;
    }
    let mut batches = StageLatency::default();
    for (_, o) in world.live_owners() {
        batches.merge(&o.batches.lock().expect("batches"));
    }
    if !batches.is_empty() {
        report.latency.insert("iommufd_batch".into(), batches);
    }
}

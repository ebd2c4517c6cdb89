//! The end of a run: every job's data is read back and compared with what it should be (each
//! comparison goes to the checker as a `JobVerified` event), nothing may be left outstanding at
//! a device, and the report's counters, latencies and trace spans are gathered.

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
        mode: "threads".into(),
        seed: Some(scenario.seed),
        jobs: scenario.jobs.len() as u64,
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
            report.trace.push(TraceSpan {
                name: scenario.jobs[i].name.clone(),
                category: "job".into(),
                thread: i as u64,
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

    let mut late: Vec<Violation> = ran
        .stuck
        .iter()
        .map(|m| Violation {
            invariant: Invariant::ExactlyOneResponse,
            event_index: None,
            message: m.clone(),
        })
        .collect();
    let strays = count_responses(world, &mut report, &mut late);
    late.extend(extra.into_iter().map(|m| Violation {
        invariant: Invariant::DataVerified,
        event_index: None,
        message: m,
    }));
    count_faults(
        world,
        ran,
        &mut report,
        expected_failures,
        fired.len() as u64,
        strays,
    );
    gather_latencies(world, &mut report, dma_lat);
    (report, late)
}

/// A trace span per event fired, on a track after the jobs'.
fn trace_events(world: &World<'_>, ran: &Ran, report: &mut RunReport) {
    let scenario = world.scenario;
    for &(k, st, dur) in &ran.fired {
        let e = &scenario.events[k];
        report.trace.push(TraceSpan {
            name: format!("{:?}", e.action).to_lowercase(),
            category: "event".into(),
            thread: scenario.jobs.len() as u64,
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

/// Adds up every device's page requests, groups and responses; a group still outstanding at
/// a device is a violation. Returns the stray responses seen.
fn count_responses(world: &World<'_>, report: &mut RunReport, late: &mut Vec<Violation>) -> u64 {
    let mut strays = 0u64;
    for (i, ep) in world.eps.iter().enumerate() {
        let st = ep.stats();
        report.page_requests += st.page_requests;
        report.groups += st.groups_sent;
        report.responses[0] += st.success + st.auto_success;
        report.responses[1] += st.invalid;
        report.responses[2] += st.failure;
        strays += st.stray_responses;
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
    strays
}

/// The report's `faults_by_stage` counters.
fn count_faults(
    world: &World<'_>,
    ran: &Ran,
    report: &mut RunReport,
    expected_failures: u64,
    events_fired: u64,
    strays: u64,
) {
    let stage = &mut report.faults_by_stage;
    stage.insert(
        "sva".into(),
        world.mms.iter().map(|m| m.stats().faults).sum(),
    );
    stage.insert(
        "iommufd".into(),
        world.owners.iter().map(|o| o.records.load(Relaxed)).sum(),
    );
    stage.insert("expected_dma_failures".into(), expected_failures);
    stage.insert(
        "prq_overflow".into(),
        world.iommus.iter().map(|m| m.stats().prq_overflows).sum(),
    );
    stage.insert("events_fired".into(), events_fired);
    stage.insert("stray_responses".into(), strays);
    if let Some(steps) = ran.steps {
        stage.insert("scheduler_steps".into(), steps);
    }
}

/// The report's latencies: the jobs' DMA calls, the stages the observer timed, and the
/// owners' fault-handler batches.
fn gather_latencies(world: &World<'_>, report: &mut RunReport, dma_lat: StageLatency) {
    report.latency.insert("dma_job".into(), dma_lat);
    for (stage, lat) in world.obs.stage_latencies() {
        if !lat.is_empty() {
            report.latency.insert(stage.into(), lat);
        }
    }
    let mut batches = StageLatency::default();
    for o in &world.owners {
        batches.merge(&o.batches.lock().expect("batches"));
    }
    if !batches.is_empty() {
        report.latency.insert("iommufd_batch".into(), batches);
    }
}

//! Deterministic mode: one scheduler on the calling thread interleaves every actor of the run,
//! picking the next one from a seeded RNG (ChaCha8, whose stream is fixed by its definition).
//!
//! Actors: each DMA job (one step polls its current DMA once: a pass over pages, one page
//! request group sent, or one response taken), each flooding reader of an `overflow` event,
//! each IOMMU's page request queue (one step reports one request), each IOPF queue (one step
//! runs one group's handler), each iommufd owner's fault handler (one step handles one batch).
//! Nothing else runs: the emulator has no queue threads and the IOPF queues are manual, so a
//! detach drains and flushes inline.
//!
//! Time is virtual: one step is [`STEP_NS`]. `at_ms` events fire when virtual time reaches
//! them; `after_groups` events when that many groups were answered. When no actor can move
//! (every job waits for a response nobody is going to send), the scheduler jumps to the next
//! timed event; with none left, the waiting jobs are failed and each is reported as a group
//! never answered.
//!
//! Every step's actor and outcome, every event fired and everything the observer checks goes
//! into the event log, whose hash the report carries: same scenario and seed, same hash.

use iommu_emu::{DmaJob, DmaKind, DmaPoll};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    fill_byte, write_chunk, JobOutcome, Progress, Ran, RunOptions, Serving, World, CHUNK,
    FLOOD_PAGES, PAGE,
};
use crate::invariants::Event;
use crate::scenario::{Action, JobOp, JobTarget, Trigger};

/// Virtual nanoseconds per scheduler step.
pub const STEP_NS: u64 = 1_000;

/// Requests a page request queue step reports.
const PRQ_BATCH: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Job(usize),
    Flood(usize),
    ReadBack(usize),
    Prq(usize),
    Iopf(usize),
    Owner(usize),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Something changed.
    Moved,
    /// The actor is waiting (for a response, for credits).
    Waiting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Plain,
    CopyRead,
    CopyWrite,
}

/// A scenario job as a state machine over its chunks.
struct JobRun {
    i: usize,
    pasid: Option<u32>,
    base: u64,
    span_len: u64,
    src_half: u64,
    rep: u64,
    off: u64,
    cur: Option<(DmaJob, Stage)>,
    chunk_start: u64,
    start: u64,
    out: JobOutcome,
    done: bool,
}

impl JobRun {
    fn new(world: &World<'_>, i: usize, now: u64) -> Self {
        let j = &world.scenario.jobs[i];
        let len = world.job_len[i];
        let mut out = JobOutcome::default();
        let (pasid, base) = match world.job_target(i) {
            Ok(t) => t,
            Err(e) => {
                out.error = Some(e);
                (None, 0)
            }
        };
        let (span_len, src_half) = if j.op == JobOp::Copy {
            (len / 2, len / 2)
        } else {
            (len, 0)
        };
        if j.op == JobOp::Read {
            out.last_read = vec![0u8; len as usize];
        }
        let done = out.error.is_some() || j.repeat == 0 || span_len == 0;
        JobRun {
            i,
            pasid,
            base,
            span_len,
            src_half,
            rep: 0,
            off: 0,
            cur: None,
            chunk_start: now,
            start: now,
            out,
            done,
        }
    }

    fn step(&mut self, world: &World<'_>, now: u64, progress: &Progress) -> Step {
        let j = &world.scenario.jobs[self.i];
        let ep = &world.eps[j.device];
        let n = CHUNK.min(self.span_len - self.off);
        if self.cur.is_none() {
            let at = self.base + self.off;
            let (kind, stage) = match j.op {
                JobOp::Write => {
                    let mut buf = vec![0u8; n as usize];
                    write_chunk(j, self.off, &mut buf);
                    (DmaKind::Write(buf), Stage::Plain)
                }
                JobOp::Fill => (DmaKind::Fill(fill_byte(j)), Stage::Plain),
                JobOp::Read => (DmaKind::Read, Stage::Plain),
                JobOp::Copy => (DmaKind::Read, Stage::CopyRead),
            };
            self.chunk_start = now;
            self.cur = Some((ep.start_dma(self.pasid, at, n, kind), stage));
        }
        let (job, stage) = self.cur.as_mut().expect("a chunk in flight");
        match ep.poll_dma(job) {
            DmaPoll::Pending if job.is_waiting() => Step::Waiting,
            DmaPoll::Pending => Step::Moved,
            DmaPoll::Ready(Err(e)) => {
                self.out.error = Some(e.to_string());
                self.cur = None;
                self.finish(now);
                Step::Moved
            }
            DmaPoll::Ready(Ok(())) => {
                let stage = *stage;
                let (job, _) = self.cur.take().expect("a chunk in flight");
                match stage {
                    Stage::CopyRead => {
                        let data = job.into_data();
                        let dst = self.base + self.src_half + self.off;
                        self.cur = Some((
                            ep.start_dma(self.pasid, dst, n, DmaKind::Write(data)),
                            Stage::CopyWrite,
                        ));
                        return Step::Moved;
                    }
                    Stage::Plain if j.op == JobOp::Read => {
                        let o = self.off as usize;
                        self.out.last_read[o..o + n as usize].copy_from_slice(job.data());
                    }
                    _ => {}
                }
                self.out
                    .latency
                    .record((now - self.chunk_start + 1) * STEP_NS);
                self.out.bytes += n;
                progress.inc(n);
                if let Some(p) = self.pasid {
                    world.obs.observe(Event::Dma {
                        dev: j.device as u64,
                        pasid: p,
                    });
                }
                self.off += n;
                if self.off >= self.span_len {
                    self.off = 0;
                    self.rep += 1;
                    if self.rep >= j.repeat {
                        self.finish(now);
                    }
                }
                Step::Moved
            }
        }
    }

    fn finish(&mut self, now: u64) {
        self.done = true;
        self.out.span = Some((self.start * STEP_NS, (now - self.start + 1) * STEP_NS));
    }
}

/// A flooding reader of an `overflow` event, or a read-back of an owner job's data.
struct Reader {
    dev: usize,
    pasid: Option<u32>,
    /// Addresses still to read and the length of each read.
    todo: std::vec::IntoIter<(u64, u64)>,
    cur: Option<DmaJob>,
    /// The read-back's data, or its error (floods ignore theirs).
    result: Option<Result<Vec<u8>, String>>,
    done: bool,
}

impl Reader {
    fn new(dev: usize, pasid: Option<u32>, reads: Vec<(u64, u64)>) -> Self {
        Reader {
            dev,
            pasid,
            todo: reads.into_iter(),
            cur: None,
            result: None,
            done: false,
        }
    }

    fn step(&mut self, world: &World<'_>) -> Step {
        let ep = &world.eps[self.dev];
        if self.cur.is_none() {
            match self.todo.next() {
                Some((a, len)) => self.cur = Some(ep.start_dma(self.pasid, a, len, DmaKind::Read)),
                None => {
                    self.done = true;
                    return Step::Moved;
                }
            }
        }
        let job = self.cur.as_mut().expect("a read in flight");
        match ep.poll_dma(job) {
            DmaPoll::Pending if job.is_waiting() => Step::Waiting,
            DmaPoll::Pending => Step::Moved,
            DmaPoll::Ready(r) => {
                let job = self.cur.take().expect("a read in flight");
                self.result = Some(r.map(|()| job.into_data()).map_err(|e| e.to_string()));
                Step::Moved
            }
        }
    }
}

pub(super) fn run(world: &World<'_>, seed: u64, opts: &RunOptions) -> Ran {
    let progress = Progress::new(world, opts.progress);
    let scenario = world.scenario;
    let obs = &world.obs;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut now: u64 = 0;
    let mut act = Actors {
        jobs: (0..scenario.jobs.len())
            .map(|i| JobRun::new(world, i, 0))
            .collect(),
        floods: Vec::new(),
        readbacks: Vec::new(),
        serving: world.owners.iter().map(|_| Serving::new()).collect(),
    };
    let mut pending: Vec<usize> = (0..scenario.events.len()).collect();
    let mut fired: Vec<(usize, u64, u64)> = Vec::new();
    let mut stuck: Vec<String> = Vec::new();
    let mut idle: u64 = 0;
    let mut readback_started = false;
    let mut runnable: Vec<Actor> = Vec::new();

    let fire = |i: usize, now: u64, floods: &mut Vec<Reader>, fired: &mut Vec<_>| {
        let e = &scenario.events[i];
        obs.log(&format!("{now} event {i} {:?}", e.action));
        progress.message(format!("{:?}", e.action).to_lowercase());
        if e.action == Action::Overflow {
            for (d, pasid, base) in world.flood_targets(i) {
                floods.push(Reader::new(
                    d,
                    Some(pasid),
                    vec![(base, FLOOD_PAGES * PAGE)],
                ));
            }
        } else {
            world.fire(i, None);
        }
        fired.push((i, now * STEP_NS, STEP_NS));
    };

    loop {
        obs.set_virtual_ns(now * STEP_NS);
        // Events due now.
        let jobs_done = act.jobs.iter().all(|j| j.done);
        if !pending.is_empty() {
            let groups = world.groups_answered();
            let now_ms = now * STEP_NS / 1_000_000;
            let mut keep = Vec::new();
            for &i in &pending {
                let due = match scenario.events[i].trigger {
                    Trigger::AtMs(ms) => now_ms >= ms,
                    Trigger::AfterGroups(g) => groups >= g,
                };
                if due {
                    fire(i, now, &mut act.floods, &mut fired);
                } else if !(jobs_done
                    && matches!(scenario.events[i].trigger, Trigger::AfterGroups(_)))
                {
                    keep.push(i);
                }
            }
            pending = keep;
        }
        // Once the jobs are done and every timed event fired, owner jobs are read back.
        if jobs_done && pending.is_empty() && !readback_started {
            readback_started = true;
            let fired_idx: Vec<usize> = fired.iter().map(|f| f.0).collect();
            for (i, j) in scenario.jobs.iter().enumerate() {
                if let JobTarget::Owner(_, iova) = j.target {
                    if act.jobs[i].out.error.is_none() && !world.affected(&fired_idx, i) {
                        let r = Reader::new(j.device, None, vec![(iova, world.job_len[i])]);
                        act.readbacks.push((i, r));
                    }
                }
            }
        }

        runnable.clear();
        runnable.extend(act.jobs.iter().filter(|j| !j.done).map(|j| Actor::Job(j.i)));
        runnable.extend(
            (0..act.floods.len())
                .filter(|&k| !act.floods[k].done)
                .map(Actor::Flood),
        );
        runnable.extend(
            (0..act.readbacks.len())
                .filter(|&k| !act.readbacks[k].1.done)
                .map(Actor::ReadBack),
        );
        let workers_before = runnable.len();
        for (k, iommu) in world.iommus.iter().enumerate() {
            if iommu.prq_len() > 0 || iommu.prq_overflowed() {
                runnable.push(Actor::Prq(k));
            }
        }
        for (k, q) in world.queues.iter().enumerate() {
            if q.pending() > 0 {
                runnable.push(Actor::Iopf(k));
            }
        }
        for (k, o) in world.owners.iter().enumerate() {
            if o.fault.as_ref().is_some_and(|f| f.pending() > 0) {
                runnable.push(Actor::Owner(k));
            }
        }
        let service_idle = runnable.len() == workers_before;
        if runnable.is_empty() {
            if pending.is_empty() && readback_started {
                break;
            }
            // Nothing to run until a timed event: jump to it.
            if !jump_to_next_event(scenario, &pending, &mut now) {
                pending.clear();
            }
            continue;
        }
        // Only waiting DMA left: poll each once in order; if none moves, time jumps or the
        // waiters are stuck.
        if service_idle && idle >= 4 * runnable.len() as u64 {
            let mut moved = false;
            for &a in &runnable {
                moved |= act.step(a, world, now, &progress) == Step::Moved;
            }
            now += 1;
            if moved {
                idle = 0;
                continue;
            }
            if jump_to_next_event(scenario, &pending, &mut now) {
                idle = 0;
                continue;
            }
            for a in runnable.iter().copied() {
                let msg = format!("{a:?} waits for a page response nobody will send");
                obs.log(&format!("{now} stuck {msg}"));
                stuck.push(msg);
                match a {
                    Actor::Job(i) => {
                        act.jobs[i].out.error = Some("stuck waiting for a page response".into());
                        act.jobs[i].cur = None;
                        act.jobs[i].finish(now);
                    }
                    Actor::Flood(k) => act.floods[k].done = true,
                    Actor::ReadBack(k) => {
                        act.readbacks[k].1.result = Some(Err("stuck".into()));
                        act.readbacks[k].1.done = true;
                    }
                    _ => {}
                }
            }
            pending.retain(|&i| matches!(scenario.events[i].trigger, Trigger::AtMs(_)));
            idle = 0;
            continue;
        }
        let a = runnable[rng.random_range(0..runnable.len())];
        let r = act.step(a, world, now, &progress);
        obs.log(&format!("{now} {a:?} {r:?}"));
        now += 1;
        if r == Step::Moved {
            idle = 0;
        } else {
            idle += 1;
        }
    }

    progress.finish();
    let mut owner_reads: Vec<Option<Result<Vec<u8>, String>>> =
        (0..scenario.jobs.len()).map(|_| None).collect();
    for (i, r) in act.readbacks {
        owner_reads[i] = r.result.or(Some(Err("not read back".into())));
    }
    Ran {
        outcomes: act.jobs.into_iter().map(|j| j.out).collect(),
        owner_reads,
        fired,
        steps: Some(now),
        stuck,
    }
}

/// Moves virtual time to the earliest pending timed event; `false` if there is none ahead.
fn jump_to_next_event(
    scenario: &crate::scenario::Scenario,
    pending: &[usize],
    now: &mut u64,
) -> bool {
    let next = pending
        .iter()
        .filter_map(|&i| match scenario.events[i].trigger {
            Trigger::AtMs(ms) => Some(ms * 1_000_000 / STEP_NS),
            Trigger::AfterGroups(_) => None,
        })
        .min();
    match next {
        Some(t) => {
            *now = (*now).max(t);
            true
        }
        None => false,
    }
}

/// The states of the actors that have one.
struct Actors {
    jobs: Vec<JobRun>,
    floods: Vec<Reader>,
    /// (job index, its read-back).
    readbacks: Vec<(usize, Reader)>,
    serving: Vec<Serving>,
}

impl Actors {
    /// Runs one step of actor `a`.
    fn step(&mut self, a: Actor, world: &World<'_>, now: u64, progress: &Progress) -> Step {
        let moved = |b: bool| if b { Step::Moved } else { Step::Waiting };
        match a {
            Actor::Job(i) => self.jobs[i].step(world, now, progress),
            Actor::Flood(k) => self.floods[k].step(world),
            Actor::ReadBack(k) => self.readbacks[k].1.step(world),
            Actor::Prq(k) => moved(world.iommus[k].prq_step(PRQ_BATCH) > 0),
            Actor::Iopf(k) => moved(world.queues[k].run_one()),
            Actor::Owner(k) => {
                moved(world.owners[k].serve_once(&world.phys, &mut self.serving[k]) > 0)
            }
        }
    }
}

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

mod actors;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::progress::Progress;
use super::world::World;
use super::{Ran, RunOptions, FLOOD_PAGES, PAGE};
use crate::engine::owner::Serving;
use crate::scenario::{Action, JobTarget, Scenario, Trigger};
use actors::{Actor, Actors, JobRun, Reader, Step};

/// Virtual nanoseconds per scheduler step.
pub const STEP_NS: u64 = super::VIRTUAL_STEP_NS;

/// Requests a page request queue step reports.
const PRQ_BATCH: usize = 1;

/// Runs the world's jobs and events to the end under one scheduler seeded with `seed`.
pub(super) fn run(world: &World<'_>, seed: u64, opts: &RunOptions) -> Ran {
    let mut s = Scheduler::new(world, seed, opts);
    loop {
        s.world.obs.set_virtual_ns(s.now.saturating_mul(STEP_NS));
        let jobs_done = s.act.jobs.iter().all(|j| j.done);
        if !s.pending.is_empty() {
            s.fire_due_events(jobs_done);
        }
        // Once the jobs are done and every timed event fired, owner jobs are read back.
        if jobs_done && s.pending.is_empty() && !s.readback_started {
            s.start_readbacks();
        }
        let service_idle = s.collect_runnable();
        if s.runnable.is_empty() {
            if s.pending.is_empty() && s.readback_started {
                break;
            }
            // Nothing to run until a timed event: jump to it.
            if !jump_to_next_event(s.world.scenario, &s.pending, &mut s.now) {
                s.pending.clear();
            }
            continue;
        }
        // Only waiting DMA left: poll each once in order; if none moves, time jumps or the
        // waiters are stuck.
        if service_idle && s.idle >= 4 * s.runnable.len() as u64 {
            s.poll_waiters();
            continue;
        }
        s.step_one();
    }
    s.finish()
}

/// The scheduler's state: virtual time, the RNG, the actors and the events still to fire.
struct Scheduler<'w, 's> {
    world: &'w World<'s>,
    progress: Progress,
    rng: ChaCha8Rng,
    /// Virtual time, in steps.
    now: u64,
    act: Actors,
    /// Events not fired yet.
    pending: Vec<usize>,
    /// (event index, start ns, duration ns) of every event fired.
    fired: Vec<(usize, u64, u64)>,
    stuck: Vec<String>,
    /// Steps in a row in which the chosen actor only waited.
    idle: u64,
    readback_started: bool,
    /// The actors that can take a step now (reused from step to step).
    runnable: Vec<Actor>,
}

impl<'w, 's> Scheduler<'w, 's> {
    fn new(world: &'w World<'s>, seed: u64, opts: &RunOptions) -> Self {
        let scenario = world.scenario;
        Scheduler {
            world,
            progress: Progress::new(world, opts.progress),
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            act: Actors {
                jobs: (0..scenario.jobs.len())
                    .map(|i| JobRun::new(world, i, 0))
                    .collect(),
                floods: Vec::new(),
                readbacks: Vec::new(),
                serving: world.owners.iter().map(|_| Serving::new()).collect(),
            },
            pending: (0..scenario.events.len()).collect(),
            fired: Vec::new(),
            stuck: Vec::new(),
            idle: 0,
            readback_started: false,
            runnable: Vec::new(),
        }
    }

    /// Fires the pending events that are due; `after_groups` events still pending once the
    /// jobs are done will never be due and are dropped.
    fn fire_due_events(&mut self, jobs_done: bool) {
        let scenario = self.world.scenario;
        let groups = self.world.groups_answered();
        let now = self.now;
        let mut keep = Vec::new();
        for i in std::mem::take(&mut self.pending) {
            let due = match scenario.events[i].trigger {
                Trigger::AtMs(ms) => now >= at_ms_step(ms),
                Trigger::AfterGroups(g) => groups >= g,
            };
            if due {
                self.fire(i);
            } else if !(jobs_done && matches!(scenario.events[i].trigger, Trigger::AfterGroups(_)))
            {
                keep.push(i);
            }
        }
        self.pending = keep;
    }

    /// Fires event `i`; an `overflow` starts its flooding readers.
    fn fire(&mut self, i: usize) {
        let e = &self.world.scenario.events[i];
        let now = self.now;
        self.world
            .obs
            .log(&format!("{now} event {i} {:?}", e.action));
        self.progress
            .message(super::events::action_name(e.action).to_string());
        if e.action == Action::Overflow {
            for (d, pasid, base) in self.world.flood_targets(i) {
                self.act.floods.push(Reader::new(
                    d,
                    Some(pasid),
                    vec![(base, FLOOD_PAGES * PAGE)],
                ));
            }
        } else {
            self.world.fire(i, None);
        }
        self.fired.push((i, now.saturating_mul(STEP_NS), STEP_NS));
    }

    /// Starts reading back, through the device, every owner job that succeeded and that no
    /// fired event affected.
    fn start_readbacks(&mut self) {
        self.readback_started = true;
        let world = self.world;
        let fired_idx: Vec<usize> = self.fired.iter().map(|f| f.0).collect();
        for (i, j) in world.scenario.jobs.iter().enumerate() {
            if let JobTarget::Owner(_, iova) = j.target {
                if self.act.jobs[i].out.error.is_none() && !world.affected(&fired_idx, i) {
                    let r = Reader::new(j.device, None, vec![(iova, world.job_len[i])]);
                    self.act.readbacks.push((i, r));
                }
            }
        }
    }

    /// Fills `runnable`: unfinished jobs, floods and read-backs, then the service actors
    /// with work queued. Returns whether no service actor has any (only DMA can move).
    fn collect_runnable(&mut self) -> bool {
        let (act, runnable) = (&self.act, &mut self.runnable);
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
        for (k, iommu) in self.world.iommus.iter().enumerate() {
            if iommu.prq_len() > 0 || iommu.prq_overflowed() {
                runnable.push(Actor::Prq(k));
            }
        }
        for (k, q) in self.world.queues.iter().enumerate() {
            if q.pending() > 0 {
                runnable.push(Actor::Iopf(k));
            }
        }
        for (k, o) in self.world.live_owners() {
            if o.fault.as_ref().is_some_and(|f| f.pending() > 0) {
                runnable.push(Actor::Owner(k));
            }
        }
        runnable.len() == workers_before
    }

    /// Polls every waiting actor once, in order. If none moved and no timed event is ahead,
    /// the waiters are stuck: each is failed and reported.
    fn poll_waiters(&mut self) {
        let mut moved = false;
        for &a in &self.runnable {
            moved |= self.act.step(a, self.world, self.now, &self.progress) == Step::Moved;
        }
        self.now = self.now.saturating_add(1);
        if moved || jump_to_next_event(self.world.scenario, &self.pending, &mut self.now) {
            self.idle = 0;
            return;
        }
        let now = self.now;
        for a in self.runnable.iter().copied() {
            let msg = format!("{a:?} waits for a page response nobody will send");
            self.world.obs.log(&format!("{now} stuck {msg}"));
            self.stuck.push(msg);
            match a {
                Actor::Job(i) => self.act.jobs[i].fail(now, "stuck waiting for a page response"),
                Actor::Flood(k) => self.act.floods[k].done = true,
                Actor::ReadBack(k) => {
                    self.act.readbacks[k].1.result = Some(Err("stuck".into()));
                    self.act.readbacks[k].1.done = true;
                }
                _ => {}
            }
        }
        let scenario = self.world.scenario;
        self.pending
            .retain(|&i| matches!(scenario.events[i].trigger, Trigger::AtMs(_)));
        self.idle = 0;
    }

    /// Gives one step to an actor picked by the RNG, and logs what it did.
    fn step_one(&mut self) {
        let a = self.runnable[self.rng.random_range(0..self.runnable.len())];
        let r = self.act.step(a, self.world, self.now, &self.progress);
        self.world.obs.log(&format!("{} {a:?} {r:?}", self.now));
        self.now = self.now.saturating_add(1);
        if r == Step::Moved {
            self.idle = 0;
        } else {
            self.idle += 1;
        }
    }

    /// Ends the run: what the jobs produced and what was read back.
    fn finish(self) -> Ran {
        self.progress.finish();
        let mut owner_reads: Vec<Option<Result<Vec<u8>, String>>> =
            (0..self.world.scenario.jobs.len()).map(|_| None).collect();
        for (i, r) in self.act.readbacks {
            owner_reads[i] = r.result.or(Some(Err("not read back".into())));
        }
        Ran {
            outcomes: self.act.jobs.into_iter().map(|j| j.out).collect(),
            owner_reads,
            fired: self.fired,
            steps: Some(self.now),
            stuck: self.stuck,
        }
    }
}

/// The virtual step at which an `at_ms` event is due. Saturating: a scenario built by hand
/// (not parsed, so not validated) may hold any time; it then fires at the end of virtual time
/// (one jump, no wait) instead of wrapping into an early one — and is compared in steps, so
/// it does become due once time has jumped there.
fn at_ms_step(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000 / STEP_NS)
}

/// Moves virtual time to the earliest pending timed event; `false` if there is none ahead.
fn jump_to_next_event(scenario: &Scenario, pending: &[usize], now: &mut u64) -> bool {
    let next = pending
        .iter()
        .filter_map(|&i| match scenario.events[i].trigger {
            Trigger::AtMs(ms) => Some(at_ms_step(ms)),
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

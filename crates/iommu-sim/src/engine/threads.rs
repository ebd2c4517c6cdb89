//! Threads mode: every job on its own thread, one thread firing events, one fault handler
//! thread per iommufd owner; the emulator's queue threads and the IOPF workers run as they do
//! in production. Every thread carries the run's `tracing` dispatcher.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::owner::{Owner, Serving};
use super::pattern::{fill_byte, write_chunk};
use super::progress::Progress;
use super::world::World;
use super::{ns, JobOutcome, Ran, RunOptions, CHUNK, FLOOD_PAGES, PAGE};
use crate::invariants::Event;
use crate::scenario::{Action, JobOp, JobTarget, Trigger};

/// Runs the world's jobs, events and fault handlers on their own threads until every job and
/// every event is done.
pub(super) fn run(world: &World<'_>, opts: &RunOptions, dispatch: &tracing::Dispatch) -> Ran {
    let run = Shared {
        world,
        dev_locks: world.eps.iter().map(|_| RwLock::new(())).collect(),
        jobs_done: AtomicBool::new(false),
        handlers_stop: AtomicBool::new(false),
        fired: Mutex::new(Vec::new()),
        progress: Progress::new(world, opts.progress),
        run_start: Instant::now(),
        dispatch,
    };
    let shared = &run;
    let (outcomes, owner_reads) = std::thread::scope(|s| {
        for (_, o) in world.live_owners() {
            s.spawn(move || shared.traced(|| shared.serve_faults(o)));
        }
        let events = s.spawn(|| shared.traced(|| shared.fire_events()));
        let handles: Vec<_> = (0..world.scenario.jobs.len())
            .map(|i| s.spawn(move || shared.traced(|| shared.run_job(i))))
            .collect();
        let outs: Vec<JobOutcome> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| JobOutcome {
                    error: Some("job thread panicked".into()),
                    ..JobOutcome::default()
                })
            })
            .collect();
        shared.jobs_done.store(true, Relaxed);
        let _ = events.join();
        shared.progress.finish();
        // Owner jobs read back through the device while the handlers still run.
        let owner_reads = shared.read_back_owner_jobs(&outs);
        shared.handlers_stop.store(true, Relaxed);
        (outs, owner_reads)
    });
    Ran {
        outcomes,
        owner_reads,
        fired: run.fired.into_inner().expect("fired"),
        steps: None,
        stuck: Vec::new(),
    }
}

/// What the run's threads share.
struct Shared<'w, 's> {
    world: &'w World<'s>,
    /// Per device: DMA chunks hold it for reading, an unbind for writing (see [`World::fire`]).
    dev_locks: Vec<RwLock<()>>,
    jobs_done: AtomicBool,
    handlers_stop: AtomicBool,
    /// (event index, start ns, duration ns) of every event fired.
    fired: Mutex<Vec<(usize, u64, u64)>>,
    progress: Progress,
    run_start: Instant,
    dispatch: &'w tracing::Dispatch,
}

impl Shared<'_, '_> {
    /// Runs `f` with the run's `tracing` dispatcher (on a thread of the run).
    fn traced<T>(&self, f: impl FnOnce() -> T) -> T {
        tracing::dispatcher::with_default(self.dispatch, f)
    }

    /// Owner `o`'s fault handler: serves batches until stopped, then drains once more.
    fn serve_faults(&self, o: &Owner) {
        let mut serving = Serving::new();
        let Some(fd) = &o.fault else { return };
        loop {
            let stopping = self.handlers_stop.load(Relaxed);
            let _ = fd.wait_readable(Some(Duration::from_millis(5)));
            while o.serve_once(&self.world.phys, &mut serving) > 0 {}
            if stopping {
                return;
            }
        }
    }

    /// Fires each event when due, every millisecond (and ticks the progress bar), until the
    /// jobs are done and no event is left; `after_groups` events not due by then are dropped,
    /// and `at_ms` events still ahead fire at once — nothing runs until then, so waiting would
    /// only sleep (as deterministic mode jumps its virtual time to them), and a time far ahead
    /// must not make a run wait for years.
    fn fire_events(&self) {
        let scenario = self.world.scenario;
        let mut pending: Vec<usize> = (0..scenario.events.len()).collect();
        loop {
            let done = self.jobs_done.load(Relaxed);
            self.progress.tick();
            if pending.is_empty() && done {
                break;
            }
            let now_ms = self.run_start.elapsed().as_millis() as u64;
            let groups = self.world.groups_answered();
            let mut keep = Vec::new();
            for &i in &pending {
                let e = &scenario.events[i];
                let due = match e.trigger {
                    Trigger::AtMs(ms) => now_ms >= ms || done,
                    Trigger::AfterGroups(g) => groups >= g,
                };
                if due {
                    self.fire(i);
                } else if !(done && matches!(e.trigger, Trigger::AfterGroups(_))) {
                    keep.push(i);
                }
            }
            pending = keep;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Fires event `i` and records when it fired and how long it took.
    fn fire(&self, i: usize) {
        let e = &self.world.scenario.events[i];
        let t0 = Instant::now();
        self.progress
            .message(super::events::action_name(e.action).to_string());
        if e.action == Action::Overflow {
            flood(self.world, i);
        } else {
            self.world.fire(i, Some(&self.dev_locks));
        }
        self.fired.lock().expect("fired").push((
            i,
            ns(t0.duration_since(self.run_start)),
            ns(t0.elapsed()),
        ));
    }

    /// Reads back, through the device, every owner job that succeeded and that no fired
    /// event affected.
    fn read_back_owner_jobs(&self, outs: &[JobOutcome]) -> Vec<Option<Result<Vec<u8>, String>>> {
        let world = self.world;
        let fired: Vec<usize> = self
            .fired
            .lock()
            .expect("fired")
            .iter()
            .map(|f| f.0)
            .collect();
        (0..world.scenario.jobs.len())
            .map(|i| {
                let j = &world.scenario.jobs[i];
                let JobTarget::Owner(_, iova) = j.target else {
                    return None;
                };
                if outs[i].error.is_some() || world.affected(&fired, i) {
                    return None;
                }
                let mut got = vec![0u8; world.job_len[i] as usize];
                Some(
                    world.eps[j.device]
                        .dma_read(None, iova, &mut got)
                        .map(|()| got)
                        .map_err(|e| e.to_string()),
                )
            })
            .collect()
    }

    /// Runs job `i` on this thread.
    fn run_job(&self, i: usize) -> JobOutcome {
        run_job(
            i,
            self.world,
            &self.dev_locks,
            &self.progress,
            self.run_start,
        )
    }
}

/// An `overflow` event: many threads fault at once on the IOMMU's bonded devices, each on its
/// own untouched region, while the IOMMU's page request queue is stalled (a starved IRQ
/// thread) until it overflows — the fault path's own threads report as fast as they send, so
/// without the stall a flood rarely fills the queue. Reporting resumes once the queue has
/// overflowed (or after [`FLOOD_STALL`]), and the flood runs to its end.
fn flood(world: &World<'_>, i: usize) {
    let targets = world.flood_targets(i);
    let iommu = world.scenario.events[i]
        .iommu
        .and_then(|io| world.iommus.get(io));
    let overflows = || iommu.map_or(0, |m| m.stats().prq_overflows);
    let before = overflows();
    if let Some(m) = iommu {
        m.stall_prq(true);
    }
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::scope(|s| {
        for (d, pasid, base) in targets {
            let ep = &world.eps[d];
            let dispatch = &dispatch;
            s.spawn(move || {
                tracing::dispatcher::with_default(dispatch, || {
                    let mut b = vec![0u8; (FLOOD_PAGES * PAGE) as usize];
                    let _ = ep.dma_read(Some(pasid), base, &mut b);
                })
            });
        }
        let start = Instant::now();
        while overflows() == before && start.elapsed() < FLOOD_STALL {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        if let Some(m) = iommu {
            m.stall_prq(false);
        }
    });
}

/// The longest an `overflow` event stalls its IOMMU's page request queue.
const FLOOD_STALL: std::time::Duration = std::time::Duration::from_millis(500);

fn run_job(
    i: usize,
    world: &World<'_>,
    dev_locks: &[RwLock<()>],
    progress: &Progress,
    run_start: Instant,
) -> JobOutcome {
    let j = &world.scenario.jobs[i];
    let len = world.job_len[i];
    let ep = &world.eps[j.device];
    let mut out = JobOutcome::default();
    let t0 = Instant::now();
    let (pasid, base) = match world.job_target(i) {
        Ok(t) => t,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let (span_len, src_half) = if j.op == JobOp::Copy {
        (len / 2, len / 2)
    } else {
        (len, 0)
    };
    let mut buf = vec![0u8; CHUNK as usize];
    if j.op == JobOp::Read {
        out.last_read = vec![0u8; len as usize];
    }
    'outer: for _ in 0..j.repeat {
        let mut off = 0;
        while off < span_len {
            let n = CHUNK.min(span_len - off);
            let guard = dev_locks[j.device].read().expect("device lock");
            let c0 = Instant::now();
            let r = match j.op {
                JobOp::Write => {
                    write_chunk(j, off, &mut buf[..n as usize]);
                    ep.dma_write(pasid, base + off, &buf[..n as usize])
                }
                JobOp::Fill => ep.dma_fill(pasid, base + off, n, fill_byte(j)),
                JobOp::Read => ep.dma_read(
                    pasid,
                    base + off,
                    &mut out.last_read[off as usize..(off + n) as usize],
                ),
                JobOp::Copy => ep.dma_copy(pasid, base + off, base + src_half + off, n),
            };
            out.latency.record(ns(c0.elapsed()));
            match r {
                Ok(()) => {
                    out.bytes += n;
                    progress.inc(n);
                    if let Some(p) = pasid {
                        world.obs.observe(Event::Dma {
                            dev: j.device as u64,
                            pasid: p,
                        });
                    }
                }
                Err(e) => {
                    out.error = Some(e.to_string());
                    break 'outer;
                }
            }
            drop(guard);
            off += n;
        }
    }
    out.span = Some((ns(t0.duration_since(run_start)), ns(t0.elapsed())));
    out
}

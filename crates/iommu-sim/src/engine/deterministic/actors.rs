//! The deterministic scheduler's actors as state machines that advance one step at a time: a
//! DMA job over its chunks, a reader (a flooding actor of an `overflow` event, or the read-back
//! of an owner job's data), and the service actors the world already steps (page request
//! queues, IOPF queues, owners' fault handlers).

use iommu_emu::{DmaJob, DmaKind, DmaPoll};

use super::{PRQ_BATCH, STEP_NS};
use crate::engine::owner::Serving;
use crate::engine::pattern::{fill_byte, write_chunk};
use crate::engine::progress::Progress;
use crate::engine::world::World;
use crate::engine::{JobOutcome, CHUNK};
use crate::invariants::Event;
use crate::scenario::JobOp;

/// Who the scheduler can give the next step to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Actor {
    Job(usize),
    Flood(usize),
    ReadBack(usize),
    Prq(usize),
    Iopf(usize),
    Owner(usize),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Something changed.
    Moved,
    /// The actor is waiting (for a response, for credits).
    Waiting,
}

/// Which DMA of a chunk is in flight: copies read their source, then write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Plain,
    CopyRead,
    CopyWrite,
}

/// A scenario job as a state machine over its chunks.
pub(super) struct JobRun {
    pub(super) i: usize,
    pasid: Option<u32>,
    base: u64,
    span_len: u64,
    src_half: u64,
    rep: u64,
    off: u64,
    cur: Option<(DmaJob, Stage)>,
    chunk_start: u64,
    start: u64,
    pub(super) out: JobOutcome,
    pub(super) done: bool,
}

impl JobRun {
    pub(super) fn new(world: &World<'_>, i: usize, now: u64) -> Self {
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

    /// Polls the chunk in flight once, starting it first if there is none.
    fn step(&mut self, world: &World<'_>, now: u64, progress: &Progress) -> Step {
        let j = &world.scenario.jobs[self.i];
        let ep = &world.eps[j.device];
        let n = CHUNK.min(self.span_len - self.off);
        if self.cur.is_none() {
            self.start_chunk(world, now, n);
        }
        let (job, _) = self.cur.as_mut().expect("a chunk in flight");
        match ep.poll_dma(job) {
            DmaPoll::Pending if job.is_waiting() => Step::Waiting,
            DmaPoll::Pending => Step::Moved,
            DmaPoll::Ready(Err(e)) => {
                self.fail(now, &e.to_string());
                Step::Moved
            }
            DmaPoll::Ready(Ok(())) => {
                let (job, stage) = self.cur.take().expect("a chunk in flight");
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
                self.chunk_done(world, now, n, progress);
                Step::Moved
            }
        }
    }

    /// Starts the DMA of the next chunk (`n` bytes at the current offset).
    fn start_chunk(&mut self, world: &World<'_>, now: u64, n: u64) {
        let j = &world.scenario.jobs[self.i];
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
        let ep = &world.eps[j.device];
        self.cur = Some((ep.start_dma(self.pasid, at, n, kind), stage));
    }

    /// Records a completed chunk of `n` bytes and moves on to the next (or the next repeat, or
    /// the end).
    fn chunk_done(&mut self, world: &World<'_>, now: u64, n: u64, progress: &Progress) {
        let j = &world.scenario.jobs[self.i];
        self.out
            .latency
            .record((now - self.chunk_start + 1).saturating_mul(STEP_NS));
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
    }

    /// The job fails with `error`, its chunk in flight dropped.
    pub(super) fn fail(&mut self, now: u64, error: &str) {
        self.out.error = Some(error.into());
        self.cur = None;
        self.finish(now);
    }

    /// The job is over (done or failed): its span ends now.
    fn finish(&mut self, now: u64) {
        self.done = true;
        self.out.span = Some((
            self.start.saturating_mul(STEP_NS),
            (now - self.start + 1).saturating_mul(STEP_NS),
        ));
    }
}

/// A flooding reader of an `overflow` event, or a read-back of an owner job's data.
pub(super) struct Reader {
    dev: usize,
    pasid: Option<u32>,
    /// Addresses still to read and the length of each read.
    todo: std::vec::IntoIter<(u64, u64)>,
    cur: Option<DmaJob>,
    /// The read-back's data, or its error (floods ignore theirs).
    pub(super) result: Option<Result<Vec<u8>, String>>,
    pub(super) done: bool,
}

impl Reader {
    pub(super) fn new(dev: usize, pasid: Option<u32>, reads: Vec<(u64, u64)>) -> Self {
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

/// The states of the actors that have one.
pub(super) struct Actors {
    pub(super) jobs: Vec<JobRun>,
    pub(super) floods: Vec<Reader>,
    /// (job index, its read-back).
    pub(super) readbacks: Vec<(usize, Reader)>,
    pub(super) serving: Vec<Serving>,
}

impl Actors {
    /// Runs one step of actor `a`.
    pub(super) fn step(
        &mut self,
        a: Actor,
        world: &World<'_>,
        now: u64,
        progress: &Progress,
    ) -> Step {
        let moved = |b: bool| if b { Step::Moved } else { Step::Waiting };
        match a {
            Actor::Job(i) => self.jobs[i].step(world, now, progress),
            Actor::Flood(k) => self.floods[k].step(world),
            Actor::ReadBack(k) => self.readbacks[k].1.step(world),
            Actor::Prq(k) => moved(world.iommus[k].prq_step(PRQ_BATCH) > 0),
            Actor::Iopf(k) => moved(world.queues[k].run_one()),
            Actor::Owner(k) => {
                let served = world
                    .owner(k)
                    .map_or(0, |o| o.serve_once(&world.phys, &mut self.serving[k]));
                moved(served > 0)
            }
        }
    }
}

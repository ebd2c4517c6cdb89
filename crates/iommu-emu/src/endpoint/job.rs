//! Polled DMA: a [`DmaJob`] stepped by [`Endpoint::poll_dma`] on the caller's thread, never
//! blocking (for a deterministic scheduler). See "Polled DMA" in the module documentation.

use std::fmt;

use super::dma::{dma_fill_chunk, dma_read_chunk, dma_write_chunk};
use super::dma::{Machine, PASS_PAGES};
use super::{DmaError, Endpoint};
use crate::iommu::DmaWindow;
use std::sync::Arc;

#[cfg(doc)]
use super::{EndpointStats, MAX_AUTO_ROUNDS};

/// What a step-driven DMA job ([`Endpoint::start_dma`]) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmaKind {
    /// Read the range into the job's buffer ([`DmaJob::data`]).
    Read,
    /// Write these bytes (their length must be the job's length).
    Write(Vec<u8>),
    /// Set every byte of the range to this value.
    Fill(u8),
}

/// The result of [`Endpoint::poll_dma`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaPoll {
    /// The job has finished, with this result.
    Ready(Result<(), DmaError>),
    /// The job needs more steps.
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobOp {
    Read,
    Write,
    Fill(u8),
}

/// Where a job is; its engine state ([`Machine`]) lives beside it, inline, and is reset in place
/// by [`DmaJob::restart`].
enum JobState {
    /// The machine is stepping the transfer.
    Run,
    /// Finished (or failed validation); not yet reported by a poll nor counted.
    Finish(Result<(), DmaError>),
    /// Reported and counted.
    Done(Result<(), DmaError>),
}

/// A DMA job driven step by step by [`Endpoint::poll_dma`], without threads or blocking (for a
/// deterministic scheduler). It holds the job's parameters, its data buffer and the engine
/// state: the cursor over the range, the pages to retry, the faulted pages of the next group,
/// the outstanding group (PRG index, pages, reset epoch) and the round counters.
///
/// Dropping a job that waits for a page response abandons its group (counted in
/// [`EndpointStats::abandoned`]): the PRG index stays allocated until the response arrives,
/// which is then counted as stray, never applied to another group.
pub struct DmaJob {
    ep: Endpoint,
    pasid: Option<u32>,
    iova: u64,
    len: u64,
    op: JobOp,
    buf: Vec<u8>,
    state: JobState,
    /// The engine state; meaningful while `state` is `Run`.
    m: Machine,
}

impl DmaJob {
    /// The read buffer (a read job; complete once the job is `Ready(Ok)`), or the data written
    /// (a write job). Empty for a fill job.
    pub fn data(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer of [`DmaJob::data`], by value.
    pub fn into_data(mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Whether the job waits for a page response or for PRI credits (PRG index or outstanding
    /// page request allocation): polling it again makes no progress until the page request
    /// queue, a fault handler or another job runs.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, JobState::Run) && self.m.is_waiting()
    }

    /// The PASID of the job.
    pub fn pasid(&self) -> Option<u32> {
        self.pasid
    }

    /// The first address of the job's range.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The job's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the job's length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The job's result once a poll has returned [`DmaPoll::Ready`] for it (what that poll
    /// returned), `None` before.
    pub fn outcome(&self) -> Option<Result<(), DmaError>> {
        match self.state {
            JobState::Done(r) => Some(r),
            _ => None,
        }
    }
}

impl DmaJob {
    /// Sets the job up for a new transfer (validation errors surface on the first poll).
    fn init(&mut self, pasid: Option<u32>, iova: u64, len: u64, kind: DmaKind) {
        let (op, buf) = match kind {
            DmaKind::Read => {
                // A read reuses the buffer's allocation.
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                (JobOp::Read, buf)
            }
            DmaKind::Write(data) => (JobOp::Write, data),
            DmaKind::Fill(b) => (JobOp::Fill(b), Vec::new()),
        };
        (self.pasid, self.iova, self.len, self.op, self.buf) = (pasid, iova, len, op, buf);
        self.state = match Endpoint::validate(self) {
            Ok(true) => JobState::Run,
            Ok(false) => JobState::Finish(Ok(())),
            Err(e) => JobState::Finish(Err(e)),
        };
    }

    /// Starts a new transfer in this job once a poll has returned [`DmaPoll::Ready`] for
    /// it (as [`Endpoint::start_dma`] would, on the same function), like a DMA engine reusing
    /// a descriptor: no new job, no reference to the function taken again. A job whose result
    /// was not yet reported by a poll is left alone and `kind` is handed back.
    pub fn restart(
        &mut self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        kind: DmaKind,
    ) -> Result<(), DmaKind> {
        if !matches!(self.state, JobState::Done(_)) {
            return Err(kind);
        }
        self.init(pasid, iova, len, kind);
        Ok(())
    }
}

impl Drop for DmaJob {
    fn drop(&mut self) {
        if let (JobState::Run, Some(o)) = (&self.state, self.m.outstanding) {
            self.ep.abandon(o);
        }
    }
}

impl fmt::Debug for DmaJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaJob")
            .field("endpoint", &self.ep.sh.name)
            .field("pasid", &self.pasid)
            .field("iova", &self.iova)
            .field("len", &self.len)
            .field("op", &self.op)
            .field("waiting", &self.is_waiting())
            .finish_non_exhaustive()
    }
}

/// A thread that drives many polled [`DmaJob`]s of one function at once, as a device's DMA
/// engine keeps many requests outstanding, and does the fault-path work itself while they wait
/// ([`Endpoint::help`]) instead of handing it to sleeping threads: page requests it sends wake
/// no queue thread, because it promises to report them before it blocks.
///
/// Typical loop: note [`DmaEngine::responses`], poll every job; when all are
/// [`DmaJob::is_waiting`], [`DmaEngine::wait`] for a response after the noted count (noted
/// before the polls, so a response that arrived during them does not make the wait sleep). The
/// wait does the fault-path work first ([`DmaEngine::help`]) and returns at once if there was
/// any, so the loop polls again.
pub struct DmaEngine<'a> {
    ep: &'a Endpoint,
    /// The function's IOPF queue when the engine was made (looked up once, not per help; a
    /// queue that changes later is still served by its workers).
    queue: Option<Arc<iommu_core::IopfQueue>>,
}

impl DmaEngine<'_> {
    /// Steps `job` until it is done or waits for a page response or for PRI credits
    /// ([`DmaJob::is_waiting`]): run to completion, where [`Endpoint::poll_dma`] makes one
    /// step per call. A job of another function is stepped the same way, but its groups are
    /// sent as a plain polled job's are (they wake its IOMMU's queue thread: this engine helps
    /// only its own).
    pub fn poll(&self, job: &mut DmaJob) -> DmaPoll {
        let mine = Arc::ptr_eq(&job.ep.sh, &self.ep.sh);
        Endpoint::poll_job(job, mine, true, None)
    }

    /// [`DmaEngine::poll`] for every job of `jobs`, in as few DMA windows as it can: one for a
    /// sweep of many jobs instead of one per pass and one per group sent (a window is the read
    /// side of the IOMMU's hardware lock; see "DMA engine" in the module documentation). A
    /// window is given back once `PASS_PAGES` (512) pages went through it — a job visited counts
    /// as one page — so invalidations wait no longer than they would behind one pass. A job
    /// behind another IOMMU is polled between windows, never inside one. Jobs already `Ready`
    /// are left as they are. Returns how many jobs became `Ready` in this call; a job's result is
    /// then [`DmaJob::outcome`]. Nothing of the caller runs inside the window.
    pub fn poll_all(&self, jobs: &mut [DmaJob]) -> usize {
        let iommu = &self.ep.sh.iommu;
        let budget = PASS_PAGES as u64;
        let mut ready = 0;
        let mut i = 0;
        let unfinished = |job: &DmaJob| !matches!(job.state, JobState::Done(_));
        loop {
            // Finished jobs need no window.
            while jobs.get(i).is_some_and(|j| !unfinished(j)) {
                i += 1;
            }
            let Some(job) = jobs.get_mut(i) else {
                return ready;
            };
            if !Arc::ptr_eq(&job.ep.sh.iommu, iommu) {
                // Another IOMMU's job opens its own windows, with none of ours open: a read
                // side held across another's could wait behind a writer forever.
                if let DmaPoll::Ready(_) = Endpoint::poll_job(job, false, true, None) {
                    ready += 1;
                }
                i += 1;
                continue;
            }
            let win = iommu.dma_window();
            while let Some(job) = jobs.get_mut(i) {
                if win.pages() >= budget || !Arc::ptr_eq(&job.ep.sh.iommu, iommu) {
                    break;
                }
                if !unfinished(job) {
                    i += 1;
                    continue;
                }
                win.note_pages(1);
                let mine = Arc::ptr_eq(&job.ep.sh, &self.ep.sh);
                match Endpoint::poll_job(job, mine, true, Some(&win)) {
                    DmaPoll::Ready(_) => ready += 1,
                    // The window is spent mid-job: the job goes on in the next one.
                    DmaPoll::Pending if !job.is_waiting() && win.pages() >= budget => break,
                    DmaPoll::Pending => {}
                }
                i += 1;
            }
        }
    }

    /// The work between this function's page requests and their responses, here
    /// ([`Endpoint::help`]). Returns whether it did anything.
    pub fn help(&self) -> bool {
        self.ep.help_with(self.queue.as_deref())
    }

    /// Blocks until a page response (or a reset) reaches the function after `seen`
    /// ([`DmaEngine::responses`]) or `timeout` passes; returns the current count. Does the
    /// fault-path work first ([`DmaEngine::help`]) and returns at once if there was any, so
    /// no request this engine sent waits for a thread nobody woke.
    pub fn wait(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        if self.help() {
            return self.responses();
        }
        self.ep.wait_responses_after(seen, timeout)
    }

    /// Page responses (and resets) the function has seen so far, for [`DmaEngine::wait`].
    pub fn responses(&self) -> u64 {
        self.ep
            .sh
            .responses
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for DmaEngine<'_> {
    /// Requests this engine sent and did not report go to the queue thread.
    fn drop(&mut self) {
        self.ep.sh.iommu.prq.kick();
    }
}

impl Endpoint {
    /// A DMA engine driving this function's polled jobs on the calling thread.
    pub fn engine(&self) -> DmaEngine<'_> {
        DmaEngine {
            ep: self,
            queue: iommu_core::iopf_queue_of(&self.sh.dev),
        }
    }

    /// Starts a step-driven DMA job of `len` bytes at `iova` (with `pasid`, or on the RID):
    /// nothing happens until [`Endpoint::poll_dma`]. For [`DmaKind::Write`], `len` must equal
    /// the data's length. Validation errors (a wrapping range, a length mismatch, a read buffer
    /// that cannot be allocated: [`DmaError::InvalidRange`]) surface on the first poll.
    pub fn start_dma(&self, pasid: Option<u32>, iova: u64, len: u64, kind: DmaKind) -> DmaJob {
        let mut job = DmaJob {
            ep: self.clone(),
            pasid,
            iova,
            len,
            op: JobOp::Read,
            buf: Vec::new(),
            state: JobState::Finish(Ok(())),
            m: Machine::idle(false),
        };
        job.init(pasid, iova, len, kind);
        job
    }

    /// Checks the job's parameters and resets its machine for them; `Ok(false)`: nothing to do.
    fn validate(job: &mut DmaJob) -> Result<bool, DmaError> {
        let (iova, len) = (job.iova, job.len);
        let bad = DmaError::InvalidRange { iova, len };
        let write = job.op != JobOp::Read;
        let m = job.m.reset(&job.ep, job.pasid, iova, len, write)?;
        match job.op {
            JobOp::Write if job.buf.len() as u64 != len => return Err(bad),
            JobOp::Read => {
                let n = usize::try_from(len).map_err(|_| bad)?;
                job.buf.try_reserve_exact(n).map_err(|_| bad)?;
                job.buf.resize(n, 0);
            }
            _ => {}
        }
        Ok(m)
    }

    /// Drives `job` one step without ever blocking: makes at most one pass (up to
    /// `PASS_PAGES` = 512 pages) over the job's pages, or sends one page request group, or
    /// takes one page response. `Pending` while more steps are needed — including while the
    /// job waits for a response or for PRI credits ([`DmaJob::is_waiting`]); then something
    /// else (the page request queue, a fault handler) must run before the job can progress.
    /// Once `Ready`, later polls return the same result again (counted once in the stats).
    ///
    /// The job is driven on the endpoint that started it (`self` is only the handle the call
    /// is made through). Errors and counters are those of the blocking calls, except that a
    /// polled job has no wall-clock deadline: it never fails with
    /// [`DmaError::ResponseTimeout`], and its IOMMU-answered (overflow) rounds are bounded by
    /// [`MAX_AUTO_ROUNDS`] instead of the response timeout.
    pub fn poll_dma(&self, job: &mut DmaJob) -> DmaPoll {
        Self::poll_job(job, false, false, None)
    }

    /// One step of `job` — or, with `until_waiting`, steps until it is done or waits
    /// ([`DmaEngine::poll`]); `helper`: the caller reports the page request queue itself before
    /// it blocks ([`DmaEngine`]).
    fn poll_job(
        job: &mut DmaJob,
        helper: bool,
        until_waiting: bool,
        win: Option<&DmaWindow<'_>>,
    ) -> DmaPoll {
        let DmaJob {
            ep,
            op,
            buf,
            state,
            m,
            ..
        } = job;
        let r = match state {
            JobState::Done(r) => return DmaPoll::Ready(*r),
            JobState::Finish(r) => *r,
            JobState::Run => {
                m.helper = helper;
                let phys = ep.sh.iommu.phys();
                let u = until_waiting;
                let stepped = match *op {
                    JobOp::Read => m.steps(ep, u, win, &mut |pa, done, n| {
                        dma_read_chunk(phys, pa, &mut buf[done..done + n])
                    }),
                    JobOp::Write => m.steps(ep, u, win, &mut |pa, done, n| {
                        dma_write_chunk(phys, pa, &buf[done..done + n])
                    }),
                    JobOp::Fill(b) => {
                        m.steps(ep, u, win, &mut |pa, _, n| dma_fill_chunk(phys, pa, n, b))
                    }
                };
                match stepped {
                    Ok(false) => return DmaPoll::Pending,
                    Ok(true) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        ep.count_job(&r);
        *state = JobState::Done(r);
        DmaPoll::Ready(r)
    }
}

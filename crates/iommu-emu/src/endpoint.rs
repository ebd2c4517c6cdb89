//! PCIe functions behind the emulated IOMMU: [`Endpoint`] with PASID, ATS, PRI and a DMA engine.
//!
//! # DMA engine
//! `dma_read`/`dma_write`/`dma_fill`/`dma_copy` take any range; it is split at page boundaries.
//! The engine makes *passes* over the pages still to do, each inside a DMA window of the IOMMU
//! (see `iommu.rs`): a page whose translation succeeds (device TLB hit with ATS, else the IOMMU's
//! IOTLB or walk) is copied at once; pages that miss are collected into ONE page request group —
//! several page requests sharing a PRG index, the last flagged LAST_PAGE — capped by the
//! configured group size and by the PRI credits (the outstanding page request allocation). The
//! DMA thread then waits, outside any window, for the group's response and retries those pages.
//!
//! The engine is one state machine per job (cursor, pages to retry, the faulted pages of the
//! next group, the outstanding group, round counters), advanced one *step* at a time: a pass,
//! or sending one group, or taking one response. The blocking calls step it in a loop, and it
//! waits itself where a step cannot complete (credits, response).
//!
//! # Polled DMA (deterministic scheduling)
//! [`Endpoint::start_dma`] creates a [`DmaJob`] and [`Endpoint::poll_dma`] advances it by
//! one step on the calling thread, never blocking: where the blocking engine would wait for
//! PRI credits or a page response, it returns [`DmaPoll::Pending`] ([`DmaJob::is_waiting`]).
//! With an IOMMU whose page request queue is manual (`EmuIommuConfig::prq_thread` false,
//! stepped by `EmuIommu::prq_step`) and a fault handler that does not queue work on threads, a
//! single thread can run the whole fault path step by step, and the same sequence of steps
//! gives the same results. Errors and counters are those of the blocking calls; the only
//! differences are about time: a polled job has no response timeout, and its overflow retries
//! (groups answered by the IOMMU itself) are bounded by [`MAX_AUTO_ROUNDS`] rounds instead of
//! the response timeout. A job dropped while a group is outstanding abandons it: the PRG index
//! stays allocated until the response arrives (then counted as stray) or a reset.
//!
//! # PRI (PCIe r6 §10.4) and response codes (SPEC §4.8)
//! * Success: the pages should be resident; the engine retries them (a retry that faults again
//!   makes a new group; a job that makes no progress for [`MAX_ROUNDS_WITHOUT_PROGRESS`] rounds
//!   fails with [`DmaError::RetryLimit`] rather than livelocking).
//! * Invalid: the DMA fails with [`DmaError::PageRequestInvalid`]; PRI stays enabled.
//! * Failure: PRI is disabled until [`Endpoint::reset`]; the DMA fails with
//!   [`DmaError::ResponseFailure`], later faults fail with [`DmaError::Fault`]
//!   (`PriUnavailable`).
//!
//! * Overflow: when the IOMMU answered the group itself (page request queue overflow), the
//!   engine yields and retries; that does not count as a round without progress, but if it
//!   lasts the whole response timeout (a polled job: [`MAX_AUTO_ROUNDS`] groups in a row) the
//!   DMA fails with [`DmaError::PriStalled`].
//!
//! Without ATS every request is untranslated: a translation fault is unrecoverable (PCIe PRI
//! needs ATS), is recorded in the IOMMU's fault log, and fails the DMA.
//!
//! # Waiting
//! A DMA waiting for a response yields for up to 200 µs, then parks on a condition variable
//! (a parked thread's wake-up costs ~25 µs on this machine class, ANCHORS). Pure spinning was
//! measured and rejected: on two shared cores it starves the queue and IOPF threads.
//! A polled job never waits: it returns `Pending` and its scheduler decides what runs next
//! (typically `EmuIommu::prq_step` and the fault handler).
//!
//! # Exactly-once accounting
//! Each group the endpoint sends is answered once: by software (the core's page response) or
//! by the IOMMU itself on queue overflow. A response for a PRG index with no outstanding group
//! (a late answer to a group abandoned by reset or timeout, or a duplicate) is counted as
//! *stray*, never applied. PRG indices are allocated round robin, so a late answer is unlikely to
//! meet a new group with the same index (a dropped [`DmaJob`]'s index is not even reused before
//! its answer or a reset).
//!
//! # Tracing
//! Events with target `iommu_emu::pri` (level TRACE) let a checker follow every group:
//! * `kind = "group_sent"`: `dev` (u64 device id), `pasid` (i64, -1 without PASID), `grpid`,
//!   `pages` (u64) — the group was written to the queue or answered by the IOMMU; emitted under
//!   the queue lock, so before any response to it.
//! * `kind = "response"`: `dev`, `grpid`, `code` (u64: 0 Success, 1 Invalid, 2 Failure),
//!   `applied` (bool: matched an outstanding unanswered group), `auto` (bool: the IOMMU
//!   answered on overflow) — every response reaching the endpoint, strays included.
//! * `kind = "abandoned"`: `dev`, `grpid` — a group given up without its response being
//!   consumed (reset, one event per slot; response timeout; dropped [`DmaJob`]).
//!
//! Responses and abandons are emitted under the endpoint's PRI lock, so one device's events
//! come in the order its state changed.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iommu_core::{
    Device, PageRequest, PageResponse, PageResponseCode, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE,
};
use iommu_pt::{Access, Pfn};
use parking_lot::{Condvar, Mutex};

use crate::iommu::{DmaWindow, EmuIommu, FaultReason, FaultRecord, TranslationFault};
use crate::phys::{fill_frame, read_frame, write_frame, Frame, PAGE_SHIFT, PAGE_SIZE};
use crate::prq::Pushed;
use crate::tlb::{perm_bits, perms_allow, pkey, Entry, Tag, Tlb};

/// PRG indices are 9 bits (PCIe): at most 512 groups outstanding per function.
pub const PRG_INDICES: usize = 512;
/// Rounds of page requests without a single page completing before a DMA gives up.
pub const MAX_ROUNDS_WITHOUT_PROGRESS: u32 = 64;
/// Groups in a row a polled job ([`Endpoint::poll_dma`]) may have answered by the IOMMU itself
/// (page request queue overflow) before it fails with [`DmaError::PriStalled`]. The blocking
/// calls bound the same situation by the response timeout; a polled job has no clock.
pub const MAX_AUTO_ROUNDS: u32 = 1024;
/// How long a DMA waiting for a page response yields before it parks.
const YIELD_WAIT: Duration = Duration::from_micros(200);
/// Pages processed per DMA window before the engine lets writers (invalidations) in.
const PASS_PAGES: usize = 512;

/// Configuration of an [`Endpoint`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Address Translation Services: the device caches translations in its device TLB and may
    /// use PRI. Ignored (off) when the IOMMU has no ATS support.
    pub ats: bool,
    /// Device TLB (ATC) entries.
    pub atc_entries: usize,
    /// Page Request Interface enabled (needs `ats` and an IOMMU with PRI).
    pub pri: bool,
    /// Outstanding page request allocation: page requests in flight at once (PCIe PRI
    /// capability). At least 1.
    pub pri_credits: u32,
    /// Most page requests in one group.
    pub max_group_pages: u32,
    /// How long a DMA waits for a page response before failing with
    /// [`DmaError::ResponseTimeout`] (a guard against a lost response, not a protocol timer).
    pub response_timeout: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            ats: true,
            atc_entries: 64,
            pri: true,
            pri_credits: 512,
            max_group_pages: 256,
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a DMA failed. Every failure is one of these; the engine never panics on bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaError {
    /// The range wraps around the address space.
    InvalidRange {
        /// Start of the range.
        iova: u64,
        /// Its length.
        len: u64,
    },
    /// A PASID was given but the function has no PASID capability, PASID is not enabled, or
    /// the PASID is out of range.
    PasidNotSupported {
        /// The PASID.
        pasid: u32,
    },
    /// The PASID was stopped ([`Endpoint::stop_pasid`]).
    PasidStopped {
        /// The PASID.
        pasid: u32,
    },
    /// An unrecoverable translation fault (recorded in the IOMMU's fault log).
    Fault(TranslationFault),
    /// The page request group was answered Invalid: the page cannot be made accessible.
    PageRequestInvalid {
        /// First page of the group.
        iova: u64,
    },
    /// The group was answered Response Failure: PRI is disabled until reset.
    ResponseFailure {
        /// First page of the group.
        iova: u64,
    },
    /// The function was reset while the DMA waited for a page response.
    Reset,
    /// No response arrived within the configured timeout.
    ResponseTimeout {
        /// The group's PRG index.
        grpid: u32,
    },
    /// No PRG index or credit became free, or the page request queue kept overflowing, for
    /// the whole response timeout.
    PriStalled,
    /// The translated address is not in physical memory (Unsupported Request).
    BadAddress {
        /// The physical address.
        pa: u64,
    },
    /// Page requests kept succeeding without the access ever completing.
    RetryLimit {
        /// A page that kept faulting.
        iova: u64,
    },
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRange { iova, len } => write!(f, "range {iova:#x}+{len:#x} wraps"),
            Self::PasidNotSupported { pasid } => write!(f, "PASID {pasid} not supported"),
            Self::PasidStopped { pasid } => write!(f, "PASID {pasid} is stopped"),
            Self::Fault(t) => write!(f, "unrecoverable translation fault: {t}"),
            Self::PageRequestInvalid { iova } => {
                write!(f, "page request for {iova:#x} answered Invalid")
            }
            Self::ResponseFailure { iova } => write!(
                f,
                "page request for {iova:#x} answered Response Failure; PRI disabled until reset"
            ),
            Self::Reset => write!(f, "function reset while waiting for a page response"),
            Self::ResponseTimeout { grpid } => {
                write!(f, "no page response for PRG index {grpid}")
            }
            Self::PriStalled => write!(
                f,
                "page request interface stalled (no credits or queue overflow)"
            ),
            Self::BadAddress { pa } => write!(f, "physical address {pa:#x} outside memory"),
            Self::RetryLimit { iova } => write!(f, "page {iova:#x} faults again after every retry"),
        }
    }
}

impl std::error::Error for DmaError {}

/// A snapshot of an endpoint's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// DMA jobs that completed.
    pub dma_ok: u64,
    /// DMA jobs that failed.
    pub dma_failed: u64,
    /// Page request groups sent.
    pub groups_sent: u64,
    /// Page requests sent (all groups).
    pub page_requests: u64,
    /// Groups answered (software responses applied + hardware auto-responses).
    pub groups_answered: u64,
    /// Groups answered Success by software.
    pub success: u64,
    /// Groups answered Invalid.
    pub invalid: u64,
    /// Groups answered Response Failure.
    pub failure: u64,
    /// Groups answered Success by the IOMMU on page request queue overflow.
    pub auto_success: u64,
    /// Responses that matched no outstanding group (late after reset/timeout, or duplicate).
    pub stray_responses: u64,
    /// Groups abandoned by reset or timeout.
    pub abandoned: u64,
    /// Device TLB hits.
    pub atc_hits: u64,
}

#[derive(Default)]
struct Counters {
    dma_ok: AtomicU64,
    dma_failed: AtomicU64,
    groups_sent: AtomicU64,
    page_requests: AtomicU64,
    answered: AtomicU64,
    success: AtomicU64,
    invalid: AtomicU64,
    failure: AtomicU64,
    auto_success: AtomicU64,
    stray: AtomicU64,
    abandoned: AtomicU64,
    atc_hits: AtomicU64,
}

struct PrgSlot {
    pasid: Option<u32>,
    pages: u32,
    outcome: Option<PageResponseCode>,
    /// Its job was dropped: the response, when it comes, is stray and frees the slot.
    abandoned: bool,
}

struct PriState {
    enabled: bool,
    /// Bumped by reset: waiters from an older epoch fail with `Reset`.
    epoch: u64,
    credits: u32,
    slots: Vec<Option<PrgSlot>>,
    next_index: usize,
    stopped: HashSet<u32>,
}

/// The state an endpoint shares with its IOMMU (which routes page responses and device-TLB
/// invalidations to it).
pub(crate) struct EpShared {
    name: String,
    dev: Arc<Device>,
    /// Keeps the device's group alive (the core's device only holds it weakly).
    group: Arc<iommu_core::Group>,
    iommu: Arc<EmuIommu>,
    sid: u32,
    cfg: EndpointConfig,
    pub(crate) atc: Arc<Tlb>,
    pri: Mutex<PriState>,
    pri_cv: Condvar,
    /// Bumped on every response, so a waiting DMA can poll before it parks.
    responses: AtomicU64,
    /// The PASID capability's Enable bit.
    pasid_enabled: std::sync::atomic::AtomicBool,
    /// Whether any PASID is stopped (`PriState::stopped` non-empty; written under the PRI
    /// lock): lets every DMA pass skip that lock in the common case.
    any_stopped: std::sync::atomic::AtomicBool,
    counters: Counters,
}

/// A PCIe function doing DMA through an [`EmuIommu`]. Cheap to clone; clones drive the same
/// function (several DMA threads may run jobs at once).
#[derive(Clone)]
pub struct Endpoint {
    sh: Arc<EpShared>,
}

enum Group {
    Answered(PageResponseCode),
    Auto,
}

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

enum JobState {
    Run(Machine),
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
        match &self.state {
            JobState::Run(m) => m.outstanding.is_some() || m.credit_wait,
            _ => false,
        }
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
}

impl Drop for DmaJob {
    fn drop(&mut self) {
        if let JobState::Run(Machine {
            outstanding: Some(o),
            ..
        }) = self.state
        {
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

/// A page request group a job sent and has not consumed the answer of.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    grpid: u32,
    pages: u32,
    /// The reset epoch it was allocated in.
    epoch: u64,
}

/// The DMA engine: the state of one job, stepped by the blocking calls (which build it
/// `block`ing: it waits for credits and responses itself, with the response timeout) and by
/// [`Endpoint::poll_dma`] (which returns `Pending` where the blocking machine would wait).
struct Machine {
    pasid: Option<u32>,
    iova: u64,
    end: u64,
    last: u64,
    write: bool,
    block: bool,
    /// Next page never tried.
    cursor: u64,
    /// Pages to try again (answered, or left out of a pass).
    retry: Vec<u64>,
    /// Pages that faulted in the last pass: the next group.
    faulted: Vec<u64>,
    group_cap: usize,
    stale_rounds: u32,
    /// Groups in a row answered by the IOMMU itself (queue overflow).
    auto_rounds: u32,
    /// Blocking: when the current run of overflow answers began.
    auto_since: Option<Instant>,
    /// Blocking: deadline of the current group (credits and response).
    deadline: Option<Instant>,
    outstanding: Option<Outstanding>,
    /// Polled: the last attempt to send the group found no PRG index or credit.
    credit_wait: bool,
}

impl Machine {
    /// `Ok(None)`: an empty range (nothing to do).
    fn new(
        ep: &Endpoint,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        block: bool,
    ) -> Result<Option<Machine>, DmaError> {
        if len == 0 {
            return Ok(None);
        }
        let end = iova
            .checked_add(len)
            .ok_or(DmaError::InvalidRange { iova, len })?;
        let cfg = &ep.sh.cfg;
        let group_cap = cfg.max_group_pages.min(cfg.pri_credits) as usize;
        Ok(Some(Machine {
            pasid,
            iova,
            end,
            last: (end - 1) >> PAGE_SHIFT,
            write,
            block,
            cursor: iova >> PAGE_SHIFT,
            retry: Vec::new(),
            // Grows on the first fault: a resident DMA allocates nothing.
            faulted: Vec::new(),
            group_cap,
            stale_rounds: 0,
            auto_rounds: 0,
            auto_since: None,
            deadline: None,
            outstanding: None,
            credit_wait: false,
        }))
    }

    /// One step: take the outstanding group's response, or send the group of faulted pages,
    /// or make one pass. `Ok(true)`: the job is complete; `Ok(false)`: step again.
    fn step(
        &mut self,
        ep: &Endpoint,
        op: &mut impl FnMut(&Frame, usize, usize, usize),
    ) -> Result<bool, DmaError> {
        if let Some(o) = self.outstanding {
            let r = if self.block {
                let deadline = self.deadline.unwrap_or_else(Instant::now);
                ep.wait_response(o, deadline)
            } else {
                match ep.try_take(o) {
                    Some(r) => r,
                    None => return Ok(false),
                }
            };
            self.outstanding = None;
            return self.answered(ep, r?);
        }
        if !self.faulted.is_empty() {
            return self.send_group(ep);
        }
        ep.check_pasid(self.pasid)?;
        let progressed = self.pass(ep, op)?;
        if self.faulted.is_empty() {
            return Ok(self.retry.is_empty() && self.cursor > self.last);
        }
        // Rounds answered by the IOMMU on overflow are not the handler's verdict: they are
        // bounded separately (time when blocking, MAX_AUTO_ROUNDS when polled), not counted
        // as rounds without progress.
        if progressed || self.auto_rounds > 0 {
            self.stale_rounds = 0;
        } else {
            self.stale_rounds += 1;
            if self.stale_rounds > MAX_ROUNDS_WITHOUT_PROGRESS {
                return Err(DmaError::RetryLimit {
                    iova: self.faulted[0] << PAGE_SHIFT,
                });
            }
        }
        Ok(false)
    }

    /// One pass over up to `PASS_PAGES` pages inside a DMA window: copies the pages that
    /// translate, collects those that fault (recoverably) into `faulted`, up to the group cap.
    /// Returns whether a page completed.
    #[inline]
    fn pass(
        &mut self,
        ep: &Endpoint,
        op: &mut impl FnMut(&Frame, usize, usize, usize),
    ) -> Result<bool, DmaError> {
        let sh = &*ep.sh;
        let access = if self.write {
            Access::WRITE.user()
        } else {
            Access::READ.user()
        };
        let (iova, end) = (self.iova, self.end);
        let mut progressed = false;
        let win = sh.iommu.dma_window();
        let mut budget = PASS_PAGES;
        let mut todo = std::mem::take(&mut self.retry).into_iter();
        loop {
            if budget == 0 || self.faulted.len() >= self.group_cap {
                break;
            }
            let vpn = match todo.next() {
                Some(v) => v,
                None if self.cursor <= self.last => {
                    self.cursor += 1;
                    self.cursor - 1
                }
                None => break,
            };
            budget -= 1;
            match ep.translate_page(&win, self.pasid, vpn, access) {
                Ok(pa) => {
                    let frame = sh
                        .iommu
                        .phys()
                        .frame(Pfn(pa >> PAGE_SHIFT))
                        .ok_or(DmaError::BadAddress { pa })?;
                    let page = vpn << PAGE_SHIFT;
                    let lo = page.max(iova);
                    let hi = (page + PAGE_SIZE).min(end);
                    op(
                        frame,
                        (lo - page) as usize,
                        (lo - iova) as usize,
                        (hi - lo) as usize,
                    );
                    progressed = true;
                }
                Err(f) if f.recoverable && sh.cfg.ats => self.faulted.push(vpn),
                Err(f) => {
                    // Untranslated request (no ATS) or unfixable fault: nothing for PRI.
                    let f = TranslationFault {
                        recoverable: false,
                        ..f
                    };
                    return Err(ep.unrecoverable(self.pasid, self.write, f));
                }
            }
        }
        self.retry.extend(todo);
        Ok(progressed)
    }

    /// Sends as many pages of `faulted` as the free credits allow (at least one) as one page
    /// request group. Every page of `faulted` is retried once the group is answered; pages
    /// left out of the group simply fault again into the next group.
    fn send_group(&mut self, ep: &Endpoint) -> Result<bool, DmaError> {
        let deadline = if self.block {
            let timeout = ep.sh.cfg.response_timeout;
            Some(
                *self
                    .deadline
                    .get_or_insert_with(|| Instant::now() + timeout),
            )
        } else {
            None
        };
        let Some(o) = ep.alloc_group(self.pasid, &self.faulted, self.write, deadline)? else {
            self.credit_wait = true;
            return Ok(false);
        };
        self.credit_wait = false;
        match ep.send_group(self.pasid, &self.faulted[..o.pages as usize], self.write, o)? {
            Pushed::Queued => {
                self.outstanding = Some(o);
                Ok(false)
            }
            Pushed::AutoSuccess => self.answered(ep, Group::Auto),
        }
    }

    /// The group of `faulted` was answered: fail, or queue its pages for retry.
    fn answered(&mut self, ep: &Endpoint, g: Group) -> Result<bool, DmaError> {
        self.deadline = None;
        let first_iova = self.faulted[0] << PAGE_SHIFT;
        match g {
            Group::Answered(PageResponseCode::Success) => {
                self.auto_rounds = 0;
                self.auto_since = None;
            }
            Group::Auto => {
                self.auto_rounds = self.auto_rounds.saturating_add(1);
                if self.block {
                    let since = *self.auto_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > ep.sh.cfg.response_timeout {
                        return Err(DmaError::PriStalled);
                    }
                    std::thread::yield_now();
                } else if self.auto_rounds > MAX_AUTO_ROUNDS {
                    return Err(DmaError::PriStalled);
                }
            }
            Group::Answered(PageResponseCode::Invalid) => {
                return Err(DmaError::PageRequestInvalid { iova: first_iova })
            }
            Group::Answered(PageResponseCode::Failure) => {
                return Err(DmaError::ResponseFailure { iova: first_iova })
            }
        }
        // Answered pages are retried first; pages left out of the group (credit cap) too.
        self.retry.append(&mut self.faulted);
        Ok(false)
    }
}

fn trace_response(dev: &Device, grpid: u32, code: PageResponseCode, applied: bool, auto: bool) {
    tracing::trace!(
        target: crate::trace::TARGET,
        kind = crate::trace::kind::RESPONSE,
        dev = dev.id().0,
        grpid = u64::from(grpid),
        code = code as u64,
        applied,
        auto,
    );
}

fn trace_abandoned(dev: &Device, grpid: u32) {
    tracing::trace!(
        target: crate::trace::TARGET,
        kind = crate::trace::kind::ABANDONED,
        dev = dev.id().0,
        grpid = u64::from(grpid),
    );
}

impl Endpoint {
    pub(crate) fn new(
        iommu: Arc<EmuIommu>,
        group: Arc<iommu_core::Group>,
        dev: Arc<Device>,
        sid: u32,
        cfg: EndpointConfig,
    ) -> Self {
        let mut cfg = cfg;
        // ATS (and so PRI) can only be enabled when the IOMMU supports it.
        cfg.ats &= iommu.config().ats;
        cfg.pri_credits = cfg.pri_credits.max(1);
        cfg.max_group_pages = cfg.max_group_pages.max(1);
        let pri = cfg.pri && cfg.ats && iommu.config().pri;
        Endpoint {
            sh: Arc::new(EpShared {
                name: dev.name().to_string(),
                atc: Arc::new(Tlb::new(cfg.atc_entries)),
                pri: Mutex::new(PriState {
                    enabled: pri,
                    epoch: 0,
                    credits: cfg.pri_credits,
                    slots: (0..PRG_INDICES).map(|_| None).collect(),
                    next_index: 0,
                    stopped: HashSet::new(),
                }),
                pri_cv: Condvar::new(),
                responses: AtomicU64::new(0),
                pasid_enabled: std::sync::atomic::AtomicBool::new(dev.max_pasids() > 0),
                any_stopped: std::sync::atomic::AtomicBool::new(false),
                counters: Counters::default(),
                dev,
                group,
                iommu,
                sid,
                cfg,
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<EpShared> {
        &self.sh
    }

    /// The core's device for this function (what `sva_bind_device` and `iopf_queue_add_device`
    /// take).
    pub fn device(&self) -> &Arc<Device> {
        &self.sh.dev
    }

    /// The device's IOMMU group (kept alive by the endpoint).
    pub fn group(&self) -> &Arc<iommu_core::Group> {
        &self.sh.group
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.sh.name
    }

    /// The IOMMU it sits behind.
    pub fn iommu(&self) -> &Arc<EmuIommu> {
        &self.sh.iommu
    }

    /// Whether PRI is currently enabled (false without ATS/PRI, or after Response Failure until
    /// reset).
    pub fn pri_enabled(&self) -> bool {
        self.sh.pri.lock().enabled
    }

    /// Page request groups currently waiting for a response.
    pub fn outstanding_groups(&self) -> usize {
        self.sh
            .pri
            .lock()
            .slots
            .iter()
            .filter(|s| s.is_some())
            .count()
    }

    /// The counters.
    pub fn stats(&self) -> EndpointStats {
        let c = &self.sh.counters;
        EndpointStats {
            dma_ok: c.dma_ok.load(Relaxed),
            dma_failed: c.dma_failed.load(Relaxed),
            groups_sent: c.groups_sent.load(Relaxed),
            page_requests: c.page_requests.load(Relaxed),
            groups_answered: c.answered.load(Relaxed),
            success: c.success.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            failure: c.failure.load(Relaxed),
            auto_success: c.auto_success.load(Relaxed),
            stray_responses: c.stray.load(Relaxed),
            abandoned: c.abandoned.load(Relaxed),
            atc_hits: c.atc_hits.load(Relaxed),
        }
    }

    /// Valid device-TLB entries right now.
    pub fn atc_len(&self) -> usize {
        self.sh.atc.len()
    }

    /// Stops `pasid` (PCIe PASID stop): new DMA with it fails with
    /// [`DmaError::PasidStopped`], and the call waits (up to the response timeout) until no page
    /// request group for it is outstanding. `EAGAIN` if groups are still outstanding then.
    pub fn stop_pasid(&self, pasid: u32) -> iommu_core::Result<()> {
        let deadline = Instant::now() + self.sh.cfg.response_timeout;
        let mut st = self.sh.pri.lock();
        st.stopped.insert(pasid);
        self.sh.any_stopped.store(true, Release);
        while st
            .slots
            .iter()
            .flatten()
            .any(|s| s.pasid == Some(pasid) && s.outcome.is_none() && !s.abandoned)
        {
            if self.sh.pri_cv.wait_until(&mut st, deadline).timed_out() {
                return Err(iommu_core::error::eagain_v(
                    "page requests still outstanding on the PASID",
                    pasid.into(),
                ));
            }
        }
        Ok(())
    }

    /// Allows DMA with a stopped `pasid` again.
    pub fn start_pasid(&self, pasid: u32) {
        let mut st = self.sh.pri.lock();
        st.stopped.remove(&pasid);
        self.sh.any_stopped.store(!st.stopped.is_empty(), Release);
    }

    /// Function-level reset: DMAs waiting for a page response fail with [`DmaError::Reset`],
    /// their groups are abandoned (late responses are counted as stray), PRI is re-enabled (if
    /// configured), credits are restored, stopped PASIDs restart, and the device TLB is
    /// flushed.
    pub fn reset(&self) {
        let sh = &self.sh;
        let mut st = sh.pri.lock();
        st.epoch += 1;
        st.enabled = sh.cfg.pri && sh.cfg.ats && sh.iommu.config().pri;
        let mut abandoned = 0;
        for (i, slot) in st.slots.iter_mut().enumerate() {
            // A slot a dropped job abandoned was counted then.
            if slot.take().is_some_and(|s| !s.abandoned) {
                abandoned += 1;
                trace_abandoned(&sh.dev, i as u32);
            }
        }
        sh.counters.abandoned.fetch_add(abandoned, Relaxed);
        st.credits = sh.cfg.pri_credits;
        st.stopped.clear();
        sh.any_stopped.store(false, Release);
        sh.pri_cv.notify_all();
        drop(st);
        sh.atc.invalidate(|_| true);
    }

    /// Sets the PASID capability's Enable bit (on by default when the function has PASIDs).
    /// While it is clear, DMA with a PASID fails with [`DmaError::PasidNotSupported`].
    /// `EOPNOTSUPP` when enabling a function without PASID support.
    pub fn set_pasid_enabled(&self, on: bool) -> iommu_core::Result<()> {
        if on && self.sh.dev.max_pasids() == 0 {
            return Err(iommu_core::error::eopnotsupp(
                "function has no PASID capability",
            ));
        }
        self.sh.pasid_enabled.store(on, Relaxed);
        Ok(())
    }

    /// Whether DMA with a PASID is enabled.
    pub fn pasid_enabled(&self) -> bool {
        self.sh.pasid_enabled.load(Relaxed)
    }

    fn check_pasid(&self, pasid: Option<u32>) -> Result<(), DmaError> {
        if let Some(p) = pasid {
            if p >= self.sh.dev.max_pasids() || !self.pasid_enabled() {
                return Err(DmaError::PasidNotSupported { pasid: p });
            }
            if self.sh.any_stopped.load(Acquire) && self.sh.pri.lock().stopped.contains(&p) {
                return Err(DmaError::PasidStopped { pasid: p });
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `iova` (with `pasid`, or on the RID) into `buf`. On error
    /// `buf` may be partly filled.
    pub fn dma_read(&self, pasid: Option<u32>, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let len = buf.len() as u64;
        self.run(pasid, iova, len, false, |frame, off, done, n| {
            read_frame(frame, off, &mut buf[done..done + n]);
        })
    }

    /// Writes `data` at `iova`. On error a subset of the pages may have been written.
    pub fn dma_write(&self, pasid: Option<u32>, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        self.run(
            pasid,
            iova,
            data.len() as u64,
            true,
            |frame, off, done, n| {
                write_frame(frame, off, &data[done..done + n]);
            },
        )
    }

    /// Sets `len` bytes at `iova` to `byte`.
    pub fn dma_fill(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        byte: u8,
    ) -> Result<(), DmaError> {
        self.run(pasid, iova, len, true, |frame, off, _, n| {
            fill_frame(frame, off, n, byte);
        })
    }

    /// Copies `len` bytes from `src` to `dst` in the same address space, in chunks of up to
    /// 64 KiB (read the chunk, then write it).
    pub fn dma_copy(
        &self,
        pasid: Option<u32>,
        src: u64,
        dst: u64,
        len: u64,
    ) -> Result<(), DmaError> {
        for a in [src, dst] {
            if a.checked_add(len).is_none() {
                return Err(DmaError::InvalidRange { iova: a, len });
            }
        }
        const CHUNK: u64 = 64 << 10;
        let mut buf = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            let b = &mut buf[..n as usize];
            self.dma_read(pasid, src + done, b)?;
            self.dma_write(pasid, dst + done, b)?;
            done += n;
        }
        Ok(())
    }

    /// The engine: runs `op(frame, offset_in_frame, offset_in_job, len)` once for every page
    /// chunk of `[iova, iova + len)`.
    fn run(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        op: impl FnMut(&Frame, usize, usize, usize),
    ) -> Result<(), DmaError> {
        let r = self.run_inner(pasid, iova, len, write, op);
        self.count_job(&r);
        r
    }

    fn count_job(&self, r: &Result<(), DmaError>) {
        match r {
            Ok(()) => self.sh.counters.dma_ok.fetch_add(1, Relaxed),
            Err(_) => self.sh.counters.dma_failed.fetch_add(1, Relaxed),
        };
    }

    /// The blocking driver of the [`Machine`]: steps it until it is done; the machine itself
    /// waits (for credits and responses) because it was built blocking.
    fn run_inner(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        mut op: impl FnMut(&Frame, usize, usize, usize),
    ) -> Result<(), DmaError> {
        let Some(mut m) = Machine::new(self, pasid, iova, len, write, true)? else {
            return Ok(());
        };
        while !m.step(self, &mut op)? {}
        Ok(())
    }

    /// Starts a step-driven DMA job of `len` bytes at `iova` (with `pasid`, or on the RID):
    /// nothing happens until [`Endpoint::poll_dma`]. For [`DmaKind::Write`], `len` must equal
    /// the data's length. Validation errors (a wrapping range, a length mismatch, a read buffer
    /// that cannot be allocated: [`DmaError::InvalidRange`]) surface on the first poll.
    pub fn start_dma(&self, pasid: Option<u32>, iova: u64, len: u64, kind: DmaKind) -> DmaJob {
        let (op, buf) = match kind {
            DmaKind::Read => (JobOp::Read, Vec::new()),
            DmaKind::Write(data) => (JobOp::Write, data),
            DmaKind::Fill(b) => (JobOp::Fill(b), Vec::new()),
        };
        let mut job = DmaJob {
            ep: self.clone(),
            pasid,
            iova,
            len,
            op,
            buf,
            state: JobState::Finish(Ok(())),
        };
        job.state = match Self::validate(&mut job) {
            Ok(Some(m)) => JobState::Run(m),
            Ok(None) => JobState::Finish(Ok(())),
            Err(e) => JobState::Finish(Err(e)),
        };
        job
    }

    fn validate(job: &mut DmaJob) -> Result<Option<Machine>, DmaError> {
        let (iova, len) = (job.iova, job.len);
        let bad = DmaError::InvalidRange { iova, len };
        let m = Machine::new(&job.ep, job.pasid, iova, len, job.op != JobOp::Read, false)?;
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
        let DmaJob {
            ep, op, buf, state, ..
        } = job;
        let r = match state {
            JobState::Done(r) => return DmaPoll::Ready(*r),
            JobState::Finish(r) => *r,
            JobState::Run(m) => {
                let stepped = match *op {
                    JobOp::Read => m.step(ep, &mut |frame, off, done, n| {
                        read_frame(frame, off, &mut buf[done..done + n]);
                    }),
                    JobOp::Write => m.step(ep, &mut |frame, off, done, n| {
                        write_frame(frame, off, &buf[done..done + n]);
                    }),
                    JobOp::Fill(b) => m.step(ep, &mut |frame, off, _, n| {
                        fill_frame(frame, off, n, b);
                    }),
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

    /// Device TLB, then the IOMMU (an ATS translation request, or an untranslated access).
    #[inline]
    fn translate_page(
        &self,
        win: &DmaWindow<'_>,
        pasid: Option<u32>,
        vpn: u64,
        access: Access,
    ) -> Result<u64, TranslationFault> {
        let sh = &*self.sh;
        let k = pkey(pasid);
        if sh.cfg.ats {
            if let Some(e) = sh.atc.lookup(0, k, vpn) {
                if perms_allow(e.perms, access) {
                    sh.counters.atc_hits.fetch_add(1, Relaxed);
                    return Ok(e.pa);
                }
            }
        }
        let (pa, perms) = win.translate_sid(sh.sid, pasid, vpn << PAGE_SHIFT, access)?;
        if sh.cfg.ats {
            sh.atc.insert(Entry {
                vpn,
                tag: Tag {
                    sid: 0,
                    pkey: k,
                    did: 0,
                },
                pa,
                perms: perm_bits(perms),
            });
        }
        Ok(pa)
    }

    fn unrecoverable(&self, pasid: Option<u32>, write: bool, f: TranslationFault) -> DmaError {
        self.sh.iommu.log_fault(FaultRecord {
            device: self.sh.dev.id(),
            pasid,
            iova: f.iova,
            write,
            reason: f.reason,
        });
        DmaError::Fault(f)
    }

    /// Allocates a PRG index and credits for a group of (up to) the pages of `faulted`. With a
    /// `deadline` it waits for other groups to be answered (failing with
    /// [`DmaError::PriStalled`] at the deadline); without one it returns `Ok(None)` when no
    /// index or credit is free.
    fn alloc_group(
        &self,
        pasid: Option<u32>,
        faulted: &[u64],
        write: bool,
        deadline: Option<Instant>,
    ) -> Result<Option<Outstanding>, DmaError> {
        let sh = &*self.sh;
        let mut st = sh.pri.lock();
        loop {
            if !st.enabled {
                drop(st);
                let f = TranslationFault {
                    reason: FaultReason::PriUnavailable,
                    iova: faulted[0] << PAGE_SHIFT,
                    recoverable: false,
                };
                return Err(self.unrecoverable(pasid, write, f));
            }
            if let Some(p) = pasid {
                if st.stopped.contains(&p) {
                    return Err(DmaError::PasidStopped { pasid: p });
                }
            }
            let free = (0..PRG_INDICES)
                .map(|i| (st.next_index + i) % PRG_INDICES)
                .find(|&i| st.slots[i].is_none());
            if let (Some(i), true) = (free, st.credits > 0) {
                let n = (st.credits as usize).min(faulted.len());
                st.credits -= n as u32;
                st.next_index = (i + 1) % PRG_INDICES;
                st.slots[i] = Some(PrgSlot {
                    pasid,
                    pages: n as u32,
                    outcome: None,
                    abandoned: false,
                });
                return Ok(Some(Outstanding {
                    grpid: i as u32,
                    pages: n as u32,
                    epoch: st.epoch,
                }));
            }
            let Some(deadline) = deadline else {
                return Ok(None);
            };
            if sh.pri_cv.wait_until(&mut st, deadline).timed_out() {
                return Err(DmaError::PriStalled);
            }
        }
    }

    /// Writes the group `o` (the pages of `pages`, allocated by [`Endpoint::alloc_group`]) into
    /// the IOMMU's page request queue. On `AutoSuccess` the group is already answered and
    /// released. The context may have gone between the fault and the request (detach): then
    /// nothing is written and the DMA fails as an unrecoverable `NoContext` fault.
    fn send_group(
        &self,
        pasid: Option<u32>,
        pages: &[u64],
        write: bool,
        o: Outstanding,
    ) -> Result<Pushed, DmaError> {
        let sh = &*self.sh;
        let n = pages.len();
        let perm = if write {
            IOMMU_FAULT_PERM_WRITE
        } else {
            IOMMU_FAULT_PERM_READ
        };
        let flags = if pasid.is_some() {
            IOMMU_FAULT_PAGE_REQUEST_PASID_VALID
        } else {
            0
        };
        let reqs: Vec<PageRequest> = pages
            .iter()
            .enumerate()
            .map(|(i, vpn)| PageRequest {
                flags: flags
                    | if i + 1 == n {
                        IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
                    } else {
                        0
                    },
                pasid: pasid.unwrap_or(0),
                grpid: o.grpid,
                perm,
                addr: vpn << PAGE_SHIFT,
            })
            .collect();
        let pushed = {
            let win = sh.iommu.dma_window();
            win.page_request(sh.sid, &sh.dev, pasid, &reqs)
        };
        if pushed.is_some() {
            sh.counters.groups_sent.fetch_add(1, Relaxed);
            sh.counters.page_requests.fetch_add(n as u64, Relaxed);
        }
        match pushed {
            Some(Pushed::Queued) => Ok(Pushed::Queued),
            Some(Pushed::AutoSuccess) => {
                sh.counters.answered.fetch_add(1, Relaxed);
                sh.counters.auto_success.fetch_add(1, Relaxed);
                self.release(o, true);
                Ok(Pushed::AutoSuccess)
            }
            None => {
                self.release(o, false);
                let f = TranslationFault {
                    reason: FaultReason::NoContext,
                    iova: pages[0] << PAGE_SHIFT,
                    recoverable: false,
                };
                Err(self.unrecoverable(pasid, write, f))
            }
        }
    }

    /// Frees a PRG index and its credits (unless a reset already reclaimed them). `auto`: the
    /// IOMMU answered the group itself (traced as a response).
    fn release(&self, o: Outstanding, auto: bool) {
        let sh = &*self.sh;
        let mut st = sh.pri.lock();
        let applied = st.epoch == o.epoch;
        if applied {
            sh.free_slot(&mut st, o.grpid as usize, o.pages);
        }
        if auto {
            trace_response(&sh.dev, o.grpid, PageResponseCode::Success, applied, true);
        }
    }

    /// Frees the slot of an answered group and returns its outcome (with the PRI lock held).
    fn take_outcome(&self, st: &mut PriState, o: Outstanding) -> Option<PageResponseCode> {
        let code = st.slots[o.grpid as usize]
            .as_ref()
            .and_then(|s| s.outcome)?;
        self.sh.free_slot(st, o.grpid as usize, o.pages);
        Some(code)
    }

    /// Waits (yield, then park, until `deadline`) for the response to `o`.
    fn wait_response(&self, o: Outstanding, deadline: Instant) -> Result<Group, DmaError> {
        let sh = &*self.sh;
        // Yield-poll before parking (see "Waiting" in the module documentation).
        let mut seen = u64::MAX;
        let start = Instant::now();
        while start.elapsed() < YIELD_WAIT {
            let now = sh.responses.load(Relaxed);
            if now != seen {
                seen = now;
                if let Some(r) = self.try_take(o) {
                    return r;
                }
            }
            std::thread::yield_now();
        }
        let mut st = sh.pri.lock();
        loop {
            if st.epoch != o.epoch {
                return Err(DmaError::Reset);
            }
            if let Some(code) = self.take_outcome(&mut st, o) {
                return Ok(Group::Answered(code));
            }
            if sh.pri_cv.wait_until(&mut st, deadline).timed_out() {
                sh.free_slot(&mut st, o.grpid as usize, o.pages);
                sh.counters.abandoned.fetch_add(1, Relaxed);
                trace_abandoned(&sh.dev, o.grpid);
                return Err(DmaError::ResponseTimeout { grpid: o.grpid });
            }
        }
    }

    /// Takes the response to `o` if it has arrived (`Err(Reset)` after a reset).
    fn try_take(&self, o: Outstanding) -> Option<Result<Group, DmaError>> {
        let mut st = self.sh.pri.lock();
        if st.epoch != o.epoch {
            return Some(Err(DmaError::Reset));
        }
        let code = self.take_outcome(&mut st, o)?;
        Some(Ok(Group::Answered(code)))
    }

    /// Gives up the outstanding group `o` of a dropped [`DmaJob`]. An answered group is freed;
    /// an unanswered one stays allocated, marked abandoned, until its response (counted as
    /// stray, never applied to a new group) or a reset frees it.
    fn abandon(&self, o: Outstanding) {
        let sh = &*self.sh;
        let mut st = sh.pri.lock();
        if st.epoch != o.epoch {
            return; // a reset reclaimed (and counted) it
        }
        let i = o.grpid as usize;
        let answered = match st.slots[i].as_mut() {
            None => return,
            Some(s) if s.outcome.is_some() => true,
            Some(s) => {
                s.abandoned = true;
                false
            }
        };
        if answered {
            sh.free_slot(&mut st, i, o.pages);
        }
        sh.counters.abandoned.fetch_add(1, Relaxed);
        trace_abandoned(&sh.dev, o.grpid);
    }
}

impl EpShared {
    /// Frees PRG index `i` and gives its `pages` credits back, waking whoever waits for them.
    fn free_slot(&self, st: &mut PriState, i: usize, pages: u32) {
        st.slots[i] = None;
        st.credits += pages;
        self.pri_cv.notify_all();
    }

    /// A page response arrived for this function (routed by the IOMMU).
    pub(crate) fn on_page_response(&self, resp: PageResponse) {
        let c = &self.counters;
        let mut st = self.pri.lock();
        let pasid_ok = |s: &PrgSlot| s.pasid.is_none_or(|p| p == resp.pasid);
        let i = resp.grpid as usize;
        let applied = match st.slots.get_mut(i).and_then(Option::as_mut) {
            Some(slot) if slot.abandoned && pasid_ok(slot) => {
                // The late answer to a dropped job's group: frees the slot, applies nothing.
                let pages = slot.pages;
                self.free_slot(&mut st, i, pages);
                c.stray.fetch_add(1, Relaxed);
                false
            }
            Some(slot) if slot.outcome.is_none() && pasid_ok(slot) => {
                slot.outcome = Some(resp.code);
                c.answered.fetch_add(1, Relaxed);
                match resp.code {
                    PageResponseCode::Success => c.success.fetch_add(1, Relaxed),
                    PageResponseCode::Invalid => c.invalid.fetch_add(1, Relaxed),
                    PageResponseCode::Failure => {
                        // Response Failure disables the function's PRI (SPEC §4.8).
                        st.enabled = false;
                        c.failure.fetch_add(1, Relaxed)
                    }
                };
                self.responses.fetch_add(1, Relaxed);
                self.pri_cv.notify_all();
                true
            }
            _ => {
                c.stray.fetch_add(1, Relaxed);
                false
            }
        };
        // Under the PRI lock: the events of one device come in the order the state changed.
        trace_response(&self.dev, resp.grpid, resp.code, applied, false);
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.sh.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

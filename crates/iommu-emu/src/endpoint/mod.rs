//! PCIe functions behind the emulated IOMMU: [`Endpoint`] with PASID, ATS, PRI and a DMA engine.
//!
//! # DMA engine
//! `dma_read`/`dma_write`/`dma_fill`/`dma_copy` take any range; it is split at page boundaries.
//! The engine makes *passes* over the pages still to do, each inside a DMA window of the IOMMU
//! (see `iommu/mod.rs`): a page whose translation succeeds (device TLB hit with ATS, else the IOMMU's
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
//! A [`DmaEngine`] driving many jobs can sweep them all in one window instead
//! ([`DmaEngine::poll_all`]): every pass and every group sent during the sweep goes through the
//! same window, which is closed and opened again after each `PASS_PAGES` (512) pages (a job
//! visited counts as one), so invalidations wait no longer than behind one pass; a job behind
//! another IOMMU is polled between windows. With 64 single-page jobs that is two
//! windows per 64 groups instead of three per group: the read side of the hardware lock, a
//! cache line every CPU's DMA writes, is taken once per sweep.
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
//! # Waiting: run to completion where the work is
//! A DMA waiting for a response does the work that leads to it on its own thread
//! ([`Endpoint::help`]): it reports what waits in the IOMMU's page request queue (unless
//! another thread is reporting it; one reporter at a time keeps requests in order) and runs
//! the handler work queued on its IOPF queue — outside the reporter's context, as an IOPF
//! worker would. Groups it sends wake no queue thread, and work it queues wakes no worker: it
//! promised to do both itself. Only when there is nothing left to do does it spin briefly
//! (`SPIN_WAIT`, 20 µs: an answer from another running thread) and then park until the
//! response, a reset or the deadline. Nothing polls with `sched_yield` (it cost ~0.75 µs a
//! call here and became a real context switch under load; the one yield left is on the
//! overflow path, when the queue is full and another thread reports it); the queue thread and IOPF workers
//! sleep until someone who will not do the work itself hands them some. With one DMA at a
//! time the whole fault path runs on the DMA's thread with no handoff at all.
//!
//! A [`DmaEngine`] does the same for many polled jobs on one thread (a device keeping many
//! requests outstanding): poll them all, help when all wait, wait when there is no help to
//! give. A plain polled job ([`Endpoint::poll_dma`]) never waits and promises nothing: its
//! groups wake the queue thread, and its scheduler decides what runs next (typically
//! `EmuIommu::prq_step` and the fault handler in deterministic mode).
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
//!   `pages` (u64), `epoch` (u64: the reset epoch the group was allocated in; one older than
//!   the epoch of a reset already traced means the reset gave the group up before it was
//!   sent) — the group was written to the queue or answered by the IOMMU; emitted under the
//!   queue lock, so before any response to it.
//! * `kind = "response"`: `dev`, `grpid`, `code` (u64: 0 Success, 1 Invalid, 2 Failure),
//!   `applied` (bool: matched an outstanding unanswered group), `auto` (bool: the IOMMU
//!   answered on overflow) — every response reaching the endpoint, strays included.
//! * `kind = "abandoned"`: `dev`, `grpid`, `cause` (`reset`, one event per slot; `timeout`;
//!   `dropped` [`DmaJob`]; see [`crate::trace::cause`]), `epoch` (after a reset, its new epoch)
//!   — a group given up without its response being consumed.
//!
//! Responses and abandons are emitted under the endpoint's PRI lock, so one device's events
//! come in the order its state changed.

//! # Files
//! `config.rs` ([`EndpointConfig`]), `error.rs` ([`DmaError`]), `stats.rs` ([`EndpointStats`]),
//! `pri.rs` (PRG indices, credits, responses: the PRI state machine), `dma.rs` (the engine's
//! passes and the blocking calls), `job.rs` (the polled [`DmaJob`]), `ats.rs`
//! ([`Endpoint::ats_translate`] and [`Endpoint::atc_generation`], for caches above the device
//! TLB). This file: the function
//! itself, its PASID controls and reset, and how it is plugged into an [`EmuIommu`].

mod ats;
mod config;
mod dma;
mod error;
mod job;
mod pages;
mod pri;
mod stats;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Weak};

use iommu_core::error::{einval, enodev};
use iommu_core::{Device, Group, PageResponse};
use parking_lot::{Condvar, Mutex};

use crate::iommu::{EmuIommu, PageResponseSink};
use crate::spec::prq::PageGroupResponse;
use crate::tlb::Tlb;

pub use config::EndpointConfig;
pub use error::DmaError;
pub use job::{DmaEngine, DmaJob, DmaKind, DmaPoll};
use pri::{trace_abandoned, PriState};
use stats::Counters;
pub use stats::EndpointStats;

/// PRG indices are 9 bits (PCIe): at most 512 groups outstanding per function.
pub const PRG_INDICES: usize = 512;
/// Rounds of page requests without a single page completing before a DMA gives up.
pub const MAX_ROUNDS_WITHOUT_PROGRESS: u32 = 64;
/// Groups in a row a polled job ([`Endpoint::poll_dma`]) may have answered by the IOMMU itself
/// (page request queue overflow) before it fails with [`DmaError::PriStalled`]. The blocking
/// calls bound the same situation by the response timeout; a polled job has no clock.
pub const MAX_AUTO_ROUNDS: u32 = 1024;
/// The state an endpoint shares with its IOMMU (which routes page responses and device-TLB
/// invalidations to it).
struct EpShared {
    name: String,
    dev: Arc<Device>,
    /// Keeps the device's group alive (the core's device only holds it weakly).
    group: Arc<iommu_core::Group>,
    iommu: Arc<EmuIommu>,
    sid: u32,
    cfg: EndpointConfig,
    atc: Arc<Tlb>,
    pri: Mutex<PriState>,
    pri_cv: Condvar,
    /// Bumped (under the PRI lock) on every response and reset, so a waiting DMA can spin on
    /// it before it parks.
    responses: AtomicU64,
    /// The PASID capability's Enable bit.
    pasid_enabled: AtomicBool,
    /// Whether any PASID is stopped (`PriState::stopped` non-empty; written under the PRI
    /// lock): lets every DMA pass skip that lock in the common case.
    any_stopped: AtomicBool,
    counters: Counters,
}

/// A PCIe function doing DMA through an [`EmuIommu`]. Cheap to clone; clones drive the same
/// function (several DMA threads may run jobs at once).
#[derive(Clone)]
pub struct Endpoint {
    sh: Arc<EpShared>,
}

impl Endpoint {
    fn new(
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
                pasid_enabled: AtomicBool::new(dev.max_pasids() > 0),
                any_stopped: AtomicBool::new(false),
                counters: Counters::default(),
                dev,
                group,
                iommu,
                sid,
                cfg,
            }),
        }
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
    /// Valid device-TLB entries right now.
    pub fn atc_len(&self) -> usize {
        self.sh.atc.len()
    }

    /// Stops `pasid` (PCIe PASID stop): new DMA with it fails with
    /// [`DmaError::PasidStopped`], its device-TLB entries are dropped (a stopped PASID's
    /// translations must not be used; caches above the device TLB see
    /// [`Endpoint::atc_generation`] move), and the call waits (up to the response timeout)
    /// until no page request group for it is outstanding. `EAGAIN` if groups are still
    /// outstanding then; `EINVAL` for a PASID beyond 20 bits.
    pub fn stop_pasid(&self, pasid: u32) -> iommu_core::Result<()> {
        if pasid >= iommu_core::PASID_LIMIT {
            return Err(iommu_core::error::einval_v(
                "PASID beyond 20 bits (limit 1 << 20)",
                pasid.into(),
            ));
        }
        let deadline = pri::Deadline::after(self.sh.cfg.response_timeout);
        {
            let mut st = self.sh.pri.lock();
            st.stopped.insert(pasid);
            self.sh.any_stopped.store(true, Release);
        }
        // After the flag, and waiting for passes in flight: none refills the PASID's entries.
        let k = crate::tlb::pkey(Some(pasid));
        self.sh
            .iommu
            .invalidate_device_tlb(&self.sh.atc, |e| e.tag.pkey == k);
        let mut st = self.sh.pri.lock();
        while st
            .slots
            .iter()
            .flatten()
            .any(|s| s.pasid == Some(pasid) && s.outcome.is_none() && !s.abandoned)
        {
            if deadline.wait(&self.sh.pri_cv, &mut st) {
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
        let epoch = st.epoch;
        st.enabled = sh.cfg.pri && sh.cfg.ats && sh.iommu.config().pri;
        let mut abandoned = 0;
        for (i, slot) in st.slots.iter_mut().enumerate() {
            // A slot a dropped job abandoned was counted then; an answered one (its response
            // not yet consumed) is accounted for as answered, not abandoned.
            if slot
                .take()
                .is_some_and(|s| !s.abandoned && s.outcome.is_none())
            {
                abandoned += 1;
                trace_abandoned(&sh.dev, i as u32, crate::trace::cause::RESET, epoch);
            }
        }
        crate::counter::add_locked(&sh.counters.abandoned, abandoned);
        // Spinning waiters look at this counter: the reset is news to them too.
        sh.note_response(&st);
        st.credits = sh.cfg.pri_credits;
        st.stopped.clear();
        sh.any_stopped.store(false, Release);
        sh.pri_cv.notify_all();
        drop(st);
        sh.iommu.invalidate_device_tlb(&sh.atc, |_| true);
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
        if !on {
            // Translations cached for PASIDs may not be used while the capability is off
            // (caches above the device TLB see `atc_generation` move).
            let rid = crate::tlb::pkey(None);
            self.sh
                .iommu
                .invalidate_device_tlb(&self.sh.atc, |e| e.tag.pkey != rid);
        }
        Ok(())
    }

    /// Runs the fault-path work that stands between this function's page requests and their
    /// responses, on the calling thread: reports what waits in its IOMMU's page request queue
    /// (unless another thread is reporting it) and runs the IOPF handler work that reporting
    /// queued (the work other threads queued has a worker). Returns whether it did anything. What a thread that drives polled
    /// jobs ([`DmaEngine`]) does instead of sleeping; a manual queue ([`EmuIommu::prq_step`],
    /// `IopfQueue::new_manual`) is left to its owner.
    pub fn help(&self) -> bool {
        self.help_with(iommu_core::iopf_queue_of(&self.sh.dev).as_deref())
    }

    /// [`Endpoint::help`] with the function's IOPF queue already looked up.
    fn help_with(&self, queue: Option<&iommu_core::IopfQueue>) -> bool {
        let helper = queue.and_then(iommu_core::IopfQueue::help);
        let mut did = self.sh.iommu.prq.help() > 0;
        if let Some(h) = &helper {
            while h.run_one() {
                did = true;
            }
        }
        did
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
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.sh.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EmuIommu {
    /// Probes a new PCIe function `name` into `group` and returns the [`Endpoint`] that drives
    /// it. `EINVAL` if the group is behind another IOMMU; the core's `add_device` errors pass
    /// through.
    pub fn add_endpoint(
        self: &Arc<Self>,
        group: &Arc<Group>,
        name: &str,
        max_pasids: u32,
        cfg: EndpointConfig,
    ) -> iommu_core::Result<Endpoint> {
        if !self.owns_group(group) {
            return Err(einval("group is behind another IOMMU"));
        }
        if cfg.atc_entries > EndpointConfig::MAX_ATC_ENTRIES {
            return Err(iommu_core::error::einval_v(
                "atc_entries above EndpointConfig::MAX_ATC_ENTRIES (1 << 20)",
                cfg.atc_entries as u64,
            ));
        }
        let dev = group.add_device(name, max_pasids)?;
        let sid = self
            .sid_of(dev.id())
            .ok_or(enodev("device was not probed"))?;
        let ep = Endpoint::new(self.clone(), group.clone(), dev.clone(), sid, cfg);
        let sink: Weak<dyn PageResponseSink> = Arc::downgrade(&ep.sh) as Weak<dyn PageResponseSink>;
        let pri = ep.sh.cfg.pri && ep.sh.cfg.ats;
        self.connect_requester(&dev, sid, ep.sh.atc.clone(), sink, pri);
        Ok(ep)
    }
}

/// The endpoint's side of the PRI loop: the IOMMU delivers page group response descriptors
/// here, and the function decodes them (PCIe PRG Response message).
impl PageResponseSink for EpShared {
    fn page_response(&self, resp: PageGroupResponse) {
        self.on_page_response(PageResponse {
            pasid: resp.pasid(),
            grpid: resp.prg_index(),
            code: resp.code(),
        });
    }
}

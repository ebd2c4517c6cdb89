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
//!   lasts the whole response timeout the DMA fails with [`DmaError::PriStalled`].
//!
//! Without ATS every request is untranslated: a translation fault is unrecoverable (PCIe PRI
//! needs ATS), is recorded in the IOMMU's fault log, and fails the DMA.
//!
//! # Waiting
//! A DMA waiting for a response yields for up to 200 µs, then parks on a condition variable
//! (a parked thread's wake-up costs ~25 µs on this machine class, ANCHORS). Pure spinning was
//! measured and rejected: on two shared cores it starves the queue and IOPF threads.
//!
//! # Exactly-once accounting
//! Each group the endpoint sends is answered once: by software (the core's page response) or
//! by the IOMMU itself on queue overflow. A response for a PRG index with no outstanding group
//! (a late answer to a group abandoned by reset or timeout, or a duplicate) is counted as
//! *stray*, never applied. PRG indices are allocated round robin, so a late answer is unlikely to
//! meet a new group with the same index.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
        while st
            .slots
            .iter()
            .flatten()
            .any(|s| s.pasid == Some(pasid) && s.outcome.is_none())
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
        self.sh.pri.lock().stopped.remove(&pasid);
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
        let abandoned = st.slots.iter_mut().filter_map(Option::take).count();
        sh.counters.abandoned.fetch_add(abandoned as u64, Relaxed);
        st.credits = sh.cfg.pri_credits;
        st.stopped.clear();
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
            if self.sh.pri.lock().stopped.contains(&p) {
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
        match r {
            Ok(()) => self.sh.counters.dma_ok.fetch_add(1, Relaxed),
            Err(_) => self.sh.counters.dma_failed.fetch_add(1, Relaxed),
        };
        r
    }

    fn run_inner(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        mut op: impl FnMut(&Frame, usize, usize, usize),
    ) -> Result<(), DmaError> {
        if len == 0 {
            return Ok(());
        }
        let end = iova
            .checked_add(len)
            .ok_or(DmaError::InvalidRange { iova, len })?;
        let sh = &*self.sh;
        let access = if write {
            Access::WRITE.user()
        } else {
            Access::READ.user()
        };
        let (first, last) = (iova >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT);
        let group_cap = sh.cfg.max_group_pages.min(sh.cfg.pri_credits) as usize;
        let mut retry: Vec<u64> = Vec::new();
        let mut cursor = first;
        let mut faulted: Vec<u64> = Vec::with_capacity(group_cap);
        let mut stale_rounds = 0u32;
        let mut auto_since: Option<Instant> = None;
        loop {
            self.check_pasid(pasid)?;
            let mut progressed = false;
            {
                let win = sh.iommu.dma_window();
                let mut budget = PASS_PAGES;
                let mut todo = std::mem::take(&mut retry).into_iter();
                loop {
                    if budget == 0 || faulted.len() >= group_cap {
                        break;
                    }
                    let vpn = match todo.next() {
                        Some(v) => v,
                        None if cursor <= last => {
                            cursor += 1;
                            cursor - 1
                        }
                        None => break,
                    };
                    budget -= 1;
                    match self.translate_page(&win, pasid, vpn, access) {
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
                        Err(f) if f.recoverable && sh.cfg.ats => faulted.push(vpn),
                        Err(f) => {
                            // Untranslated request (no ATS) or unfixable fault: nothing for PRI.
                            let f = TranslationFault {
                                recoverable: false,
                                ..f
                            };
                            return Err(self.unrecoverable(pasid, write, f));
                        }
                    }
                }
                retry.extend(todo);
            }
            if faulted.is_empty() {
                if retry.is_empty() && cursor > last {
                    return Ok(());
                }
                continue;
            }
            // Rounds answered by the IOMMU on overflow are not the handler's verdict: they
            // are bounded by time (below), not counted as rounds without progress.
            if progressed || auto_since.is_some() {
                stale_rounds = 0;
            } else {
                stale_rounds += 1;
                if stale_rounds > MAX_ROUNDS_WITHOUT_PROGRESS {
                    return Err(DmaError::RetryLimit {
                        iova: faulted[0] << PAGE_SHIFT,
                    });
                }
            }
            let first_iova = faulted[0] << PAGE_SHIFT;
            match self.page_request_group(pasid, &faulted, write)? {
                Group::Answered(PageResponseCode::Success) => auto_since = None,
                Group::Auto => {
                    let since = *auto_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > sh.cfg.response_timeout {
                        return Err(DmaError::PriStalled);
                    }
                    std::thread::yield_now();
                }
                Group::Answered(PageResponseCode::Invalid) => {
                    return Err(DmaError::PageRequestInvalid { iova: first_iova })
                }
                Group::Answered(PageResponseCode::Failure) => {
                    return Err(DmaError::ResponseFailure { iova: first_iova })
                }
            }
            // Answered pages are retried first; pages left out of the group (credit cap) too.
            retry.append(&mut faulted);
        }
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

    /// Sends as many pages of `faulted` as the free credits allow (at least one) as one page
    /// request group and waits for its answer. The caller retries every page of `faulted`
    /// afterwards; pages left out of the group simply fault again into the next group.
    fn page_request_group(
        &self,
        pasid: Option<u32>,
        faulted: &[u64],
        write: bool,
    ) -> Result<Group, DmaError> {
        let sh = &*self.sh;
        let deadline = Instant::now() + sh.cfg.response_timeout;
        // Allocate a PRG index and credits (waiting for other groups to be answered).
        let (grpid, n, epoch) = {
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
                    });
                    break (i as u32, n, st.epoch);
                }
                if sh.pri_cv.wait_until(&mut st, deadline).timed_out() {
                    return Err(DmaError::PriStalled);
                }
            }
        };
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
        let reqs: Vec<PageRequest> = faulted[..n]
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
                grpid,
                perm,
                addr: vpn << PAGE_SHIFT,
            })
            .collect();
        let pushed = {
            let win = sh.iommu.dma_window();
            win.page_request(sh.sid, &sh.dev, pasid, &reqs)
        };
        sh.counters.groups_sent.fetch_add(1, Relaxed);
        sh.counters.page_requests.fetch_add(n as u64, Relaxed);
        match pushed {
            Some(Pushed::Queued) => {}
            Some(Pushed::AutoSuccess) => {
                sh.counters.answered.fetch_add(1, Relaxed);
                sh.counters.auto_success.fetch_add(1, Relaxed);
                self.release(grpid, n, epoch);
                return Ok(Group::Auto);
            }
            None => {
                // The context went away between the fault and the request (detach): the
                // request is never written; the DMA fails as an unrecoverable fault.
                sh.counters.groups_sent.fetch_sub(1, Relaxed);
                sh.counters.page_requests.fetch_sub(n as u64, Relaxed);
                self.release(grpid, n, epoch);
                let f = TranslationFault {
                    reason: FaultReason::NoContext,
                    iova: faulted[0] << PAGE_SHIFT,
                    recoverable: false,
                };
                return Err(self.unrecoverable(pasid, write, f));
            }
        }
        self.wait_response(grpid, n, epoch, deadline)
    }

    /// Frees a PRG index and its credits (unless a reset already reclaimed them).
    fn release(&self, grpid: u32, n: usize, epoch: u64) {
        let mut st = self.sh.pri.lock();
        if st.epoch == epoch {
            st.slots[grpid as usize] = None;
            st.credits += n as u32;
            self.sh.pri_cv.notify_all();
        }
    }

    fn wait_response(
        &self,
        grpid: u32,
        n: usize,
        epoch: u64,
        deadline: Instant,
    ) -> Result<Group, DmaError> {
        let sh = &*self.sh;
        // Yield-poll before parking (see "Waiting" in the module documentation).
        let mut seen = u64::MAX;
        let start = Instant::now();
        while start.elapsed() < YIELD_WAIT {
            let now = sh.responses.load(Relaxed);
            if now != seen {
                seen = now;
                if let Some(r) = self.try_take(grpid, n, epoch) {
                    return r;
                }
            }
            std::thread::yield_now();
        }
        let mut st = sh.pri.lock();
        loop {
            if st.epoch != epoch {
                return Err(DmaError::Reset);
            }
            let code = st.slots[grpid as usize].as_ref().and_then(|s| s.outcome);
            if let Some(code) = code {
                st.slots[grpid as usize] = None;
                st.credits += n as u32;
                sh.pri_cv.notify_all();
                return Ok(Group::Answered(code));
            }
            if sh.pri_cv.wait_until(&mut st, deadline).timed_out() {
                st.slots[grpid as usize] = None;
                st.credits += n as u32;
                sh.counters.abandoned.fetch_add(1, Relaxed);
                sh.pri_cv.notify_all();
                return Err(DmaError::ResponseTimeout { grpid });
            }
        }
    }

    fn try_take(&self, grpid: u32, n: usize, epoch: u64) -> Option<Result<Group, DmaError>> {
        let mut st = self.sh.pri.lock();
        if st.epoch != epoch {
            return Some(Err(DmaError::Reset));
        }
        let code = st.slots[grpid as usize].as_ref().and_then(|s| s.outcome)?;
        st.slots[grpid as usize] = None;
        st.credits += n as u32;
        self.sh.pri_cv.notify_all();
        Some(Ok(Group::Answered(code)))
    }
}

impl EpShared {
    /// A page response arrived for this function (routed by the IOMMU).
    pub(crate) fn on_page_response(&self, resp: PageResponse) {
        let c = &self.counters;
        let mut st = self.pri.lock();
        let pasid_ok = |s: &PrgSlot| s.pasid.is_none_or(|p| p == resp.pasid);
        match st
            .slots
            .get_mut(resp.grpid as usize)
            .and_then(Option::as_mut)
        {
            Some(slot) if slot.outcome.is_none() && pasid_ok(slot) && slot.pages > 0 => {
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
            }
            _ => {
                c.stray.fetch_add(1, Relaxed);
            }
        }
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

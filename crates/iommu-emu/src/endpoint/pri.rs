//! PRI (PCIe r6 §10.4): PRG indices and credits, sending a group, taking its response,
//! abandoning it; and the response side the IOMMU calls. One lock (`EpShared::pri`) guards
//! the whole state machine, and every trace event is emitted under it.

use std::collections::HashSet;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use iommu_core::{
    Device, PageRequest, PageResponse, PageResponseCode, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE,
};

use super::{DmaError, Endpoint, EpShared, PRG_INDICES};
use crate::counter::add_locked;
use crate::iommu::{FaultReason, TranslationFault};
use crate::phys::PAGE_SHIFT;
use crate::prq::Pushed;

/// How long a DMA waiting for a page response that no work on its own thread can bring spins
/// before it parks: about the time another thread takes to answer a group, so an answer from a
/// running thread is caught without a futex, and a parked thread's wake-up is paid only when
/// the answer is far away (user space, a sleeping worker).
const SPIN_WAIT: Duration = Duration::from_micros(20);

/// When a blocking wait gives up. `Never` is a timeout too long to be an instant
/// (`Duration::MAX` is the natural "no timeout"): the wait then has no deadline.
#[derive(Clone, Copy, Debug)]
pub(super) enum Deadline {
    At(Instant),
    Never,
}

impl Deadline {
    /// `timeout` from now.
    pub(super) fn after(timeout: Duration) -> Deadline {
        Instant::now()
            .checked_add(timeout)
            .map_or(Deadline::Never, Deadline::At)
    }

    /// Waits on `cv` until notified or the deadline passes; true if it passed.
    pub(super) fn wait<T>(
        self,
        cv: &parking_lot::Condvar,
        guard: &mut parking_lot::MutexGuard<'_, T>,
    ) -> bool {
        match self {
            Deadline::At(at) => cv.wait_until(guard, at).timed_out(),
            Deadline::Never => {
                cv.wait(guard);
                false
            }
        }
    }
}

/// One allocated PRG index: the group sent with it.
pub(super) struct PrgSlot {
    pub pasid: Option<u32>,
    pub pages: u32,
    pub outcome: Option<PageResponseCode>,
    /// Its job was dropped: the response, when it comes, is stray and frees the slot.
    pub abandoned: bool,
}

/// The function's PRI state (under `EpShared::pri`).
pub(super) struct PriState {
    pub enabled: bool,
    /// Bumped by reset: waiters from an older epoch fail with `Reset`.
    pub epoch: u64,
    pub credits: u32,
    pub slots: Vec<Option<PrgSlot>>,
    pub next_index: usize,
    pub stopped: HashSet<u32>,
}

/// The page requests of one group: one per page, sharing the PRG index `grpid`, the last
/// flagged LAST_PAGE (PCIe Page Request messages). Made one at a time as the queue takes them:
/// no buffer per group.
#[derive(Clone)]
pub(super) struct PageRequests<'a> {
    pages: core::slice::Iter<'a, u64>,
    flags: u32,
    pasid: u32,
    perm: u32,
    grpid: u32,
}

impl<'a> PageRequests<'a> {
    pub(super) fn new(pasid: Option<u32>, pages: &'a [u64], write: bool, grpid: u32) -> Self {
        PageRequests {
            pages: pages.iter(),
            flags: if pasid.is_some() {
                IOMMU_FAULT_PAGE_REQUEST_PASID_VALID
            } else {
                0
            },
            pasid: pasid.unwrap_or(0),
            perm: if write {
                IOMMU_FAULT_PERM_WRITE
            } else {
                IOMMU_FAULT_PERM_READ
            },
            grpid,
        }
    }
}

impl Iterator for PageRequests<'_> {
    type Item = PageRequest;

    #[inline]
    fn next(&mut self) -> Option<PageRequest> {
        let vpn = *self.pages.next()?;
        let last = if self.pages.len() == 0 {
            IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
        } else {
            0
        };
        Some(PageRequest {
            flags: self.flags | last,
            pasid: self.pasid,
            grpid: self.grpid,
            perm: self.perm,
            addr: vpn << PAGE_SHIFT,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.pages.size_hint()
    }
}

impl ExactSizeIterator for PageRequests<'_> {}

/// How a group was answered.
pub(super) enum Group {
    Answered(PageResponseCode),
    Auto,
}

/// A page request group a job sent and has not consumed the answer of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outstanding {
    pub grpid: u32,
    pub pages: u32,
    /// The reset epoch it was allocated in.
    pub epoch: u64,
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

/// `epoch`: the reset epoch after the abandon (a reset's new epoch, else the group's).
pub(super) fn trace_abandoned(dev: &Device, grpid: u32, cause: &'static str, epoch: u64) {
    tracing::trace!(
        target: crate::trace::TARGET,
        kind = crate::trace::kind::ABANDONED,
        dev = dev.id().0,
        grpid = u64::from(grpid),
        cause,
        epoch,
    );
}

impl Endpoint {
    /// Allocates a PRG index and credits for a group of (up to) the pages of `faulted`. With a
    /// `deadline` it waits for other groups to be answered (failing with
    /// [`DmaError::PriStalled`] at the deadline); without one it returns `Ok(None)` when no
    /// index or credit is free.
    #[inline]
    pub(super) fn alloc_group(
        &self,
        pasid: Option<u32>,
        faulted: &[u64],
        write: bool,
        deadline: Option<Deadline>,
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
            if deadline.wait(&sh.pri_cv, &mut st) {
                return Err(DmaError::PriStalled);
            }
        }
    }

    /// Writes the group `o` (the pages of `pages`, allocated by [`Endpoint::alloc_group`]) into
    /// the IOMMU's page request queue. On `AutoSuccess` the group is already answered and
    /// released. The context may have gone between the fault and the request (detach): then
    /// nothing is written and the DMA fails as an unrecoverable `NoContext` fault. `helper`:
    /// the calling thread reports the queue itself before it waits (see `prq.rs`, "Waking").
    #[inline]
    pub(super) fn send_group(
        &self,
        pasid: Option<u32>,
        pages: &[u64],
        write: bool,
        o: Outstanding,
        helper: bool,
        win: Option<&crate::iommu::DmaWindow<'_>>,
    ) -> Result<Pushed, DmaError> {
        let sh = &*self.sh;
        let n = pages.len();
        let reqs = PageRequests::new(pasid, pages, write, o.grpid);
        // In the caller's window, or in one of its own closed right after the write.
        let pushed = {
            let own;
            let win = match win {
                Some(w) => w,
                None => {
                    own = sh.iommu.dma_window();
                    &own
                }
            };
            win.page_request(sh.sid, &sh.dev, pasid, reqs, o.epoch, helper)
        };
        if pushed.is_some() {
            sh.counters.groups_sent.fetch_add(1, Relaxed);
            sh.counters.page_requests.fetch_add(n as u64, Relaxed);
        }
        match pushed {
            Some(Pushed::Queued) => Ok(Pushed::Queued),
            Some(Pushed::AutoSuccess) => {
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
    /// IOMMU answered the group itself (traced as a response, counted as answered — or, when
    /// a reset in between already counted the group abandoned, as a stray late answer, so no
    /// group is counted twice).
    #[inline]
    fn release(&self, o: Outstanding, auto: bool) {
        let sh = &*self.sh;
        let mut st = sh.pri.lock();
        let applied = st.epoch == o.epoch;
        if applied {
            sh.free_slot(&mut st, o.grpid as usize, o.pages);
        }
        if auto {
            let c = &sh.counters;
            if applied {
                add_locked(&c.answered, 1);
                add_locked(&c.auto_success, 1);
            } else {
                add_locked(&c.stray, 1);
            }
            trace_response(&sh.dev, o.grpid, PageResponseCode::Success, applied, true);
        }
    }

    /// Frees the slot of an answered group and returns its outcome (with the PRI lock held).
    #[inline]
    fn take_outcome(&self, st: &mut PriState, o: Outstanding) -> Option<PageResponseCode> {
        let code = st.slots[o.grpid as usize]
            .as_ref()
            .and_then(|s| s.outcome)?;
        self.sh.free_slot(st, o.grpid as usize, o.pages);
        Some(code)
    }

    /// Waits for the response to `o`: first does the work that leads to it on this thread
    /// (reports the page request queue, runs queued IOPF handler work: [`Endpoint::help`]),
    /// spinning briefly once there is none, then parks until `deadline` (see "Waiting" in the
    /// module documentation).
    pub(super) fn wait_response(
        &self,
        o: Outstanding,
        deadline: Deadline,
    ) -> Result<Group, DmaError> {
        let sh = &*self.sh;
        let queue = iommu_core::iopf_queue_of(&sh.dev);
        let mut seen = sh.responses.load(Acquire);
        loop {
            if let Some(r) = self.try_take(o) {
                return r;
            }
            let now = self.spin_for_response(seen, SPIN_WAIT, || self.help_with(queue.as_deref()));
            if now == seen {
                break;
            }
            seen = now;
        }
        let mut st = sh.pri.lock();
        loop {
            if st.epoch != o.epoch {
                return Err(DmaError::Reset);
            }
            if let Some(code) = self.take_outcome(&mut st, o) {
                return Ok(Group::Answered(code));
            }
            if deadline.wait(&sh.pri_cv, &mut st) {
                sh.free_slot(&mut st, o.grpid as usize, o.pages);
                add_locked(&sh.counters.abandoned, 1);
                trace_abandoned(&sh.dev, o.grpid, crate::trace::cause::TIMEOUT, o.epoch);
                return Err(DmaError::ResponseTimeout { grpid: o.grpid });
            }
        }
    }

    /// Blocks until the response counter moves past `seen` or `timeout` passes (spinning
    /// briefly first); returns the counter.
    pub(super) fn wait_responses_after(&self, seen: u64, timeout: Duration) -> u64 {
        let now = self.spin_for_response(seen, SPIN_WAIT.min(timeout), || false);
        if now != seen {
            return now;
        }
        let sh = &*self.sh;
        let deadline = Deadline::after(timeout);
        let mut st = sh.pri.lock();
        loop {
            let now = sh.responses.load(Acquire);
            if now != seen || deadline.wait(&sh.pri_cv, &mut st) {
                return sh.responses.load(Acquire);
            }
        }
    }

    /// Spins until the response counter moves past `seen`, running `work` (the fault path's
    /// work on this thread) while it finds any, and gives up after `limit` without work or a
    /// response. Returns the counter.
    fn spin_for_response(&self, seen: u64, limit: Duration, mut work: impl FnMut() -> bool) -> u64 {
        let responses = &self.sh.responses;
        let mut since = Instant::now();
        loop {
            let now = responses.load(Acquire);
            if now != seen {
                return now;
            }
            if work() {
                since = Instant::now();
                continue;
            }
            if since.elapsed() >= limit {
                return now;
            }
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
    }

    /// Takes the response to `o` if it has arrived (`Err(Reset)` after a reset).
    #[inline]
    pub(super) fn try_take(&self, o: Outstanding) -> Option<Result<Group, DmaError>> {
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
    pub(super) fn abandon(&self, o: Outstanding) {
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
            // Answered, just not consumed: the group is accounted for as answered.
            sh.free_slot(&mut st, i, o.pages);
            return;
        }
        add_locked(&sh.counters.abandoned, 1);
        trace_abandoned(&sh.dev, o.grpid, crate::trace::cause::DROPPED, o.epoch);
    }
}

impl EpShared {
    /// Frees PRG index `i` and gives its `pages` credits back, waking whoever waits for them.
    #[inline]
    pub(super) fn free_slot(&self, st: &mut PriState, i: usize, pages: u32) {
        st.slots[i] = None;
        st.credits += pages;
        self.pri_cv.notify_all();
    }

    /// Moves the response count on ([`super::DmaEngine::responses`]: what spinning and
    /// parked waiters watch). Written only under the PRI lock, whose guard `_st` is: a plain
    /// store, not a locked read-modify-write; `Release`, so a waiter that sees the new count
    /// sees the state it announces.
    pub(super) fn note_response(&self, _st: &parking_lot::MutexGuard<'_, PriState>) {
        self.responses
            .store(self.responses.load(Relaxed).wrapping_add(1), Release);
    }

    /// A page response arrived for this function (routed by the IOMMU).
    pub(super) fn on_page_response(&self, resp: PageResponse) {
        let c = &self.counters;
        let mut st = self.pri.lock();
        let pasid_ok = |s: &PrgSlot| s.pasid.is_none_or(|p| p == resp.pasid);
        let i = resp.grpid as usize;
        let applied = match st.slots.get_mut(i).and_then(Option::as_mut) {
            Some(slot) if slot.abandoned && pasid_ok(slot) => {
                // The late answer to a dropped job's group: frees the slot, applies nothing.
                let pages = slot.pages;
                self.free_slot(&mut st, i, pages);
                add_locked(&c.stray, 1);
                false
            }
            Some(slot) if slot.outcome.is_none() && pasid_ok(slot) => {
                slot.outcome = Some(resp.code);
                add_locked(&c.answered, 1);
                match resp.code {
                    PageResponseCode::Success => add_locked(&c.success, 1),
                    PageResponseCode::Invalid => add_locked(&c.invalid, 1),
                    PageResponseCode::Failure => {
                        // Response Failure disables the function's PRI (SPEC §4.8).
                        st.enabled = false;
                        add_locked(&c.failure, 1)
                    }
                };
                self.note_response(&st);
                self.pri_cv.notify_all();
                true
            }
            _ => {
                add_locked(&c.stray, 1);
                false
            }
        };
        // Under the PRI lock: the events of one device come in the order the state changed.
        trace_response(&self.dev, resp.grpid, resp.code, applied, false);
    }
}

//! The DMA engine: one job's state machine ([`Machine`]), its passes inside DMA windows, and
//! the blocking calls (`dma_read`, `dma_write`, `dma_fill`, `dma_copy`) that step it to the end.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use iommu_core::PageResponseCode;
use iommu_pt::{Access, PhysAddr};

use super::pages::Pages;
use super::pri::{Deadline, Group, Outstanding};
use super::{DmaError, Endpoint, MAX_AUTO_ROUNDS, MAX_ROUNDS_WITHOUT_PROGRESS};
use crate::iommu::{DmaWindow, FaultRecord, TranslationFault};
use crate::phys::{PhysMem, PAGE_SHIFT, PAGE_SIZE};
use crate::prq::Pushed;
use crate::tlb::{perm_bits, perms_allow, pkey, Entry, Tag};

/// Pages processed per DMA window before the engine lets writers (invalidations) in.
pub(super) const PASS_PAGES: usize = 512;

/// The DMA engine: the state of one job, stepped by the blocking calls (which build it
/// `block`ing: it waits for credits and responses itself, with the response timeout) and by
/// [`Endpoint::poll_dma`] (which returns `Pending` where the blocking machine would wait).
pub(super) struct Machine {
    pasid: Option<u32>,
    iova: u64,
    end: u64,
    last: u64,
    write: bool,
    block: bool,
    /// The stepping thread reports the page request queue itself before it waits (blocking
    /// calls and [`super::DmaEngine`]), so sending a group wakes nobody.
    pub helper: bool,
    /// Next page never tried.
    cursor: u64,
    /// Pages to try again (answered, or left out of a pass).
    retry: Pages,
    /// Pages that faulted in the last pass: the next group.
    faulted: Pages,
    group_cap: usize,
    stale_rounds: u32,
    /// Groups in a row answered by the IOMMU itself (queue overflow).
    auto_rounds: u32,
    /// Blocking: when the current run of overflow answers began.
    auto_since: Option<Instant>,
    /// Blocking: deadline of the current group (credits and response).
    deadline: Option<Deadline>,
    pub outstanding: Option<Outstanding>,
    /// Polled: the last attempt to send the group found no PRG index or credit.
    credit_wait: bool,
}

impl Machine {
    /// `Ok(None)`: an empty range (nothing to do).
    #[inline]
    pub(super) fn new(
        ep: &Endpoint,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        block: bool,
    ) -> Result<Option<Machine>, DmaError> {
        let mut m = Machine::idle(block);
        Ok(m.reset(ep, pasid, iova, len, write)?.then_some(m))
    }

    /// A machine with nothing to do, for [`Machine::reset`].
    pub(super) fn idle(block: bool) -> Machine {
        Machine {
            pasid: None,
            iova: 0,
            end: 0,
            last: 0,
            write: false,
            block,
            helper: block,
            cursor: 0,
            retry: Pages::new(),
            faulted: Pages::new(),
            group_cap: 0,
            stale_rounds: 0,
            auto_rounds: 0,
            auto_since: None,
            deadline: None,
            outstanding: None,
            credit_wait: false,
        }
    }

    /// Sets the machine up, in place, for a transfer of `len` bytes at `iova` (its page lists
    /// keep their storage). `Ok(false)`: an empty range, nothing to do. The caller made sure no
    /// group is outstanding.
    #[inline]
    pub(super) fn reset(
        &mut self,
        ep: &Endpoint,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
    ) -> Result<bool, DmaError> {
        debug_assert!(self.outstanding.is_none());
        if len == 0 {
            return Ok(false);
        }
        let end = iova
            .checked_add(len)
            .ok_or(DmaError::InvalidRange { iova, len })?;
        let cfg = &ep.sh.cfg;
        self.pasid = pasid;
        self.iova = iova;
        self.end = end;
        self.last = (end - 1) >> PAGE_SHIFT;
        self.write = write;
        self.helper = self.block;
        self.cursor = iova >> PAGE_SHIFT;
        self.retry.clear();
        self.faulted.clear();
        self.group_cap = cfg.max_group_pages.min(cfg.pri_credits) as usize;
        self.stale_rounds = 0;
        self.auto_rounds = 0;
        self.auto_since = None;
        self.deadline = None;
        self.outstanding = None;
        self.credit_wait = false;
        Ok(true)
    }

    /// Whether the machine waits for a page response or for PRI credits.
    #[inline]
    pub(super) fn is_waiting(&self) -> bool {
        self.outstanding.is_some() || self.credit_wait
    }

    /// One [`Machine::step`], or — with `until_waiting` — steps until the job is done, fails
    /// or waits ([`Machine::is_waiting`]): a DMA engine's poll, without returning to its caller
    /// between a pass that faulted and sending the group, or between a response and the retry.
    /// With `win`, the caller's DMA window, every step runs in it (none opens its own), and the
    /// steps also stop once `PASS_PAGES` pages went through the window.
    #[inline]
    pub(super) fn steps(
        &mut self,
        ep: &Endpoint,
        until_waiting: bool,
        win: Option<&DmaWindow<'_>>,
        op: &mut impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<bool, DmaError> {
        loop {
            match self.step(ep, win, op) {
                // A window the caller holds is given back once a pass's worth of pages went
                // through it (`DmaEngine::poll_all` opens the next).
                Ok(false)
                    if until_waiting
                        && !self.is_waiting()
                        && win.is_none_or(|w| w.pages() < PASS_PAGES as u64) =>
                {
                    continue
                }
                r => return r,
            }
        }
    }

    /// One step: take the outstanding group's response, or send the group of faulted pages,
    /// or make one pass. `Ok(true)`: the job is complete; `Ok(false)`: step again.
    #[inline]
    pub(super) fn step(
        &mut self,
        ep: &Endpoint,
        win: Option<&DmaWindow<'_>>,
        op: &mut impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<bool, DmaError> {
        if let Some(o) = self.outstanding {
            let r = if self.block {
                let deadline = self
                    .deadline
                    .unwrap_or_else(|| Deadline::At(Instant::now()));
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
            return self.send_group(ep, win);
        }
        ep.check_pasid(self.pasid)?;
        let (progressed, cut_short) = self.pass(ep, win, op)?;
        if self.faulted.is_empty() {
            return Ok(self.retry.is_empty() && self.cursor > self.last);
        }
        // Rounds answered by the IOMMU on overflow are not the handler's verdict: they are
        // bounded separately (time when blocking, MAX_AUTO_ROUNDS when polled), not counted
        // as rounds without progress. Nor is a pass the caller's window cut short before it
        // reached every page: a full pass would have tried them.
        if progressed || self.auto_rounds > 0 {
            self.stale_rounds = 0;
        } else if !cut_short {
            self.stale_rounds += 1;
            if self.stale_rounds > MAX_ROUNDS_WITHOUT_PROGRESS {
                return Err(DmaError::RetryLimit {
                    iova: self.faulted.as_slice()[0] << PAGE_SHIFT,
                });
            }
        }
        Ok(false)
    }

    /// One pass over up to `PASS_PAGES` pages inside a DMA window: copies the pages that
    /// translate, collects those that fault (recoverably) into `faulted`, up to the group cap.
    /// Returns whether a page completed, and whether the caller's window had fewer than
    /// `PASS_PAGES` pages left and ran out before the pass reached every page.
    #[inline]
    fn pass(
        &mut self,
        ep: &Endpoint,
        win: Option<&DmaWindow<'_>>,
        op: &mut impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<(bool, bool), DmaError> {
        let sh = &*ep.sh;
        let access = if self.write {
            Access::WRITE.user()
        } else {
            Access::READ.user()
        };
        let (iova, end, pasid, last) = (self.iova, self.end, self.pasid, self.last);
        let mut progressed = false;
        let own;
        // In the caller's window a pass gets what is left of the window's pages.
        let (win, mut budget) = match win {
            Some(w) => (w, PASS_PAGES.saturating_sub(w.pages() as usize)),
            None => {
                own = sh.iommu.dma_window();
                (&own, PASS_PAGES)
            }
        };
        let full = budget;
        // Retried pages first, in order; those this pass does not reach stay in `retry`.
        let retry = self.retry.as_slice();
        let mut retried = 0;
        let result = loop {
            if budget == 0 || self.faulted.len() >= self.group_cap {
                break Ok(progressed);
            }
            let vpn = match retry.get(retried) {
                Some(&v) => {
                    retried += 1;
                    v
                }
                None if self.cursor <= last => {
                    self.cursor += 1;
                    self.cursor - 1
                }
                None => break Ok(progressed),
            };
            budget -= 1;
            match ep.translate_page(win, pasid, vpn, access) {
                Ok(pa) => {
                    let page = vpn << PAGE_SHIFT;
                    let lo = page.max(iova);
                    let hi = (page + PAGE_SIZE).min(end);
                    if let Err(e) = op(pa + (lo - page), (lo - iova) as usize, (hi - lo) as usize) {
                        break Err(e);
                    }
                    progressed = true;
                }
                Err(f) if f.recoverable && sh.cfg.ats => self.faulted.push(vpn),
                Err(f) => {
                    // Untranslated request (no ATS) or unfixable fault: nothing for PRI.
                    let f = TranslationFault {
                        recoverable: false,
                        ..f
                    };
                    break Err(ep.unrecoverable(pasid, self.write, f));
                }
            }
        };
        let cut_short =
            full < PASS_PAGES && budget == 0 && (retried < retry.len() || self.cursor <= last);
        win.note_pages((full - budget) as u64);
        // Usually every page to retry was reached: no shifting of what is left.
        if retried == retry.len() {
            self.retry.clear();
        } else if retried > 0 {
            self.retry.remove_front(retried);
        }
        result.map(|progressed| (progressed, cut_short))
    }

    /// Sends as many pages of `faulted` as the free credits allow (at least one) as one page
    /// request group. Every page of `faulted` is retried once the group is answered; pages
    /// left out of the group simply fault again into the next group.
    #[inline]
    fn send_group(&mut self, ep: &Endpoint, win: Option<&DmaWindow<'_>>) -> Result<bool, DmaError> {
        let deadline = if self.block {
            let timeout = ep.sh.cfg.response_timeout;
            Some(
                *self
                    .deadline
                    .get_or_insert_with(|| Deadline::after(timeout)),
            )
        } else {
            None
        };
        let faulted = self.faulted.as_slice();
        let Some(o) = ep.alloc_group(self.pasid, faulted, self.write, deadline)? else {
            self.credit_wait = true;
            return Ok(false);
        };
        self.credit_wait = false;
        let pages = &faulted[..o.pages as usize];
        match ep.send_group(self.pasid, pages, self.write, o, self.helper, win)? {
            Pushed::Queued => {
                self.outstanding = Some(o);
                Ok(false)
            }
            Pushed::AutoSuccess => self.answered(ep, Group::Auto),
        }
    }

    /// The group of `faulted` was answered: fail, or queue its pages for retry.
    #[inline]
    fn answered(&mut self, ep: &Endpoint, g: Group) -> Result<bool, DmaError> {
        self.deadline = None;
        let first_iova = self.faulted.as_slice()[0] << PAGE_SHIFT;
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
                    // The queue is full: empty it here if nobody else is, else let its
                    // reporter run (overflow is the exceptional path; this is its only yield).
                    if ep.sh.iommu.prq.help() == 0 {
                        std::thread::yield_now();
                    }
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

impl Endpoint {
    /// Reads `buf.len()` bytes at `iova` (with `pasid`, or on the RID) into `buf`. On error
    /// `buf` may be partly filled.
    pub fn dma_read(&self, pasid: Option<u32>, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let len = buf.len() as u64;
        let phys = self.sh.iommu.phys();
        self.run(pasid, iova, len, false, |pa, done, n| {
            dma_read_chunk(phys, pa, &mut buf[done..done + n])
        })
    }

    /// Writes `data` at `iova`. On error a subset of the pages may have been written.
    pub fn dma_write(&self, pasid: Option<u32>, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        let phys = self.sh.iommu.phys();
        self.run(pasid, iova, data.len() as u64, true, |pa, done, n| {
            dma_write_chunk(phys, pa, &data[done..done + n])
        })
    }

    /// Sets `len` bytes at `iova` to `byte`.
    pub fn dma_fill(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        byte: u8,
    ) -> Result<(), DmaError> {
        let phys = self.sh.iommu.phys();
        self.run(pasid, iova, len, true, |pa, _, n| {
            dma_fill_chunk(phys, pa, n, byte)
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

    /// The engine: runs `op(pa, offset_in_job, len)` once for every page chunk of
    /// `[iova, iova + len)`, `pa` being the chunk's physical address.
    fn run(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        op: impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<(), DmaError> {
        let r = self.run_inner(pasid, iova, len, write, op);
        self.count_job(&r);
        r
    }

    #[inline]
    pub(super) fn count_job(&self, r: &Result<(), DmaError>) {
        match r {
            Ok(()) => self.sh.counters.dma_ok.fetch_add(1, Relaxed),
            Err(_) => self.sh.counters.dma_failed.fetch_add(1, Relaxed),
        };
    }

    /// The blocking driver of the [`Machine`]: steps it until it is done; the machine itself
    /// waits (for credits and responses) because it was built blocking.
    pub(super) fn run_inner(
        &self,
        pasid: Option<u32>,
        iova: u64,
        len: u64,
        write: bool,
        mut op: impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<(), DmaError> {
        let Some(mut m) = Machine::new(self, pasid, iova, len, write, true)? else {
            return Ok(());
        };
        while !m.step(self, None, &mut op)? {}
        Ok(())
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
        let (pa, perms) = win.translate_source(sh.sid, pasid, vpn << PAGE_SHIFT, access)?;
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

    pub(super) fn unrecoverable(
        &self,
        pasid: Option<u32>,
        write: bool,
        f: TranslationFault,
    ) -> DmaError {
        self.sh.iommu.log_fault(FaultRecord {
            device: self.sh.dev.id(),
            pasid,
            iova: f.iova,
            write,
            reason: f.reason,
        });
        DmaError::Fault(f)
    }
}

/// One chunk of a DMA read: `buf.len()` bytes at `pa` (inside one page). A translation to an
/// address outside memory is an Unsupported Request: [`DmaError::BadAddress`] names its page.
#[inline]
pub(super) fn dma_read_chunk(phys: &PhysMem, pa: u64, buf: &mut [u8]) -> Result<(), DmaError> {
    phys.read(PhysAddr(pa), buf)
        .map_err(|_| DmaError::BadAddress {
            pa: pa & !(PAGE_SIZE - 1),
        })
}

/// One chunk of a DMA fill: `len` bytes of `byte` at `pa`; errors as [`dma_read_chunk`].
#[inline]
pub(super) fn dma_fill_chunk(
    phys: &PhysMem,
    pa: u64,
    len: usize,
    byte: u8,
) -> Result<(), DmaError> {
    phys.fill(PhysAddr(pa), len, byte)
        .map_err(|_| DmaError::BadAddress {
            pa: pa & !(PAGE_SIZE - 1),
        })
}

/// One chunk of a DMA write; errors as [`dma_read_chunk`].
#[inline]
pub(super) fn dma_write_chunk(phys: &PhysMem, pa: u64, data: &[u8]) -> Result<(), DmaError> {
    phys.write(PhysAddr(pa), data)
        .map_err(|_| DmaError::BadAddress {
            pa: pa & !(PAGE_SIZE - 1),
        })
}

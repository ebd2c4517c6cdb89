//! The fault object and its endpoint (Linux `drivers/iommu/iommufd/fault.c`, `iommufd_fault`).
//!
//! Producer side (SPEC §5.4): the [`IopfHandler`] installed on every fault-capable HWPT's domain
//! appends each page request group to the object's `deliver` FIFO under a short lock and
//! signals readiness. It never takes the `mutex` that read/write/auto-response hold, so a user
//! stalled in the middle of a read can never stall the IOMMU's reporting thread (SPEC H17, the
//! 6.14 "separate spinlock" fix).
//!
//! Consumer side (SPEC §5.5-§5.7): [`FaultFd`] reads whole groups as 40-byte
//! [`IommuHwptPgfault`] records with a cookie per group (lowest free, non-zero, H18) and takes
//! 8-byte [`IommuHwptPageResponse`] records (Success/Invalid only, H19).
//!
//! Exactly once (H9, H11): a group accepted by the handler is owned by this object alone — it
//! is an [`IopfGroup`], move-only, so it sits in exactly one place at a time: the `deliver`
//! FIFO, the cookie map, or a local list on its way to `respond`, which consumes it. Auto-
//! response (detach/replace/destroy, H21, H23) and endpoint close take groups out of those two
//! places under the same `mutex` that read and write hold, so no group can be answered twice
//! and none can be forgotten.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use iommu_core::error::{einval, einval_v, enospc, eopnotsupp, espipe_v};
use iommu_core::{Attachment, Error, IopfGroup, IopfHandler, PageResponseCode, Result};
use zerocopy::{FromBytes, IntoBytes};

use crate::uapi::{
    IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS,
};
use iommu_core::sync::{AtomicU64, Mutex, MutexGuard};

/// Size of one fault record read from the endpoint.
pub const FAULT_RECORD_SIZE: usize = core::mem::size_of::<IommuHwptPgfault>();
const COOKIE_OFFSET: usize = core::mem::offset_of!(IommuHwptPgfault, cookie);

/// Size of one response record written to the endpoint.
pub const RESPONSE_RECORD_SIZE: usize = core::mem::size_of::<IommuHwptPageResponse>();

/// The owner data of every attach handle iommufd installs: which iommufd device attached.
///
/// The fault path reads `dev_id` from the handle a group was routed through, so every record
/// names the idev whose attachment took the fault (SPEC §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdHandle {
    /// The iommufd device object ID of the attaching device.
    pub dev_id: u32,
}

/// A group waiting in `deliver`.
struct Queued {
    group: IopfGroup,
}

/// What the short lock protects (Linux `fault->lock` + `fault->deliver`).
struct Deliver {
    list: VecDeque<Queued>,
    /// The eventfd counter is non-zero. Set on the empty → non-empty transition (one write),
    /// cleared whenever the list becomes empty again, so `signalled == !list.is_empty()`.
    signalled: bool,
    /// The endpoint is closed: nobody can read any more, so new groups are answered at once.
    closed: bool,
    /// Counters kept under the lock the producer holds anyway (no extra atomic per report).
    wakeups: u64,
    queued: u64,
}

/// Cookie → group for groups read but not answered (Linux `fault->response` xarray with
/// `XA_FLAGS_ALLOC1`). Cookies are the lowest free value in `[1, u32::MAX]` (H18): slot `i`
/// holds cookie `i + 1`; `free` has bit `i` set for every free slot below `slots.len()`, and
/// every word below `hint` is full, so finding the lowest free slot is a short word scan
/// (a binary heap cost more: its sift showed up in the batched profile).
#[derive(Default)]
struct CookieMap {
    slots: Vec<Option<IopfGroup>>,
    free: Vec<u64>,
    hint: usize,
    live: usize,
}

impl CookieMap {
    fn insert(&mut self, group: IopfGroup) -> core::result::Result<u32, IopfGroup> {
        let found = self.free[self.hint..]
            .iter()
            .position(|&w| w != 0)
            .map(|off| self.hint + off);
        let idx = match found {
            Some(w) => {
                self.hint = w;
                let bit = self.free[w].trailing_zeros() as usize;
                self.free[w] &= !(1 << bit);
                w * 64 + bit
            }
            None => {
                self.hint = self.free.len();
                // Cookie u32::MAX is index u32::MAX - 1: the last one that fits.
                if self.slots.len() >= u32::MAX as usize {
                    return Err(group);
                }
                self.slots.push(None);
                if self.slots.len() > self.free.len() * 64 {
                    self.free.push(0);
                }
                self.slots.len() - 1
            }
        };
        self.slots[idx] = Some(group);
        self.live += 1;
        Ok(idx as u32 + 1)
    }

    fn release(&mut self, idx: usize) {
        self.free[idx / 64] |= 1 << (idx % 64);
        self.hint = self.hint.min(idx / 64);
        self.live -= 1;
    }

    /// Erases `cookie` and returns its group (H18: erased before the response is sent).
    fn take(&mut self, cookie: u32) -> Option<IopfGroup> {
        let idx = cookie.checked_sub(1)? as usize;
        let g = self.slots.get_mut(idx)?.take()?;
        self.release(idx);
        Some(g)
    }

    /// Erases every group for which `pred` holds.
    fn take_matching(
        &mut self,
        mut pred: impl FnMut(&IopfGroup) -> bool,
        out: &mut Vec<IopfGroup>,
    ) {
        if self.live == 0 {
            return;
        }
        for idx in 0..self.slots.len() {
            if self.slots[idx].as_ref().is_some_and(&mut pred) {
                out.extend(self.slots[idx].take());
                self.release(idx);
            }
        }
    }
}

/// What the `mutex` protects (Linux `fault->mutex`, serialising read, write and auto-response).
#[derive(Default)]
struct Responses {
    map: CookieMap,
    /// Reused buffer for the groups one read takes off `deliver`.
    scratch: Vec<Queued>,
    /// The last attachment whose `dev_id` a read resolved (a downcast costs two atomic RMWs;
    /// consecutive groups usually share an attachment). Holding the clone rules out address
    /// reuse; auto-response and shutdown drop it so it never outlives its attachment's detach.
    dev_id_cache: Option<(Attachment, u32)>,
}

impl Responses {
    /// The `dev_id` recorded in the handle `group` was routed through (SPEC §5.5).
    fn dev_id(&mut self, group: &IopfGroup) -> u32 {
        let att = group.attachment();
        if let Some((a, id)) = &self.dev_id_cache {
            if a.ptr_eq(att) {
                return *id;
            }
        }
        // The handler only queues groups whose handle is an `FdHandle`.
        let id = group.handle::<FdHandle>().map_or(0, |h| h.dev_id);
        self.dev_id_cache = Some((att.clone(), id));
        id
    }
}

/// Counters of one fault object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Eventfd writes: one per empty → non-empty transition of `deliver`.
    pub wakeups: u64,
    /// Groups accepted from the reporting path.
    pub queued: u64,
    /// Groups answered by user space through the endpoint.
    pub user_responses: u64,
    /// Groups answered Invalid by auto-response, close or destroy.
    pub auto_responses: u64,
}

/// A fault queue object (`IOMMUFD_OBJ_FAULT`).
///
/// Shared (`Arc`) by the object table, the endpoint, every HWPT that delivers to it and
/// those HWPTs' domain handlers: destroy refuses (`EBUSY`) while any but the table's exists.
/// Dropping the last reference answers every group still held Invalid (SPEC H23).
pub struct Fault {
    lock: Mutex<Deliver>,
    mutex: Mutex<Responses>,
    eventfd: Option<OwnedFd>,
    user_responses: AtomicU64,
    auto_responses: AtomicU64,
}

impl Fault {
    /// A fault object with its eventfd (close-on-exec, non-blocking: `read` never blocks).
    pub(crate) fn new() -> Result<Arc<Fault>> {
        #[cfg(not(loom))]
        let fd = {
            use rustix::event::{eventfd, EventfdFlags};
            Some(
                eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                    .map_err(|_| iommu_core::error::enomem("cannot create the fault eventfd"))?,
            )
        };
        // The loom model leaves the eventfd out: its readiness bookkeeping is the same code.
        #[cfg(loom)]
        let fd = None;
        Ok(Arc::new(Self {
            lock: Mutex::new(Deliver {
                list: VecDeque::new(),
                signalled: false,
                closed: false,
                wakeups: 0,
                queued: 0,
            }),
            mutex: Mutex::new(Responses::default()),
            eventfd: fd,
            user_responses: AtomicU64::new(0),
            auto_responses: AtomicU64::new(0),
        }))
    }

    /// The handler to install on a fault-capable domain delivering here.
    pub(crate) fn handler(self: &Arc<Self>) -> Arc<dyn IopfHandler> {
        Arc::new(FaultHandler {
            fault: self.clone(),
        })
    }

    /// The object's counters.
    pub fn stats(&self) -> FaultStats {
        let (wakeups, queued) = {
            let d = self.lock.lock();
            (d.wakeups, d.queued)
        };
        FaultStats {
            wakeups,
            queued,
            user_responses: self.user_responses.load(Relaxed),
            auto_responses: self.auto_responses.load(Relaxed),
        }
    }

    /// Groups waiting to be read.
    pub fn pending(&self) -> usize {
        self.lock.lock().list.len()
    }

    /// Groups read but not yet answered.
    pub fn unanswered(&self) -> usize {
        self.mutex.lock().map.live
    }

    /// Producer side: queue `q` and signal on the empty → non-empty transition.
    fn enqueue(&self, q: Queued) {
        let mut d = self.lock.lock();
        if d.closed {
            drop(d);
            self.auto_responses.fetch_add(1, Relaxed);
            q.group.respond(PageResponseCode::Invalid);
            return;
        }
        d.list.push_back(q);
        d.queued += 1;
        if !d.signalled {
            self.signal(&mut d);
        }
    }

    /// Makes the fd readable. Called with the short lock held, so the eventfd counter and
    /// `signalled` change together and a racing drain cannot leave a stale readable fd.
    fn signal(&self, d: &mut MutexGuard<'_, Deliver>) {
        d.signalled = true;
        d.wakeups += 1;
        if let Some(fd) = &self.eventfd {
            // Cannot block or fail: the counter is 0 (we clear it on every drain), far below
            // its u64::MAX - 1 limit.
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// Clears readiness once `deliver` is empty (short lock held).
    fn clear_if_empty(&self, d: &mut MutexGuard<'_, Deliver>) {
        if d.signalled && d.list.is_empty() {
            d.signalled = false;
            if let Some(fd) = &self.eventfd {
                let mut buf = [0u8; 8];
                // Non-blocking; the counter is non-zero because `signalled` was set.
                let _ = rustix::io::read(fd, &mut buf);
            }
        }
    }

    /// Reads whole groups into `buf` (Linux `iommufd_fault_fops_read`), see [`FaultFd::read_at`].
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset != 0 {
            return Err(espipe_v("fault fd reads only at offset 0", offset));
        }
        if buf.len() % FAULT_RECORD_SIZE != 0 {
            return Err(espipe_v(
                "read size is not a multiple of 40",
                buf.len() as u64,
            ));
        }
        if buf.is_empty() {
            // [2026-fix] "Reject invalid read count" (SPEC §5.5 recommendation).
            return Err(einval("zero-length read of the fault fd"));
        }
        let mut resp = self.mutex.lock();
        let resp = &mut *resp;
        let mut batch = core::mem::take(&mut resp.scratch);
        let budget = buf.len() / FAULT_RECORD_SIZE;
        {
            // Take as many *whole* groups as fit (H20); copying happens after unlocking (H17).
            let mut d = self.lock.lock();
            let mut used = 0;
            while let Some(front) = d.list.front() {
                let n = front.group.faults().len();
                if used + n > budget {
                    break;
                }
                used += n;
                batch.extend(d.list.pop_front());
            }
            self.clear_if_empty(&mut d);
        }
        let mut done = 0;
        let mut err: Option<Error> = None;
        let mut drain = batch.drain(..);
        for q in drain.by_ref() {
            let first = done;
            let mut rec = IommuHwptPgfault {
                dev_id: resp.dev_id(&q.group),
                ..Default::default()
            };
            for f in q.group.faults() {
                // The core's request flag bits equal the uAPI's (a driver-set NEEDS_PASID bit
                // passes through, as in Linux).
                rec.flags = f.flags;
                rec.pasid = f.pasid;
                rec.grpid = f.grpid;
                rec.perm = f.perm;
                rec.addr = f.addr;
                buf[done..done + FAULT_RECORD_SIZE].copy_from_slice(rec.as_bytes());
                done += FAULT_RECORD_SIZE;
            }
            match resp.map.insert(q.group) {
                Ok(cookie) => {
                    // The cookie goes on every record of the group.
                    for r in buf[first..done].chunks_exact_mut(FAULT_RECORD_SIZE) {
                        r[COOKIE_OFFSET..].copy_from_slice(&cookie.to_ne_bytes());
                    }
                }
                Err(group) => {
                    // Cookie space exhausted: this group and the rest go back to the head, in
                    // order, and the bytes composed for it are not reported (2026 fix).
                    done = first;
                    err = Some(enospc("no free response cookie"));
                    let rest: Vec<Queued> = core::iter::once(Queued { group })
                        .chain(drain.by_ref())
                        .collect();
                    let mut d = self.lock.lock();
                    for q in rest.into_iter().rev() {
                        d.list.push_front(q);
                    }
                    if !d.signalled {
                        self.signal(&mut d);
                    }
                    break;
                }
            }
        }
        drop(drain);
        resp.scratch = batch;
        match (done, err) {
            (0, Some(e)) => Err(e),
            _ => Ok(done),
        }
    }

    /// Applies response records (Linux `iommufd_fault_fops_write`), see [`FaultFd::write_at`].
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize> {
        if offset != 0 {
            return Err(espipe_v("fault fd writes only at offset 0", offset));
        }
        if buf.len() % RESPONSE_RECORD_SIZE != 0 {
            return Err(espipe_v(
                "write size is not a multiple of 8",
                buf.len() as u64,
            ));
        }
        let mut resp = self.mutex.lock();
        let mut done = 0;
        let mut err = None;
        for rec in buf.chunks_exact(RESPONSE_RECORD_SIZE) {
            let r = IommuHwptPageResponse::read_from_bytes(rec)
                .unwrap_or_else(|_| unreachable!("chunk is exactly 8 bytes"));
            // User space may only say Success or Invalid, never Failure (H19).
            let code = match r.code {
                IOMMUFD_PAGE_RESP_SUCCESS => PageResponseCode::Success,
                IOMMUFD_PAGE_RESP_INVALID => PageResponseCode::Invalid,
                other => {
                    err = Some(einval_v(
                        "response code not SUCCESS or INVALID",
                        other.into(),
                    ));
                    break;
                }
            };
            let Some(group) = resp.map.take(r.cookie) else {
                err = Some(einval_v(
                    "unknown, answered or auto-responded cookie",
                    r.cookie.into(),
                ));
                break;
            };
            group.respond(code);
            self.user_responses.fetch_add(1, Relaxed);
            done += RESPONSE_RECORD_SIZE;
        }
        drop(resp);
        match (done, err) {
            (0, Some(e)) => Err(e),
            _ => Ok(done),
        }
    }

    /// Answers Invalid every group of `attachment` still queued or read-but-unanswered (Linux
    /// `iommufd_auto_response_faults`), matching by attachment identity. Called after the core
    /// detach/replace returned, so no report can still deliver to `attachment` (H2, H4) and this
    /// sees every group it produced. Returns how many groups were answered.
    pub(crate) fn auto_response(&self, attachment: &Attachment) -> usize {
        let mut resp = self.mutex.lock();
        let mut out = Vec::new();
        {
            let mut d = self.lock.lock();
            let mut keep = VecDeque::with_capacity(d.list.len());
            for q in d.list.drain(..) {
                if q.group.attachment().ptr_eq(attachment) {
                    out.push(q.group);
                } else {
                    keep.push_back(q);
                }
            }
            d.list = keep;
            self.clear_if_empty(&mut d);
        }
        resp.map
            .take_matching(|g| g.attachment().ptr_eq(attachment), &mut out);
        if resp
            .dev_id_cache
            .as_ref()
            .is_some_and(|(a, _)| a.ptr_eq(attachment))
        {
            resp.dev_id_cache = None;
        }
        drop(resp);
        self.answer_invalid(out)
    }

    /// Closes the queue: answers everything Invalid, and answers later arrivals at once.
    pub(crate) fn shutdown(&self) -> usize {
        let mut resp = self.mutex.lock();
        let mut out = Vec::new();
        {
            let mut d = self.lock.lock();
            d.closed = true;
            out.extend(d.list.drain(..).map(|q| q.group));
            self.clear_if_empty(&mut d);
        }
        resp.map.take_matching(|_| true, &mut out);
        resp.dev_id_cache = None;
        drop(resp);
        self.answer_invalid(out)
    }

    fn answer_invalid(&self, groups: Vec<IopfGroup>) -> usize {
        let n = groups.len();
        self.auto_responses.fetch_add(n as u64, Relaxed);
        for g in groups {
            g.respond(PageResponseCode::Invalid);
        }
        n
    }

    fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let fd = self
            .eventfd
            .as_ref()
            .ok_or(eopnotsupp("fault object has no eventfd"))?;
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        loop {
            match poll(&mut fds, ts.as_ref()) {
                Ok(n) => return Ok(n > 0 && fds[0].revents().contains(PollFlags::IN)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return Err(einval("poll on the fault eventfd failed")),
            }
        }
    }
}

impl Drop for Fault {
    /// Object destroy (H23): answers every group in `deliver` *and* in the cookie map — the
    /// 6.14 fix; the original drained only `deliver`.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The `IopfHandler` of fault-capable HWPT domains (Linux `iommufd_fault_iopf_handler`).
///
/// Holds the fault object strongly (a `Weak` upgrade per report costs two atomic RMWs on the
/// hot path). That makes a cycle while groups are queued — queue → group → attachment →
/// domain → handler → queue — which every teardown breaks: closing the endpoint, dropping the
/// context and detach all take the groups out, and a closed queue answers new groups at once.
struct FaultHandler {
    fault: Arc<Fault>,
}

impl IopfHandler for FaultHandler {
    fn name(&self) -> &str {
        "iommufd"
    }

    /// Runs on the driver's reporting thread with the PASID array read-locked: takes only the
    /// fault's short lock, never its mutex (H17), and never fails for a group it owns.
    fn handle_iopf(&self, group: IopfGroup) -> core::result::Result<(), IopfGroup> {
        // Only iommufd installs this handler, and only on domains it attaches with `FdHandle`s
        // (the handler is the type key, SPEC §1.4); anything else is refused (answered Failure).
        // The type check is free; reading `dev_id` is left to `read` (off the IRQ thread).
        if !group.attachment().is::<FdHandle>() {
            return Err(group);
        }
        self.fault.enqueue(Queued { group });
        Ok(())
    }
}

/// Readiness of the endpoint, as `poll` would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollMask {
    /// `EPOLLIN | EPOLLRDNORM`: a group is waiting to be read.
    pub readable: bool,
    /// `EPOLLOUT`: responses can be written (always).
    pub writable: bool,
}

/// The fault fd (Linux's anon inode `"[iommufd-pgfault]"`): the user-space endpoint of a
/// fault object.
///
/// Holds the object alive (destroying the fault object fails with `EBUSY` while the endpoint
/// exists). `read` never blocks; use [`FaultFd::wait_readable`] or epoll on
/// [`AsFd::as_fd`], which is readable exactly while groups are waiting. Dropping the endpoint
/// answers Invalid every group it still holds, queued or read-but-unanswered, and every group
/// that arrives later (nobody could ever answer them; Linux instead leaves them pending until
/// detach — see the crate docs).
pub struct FaultFd {
    fault: Arc<Fault>,
}

impl FaultFd {
    pub(crate) fn new(fault: Arc<Fault>) -> Self {
        Self { fault }
    }

    /// Reads whole fault groups at file offset `offset` (SPEC §5.5).
    ///
    /// Returns the bytes read: a multiple of 40, one [`IommuHwptPgfault`] per fault, every
    /// record of a group carrying the group's cookie (the lowest free non-zero value). Groups
    /// are never split: if the next group does not fit the rest of `buf`, reading stops there
    /// (0 if it is the first — the group stays queued). Never blocks: 0 when nothing is queued.
    /// Errors: `ESPIPE` for a non-zero offset or a length not a multiple of 40; `EINVAL` for an
    /// empty buffer; `ENOSPC` if no cookie is free (only when nothing could be read).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.fault.read_at(buf, offset)
    }

    /// [`FaultFd::read_at`] at offset 0.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        self.fault.read_at(buf, 0)
    }

    /// Writes response records at file offset `offset` (SPEC §5.6).
    ///
    /// Each 8-byte [`IommuHwptPageResponse`] answers the group of its cookie with Success or
    /// Invalid and retires the cookie. Processing stops at the first bad record: the records
    /// before it stay applied and their byte count is returned; if the very first is bad the
    /// error is returned. Errors: `ESPIPE` for a non-zero offset or a length not a multiple of
    /// 8; `EINVAL` for a code other than `IOMMUFD_PAGE_RESP_SUCCESS`/`_INVALID` (user space can
    /// never send Failure, H19) or a cookie that is not outstanding (never issued, already
    /// answered, or auto-responded).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize> {
        self.fault.write_at(buf, offset)
    }

    /// [`FaultFd::write_at`] at offset 0.
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        self.fault.write_at(buf, 0)
    }

    /// Current readiness: readable iff a group is waiting; always writable.
    pub fn poll(&self) -> PollMask {
        PollMask {
            readable: !self.fault.lock.lock().list.is_empty(),
            writable: true,
        }
    }

    /// Blocks until the fd is readable or `timeout` (None: forever) passes; returns whether
    /// it is readable. Polls the real fd, as user space would.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        self.fault.wait_readable(timeout)
    }

    /// The fault object's counters (`wakeups` counts eventfd writes).
    pub fn stats(&self) -> FaultStats {
        self.fault.stats()
    }

    /// Groups waiting to be read.
    pub fn pending(&self) -> usize {
        self.fault.pending()
    }

    /// Groups read but not yet answered.
    pub fn unanswered(&self) -> usize {
        self.fault.unanswered()
    }
}

impl AsFd for FaultFd {
    /// The eventfd to register with epoll/poll: readable while groups are waiting.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fault
            .eventfd
            .as_ref()
            .expect("a fault object made outside the loom model always has its eventfd")
            .as_fd()
    }
}

impl Drop for FaultFd {
    fn drop(&mut self) {
        self.fault.shutdown();
    }
}

impl core::fmt::Debug for FaultFd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FaultFd")
            .field("stats", &self.fault.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, loom))]
mod loom_models;

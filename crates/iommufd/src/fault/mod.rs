//! The fault object and its endpoint (Linux `drivers/iommu/iommufd/fault.c`, `iommufd_fault`).
//!
//! Producer side (SPEC §5.4): the [`IopfHandler`] installed on every fault-capable HWPT's domain
//! appends each page request group to the object's `deliver` FIFO under a short lock and
//! signals readiness. It never takes the `mutex` that read/write/auto-response hold, so a user
//! stalled in the middle of a read can never stall the IOMMU's reporting thread (SPEC H17, the
//! 6.14 "separate spinlock" fix).
//!
//! Consumer side (SPEC §5.5-§5.7): [`FaultFd`] reads whole groups as 40-byte
//! [`IommuHwptPgfault`](crate::uapi::IommuHwptPgfault) records with a cookie per group (lowest
//! free, non-zero, H18) and takes 8-byte
//! [`IommuHwptPageResponse`](crate::uapi::IommuHwptPageResponse) records (Success/Invalid only,
//! H19).
//!
//! # Readiness
//! The endpoint's fd is the object's eventfd, so `poll`/`epoll` work on it unaided. It is
//! readable whenever a group waits, but it is made unreadable only when a reader may sleep —
//! a read that found nothing to read, [`FaultFd::wait_readable`], or a detach that emptied the
//! queue — not by every read that drains it. That is what Linux's wait queue gives (a wake-up
//! costs something only when someone sleeps): a consumer that keeps reading while groups keep
//! coming makes no eventfd syscall at all, where clearing on every drain cost a write and a
//! read per group with one in flight (~75 % of a record's cost). The price is a stale
//! readiness after a drain, which level-triggered consumers (read until a read returns
//! nothing, then wait) never see. [`FaultFd::poll`] stays exact (SPEC §5.7).
//!
//! The pieces: this file holds the object, its `deliver` FIFO and the producer; [`cookies`]
//! the read-but-unanswered groups; [`fops`] the fd's read/write byte interface; [`endpoint`]
//! the fd itself; [`auto_response`] answering on user space's behalf.
//!
//! Exactly once (H9, H11): a group accepted by the handler is owned by this object alone — it
//! is an [`IopfGroup`], move-only, so it sits in exactly one place at a time: the `deliver`
//! FIFO, the cookie map, or a local list on its way to `respond`, which consumes it. Auto-
//! response (detach/replace/destroy, H21, H23) and endpoint close take groups out of those two
//! places under the same `mutex` that read and write hold, so no group can be answered twice
//! and none can be forgotten.

mod auto_response;
mod cookies;
mod endpoint;
mod fops;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::Ordering::Relaxed;
use std::os::fd::OwnedFd;
use std::time::Duration;

use iommu_core::error::{einval, eopnotsupp};
use iommu_core::sync::{AtomicU64, Mutex, MutexGuard};
use iommu_core::{IopfGroup, IopfHandler, PageResponseCode, Result};

use cookies::Responses;

pub use endpoint::{FaultFd, PollMask};
pub use fops::{FAULT_RECORD_SIZE, RESPONSE_RECORD_SIZE};

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
    /// The eventfd counter is non-zero (the fd is readable). Set when a group arrives and it
    /// is clear (one write); cleared when the list is empty and a reader may sleep: a read that
    /// found nothing, a wait, or a detach that emptied it. So `!list.is_empty() → signalled`.
    signalled: bool,
    /// The endpoint is closed: nobody can read any more, so new groups are answered at once.
    closed: bool,
    /// Counters kept under the lock the producer holds anyway (no extra atomic per report).
    wakeups: u64,
    queued: u64,
}

/// Counters of one fault object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Eventfd writes: one each time a group arrives while the fd is not readable (the fd
    /// stays readable after a draining read until a read finds nothing).
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

    /// Records of the group a read would return first (`None`: nothing queued).
    pub fn next_group_records(&self) -> Option<usize> {
        self.lock
            .lock()
            .list
            .front()
            .map(|q| q.group.faults().len())
    }

    /// Producer side: queue `q` and make the fd readable if it is not already.
    #[inline]
    fn enqueue(&self, q: Queued) {
        let mut d = self.lock.lock();
        if d.closed {
            drop(d);
            self.auto_responses.fetch_add(1, Relaxed);
            q.group.respond_auto(PageResponseCode::Invalid);
            return;
        }
        d.list.push_back(q);
        d.queued += 1;
        if !d.signalled {
            self.signal(&mut d);
        }
    }

    /// Makes the fd readable. Called with the short lock held, so the eventfd counter and
    /// `signalled` change together: a clear never races a signal.
    #[inline]
    fn signal(&self, d: &mut MutexGuard<'_, Deliver>) {
        d.signalled = true;
        d.wakeups += 1;
        if let Some(fd) = &self.eventfd {
            // Cannot block or fail: the counter is 0 (it is written only while not signalled,
            // and cleared with `signalled`), far below its u64::MAX - 1 limit.
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// Clears readiness once `deliver` is empty (short lock held).
    #[inline]
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

    fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let fd = self
            .eventfd
            .as_ref()
            .ok_or(eopnotsupp("fault object has no eventfd"))?;
        // The caller may sleep: a readiness left from a read that drained the queue goes.
        self.clear_if_empty(&mut self.lock.lock());
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

#[cfg(all(test, loom))]
mod loom_models;

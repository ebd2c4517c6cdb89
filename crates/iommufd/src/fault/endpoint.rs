//! The fault fd (Linux's anon inode `"[iommufd-pgfault]"`): the user-space endpoint of a
//! fault object, with its readiness and its close.

use alloc::sync::Arc;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use iommu_core::Result;

use super::{Fault, FaultStats};
#[cfg(doc)]
use crate::uapi::{IommuHwptPageResponse, IommuHwptPgfault};

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
/// [`AsFd::as_fd`], which is readable while groups are waiting and stops being readable once
/// a read finds nothing (see "Readiness" in the module docs). Dropping the endpoint
/// answers Invalid every group it still holds, queued or read-but-unanswered, and every group
/// that arrives later (nobody could ever answer them; Linux instead leaves them pending until
/// detach — see the crate docs).
pub struct FaultFd {
    pub(super) fault: Arc<Fault>,
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

    /// Records (40 bytes each) of the group the next read returns first; `None` when nothing
    /// is queued. A read buffer must hold at least this many, as groups are never split.
    pub fn next_group_records(&self) -> Option<usize> {
        self.fault.next_group_records()
    }

    /// Groups read but not yet answered.
    pub fn unanswered(&self) -> usize {
        self.fault.unanswered()
    }
}

impl AsFd for FaultFd {
    /// The eventfd to register with epoll/poll: readable while groups are waiting (and after a
    /// draining read, until a read finds nothing).
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

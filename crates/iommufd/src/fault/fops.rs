//! The fault fd's byte interface (Linux `iommufd_fault_fops_read` / `_write`): whole groups
//! out as 40-byte [`IommuHwptPgfault`] records, 8-byte [`IommuHwptPageResponse`] records in.

use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use iommu_core::error::{einval, einval_v, enospc, espipe_v};
use iommu_core::{IopfGroup, PageResponseCode, Result};
use zerocopy::{FromBytes, IntoBytes};

use super::cookies::Responses;
use super::{Fault, Queued};
use crate::uapi::{
    IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS,
};

/// Size of one fault record read from the endpoint.
pub const FAULT_RECORD_SIZE: usize = core::mem::size_of::<IommuHwptPgfault>();

/// Size of one response record written to the endpoint.
pub const RESPONSE_RECORD_SIZE: usize = core::mem::size_of::<IommuHwptPageResponse>();

/// The file-position and length rules of one direction of the fd.
struct IoRule {
    record: usize,
    bad_offset: &'static str,
    bad_size: &'static str,
}

const READ: IoRule = IoRule {
    record: FAULT_RECORD_SIZE,
    bad_offset: "fault fd reads only at offset 0",
    bad_size: "read size is not a multiple of 40",
};

const WRITE: IoRule = IoRule {
    record: RESPONSE_RECORD_SIZE,
    bad_offset: "fault fd writes only at offset 0",
    bad_size: "write size is not a multiple of 8",
};

impl IoRule {
    /// `ESPIPE` unless `offset` is 0 and `len` a whole number of records.
    #[inline]
    fn check(&self, len: usize, offset: u64) -> Result<()> {
        if offset != 0 {
            return Err(espipe_v(self.bad_offset, offset));
        }
        if !len.is_multiple_of(self.record) {
            return Err(espipe_v(self.bad_size, len as u64));
        }
        Ok(())
    }
}

/// Writes one record per fault of `group` at the start of `buf`; returns the bytes written.
#[inline]
fn write_records(buf: &mut [u8], group: &IopfGroup, dev_id: u32, cookie: u32) -> usize {
    let mut rec = IommuHwptPgfault {
        dev_id,
        cookie,
        ..Default::default()
    };
    let mut done = 0;
    for f in group.faults() {
        // The core's request flag bits equal the uAPI's (a driver-set NEEDS_PASID bit passes
        // through, as in Linux).
        rec.flags = f.flags;
        rec.pasid = f.pasid;
        rec.grpid = f.grpid;
        rec.perm = f.perm;
        rec.addr = f.addr;
        buf[done..done + FAULT_RECORD_SIZE].copy_from_slice(rec.as_bytes());
        done += FAULT_RECORD_SIZE;
    }
    done
}

/// The core response a user-space code stands for: Success or Invalid only, never Failure
/// (H19).
#[inline]
fn response_code(code: u32) -> Result<PageResponseCode> {
    match code {
        IOMMUFD_PAGE_RESP_SUCCESS => Ok(PageResponseCode::Success),
        IOMMUFD_PAGE_RESP_INVALID => Ok(PageResponseCode::Invalid),
        other => Err(einval_v(
            "response code not SUCCESS or INVALID",
            other.into(),
        )),
    }
}

impl Fault {
    /// Reads whole groups into `buf` (Linux `iommufd_fault_fops_read`), see
    /// [`FaultFd::read_at`](super::FaultFd::read_at).
    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        READ.check(buf.len(), offset)?;
        if buf.is_empty() {
            // [2026-fix] "Reject invalid read count" (SPEC §5.5 recommendation).
            return Err(einval("zero-length read of the fault fd"));
        }
        let mut resp = self.mutex.lock();
        let resp = &mut *resp;
        let mut batch = core::mem::take(&mut resp.scratch);
        self.take_whole_groups(buf.len() / FAULT_RECORD_SIZE, &mut batch);
        let read = self.copy_out(resp, &mut batch, buf);
        resp.scratch = batch;
        read
    }

    /// Moves as many *whole* groups as fit in `budget` records off `deliver` into `batch`
    /// (H20), under the short lock; copying happens after it is dropped (H17).
    #[inline]
    fn take_whole_groups(&self, budget: usize, batch: &mut Vec<Queued>) {
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
        // Only a read that finds nothing tells us the reader may sleep next: then the fd stops
        // being readable. A read that drains the queue leaves it readable, so a reader that
        // keeps reading costs no eventfd syscall (see "Readiness" in `fault/mod.rs`).
        if batch.is_empty() {
            self.clear_if_empty(&mut d);
        }
    }

    /// Gives each group of `batch` a cookie and writes its records into `buf`, every record
    /// of a group carrying the group's cookie; returns the bytes written.
    ///
    /// When the cookies run out, that group and the rest go back to the head of `deliver` in
    /// order, unreported (2026 fix); `ENOSPC` if nothing could be read.
    fn copy_out(
        &self,
        resp: &mut Responses,
        batch: &mut Vec<Queued>,
        buf: &mut [u8],
    ) -> Result<usize> {
        let mut done = 0;
        let mut drain = batch.drain(..);
        while let Some(q) = drain.next() {
            let dev_id = resp.dev_id(&q.group);
            match resp.map.insert(q.group) {
                Ok(cookie) => {
                    let group = resp.map.get(cookie).expect("inserted above");
                    done += write_records(&mut buf[done..], group, dev_id, cookie);
                }
                Err(group) => {
                    let rest = core::iter::once(Queued { group }).chain(drain.by_ref());
                    self.requeue_at_head(rest.collect());
                    return match done {
                        0 => Err(enospc("no free response cookie")),
                        _ => Ok(done),
                    };
                }
            }
        }
        Ok(done)
    }

    /// Puts `rest` back at the head of `deliver`, in order, and keeps the fd readable.
    fn requeue_at_head(&self, rest: Vec<Queued>) {
        let mut d = self.lock.lock();
        for q in rest.into_iter().rev() {
            d.list.push_front(q);
        }
        if !d.signalled {
            self.signal(&mut d);
        }
    }

    /// Applies response records (Linux `iommufd_fault_fops_write`), see
    /// [`FaultFd::write_at`](super::FaultFd::write_at).
    pub(super) fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize> {
        WRITE.check(buf.len(), offset)?;
        let mut resp = self.mutex.lock();
        let mut done = 0;
        let mut err = None;
        for rec in buf.chunks_exact(RESPONSE_RECORD_SIZE) {
            let r = IommuHwptPageResponse::read_from_bytes(rec)
                .unwrap_or_else(|_| unreachable!("chunk is exactly 8 bytes"));
            let code = match response_code(r.code) {
                Ok(code) => code,
                Err(e) => {
                    err = Some(e);
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
            done += RESPONSE_RECORD_SIZE;
        }
        // One counter update per write, not per record.
        self.user_responses
            .fetch_add((done / RESPONSE_RECORD_SIZE) as u64, Relaxed);
        drop(resp);
        match (done, err) {
            (0, Some(e)) => Err(e),
            _ => Ok(done),
        }
    }
}

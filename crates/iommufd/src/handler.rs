//! A VMM's user-space I/O page fault handler on an iommufd fault fd: [`run_fault_handler`].
//!
//! Every user of a fault fd needs the same loop (a VMM's example, the rust-vmm glue), so it lives
//! here once; the caller supplies only how one faulting page is resolved.
//!
//! It waits in epoll on the fault fd and a stop eventfd (the epoll timeout is only a guard
//! against a stuck device, never synchronisation), reads whole groups of 40-byte
//! `iommu_hwpt_pgfault` records into a buffer holding several maximal groups (a buffer smaller
//! than the next group would read nothing forever), lets the caller resolve each record, and
//! answers each group exactly once with an 8-byte `iommu_hwpt_page_response` naming its cookie:
//! Success when every page of the group was resolved, Invalid otherwise. Records and responses
//! are the `uapi` types, parsed and written with zerocopy, never by byte offsets.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::uapi::{
    IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS,
};
use crate::{FaultFd, FAULT_RECORD_SIZE, RESPONSE_RECORD_SIZE};
use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};
use zerocopy::{FromBytes, IntoBytes};

/// Records the handler's read buffer holds: four groups of the endpoint's default maximum
/// (256 pages).
pub const READ_RECORDS: usize = 1024;
/// How long the handler waits with neither a fault nor a stop request before it gives up.
pub const GUARD: Duration = Duration::from_secs(10);

const TOKEN_FAULT: u64 = 1;
const TOKEN_STOP: u64 = 2;

/// What the handler did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Fault records read (one per faulting page).
    pub faults: u64,
    /// Groups read, each answered once.
    pub groups: u64,
    /// Responses the fd no longer took: their groups were answered already (auto-response on
    /// a detach or replace between the read and the write).
    pub stale: u64,
    /// Groups answered Invalid (a page the resolver refused).
    pub invalid: u64,
    /// Reads that returned records.
    pub batches: u64,
    /// Most records one read returned.
    pub max_records: u64,
    /// Epoll wake-ups for the fault fd.
    pub wakeups: u64,
    /// Why the handler stopped early, if it did.
    pub error: Option<String>,
}

/// Asks a running [`run_fault_handler`] to drain what is left and return.
#[derive(Debug)]
pub struct StopHandle(OwnedFd);

impl StopHandle {
    /// A new, unsignalled stop request. `Err` if no eventfd can be created.
    pub fn new() -> Result<StopHandle, String> {
        eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map(StopHandle)
            .map_err(|e| format!("eventfd: {e}"))
    }

    /// Signals the handler.
    pub fn stop(&self) {
        // An eventfd write of 1 only fails on counter overflow, which cannot happen here.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

/// Runs the handler on the calling thread until `stop` is signalled (after draining), an
/// error, or [`GUARD`] with nothing to do. `resolve` backs one faulting page or says why not.
pub fn run_fault_handler(
    fd: &FaultFd,
    stop: &StopHandle,
    mut resolve: impl FnMut(&IommuHwptPgfault) -> Result<(), String>,
) -> HandlerStats {
    let mut h = HandlerStats::default();
    if let Err(e) = handler_loop(fd, stop, &mut resolve, &mut h) {
        h.error = Some(e);
    }
    h
}

fn handler_loop(
    fd: &FaultFd,
    stop: &StopHandle,
    resolve: &mut impl FnMut(&IommuHwptPgfault) -> Result<(), String>,
    h: &mut HandlerStats,
) -> Result<(), String> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
    let add = |fd: rustix::fd::BorrowedFd<'_>, token| {
        epoll::add(
            &ep,
            fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
        .map_err(|e| format!("epoll add: {e}"))
    };
    add(fd.as_fd(), TOKEN_FAULT)?;
    add(stop.0.as_fd(), TOKEN_STOP)?;
    let guard = Timespec {
        tv_sec: GUARD.as_secs() as i64,
        tv_nsec: 0,
    };
    let mut events = Vec::with_capacity(2);
    let mut buf = vec![0u8; READ_RECORDS * FAULT_RECORD_SIZE];
    let mut responses: Vec<IommuHwptPageResponse> = Vec::new();
    loop {
        events.clear();
        match epoll::wait(
            &ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&guard),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        if events.is_empty() {
            return Err(format!(
                "no fault and no stop request for {GUARD:?} ({} groups pending)",
                fd.pending()
            ));
        }
        let stopping = events.iter().any(|ev| ev.data.u64() == TOKEN_STOP);
        h.wakeups += events
            .iter()
            .filter(|ev| ev.data.u64() == TOKEN_FAULT)
            .count() as u64;
        // Level triggered: drain until a read returns nothing, then wait again.
        drain(fd, resolve, &mut buf, &mut responses, h)?;
        if stopping {
            return Ok(());
        }
    }
}

/// The most records a read buffer grows to (a group larger than that cannot be read).
pub const MAX_READ_RECORDS: usize = 1 << 16;

/// Reads and answers until the queue is empty.
fn drain(
    fd: &FaultFd,
    resolve: &mut impl FnMut(&IommuHwptPgfault) -> Result<(), String>,
    buf: &mut Vec<u8>,
    responses: &mut Vec<IommuHwptPageResponse>,
    h: &mut HandlerStats,
) -> Result<(), String> {
    loop {
        let n = fd.read(buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            // Nothing was read: the queue is empty, or a group arrived just after the read
            // (read again), or the next group is larger than the buffer — groups are never
            // split, so grow the buffer to it rather than wake up forever on a readable fd
            // that yields nothing (SPEC §5.5).
            let Some(records) = fd.next_group_records() else {
                return Ok(());
            };
            if records > MAX_READ_RECORDS {
                return Err(format!(
                    "a group of {records} records is larger than {MAX_READ_RECORDS}"
                ));
            }
            if records * FAULT_RECORD_SIZE > buf.len() {
                buf.resize(
                    records.next_power_of_two().min(MAX_READ_RECORDS) * FAULT_RECORD_SIZE,
                    0,
                );
            }
            continue;
        }
        h.batches += 1;
        h.max_records = h.max_records.max((n / FAULT_RECORD_SIZE) as u64);
        responses.clear();
        for raw in buf[..n].chunks_exact(FAULT_RECORD_SIZE) {
            let rec = IommuHwptPgfault::read_from_bytes(raw)
                .map_err(|_| "a fault record is 40 bytes".to_string())?;
            h.faults += 1;
            // The records of one group are contiguous and share its cookie.
            if responses.last().is_none_or(|r| r.cookie != rec.cookie) {
                h.groups += 1;
                responses.push(IommuHwptPageResponse {
                    cookie: rec.cookie,
                    code: IOMMUFD_PAGE_RESP_SUCCESS,
                });
            }
            if resolve(&rec).is_err() {
                if let Some(last) = responses.last_mut() {
                    if last.code != IOMMUFD_PAGE_RESP_INVALID {
                        last.code = IOMMUFD_PAGE_RESP_INVALID;
                        h.invalid += 1;
                    }
                }
            }
        }
        write_responses(fd, responses, h)?;
    }
}

/// Writes every response. A detach or replace between the read and the write answers its
/// groups itself and retires their cookies (Linux's auto-response); the write stops at such a
/// record (a short count, or `EINVAL` when it is the first), which is skipped and counted as
/// stale while the rest are still written.
fn write_responses(
    fd: &FaultFd,
    responses: &[IommuHwptPageResponse],
    h: &mut HandlerStats,
) -> Result<(), String> {
    let mut left = responses;
    while !left.is_empty() {
        let bytes = left.as_bytes();
        let done = match fd.write(bytes) {
            Ok(w) if w == bytes.len() => return Ok(()),
            Ok(w) => w / RESPONSE_RECORD_SIZE,
            Err(e) if e.errno_name() == "EINVAL" => 0,
            Err(e) => return Err(format!("write: {e}")),
        };
        h.stale += 1;
        left = &left[done + 1..];
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::uapi::IOMMU_HWPT_FAULT_ID_VALID;
    use crate::{Ictx, IOMMU_NO_PASID};
    use iommu_core::mock::MockDriver;
    use iommu_core::{report_device_fault, Group, PageRequest, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE};

    #[test]
    fn a_stale_cookie_is_skipped_and_the_responses_after_it_are_still_written() {
        let mock = MockDriver::new("m");
        let group = Group::new(mock.clone(), "g");
        let dev = group.add_device("d", 1 << 20).unwrap();
        let ictx = Ictx::new();
        let dev_id = ictx.bind_device(dev.clone()).unwrap();
        let ioas = ictx.ioas_alloc().unwrap();
        let (fault_id, fd) = ictx.fault_queue_alloc(0).unwrap();
        let hwpt = ictx
            .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
            .unwrap();
        ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt).unwrap();
        let req = PageRequest {
            flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
            grpid: 3,
            perm: 1,
            addr: 0x1000,
            ..Default::default()
        };
        report_device_fault(&dev, req).unwrap();
        let mut rec = IommuHwptPgfault::default();
        assert_eq!(fd.read(rec.as_mut_bytes()).unwrap(), FAULT_RECORD_SIZE);

        let stale = |cookie| IommuHwptPageResponse {
            cookie,
            code: IOMMUFD_PAGE_RESP_SUCCESS,
        };
        let mut h = HandlerStats::default();
        // A retired cookie first (EINVAL), then the live one, then another retired one (a
        // short count): only the live group is answered, nothing is fatal.
        write_responses(&fd, &[stale(999), stale(rec.cookie), stale(998)], &mut h).unwrap();

        assert_eq!(h.stale, 2);
        assert_eq!(fd.pending(), 0);
        assert_eq!(mock.responses().len(), 1, "the live group answered once");
    }
}

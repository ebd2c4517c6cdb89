//! An iommufd owner — the VMM side of a passed-through device — and its fault handler: it reads
//! whole page request groups from the fault fd as `struct iommu_hwpt_pgfault` records, backs
//! every faulting page through its IOAS and answers each group once with a
//! `struct iommu_hwpt_page_response` (Linux: `drivers/iommu/iommufd/fault.c` is the other side).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use iommu_core::Device;
use iommu_core::{IOMMU_READ, IOMMU_WRITE};
use iommu_emu::{Pfn, PhysMem};
use iommufd::uapi::{
    IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS,
    IOMMU_HWPT_FAULT_ID_VALID,
};
use iommufd::{FaultFd, Ictx, FAULT_RECORD_SIZE, IOMMU_NO_PASID};
use zerocopy::{FromBytes, IntoBytes};

use super::PAGE;
use crate::report::StageLatency;

/// One iommufd owner: its context, device, IOAS, HWPT and fault queue.
pub(super) struct Owner {
    pub(super) ictx: Ictx,
    pub(super) dev_id: u32,
    pub(super) ioas: u32,
    pub(super) fault: Option<FaultFd>,
    frames: Mutex<Vec<Pfn>>,
    /// Fault records read so far.
    pub(super) records: AtomicU64,
    /// How long each batch of the fault handler took.
    pub(super) batches: Mutex<StageLatency>,
    /// Handler errors (a page it could not back, a read or write of the fault fd that
    /// failed): each is counted, the first few kept, and the group answered Invalid.
    pub(super) errors: AtomicU64,
    pub(super) first_errors: Mutex<Vec<String>>,
    /// Responses to groups iommufd had already answered on its own (auto-response on
    /// replace or detach): refused by the fd, discarded (Linux discards them too).
    pub(super) stale: AtomicU64,
}

/// How many handler errors an owner keeps verbatim (all are counted).
const KEEP_ERRORS: usize = 4;

/// An owner's fault handler state: its read buffer and the pages it already backed.
pub(super) struct Serving {
    buf: Vec<u8>,
    backed: BTreeSet<u64>,
}

impl Serving {
    pub(super) fn new() -> Self {
        Serving {
            buf: vec![0u8; 1024 * FAULT_RECORD_SIZE],
            backed: BTreeSet::new(),
        }
    }
}

impl Owner {
    /// Binds `device` to a fresh iommufd context and attaches it (no PASID) to a HWPT on a new
    /// IOAS; with `fault`, the HWPT reports its faults to a new fault queue.
    pub(super) fn open(device: &Arc<Device>, fault: bool) -> iommu_core::Result<Self> {
        let ictx = Ictx::new();
        let dev_id = ictx.bind_device(device.clone())?;
        let ioas = ictx.ioas_alloc()?;
        let (hwpt, fault) = if fault {
            let (fault_id, fd) = ictx.fault_queue_alloc(0)?;
            let h = ictx.hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])?;
            (h, Some(fd))
        } else {
            (ictx.hwpt_alloc(dev_id, ioas, 0, 0, 0, &[])?, None)
        };
        ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)?;
        Ok(Owner {
            ictx,
            dev_id,
            ioas,
            fault,
            frames: Mutex::new(Vec::new()),
            records: AtomicU64::new(0),
            batches: Mutex::new(StageLatency::default()),
            errors: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
            stale: AtomicU64::new(0),
        })
    }

    /// Backs one page at `iova` with a fresh frame mapped through the IOAS.
    pub(super) fn back(&self, phys: &PhysMem, iova: u64) -> Result<(), String> {
        let pfn = phys.alloc_frame().map_err(|e| format!("frame: {e}"))?;
        match self.ictx.ioas_map(
            self.ioas,
            Some(iova),
            pfn.addr().0,
            PAGE,
            IOMMU_READ | IOMMU_WRITE,
        ) {
            Ok(_) => {
                self.frames.lock().expect("frames").push(pfn);
                Ok(())
            }
            Err(e) => {
                let _ = phys.free_frame(pfn); // allocated above: cannot be refused
                Err(format!("map {iova:#x}: {e}"))
            }
        }
    }

    /// Writes `resp` (whole response records, to groups read when the fd had made
    /// `auto_before` auto-responses). The fd stops at a record it refuses (Linux does): a
    /// cookie iommufd answered on its own since the read (auto-response on replace or detach,
    /// EINVAL) is a stale response, counted and skipped; any other refusal — EINVAL with no
    /// auto-response since the read included — is an error. The records after it are
    /// written again.
    fn write_responses(&self, fd: &FaultFd, resp: &[u8], auto_before: u64) {
        let record = std::mem::size_of::<IommuHwptPageResponse>();
        let mut rest = resp;
        while !rest.is_empty() {
            match fd.write(rest) {
                Ok(w) if w >= rest.len() => return,
                Ok(0) => {
                    self.error(format!("fault fd took none of {} bytes", rest.len()));
                    return;
                }
                Ok(w) => rest = &rest[w..],
                Err(e) => {
                    let cookie = IommuHwptPageResponse::read_from_bytes(&rest[..record])
                        .map_or(0, |r| r.cookie);
                    if matches!(e, iommu_core::Error::InvalidArgument(_))
                        && fd.stats().auto_responses > auto_before
                    {
                        self.stale.fetch_add(1, Relaxed);
                    } else {
                        self.error(format!("write response to cookie {cookie}: {e}"));
                    }
                    rest = &rest[record..];
                }
            }
        }
    }

    /// Counts a handler error and keeps its message if it is among the first.
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        let mut kept = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEEP_ERRORS {
            kept.push(what);
        }
    }

    /// One batch of the fault handler: reads whole groups, backs every page, answers each
    /// group once: Success if every page of it is backed, Invalid (and an error counted) if
    /// one could not be. Returns the records handled (0: nothing was queued).
    pub(super) fn serve_once(&self, phys: &PhysMem, s: &mut Serving) -> usize {
        let Some(fd) = &self.fault else { return 0 };
        let t0 = Instant::now();
        let auto_before = fd.stats().auto_responses;
        let n = match fd.read(&mut s.buf) {
            Ok(n) => n,
            Err(e) => {
                self.error(format!("read fault fd: {e}"));
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        let mut resp: Vec<u8> = Vec::new();
        // The group being read (records of one group are contiguous) and whether all its
        // pages are backed so far.
        let mut group: Option<(u32, bool)> = None;
        let answer = |resp: &mut Vec<u8>, (cookie, ok): (u32, bool)| {
            let code = if ok {
                IOMMUFD_PAGE_RESP_SUCCESS
            } else {
                IOMMUFD_PAGE_RESP_INVALID
            };
            resp.extend_from_slice(IommuHwptPageResponse { cookie, code }.as_bytes());
        };
        for rec in s.buf[..n].chunks_exact(FAULT_RECORD_SIZE) {
            // The read buffer is a byte vector, not 8-byte aligned: copy each record out.
            let Ok(rec) = IommuHwptPgfault::read_from_bytes(rec) else {
                continue; // chunks_exact gives whole records only
            };
            self.records.fetch_add(1, Relaxed);
            if group.is_some_and(|g| g.0 != rec.cookie) {
                answer(&mut resp, group.take().unwrap_or_default());
            }
            let ok = &mut group.get_or_insert((rec.cookie, true)).1;
            let iova = rec.addr & !(PAGE - 1);
            if s.backed.insert(iova) {
                if let Err(e) = self.back(phys, iova) {
                    s.backed.remove(&iova);
                    *ok = false;
                    self.error(format!("back page {iova:#x}: {e}"));
                }
            }
        }
        if let Some(g) = group {
            answer(&mut resp, g);
        }
        self.write_responses(fd, &resp, auto_before);
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(t0.elapsed().as_nanos() as u64);
        n / FAULT_RECORD_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_core::Group;
    use iommu_emu::{DmaError, DmaKind, DmaPoll, EmuIommu, EmuIommuConfig, EndpointConfig};

    /// A page the handler cannot back is answered Invalid (the DMA fails with Invalid, not
    /// retried as if backed) and counted as a handler error; a page it can back is answered
    /// Success and the DMA completes.
    #[test]
    fn a_page_the_handler_cannot_back_is_answered_invalid_and_counted() {
        let phys = Arc::new(PhysMem::new(4096).expect("phys"));
        let cfg = EmuIommuConfig {
            prq_thread: false,
            ..EmuIommuConfig::default()
        };
        let iommu = EmuIommu::new("owner-test", &phys, cfg).expect("iommu");
        let group = Group::new(iommu.driver(), "g".to_string());
        let ep_cfg = EndpointConfig {
            ats: true,
            pri: true,
            ..EndpointConfig::default()
        };
        let ep = iommu
            .add_endpoint(&group, "0000:00:04.0", 0, ep_cfg)
            .expect("endpoint");
        let owner = Owner::open(ep.device(), true).expect("owner");
        let mut serving = Serving::new();
        // Runs one DMA to completion, the queue and the handler stepped by hand, the handler
        // backing pages from `backing`.
        let dma = |iova: u64, backing: &PhysMem, serving: &mut Serving| {
            let mut job = ep.start_dma(None, iova, PAGE, DmaKind::Read);
            for _ in 0..1000 {
                if let DmaPoll::Ready(r) = ep.poll_dma(&mut job) {
                    return r;
                }
                iommu.prq_step(16);
                owner.serve_once(backing, serving);
            }
            panic!("DMA at {iova:#x} never finished");
        };
        let exhausted = PhysMem::new(0).expect("empty memory");
        let r = dma(0x10_0000, &exhausted, &mut serving);
        assert!(
            matches!(r, Err(DmaError::PageRequestInvalid { .. })),
            "{r:?}"
        );
        assert_eq!(owner.errors.load(Relaxed), 1);
        let kept = owner.first_errors.lock().expect("errors").clone();
        assert!(kept[0].contains("back page 0x100000"), "{kept:?}");
        // The same handler backs the next page from memory that has room: Success.
        assert!(dma(0x20_0000, &phys, &mut serving).is_ok());
        assert_eq!(owner.errors.load(Relaxed), 1);

        // A response to a cookie the fd does not know, before any auto-response: an error.
        let fd = owner.fault.as_ref().expect("fault fd");
        let bogus = IommuHwptPageResponse {
            cookie: 0xdead,
            code: IOMMUFD_PAGE_RESP_SUCCESS,
        };
        owner.write_responses(fd, bogus.as_bytes(), 0);
        assert_eq!(
            (owner.errors.load(Relaxed), owner.stale.load(Relaxed)),
            (2, 0)
        );
        // A group queued, then auto-answered by a HWPT replace: the handler's late answer to
        // it is stale, counted and skipped, not an error.
        let mut job = ep.start_dma(None, 0x30_0000, PAGE, DmaKind::Read);
        for _ in 0..100 {
            let _ = ep.poll_dma(&mut job);
            iommu.prq_step(16);
            if fd.pending() > 0 {
                break;
            }
        }
        assert_eq!(fd.pending(), 1);
        // The handler reads the group, then the replace auto-answers it before the handler
        // answers.
        let auto_before = fd.stats().auto_responses;
        let mut rec = IommuHwptPgfault::default();
        assert_eq!(
            fd.read(rec.as_mut_bytes()).expect("read"),
            FAULT_RECORD_SIZE
        );
        let h = owner
            .ictx
            .hwpt_alloc(owner.dev_id, owner.ioas, 0, 0, 0, &[])
            .expect("hwpt");
        owner
            .ictx
            .device_replace(owner.dev_id, iommufd::IOMMU_NO_PASID, h)
            .expect("replace");
        assert_eq!(fd.stats().auto_responses, auto_before + 1);
        let late = IommuHwptPageResponse {
            cookie: rec.cookie,
            code: IOMMUFD_PAGE_RESP_SUCCESS,
        };
        owner.write_responses(fd, late.as_bytes(), auto_before);
        assert_eq!(
            (owner.errors.load(Relaxed), owner.stale.load(Relaxed)),
            (2, 1)
        );
        // A cookie never issued stays an error, auto-responses before its read or not.
        owner.write_responses(fd, bogus.as_bytes(), fd.stats().auto_responses);
        assert_eq!(
            (owner.errors.load(Relaxed), owner.stale.load(Relaxed)),
            (3, 1)
        );
    }
}

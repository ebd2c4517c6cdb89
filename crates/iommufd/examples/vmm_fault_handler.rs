//! A VMM-style user-space I/O page fault handler on iommufd (SPEC §5), over the software IOMMU.
//!
//! What it demonstrates: a device assigned to a guest whose memory is *not* pinned up front.
//! The VMM gives the device a fault-capable paging HWPT over an empty IOAS (SPEC §5.2, a
//! \[6.13\] paging HWPT with `IOMMU_HWPT_FAULT_ID_VALID`), so every first touch of a guest page
//! by the device becomes a PCIe page request. The request travels endpoint → IOMMU page request
//! queue → `report_device_fault` → the iommufd fault handler (SPEC §5.4) → the fault fd, where a
//! VMM thread waiting in epoll (SPEC §5.7) reads whole groups (SPEC §5.5), backs each faulting
//! IOVA with a fresh frame of "guest RAM", maps it into the IOAS (`IOMMU_IOAS_MAP`, pushed into
//! the HWPT's domain) and answers the group Success by its cookie (SPEC §5.6). The device then
//! retries and its DMA completes. This is the "demand-paged device memory" flow iommufd fault
//! queues exist for, without SVA: the IOVA space is the guest's, managed by the VMM.
//!
//! Why each piece (the loop itself is `iommufd::handler::run_fault_handler`, shared with the
//! rust-vmm glue in `iommu-vmm`; this example supplies how a faulting guest page is backed):
//! * epoll, not a busy loop: the fault fd is readable exactly while groups wait (SPEC §5.7), so
//!   the handler sleeps in the kernel between bursts. A second eventfd tells it to stop. The
//!   epoll timeout is only a failure guard (a stuck device or handler), never synchronisation.
//! * The read buffer holds at least one whole group of the largest size the endpoint sends:
//!   groups are never split, and a buffer smaller than the next group makes every read return 0
//!   (the user-space livelock of SPEC §5.5).
//! * One response per cookie, written in one `write` per batch (SPEC §5.6); a group whose pages
//!   cannot be backed (outside guest RAM, out of memory) is answered Invalid, never left pending
//!   (every group gets exactly one response, SPEC H9).
//! * Teardown in Linux's order (SPEC §5.7 "Lifetimes"): detach (auto-responds anything left —
//!   nothing, if the handler did its job), destroy the HWPT, unmap and destroy the IOAS, close the
//!   fault fd, destroy the fault object, unbind, then free the guest frames.
//!
//! IOPF enabling: `Ictx::device_attach` enables fault reporting on the device itself when the
//! HWPT is fault capable (the 6.11-6.15 per-idev enable count, SPEC §5.3) and disables it on
//! detach, so the VMM does not call `iopf_enable`. Consequently `iommu_core::iopf_stats` is only
//! available while attached: it is sampled before the detach.
//!
//! Run: `cargo run --release -p iommufd --example vmm_fault_handler [MiB]` (default 4 MiB).
//! `tests/vmm_example.rs` runs the same flow on a small size.

use std::collections::btree_map::{BTreeMap, Entry};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iommu_core::{iopf_stats, Group, IOMMU_READ, IOMMU_WRITE};
use iommu_emu::phys::{PAGE_SHIFT, PAGE_SIZE};
use iommu_emu::{EmuIommu, EmuIommuConfig, EndpointConfig, PhysAddr, PhysMem};
use iommufd::handler::{run_fault_handler, HandlerStats, StopHandle};
use iommufd::uapi::{IommuHwptPgfault, IOMMU_HWPT_FAULT_ID_VALID, IOMMU_PGFAULT_FLAGS_PASID_VALID};
use iommufd::{FaultStats, Ictx, IOMMU_NO_PASID};

/// Where guest RAM starts in the guest's IOVA space (what the device is told to write to).
pub const GUEST_RAM_BASE: u64 = 0x1_0000_0000;
/// Largest page request group the endpoint sends (its `max_group_pages`): the handler's read
/// buffer (`iommufd::handler::READ_RECORDS`) holds four such groups (SPEC §5.5).
const MAX_GROUP_PAGES: u32 = 256;
/// How long the device waits for a page response before declaring the handler stuck (the
/// handler's own guard is `iommufd::handler::GUARD`, the same 10 s).
const GUARD: Duration = iommufd::handler::GUARD;

/// What one run observed. [`VmmReport::ok`] says whether it met every expectation.
#[derive(Debug, Clone, Default)]
pub struct VmmReport {
    /// Bytes the device wrote (rounded up to pages).
    pub bytes: u64,
    /// Fault records the handler read (one per faulting page).
    pub faults: u64,
    /// Page request groups (cookies) the handler read.
    pub groups: u64,
    /// Reads of the fault fd that returned records.
    pub batches: u64,
    /// Most records one read returned.
    pub max_records_per_batch: u64,
    /// Epoll wake-ups of the handler for the fault fd.
    pub epoll_wakeups: u64,
    /// Guest pages the handler backed and mapped.
    pub pages_mapped: u64,
    /// Groups the handler answered Invalid (pages it could not back).
    pub groups_invalid: u64,
    /// Whether the DMA job completed.
    pub dma_ok: bool,
    /// The DMA error, if any.
    pub dma_error: Option<String>,
    /// Bytes whose read-back through physical memory did not match the pattern.
    pub mismatched_bytes: u64,
    /// Pages whose IOMMU translation was missing or not the frame the handler mapped.
    pub bad_translations: u64,
    /// The fault object's counters after the detach.
    pub fault_stats: FaultStats,
    /// IOPF core counters (groups, success, invalid, failure), sampled before the detach.
    pub iopf: [u64; 4],
    /// Groups the endpoint sent / had answered; stray and abandoned responses.
    pub endpoint_groups: (u64, u64),
    /// Stray plus abandoned responses at the endpoint (must be 0).
    pub endpoint_anomalies: u64,
    /// Time from starting the DMA to its completion.
    pub dma_elapsed: Duration,
    /// Time for the read-back.
    pub verify_elapsed: Duration,
    /// Handler failures (an error ends the handler; the run is then not ok).
    pub handler_error: Option<String>,
    /// Physical frames still allocated after teardown beyond those in use before setup.
    pub leaked_frames: i64,
}

impl VmmReport {
    /// Every expectation, as a list of violations (empty: the run was correct).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let pages = self.bytes / PAGE_SIZE;
        if !self.dma_ok {
            p.push(format!("DMA failed: {:?}", self.dma_error));
        }
        if let Some(e) = &self.handler_error {
            p.push(format!("handler failed: {e}"));
        }
        if self.mismatched_bytes != 0 {
            p.push(format!("{} bytes mismatched", self.mismatched_bytes));
        }
        if self.bad_translations != 0 {
            p.push(format!("{} pages badly translated", self.bad_translations));
        }
        if self.pages_mapped != pages {
            p.push(format!(
                "{} pages mapped, {pages} expected",
                self.pages_mapped
            ));
        }
        if self.groups_invalid != 0 {
            p.push(format!("{} groups answered Invalid", self.groups_invalid));
        }
        let s = &self.fault_stats;
        if s.queued != self.groups || s.user_responses != self.groups || s.auto_responses != 0 {
            p.push(format!(
                "fault object: {s:?}, {} groups read: a group was not answered by the handler",
                self.groups
            ));
        }
        let [groups, success, invalid, failure] = self.iopf;
        if groups != self.groups || success != groups || invalid != 0 || failure != 0 {
            p.push(format!(
                "IOPF core: {groups} groups, {success} Success, {invalid} Invalid, {failure} Failure"
            ));
        }
        let (sent, answered) = self.endpoint_groups;
        if sent != answered || sent != self.groups || self.endpoint_anomalies != 0 {
            p.push(format!(
                "endpoint: {sent} groups sent, {answered} answered, {} stray/abandoned",
                self.endpoint_anomalies
            ));
        }
        if self.leaked_frames != 0 {
            p.push(format!("{} frames leaked", self.leaked_frames));
        }
        p
    }

    /// Whether the run met every expectation.
    pub fn ok(&self) -> bool {
        self.problems().is_empty()
    }
}

/// The byte the device writes at offset `off` of guest RAM: distinct per page and per offset.
pub fn pattern(off: u64) -> u8 {
    (off as u8) ^ ((off >> PAGE_SHIFT) as u8).wrapping_mul(31) ^ 0xa5
}

/// The guest pages the handler backed: IOVA → (physical address, frame handle to free).
type Backed<F> = BTreeMap<u64, (u64, F)>;

/// Backs the page of one fault record; `Err` if the VMM must refuse it (answer Invalid).
///
/// Generic over the frame handle so the example needs no direct `iommu-pt` dependency (the
/// emulator's `Pfn` is not re-exported by `iommu-emu`).
fn resolve<F>(
    dev_id: u32,
    guest_ram: &core::ops::Range<u64>,
    back_page: &mut impl FnMut(u64) -> Result<(u64, F), String>,
    rec: &IommuHwptPgfault,
    pages: &mut Backed<F>,
) -> Result<(), String> {
    let iova = rec.addr & !(PAGE_SIZE - 1);
    // Only our device, on its RID, inside guest RAM.
    if rec.dev_id != dev_id || rec.flags & IOMMU_PGFAULT_FLAGS_PASID_VALID != 0 {
        return Err(format!("unexpected source: {rec:?}"));
    }
    if !guest_ram.contains(&iova) {
        return Err(format!("{iova:#x} is not guest RAM"));
    }
    // A page the device only reads first is still guest RAM: it is backed read-write, as a
    // VMM backs whole guest pages, so a later write does not fault again. Already backed (a
    // retry that raced the map): Success makes the device retry.
    if let Entry::Vacant(slot) = pages.entry(iova) {
        slot.insert(back_page(iova)?);
    }
    Ok(())
}

/// Runs the whole flow with a DMA job of `bytes` (rounded up to pages) over as much guest RAM.
/// `Err` only for setup failures; the report says whether the run itself was correct
/// ([`VmmReport::ok`]).
pub fn run_vmm(bytes: u64) -> Result<VmmReport, String> {
    run_vmm_with(bytes, bytes)
}

/// [`run_vmm`] with only the first `guest_ram_bytes` of the DMA target being guest RAM: faults
/// beyond it are refused (their groups answered Invalid) and the DMA fails — the VMM's answer
/// to a device writing where the guest has no memory.
pub fn run_vmm_with(bytes: u64, guest_ram_bytes: u64) -> Result<VmmReport, String> {
    let e = |what: &'static str| move |err: iommu_core::Error| format!("{what}: {err}");
    let bytes = bytes.max(1).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let pages = bytes / PAGE_SIZE;
    // Guest pages, second-stage tables (one per 512 pages plus upper levels) and slack.
    let frames = usize::try_from(pages.saturating_add(pages / 256).saturating_add(256))
        .unwrap_or(usize::MAX);
    let phys = Arc::new(PhysMem::new(frames).map_err(e("physical memory"))?);
    phys.prefault().map_err(e("physical memory"))?;

    // 1. The platform: an IOMMU with PRI/ATS, a group, one PRI-capable endpoint.
    let iommu = EmuIommu::new("dmar0", &phys, EmuIommuConfig::default()).map_err(e("iommu"))?;
    let group = Group::new(iommu.driver(), "group0");
    let ep_cfg = EndpointConfig {
        ats: true,
        pri: true,
        max_group_pages: MAX_GROUP_PAGES,
        response_timeout: GUARD,
        ..EndpointConfig::default()
    };
    let ep = iommu
        .add_endpoint(&group, "0000:00:04.0", 1 << 20, ep_cfg)
        .map_err(e("endpoint"))?;
    if !ep.pri_enabled() {
        return Err("endpoint has no PRI".into());
    }
    let frames_before = phys.frames_in_use() as i64;

    // The VMM: bind, IOAS (empty: nothing is pinned), fault queue, fault-capable HWPT, attach.
    let ictx = Ictx::new();
    let dev_id = ictx
        .bind_device(ep.device().clone())
        .map_err(e("bind_device"))?;
    let ioas = ictx.ioas_alloc().map_err(e("ioas_alloc"))?;
    let (fault_id, fault_fd) = ictx.fault_queue_alloc(0).map_err(e("fault_queue_alloc"))?;
    let hwpt = ictx
        .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
        .map_err(e("hwpt_alloc"))?;
    // Enables IOPF on the device (the HWPT is fault capable), then attaches the RID.
    ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)
        .map_err(e("device_attach"))?;
    let domain = ictx.hwpt_domain(hwpt).map_err(e("hwpt_domain"))?;
    let stop = StopHandle::new()?;

    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    let guest_ram = GUEST_RAM_BASE..GUEST_RAM_BASE + guest_ram_bytes.min(bytes);
    let mut report = VmmReport {
        bytes,
        ..VmmReport::default()
    };

    // 2. + 3. The handler thread, and the device's DMA job on this thread.
    // Backs one guest page: a fresh frame of guest RAM mapped at `iova` through the IOAS
    // (`IOMMU_IOAS_MAP`, which pushes it into the HWPT's domain through the core's `Domain::map`).
    let mut back_page = |iova: u64| {
        let pfn = phys
            .alloc_frame()
            .map_err(|err| format!("guest memory: {err}"))?;
        let pa = pfn.addr();
        match ictx.ioas_map(ioas, Some(iova), pa.0, PAGE_SIZE, IOMMU_READ | IOMMU_WRITE) {
            Ok(_) => Ok((pa.0, pfn)),
            Err(err) => {
                let _ = phys.free_frame(pfn); // allocated above: cannot be refused
                Err(format!("map {iova:#x}: {err}"))
            }
        }
    };

    // 2. + 3. The handler thread, and the device's DMA job on this thread.
    // The handler: iommufd's fault-fd loop (epoll on the fd and `stop`, whole groups read, one
    // response per group), backing each faulting guest page with `back_page`.
    let mut pages: Backed<_> = BTreeMap::new();
    let (handled, iopf) = std::thread::scope(|s| {
        let (pages, fault_fd, stop) = (&mut pages, &fault_fd, &stop);
        let handler = s.spawn(move || {
            run_fault_handler(fault_fd, stop, |rec| {
                resolve(dev_id, &guest_ram, &mut back_page, rec, pages).inspect_err(|why| {
                    eprintln!("vmm: answering group {} Invalid: {why}", rec.grpid)
                })
            })
        });
        let start = Instant::now();
        let dma = ep.dma_write(None, GUEST_RAM_BASE, &data);
        report.dma_elapsed = start.elapsed();
        report.dma_ok = dma.is_ok();
        report.dma_error = dma.err().map(|err| err.to_string());
        // Sampled while attached: detach disables IOPF and drops the counters.
        let iopf = iopf_stats(ep.device());
        // Ask the handler to finish (it drains what is left first).
        stop.stop();
        let handled = handler.join().unwrap_or_else(|_| HandlerStats {
            error: Some("handler thread panicked".into()),
            ..HandlerStats::default()
        });
        (handled, iopf)
    });
    report.faults = handled.faults;
    report.groups = handled.groups;
    report.batches = handled.batches;
    report.max_records_per_batch = handled.max_records;
    report.epoll_wakeups = handled.wakeups;
    report.pages_mapped = pages.len() as u64;
    report.groups_invalid = handled.invalid;
    report.handler_error = handled.error;
    if let Some(f) = iopf {
        report.iopf = [f.groups, f.success, f.invalid, f.failure];
    }

    // Verify: every page translates (in the IOMMU's own table) to the frame the handler
    // mapped, and the frame holds what the device wrote.
    let start = Instant::now();
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for (i, chunk) in data.chunks(PAGE_SIZE as usize).enumerate() {
        let iova = GUEST_RAM_BASE + i as u64 * PAGE_SIZE;
        let mapped = pages.get(&iova).map(|(pa, _)| *pa);
        let Some(pa) = domain.iova_to_phys(iova) else {
            report.bad_translations += 1;
            report.mismatched_bytes += chunk.len() as u64;
            continue;
        };
        if Some(pa) != mapped {
            report.bad_translations += 1;
        }
        phys.read(PhysAddr(pa), &mut page[..chunk.len()])
            .map_err(e("read back"))?;
        report.mismatched_bytes += page.iter().zip(chunk).filter(|(a, b)| a != b).count() as u64;
    }
    report.verify_elapsed = start.elapsed();

    // 4. Teardown, in order: detach (auto-responds leftovers), HWPT, IOAS, fault fd + object,
    //    device; then the guest frames, now unmapped everywhere.
    ictx.device_detach(dev_id, IOMMU_NO_PASID)
        .map_err(e("device_detach"))?;
    report.fault_stats = fault_fd.stats();
    let st = ep.stats();
    report.endpoint_groups = (st.groups_sent, st.groups_answered);
    report.endpoint_anomalies = st.stray_responses + st.abandoned + ep.outstanding_groups() as u64;
    drop(domain);
    ictx.destroy(hwpt).map_err(e("destroy hwpt"))?;
    if !pages.is_empty() {
        ictx.ioas_unmap(ioas, 0, iommufd::IOAS_APERTURE_END)
            .map_err(e("ioas_unmap"))?;
    }
    ictx.destroy(ioas).map_err(e("destroy ioas"))?;
    drop(fault_fd);
    ictx.destroy(fault_id).map_err(e("destroy fault"))?;
    ictx.unbind_device(dev_id).map_err(e("unbind_device"))?;
    for (_, (_, frame)) in pages {
        let _ = phys.free_frame(frame); // allocated above: cannot be refused
    }
    report.leaked_frames = phys.frames_in_use() as i64 - frames_before;
    Ok(report)
}

#[allow(
    dead_code,
    reason = "also compiled into tests/vmm_example.rs, which has its own entry point; not `expect`: \
              the example build uses it"
)]
fn main() {
    let mib: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 4,
        Some(Ok(m)) if (1..=1 << 20).contains(&m) => m,
        Some(_) => {
            eprintln!("usage: vmm_fault_handler [MiB, 1 to 1048576]");
            std::process::exit(2);
        }
    };
    let r = match run_vmm(mib << 20) {
        Ok(r) => r,
        Err(err) => {
            eprintln!("setup failed: {err}");
            std::process::exit(1);
        }
    };
    println!(
        "device DMA of {} KiB to unmapped guest IOVAs at {GUEST_RAM_BASE:#x}",
        r.bytes >> 10
    );
    println!(
        "  faults {} in {} groups; {} batches read ({:.1} records/batch avg, {} max); {} epoll wake-ups",
        r.faults,
        r.groups,
        r.batches,
        r.faults as f64 / r.batches.max(1) as f64,
        r.max_records_per_batch,
        r.epoll_wakeups
    );
    println!(
        "  guest pages backed and mapped through the IOAS {}; groups answered Invalid {}",
        r.pages_mapped, r.groups_invalid
    );
    println!(
        "  DMA {} in {:.2?} ({:.0} MiB/s); verify {:.2?}: {} mismatched bytes, {} bad translations",
        if r.dma_ok { "ok" } else { "FAILED" },
        r.dma_elapsed,
        r.bytes as f64 / (1 << 20) as f64 / r.dma_elapsed.as_secs_f64().max(1e-9),
        r.verify_elapsed,
        r.mismatched_bytes,
        r.bad_translations
    );
    println!(
        "  fault object {:?}; IOPF core groups/success/invalid/failure {:?}; endpoint sent/answered {:?}",
        r.fault_stats, r.iopf, r.endpoint_groups
    );
    let problems = r.problems();
    if problems.is_empty() {
        println!("OK");
    } else {
        for p in &problems {
            eprintln!("FAIL: {p}");
        }
        std::process::exit(1);
    }
}

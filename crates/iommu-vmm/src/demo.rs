//! The `virtio_queue_sva` flow, shared by the example and its test so CI runs exactly what the
//! example shows: an [`InvertDevice`] processes a queue whose rings and buffers start unmapped
//! for the device, in two variants.
//!
//! * **SVA** ([`run_sva`]): the driver (a process) writes the rings and inputs with the CPU in
//!   its own memory, then the kernel reclaims them (`Mm::swap_out`). Every first device access
//!   misses: ATS translation request → not present → page request group → PRQ →
//!   `report_device_fault` → the SVA handler swaps the page back in (or demand-zeroes the
//!   untouched outputs) → Success → the ATS request is retried and fills the IOTLB.
//! * **iommufd** ([`run_hwpt`]): a VMM fills guest RAM frames with the CPU but maps none of them
//!   into the IOAS. The device's HWPT is fault capable; a VMM thread ([`crate::handler`]) reads
//!   the fault records, maps each faulting page into the IOAS and answers Success.
//!
//! Each run checks every byte the device wrote and that every page request group was answered
//! exactly once ([`VariantReport::problems`]).

use std::collections::HashSet;

use iommu_core::{iopf_stats, IOMMU_READ, IOMMU_WRITE};
use iommu_emu::{Endpoint, EndpointConfig, Prot};
use iommufd::uapi::IOMMU_PGFAULT_FLAGS_PASID_VALID;

use crate::handler::{run_fault_handler, HandlerStats, StopHandle};
use crate::world::{GuestRam, HwptWorld, SvaWorld};
use crate::{AtsIommuStats, Driver, Processed, RingLayout, Verified};

/// Where guest RAM starts in the iommufd variant's IOVA space.
pub const GUEST_RAM_BASE: u64 = 0x1_0000_0000;
const PAGE: u64 = 4096;

/// The size of a run.
#[derive(Debug, Clone, Copy)]
pub struct DemoConfig {
    /// Descriptor chains (each: two readable, two writable descriptors).
    pub chains: u16,
    /// Input bytes per chain (not a multiple of a page, so buffers straddle pages).
    pub input_len: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            chains: 64,
            input_len: 10_000,
        }
    }
}

/// What one variant observed.
#[derive(Debug, Clone, Default)]
pub struct VariantReport {
    /// "sva" or "iommufd".
    pub variant: &'static str,
    /// Chains published.
    pub chains: u64,
    /// What the device processed.
    pub processed: Processed,
    /// Why the device stopped early, if it did.
    pub device_error: Option<String>,
    /// What the driver found when it checked every output byte.
    pub verified: Verified,
    /// Output bytes the driver expected (inverted inputs plus checksums).
    pub expected_bytes: u64,
    /// Pages of the queue's region (rings, inputs, outputs).
    pub region_pages: u64,
    /// Pages of the region not translatable for the device when it was kicked, counted page by
    /// page (SVA: no page-table entry in the mm; iommufd: no mapping in the HWPT's domain).
    pub pages_unmapped: u64,
    /// SVA: pages the driver had written and the kernel swapped out before the kick.
    pub pages_swapped_out: u64,
    /// Pages the fault handler made present (SVA: the mm's faults; iommufd: pages mapped).
    pub pages_made_present: u64,
    /// Page requests the endpoint sent.
    pub page_requests: u64,
    /// Page request groups the endpoint sent.
    pub groups_sent: u64,
    /// Groups the endpoint had answered.
    pub groups_answered: u64,
    /// Stray responses, abandoned and still outstanding groups at the endpoint.
    pub endpoint_anomalies: u64,
    /// Groups the fault handler received (IOPF core for SVA; records read for iommufd).
    pub handler_groups: u64,
    /// Responses the handler side sent (SVA: the IOPF core's Success/Invalid/Failure;
    /// iommufd: the fault object's user responses).
    pub handler_responses: u64,
    /// Groups answered by someone else: the IOMMU on queue overflow, iommufd on detach.
    pub auto_responses: u64,
    /// The fault handler's error, if any.
    pub handler_error: Option<String>,
    /// The device's IOTLB counters.
    pub ats: AtsIommuStats,
}

impl VariantReport {
    /// Every expectation not met (empty: the run was correct).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.device_error {
            p.push(format!("device failed: {e}"));
        }
        if let Some(e) = &self.handler_error {
            p.push(format!("fault handler failed: {e}"));
        }
        let v = &self.verified;
        if self.processed.chains != self.chains || v.chains != self.chains {
            p.push(format!(
                "{} chains published, {} processed, {} returned right",
                self.chains, self.processed.chains, v.chains
            ));
        }
        if v.bytes_bad != 0 || v.bytes_ok != self.expected_bytes {
            p.push(format!(
                "{} bytes right, {} wrong, {} expected",
                v.bytes_ok, v.bytes_bad, self.expected_bytes
            ));
        }
        if self.pages_unmapped != self.region_pages || self.groups_sent == 0 {
            p.push(format!(
                "{} of {} pages started unmapped, {} groups sent: the device did not start cold",
                self.pages_unmapped, self.region_pages, self.groups_sent
            ));
        }
        if self.groups_sent != self.groups_answered
            || self.groups_sent != self.handler_groups
            || self.handler_groups != self.handler_responses
            || self.auto_responses != 0
            || self.endpoint_anomalies != 0
        {
            p.push(format!(
                "groups: {} sent, {} answered, {} handled, {} responses, {} auto, {} stray/abandoned/outstanding",
                self.groups_sent,
                self.groups_answered,
                self.handler_groups,
                self.handler_responses,
                self.auto_responses,
                self.endpoint_anomalies
            ));
        }
        if self.ats.failures != 0 {
            p.push(format!("{} translations failed", self.ats.failures));
        }
        p
    }
}

/// Frames for a region of `len` bytes: the region (twice, for the iommufd variant's guest RAM
/// and anything the handler allocates), page tables, slack.
fn frames_for(len: u64) -> usize {
    (2 * len / PAGE + 512) as usize
}

/// The endpoint's counters into the report.
fn endpoint_counts(r: &mut VariantReport, ep: &Endpoint) {
    let st = ep.stats();
    r.page_requests = st.page_requests;
    r.groups_sent = st.groups_sent;
    r.groups_answered = st.groups_answered;
    r.auto_responses += st.auto_success;
    r.endpoint_anomalies = st.stray_responses + st.abandoned + ep.outstanding_groups() as u64;
}

/// The device's run and the driver's check, common to both variants.
fn run_device(
    r: &mut VariantReport,
    layout: &RingLayout,
    mem: &crate::EndpointMemory,
) -> Result<(), String> {
    let mut dev = layout.program().map_err(|e| format!("device: {e}"))?;
    match dev.process(mem) {
        Ok(p) => r.processed = p,
        Err(e) => r.device_error = Some(e.to_string()),
    }
    r.ats = mem.iommu().stats();
    Ok(())
}

/// The SVA variant. `Err` only for setup failures; the report says whether the run was right.
pub fn run_sva(cfg: &DemoConfig) -> Result<VariantReport, String> {
    let probe = RingLayout::new(0, cfg.chains, cfg.input_len)?;
    let world = SvaWorld::new(frames_for(probe.len), EndpointConfig::default())?;
    let mm = &world.mm;
    let va = mm
        .mmap(probe.len, Prot::READ_WRITE)
        .map_err(|e| format!("mmap: {e}"))?;
    let layout = RingLayout::new(va, cfg.chains, cfg.input_len)?;
    let driver = Driver::new(layout);
    driver.publish(&**mm)?;
    let swapped = mm
        .swap_out(va, layout.len)
        .map_err(|e| format!("swap_out: {e}"))?;
    let faults_before = mm.stats().faults;
    let mut r = VariantReport {
        variant: "sva",
        chains: u64::from(cfg.chains),
        expected_bytes: u64::from(cfg.chains) * (u64::from(cfg.input_len) + 8),
        region_pages: layout.len / PAGE,
        pages_unmapped: (0..layout.len / PAGE)
            .filter(|i| mm.translate(va + i * PAGE).is_none())
            .count() as u64,
        pages_swapped_out: swapped as u64,
        ..VariantReport::default()
    };
    let mem = world.memory();
    run_device(&mut r, &layout, &mem)?;
    r.verified = driver.verify(&**mm)?;
    r.pages_made_present = mm.stats().faults - faults_before;
    endpoint_counts(&mut r, &world.ep);
    if let Some(f) = iopf_stats(world.ep.device()) {
        r.handler_groups = f.groups;
        r.handler_responses = f.success + f.invalid + f.failure;
    }
    Ok(r)
}

/// The iommufd variant. `Err` only for setup failures; the report says whether the run was
/// right.
pub fn run_hwpt(cfg: &DemoConfig) -> Result<VariantReport, String> {
    let layout = RingLayout::new(GUEST_RAM_BASE, cfg.chains, cfg.input_len)?;
    let mut world = HwptWorld::new(frames_for(layout.len), EndpointConfig::default(), true)?;
    let ram = GuestRam::new(&world.phys, GUEST_RAM_BASE, layout.len)?;
    let driver = Driver::new(layout);
    driver.publish(&ram)?;
    let mut r = VariantReport {
        variant: "iommufd",
        chains: u64::from(cfg.chains),
        expected_bytes: u64::from(cfg.chains) * (u64::from(cfg.input_len) + 8),
        region_pages: layout.len / PAGE,
        ..VariantReport::default()
    };
    let domain = world
        .ictx
        .hwpt_domain(world.hwpt)
        .map_err(|e| format!("hwpt_domain: {e}"))?;
    r.pages_unmapped = (0..layout.len / PAGE)
        .filter(|i| domain.iova_to_phys(GUEST_RAM_BASE + i * PAGE).is_none())
        .count() as u64;
    drop(domain);
    let mem = world.memory();
    let mut mapped = HashSet::new();
    let handled = {
        let w = &world;
        let fd = w.fault_fd().ok_or("the HWPT has no fault queue")?;
        let stop = StopHandle::new()?;
        let resolve = |rec: &iommufd::uapi::IommuHwptPgfault| -> Result<(), String> {
            let iova = rec.addr & !(PAGE - 1);
            if rec.dev_id != w.dev_id || rec.flags & IOMMU_PGFAULT_FLAGS_PASID_VALID != 0 {
                return Err(format!("unexpected requester: {rec:?}"));
            }
            let pa = ram
                .frame_of(iova)
                .ok_or_else(|| format!("{iova:#x} is not guest RAM"))?;
            // A page already mapped (a retry racing the map): Success makes the device retry.
            if mapped.insert(iova) {
                w.ictx
                    .ioas_map(w.ioas, Some(iova), pa, PAGE, IOMMU_READ | IOMMU_WRITE)
                    .map_err(|e| format!("map {iova:#x}: {e}"))?;
            }
            Ok(())
        };
        std::thread::scope(|s| -> Result<HandlerStats, String> {
            let handler = s.spawn(|| run_fault_handler(fd, &stop, resolve));
            let ran = run_device(&mut r, &layout, &mem);
            stop.stop();
            let h = handler.join().map_err(|_| "fault handler panicked")?;
            ran.map(|()| h)
        })?
    };
    r.verified = driver.verify(&ram)?;
    r.pages_made_present = mapped.len() as u64;
    r.handler_groups = handled.groups;
    r.handler_error = handled.error;
    world.detach()?;
    if let Some(fd) = world.fault_fd() {
        let st = fd.stats();
        r.handler_responses = st.user_responses;
        r.auto_responses += st.auto_responses;
    }
    endpoint_counts(&mut r, &world.ep);
    // Unmap (world) before the frames go back (ram).
    drop(mem);
    drop(world);
    drop(ram);
    Ok(r)
}

/// Both variants, SVA first.
pub fn run_demo(cfg: &DemoConfig) -> Result<Vec<VariantReport>, String> {
    Ok(vec![run_sva(cfg)?, run_hwpt(cfg)?])
}

//! The end-to-end SVA demand-paging flow, shared by the `sva_demand_paging` example (64 MiB per
//! device) and its test (small sizes), so CI exercises exactly what the example shows.
//!
//! One [`EmuIommu`], one `IopfQueue` for it, two devices (each in its own group, as PCIe
//! functions behind ACS are) bound with `sva_bind_device` to one fresh [`Mm`]. Each device
//! DMA-writes its own pattern over its own untouched (`mmap`ed, never accessed) region through
//! the mm's PASID, in parallel; every page is demand-faulted through PRI, the PRQ, the IOPF
//! core and the SVA handler. The CPU then reads both regions back through the mm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iommu_core::{iopf_queue_add_device, iopf_stats, sva_bind_device, Group, IopfQueue};

use crate::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, PhysMem, Prot};

/// Parameters of [`run_sva_demand_paging`].
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Bytes each device writes (rounded up to pages).
    pub bytes_per_device: u64,
    /// Number of devices (each in its own group, all bound to the same mm).
    pub devices: usize,
    /// IOPF queue worker threads.
    pub iopf_workers: usize,
    /// Endpoint configuration (group size, credits, ATS).
    pub endpoint: EndpointConfig,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            bytes_per_device: 64 << 20,
            devices: 2,
            iopf_workers: 1,
            endpoint: EndpointConfig::default(),
        }
    }
}

/// What [`run_sva_demand_paging`] observed.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// The PASID every device used (one per mm).
    pub pasid: u32,
    /// Pages the mm faulted in (all by devices: the CPU touched nothing before the DMA).
    pub pages_faulted: u64,
    /// Pages the devices' regions span: what `pages_faulted` must be.
    pub pages_expected: u64,
    /// Page request groups the devices sent.
    pub groups_sent: u64,
    /// Page requests the devices sent.
    pub page_requests: u64,
    /// Groups answered Success / Invalid / Failure, as the IOPF core counted them
    /// (`iopf_stats`), summed over devices.
    pub responses: [u64; 3],
    /// Groups the IOMMU answered itself on queue overflow.
    pub auto_responses: u64,
    /// Groups sent but not answered exactly once (sent − answered, plus stray responses).
    pub unanswered: u64,
    /// DMA jobs that failed.
    pub dma_failures: u64,
    /// Bytes whose read-back did not match the pattern.
    pub mismatched_bytes: u64,
    /// Time from starting the DMAs to the last one completing.
    pub dma_elapsed: Duration,
    /// Time for the CPU read-back.
    pub verify_elapsed: Duration,
}

impl DemoReport {
    /// Whether the run met every expectation: all DMAs completed, every byte matched, every
    /// group answered exactly once, and every page was faulted by a device.
    pub fn ok(&self) -> bool {
        self.dma_failures == 0
            && self.mismatched_bytes == 0
            && self.unanswered == 0
            && self.pages_faulted == self.pages_expected
    }
}

/// Device `d`'s pattern byte at offset `off` of its region: distinct per device and per page.
pub fn pattern(d: usize, off: u64) -> u8 {
    let page = off >> 12;
    (off as u8) ^ (page as u8).wrapping_mul(31) ^ ((d as u8 + 1).wrapping_mul(0x5b))
}

/// Runs the flow. `Err` only for setup failures (an errno message); the report says whether
/// the run itself was correct ([`DemoReport::ok`]).
pub fn run_sva_demand_paging(cfg: &DemoConfig) -> Result<DemoReport, String> {
    let too_big = || {
        format!(
            "bytes_per_device {} × devices {} overflows",
            cfg.bytes_per_device, cfg.devices
        )
    };
    let per_device = cfg.bytes_per_device.div_ceil(4096);
    let bytes = per_device.checked_mul(4096).ok_or_else(too_big)?;
    let pages = per_device
        .checked_mul(cfg.devices as u64)
        .ok_or_else(too_big)?;
    // Data pages plus first-stage tables (one per 512 pages, plus upper levels) plus slack.
    let frames = usize::try_from(pages.saturating_add(pages / 256).saturating_add(256))
        .unwrap_or(usize::MAX);
    let phys = Arc::new(PhysMem::new(frames).map_err(errno)?);
    // Back the emulated RAM before timing: the host's first-touch faults are not the emulator's.
    phys.prefault().map_err(errno)?;
    let (iommu, queue) = iommu_and_queue(&phys, cfg)?;
    let eps = add_endpoints(&iommu, &queue, cfg)?;
    let mm = Mm::new(&phys).map_err(errno)?;
    let regions: Vec<u64> = (0..cfg.devices)
        .map(|_| mm.mmap(bytes, Prot::READ_WRITE))
        .collect::<iommu_core::Result<_>>()
        .map_err(errno)?;
    let space = mm.as_address_space();
    let bonds = eps
        .iter()
        .map(|ep| sva_bind_device(ep.device(), &space))
        .collect::<iommu_core::Result<Vec<_>>>()
        .map_err(errno)?;
    let pasid = bonds[0].pasid();
    if bonds.iter().any(|b| b.pasid() != pasid) {
        return Err("devices got different PASIDs for one mm".into());
    }
    let patterns: Vec<Vec<u8>> = (0..cfg.devices)
        .map(|d| (0..bytes).map(|o| pattern(d, o)).collect())
        .collect();

    let start = Instant::now();
    let failures = dma_write_all(&eps, &regions, &patterns, pasid);
    let dma_elapsed = start.elapsed();

    let start = Instant::now();
    let mismatched = count_mismatches(&mm, &regions, &patterns, bytes)?;
    let verify_elapsed = start.elapsed();

    let mut report = DemoReport {
        pasid,
        pages_faulted: mm.stats().faults,
        pages_expected: pages,
        dma_failures: failures,
        mismatched_bytes: mismatched,
        dma_elapsed,
        verify_elapsed,
        ..DemoReport::default()
    };
    add_endpoint_counts(&mut report, &eps);
    drop(bonds);
    queue.shutdown();
    Ok(report)
}

/// A setup error as the demo reports it.
fn errno(e: iommu_core::Error) -> String {
    e.to_string()
}

/// The IOMMU and the IOPF queue its page requests are handled on.
fn iommu_and_queue(
    phys: &Arc<PhysMem>,
    cfg: &DemoConfig,
) -> Result<(Arc<EmuIommu>, Arc<IopfQueue>), String> {
    let iommu = EmuIommu::new("dmar0", phys, EmuIommuConfig::default()).map_err(errno)?;
    let queue = IopfQueue::new("dmar0", cfg.iopf_workers).map_err(errno)?;
    Ok((iommu, queue))
}

/// One endpoint per device, each in its own group, each on the IOPF queue.
fn add_endpoints(
    iommu: &Arc<EmuIommu>,
    queue: &Arc<IopfQueue>,
    cfg: &DemoConfig,
) -> Result<Vec<Endpoint>, String> {
    let mut eps: Vec<Endpoint> = Vec::new();
    for d in 0..cfg.devices {
        let group = Group::new(iommu.driver(), format!("group{d}"));
        let ep = iommu
            .add_endpoint(
                &group,
                &format!("0000:00:{:02x}.0", d + 4),
                1 << 20,
                cfg.endpoint.clone(),
            )
            .map_err(errno)?;
        iopf_queue_add_device(queue, ep.device()).map_err(errno)?;
        eps.push(ep);
    }
    Ok(eps)
}

/// Every device writes its pattern over its region, one thread each, in parallel; returns how
/// many DMAs failed.
fn dma_write_all(eps: &[Endpoint], regions: &[u64], patterns: &[Vec<u8>], pasid: u32) -> u64 {
    // The DMA threads trace under the caller's dispatcher.
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::scope(|s| {
        let handles: Vec<_> = eps
            .iter()
            .zip(regions)
            .zip(patterns)
            .map(|((ep, &va), data)| {
                let dispatch = &dispatch;
                s.spawn(move || {
                    tracing::dispatcher::with_default(dispatch, || {
                        ep.dma_write(Some(pasid), va, data).is_err()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| u64::from(h.join().unwrap_or(true)))
            .sum()
    })
}

/// The CPU reads every region back through the mm; returns the bytes that differ from the
/// device's pattern.
fn count_mismatches(
    mm: &Mm,
    regions: &[u64],
    patterns: &[Vec<u8>],
    bytes: u64,
) -> Result<u64, String> {
    let mut mismatched = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (d, &va) in regions.iter().enumerate() {
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min(buf.len() as u64) as usize;
            mm.read(va + off, &mut buf[..n]).map_err(errno)?;
            mismatched += buf[..n]
                .iter()
                .zip(&patterns[d][off as usize..off as usize + n])
                .filter(|(a, b)| a != b)
                .count() as u64;
            off += n as u64;
        }
    }
    Ok(mismatched)
}

/// Adds each endpoint's PRI counters, and the IOPF core's response counts, to the report.
fn add_endpoint_counts(report: &mut DemoReport, eps: &[Endpoint]) {
    for ep in eps {
        let st = ep.stats();
        report.groups_sent += st.groups_sent;
        report.page_requests += st.page_requests;
        report.auto_responses += st.auto_success;
        report.unanswered += st.groups_sent.abs_diff(st.groups_answered) + st.stray_responses;
        report.unanswered += ep.outstanding_groups() as u64;
        if let Some(f) = iopf_stats(ep.device()) {
            report.responses[0] += f.success;
            report.responses[1] += f.invalid;
            report.responses[2] += f.failure;
        }
    }
}

//! `iommu-sim soak`: one long-lived world under a mix of SVA and iommufd fault traffic with
//! device resets, HWPT replaces, unbinds, page request queue overflows and process exits, for a
//! given number of page request groups — checking as it runs that no response is lost, doubled
//! or late, and that memory stays flat.
//!
//! Unlike a scenario run, nothing is rebuilt between rounds: the IOMMU, its queues, the devices,
//! the iommufd context and the checker live for the whole soak, so a leak anywhere on the fault
//! path (a frame, an object id, a PASID, a pending group, a checker entry) shows up as growing
//! memory or as an unanswered group at the end.
//!
//! Threads: an SVA driver (device `sva0`, processes bound by SVA, faults resolved by the IOPF
//! queue's worker), an iommufd driver (device `vmm0` owned through a fault-capable HWPT) and its
//! fault handler on the fault fd, plus the IOMMU's page request queue thread. Each driver keeps
//! [`Config::inflight`] one-page DMA jobs outstanding at once (more than the page request queue
//! holds, so the queue overflows and the IOMMU answers what it cannot queue), and disrupts a
//! seeded random share of its cycles while those jobs are in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue, SvaBond};
use iommu_core::{IOMMU_READ, IOMMU_WRITE};
use iommu_emu::{
    DmaError, DmaKind, DmaPoll, EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, Pfn,
    PhysMem, Prot,
};
use iommufd::handler::{run_fault_handler, StopHandle};
use iommufd::uapi::IOMMU_HWPT_FAULT_ID_VALID;
use iommufd::{FaultFd, Ictx, IOMMU_NO_PASID};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::invariants::{Event, Invariant};
use crate::observe::Observer;

const PAGE: u64 = 4096;
/// Frames of physical memory: page tables, two processes' worth of in-flight pages and the
/// owner's, with room to spare. The soak's memory is this budget and does not grow with the
/// number of groups.
const FRAMES: usize = 16 << 10;
/// Page request queue depth: both drivers' in-flight jobs fit (at the default 32 each); an
/// `overflow` cycle sends [`FLOOD`] times the depth at once.
const PRQ_DEPTH: usize = 128;
/// A cycle whose jobs do not all finish in this long is a hang, reported as a problem.
const CYCLE_LIMIT: Duration = Duration::from_secs(30);
/// An overflow cycle's jobs, in multiples of the page request queue's depth.
const FLOOD: usize = 2;
/// IOVA slots the owner cycles through (a cycle's range is unmapped before it is reused).
const IOVA_SLOTS: u64 = 64;
const IOVA_BASE: u64 = 1 << 30;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stop once this many page request groups were sent (both devices together).
    pub groups: u64,
    /// Stop after this long even if fewer groups were sent.
    pub time_limit: Option<Duration>,
    /// Seeds the choice of disruptions.
    pub seed: u64,
    /// One-page DMA jobs each driver keeps in flight per cycle (1..=256).
    pub inflight: usize,
    /// Print a progress line to stderr this often (`None`: never).
    pub progress: Option<Duration>,
    /// One cycle in this many is disrupted, on average (0: none is).
    pub disrupt_one_in: u32,
    /// The disruptions to choose from (each driver picks among those that apply to it).
    pub disruptions: Vec<Disruption>,
    /// Reads the heap's live bytes (a counting global allocator, which only a binary can
    /// install); `None`: not reported.
    pub heap_live: Option<fn() -> u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            groups: 100_000,
            time_limit: None,
            seed: 1,
            inflight: 32,
            progress: None,
            disrupt_one_in: 16,
            disruptions: Disruption::ALL.to_vec(),
            heap_live: None,
        }
    }
}

/// What a soak did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Page request groups sent, both devices.
    pub groups: u64,
    /// Of those, by the SVA device and by the iommufd-owned device.
    pub groups_sva: u64,
    /// Groups sent by the iommufd-owned device.
    pub groups_iommufd: u64,
    /// Groups answered (by a handler, by auto-response or by the IOMMU on overflow).
    pub answered: u64,
    /// Groups the IOMMU answered itself because its queue was full.
    pub overflow_answered: u64,
    /// Groups abandoned by a device reset (never answered, by design).
    pub abandoned: u64,
    /// Groups neither answered nor abandoned when the soak ended.
    pub lost: u64,
    /// Responses to a group that was already answered (or never sent).
    pub doubled: u64,
    /// Deliveries after a detach returned, and DMA through a PASID after its unbind returned.
    pub late: u64,
    /// Disruptions done, by kind.
    pub disruptions: BTreeMap<&'static str, u64>,
    /// DMA jobs that completed, and that failed because of a disruption of their cycle.
    pub dma_ok: u64,
    /// DMA jobs failed in a disrupted cycle (expected).
    pub dma_failed_expected: u64,
    /// Problems that are not invariant violations: a DMA failing in an undisturbed cycle, a
    /// call that should have worked and did not. Must be empty.
    pub problems: Vec<String>,
    /// Resident set size, bytes, at the start.
    pub rss_start: u64,
    /// After warm-up (the first tenth of the groups), the highest RSS sampled (every 20 ms) in
    /// each following tenth (0: no sample fell into it): a leak shows as a rising sequence, a
    /// burst as one high window.
    pub rss_windows: Vec<u64>,
    /// RSS at the end, after teardown.
    pub rss_end: u64,
    /// With [`Config::heap_live`], the highest live heap bytes in each window, as
    /// `rss_windows` (empty without it).
    pub heap_windows: Vec<u64>,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Events the invariant checker saw.
    pub events: u64,
}

impl Report {
    /// Whether the soak passed: nothing lost, doubled or late, no problem, the books balance,
    /// and RSS after warm-up stayed within 10 % of its warm-up value.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.late == 0
            && self.problems.is_empty()
            && self.groups == self.answered + self.abandoned
            && self.rss_flat()
    }

    /// Memory did not grow after warm-up: the last window's highest RSS is within 10 % of
    /// the first window's (fewer than two windows: nothing to compare, flat).
    pub fn rss_flat(&self) -> bool {
        // A window no sample fell into (a short soak) reads 0: skipped.
        let mut sampled = self.rss_windows.iter().filter(|&&b| b > 0);
        match (sampled.next(), sampled.next_back()) {
            (Some(&first), Some(&last)) => last.saturating_mul(10) <= first.saturating_mul(11),
            _ => true,
        }
    }

    /// The readable summary.
    pub fn text(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "soak: {} groups in {:.1} s ({:.0} groups/s): {} SVA, {} iommufd\n",
            self.groups,
            secs,
            self.groups as f64 / secs,
            self.groups_sva,
            self.groups_iommufd
        );
        s += &format!(
            "  accounted      {} sent = {} answered ({} by the IOMMU on overflow) + {} abandoned by reset{}\n",
            self.groups,
            self.answered,
            self.overflow_answered,
            self.abandoned,
            if self.groups == self.answered + self.abandoned { "" } else { "  MISMATCH" }
        );
        s += &format!(
            "  responses      {} lost, {} doubled, {} late\n",
            self.lost, self.doubled, self.late
        );
        let d: Vec<String> = self
            .disruptions
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        s += &format!("  disruptions    {}\n", d.join(", "));
        s += &format!(
            "  dma jobs       {} ok, {} failed in disrupted cycles\n",
            self.dma_ok, self.dma_failed_expected
        );
        let windows: Vec<String> = self
            .rss_windows
            .iter()
            .map(|&b| format!("{:.1}", mib(b)))
            .collect();
        s += &format!(
            "  rss            {:.1} MiB at start; highest per tenth after warm-up: {} MiB ({}); {:.1} MiB at end\n",
            mib(self.rss_start),
            windows.join(" "),
            if self.rss_flat() {
                "last within 10 % of first"
            } else {
                "GREW more than 10 %"
            },
            mib(self.rss_end),
        );
        if !self.heap_windows.is_empty() {
            let heap: Vec<String> = self
                .heap_windows
                .iter()
                .map(|&b| format!("{:.2}", mib(b)))
                .collect();
            s += &format!(
                "  heap           highest live per tenth after warm-up: {} MiB\n",
                heap.join(" ")
            );
        }
        s += &format!("  checker        {} events\n", self.events);
        for p in self.problems.iter().take(20) {
            s += &format!("  problem: {p}\n");
        }
        s += if self.passed() {
            "  result         passed\n"
        } else {
            "  result         FAILED\n"
        };
        s
    }
}

/// Resident set size of this process, bytes (0 where `/proc` is unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE)
}

/// State shared by the soak's threads.
struct Shared {
    stop: AtomicBool,
    obs: Arc<Observer>,
    disruptions: Mutex<BTreeMap<&'static str, u64>>,
    problems: Mutex<Vec<String>>,
    dma_ok: AtomicU64,
    dma_failed_expected: AtomicU64,
    /// Incremented when the SVA driver's overflow cycle starts and again when it ends.
    floods: AtomicU64,
}

impl Shared {
    fn disrupted(&self, kind: &'static str) {
        *self
            .disruptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    fn problem(&self, p: String) {
        let mut v = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 64 {
            v.push(p);
        }
    }
}

/// An SVA tenant: a process bound to `sva0`.
struct Tenant {
    mm: Arc<Mm>,
    bond: Option<SvaBond>,
    pasid: u32,
}

/// The iommufd owner of `vmm0`.
struct Owner {
    ictx: Ictx,
    dev_id: u32,
    ioas: u32,
    fault_id: u32,
    hwpt: u32,
    fd: FaultFd,
    /// Frames the handler backed, by IOVA page.
    backed: Mutex<BTreeMap<u64, Pfn>>,
}

/// Runs a soak. `Err` only when the world cannot be built.
pub fn run(cfg: &Config) -> Result<Report, String> {
    if cfg.inflight == 0 || cfg.inflight > 256 {
        return Err(format!(
            "inflight {} is out of range: 1..=256 jobs per cycle",
            cfg.inflight
        ));
    }
    let rss_start = rss_bytes();
    let obs = Observer::with_log(false);
    let dispatch = obs.dispatch();
    let sh = Shared {
        stop: AtomicBool::new(false),
        obs: obs.clone(),
        disruptions: Mutex::new(BTreeMap::new()),
        problems: Mutex::new(Vec::new()),
        dma_ok: AtomicU64::new(0),
        dma_failed_expected: AtomicU64::new(0),
        floods: AtomicU64::new(0),
    };
    let world = tracing::dispatcher::with_default(&dispatch, || build(&obs))?;
    let (phys, iommu, queue, sva, vmm, owner, tenants) = world;
    let start = Instant::now();
    let mut rep = Report {
        rss_start,
        ..Report::default()
    };
    let stop_handler = StopHandle::new()?;
    let sent = || sva.stats().groups_sent + vmm.stats().groups_sent;
    let (sh_r, sva_r, vmm_r, owner_r, phys_r, d, stop_r) =
        (&sh, &sva, &vmm, &owner, &phys, &dispatch, &stop_handler);
    std::thread::scope(|s| {
        let sh = sh_r;
        let handler = s.spawn(move || {
            tracing::dispatcher::with_default(d, || {
                run_fault_handler(&owner_r.fd, stop_r, |rec| {
                    back_page(owner_r, phys_r, rec.addr & !(PAGE - 1))
                })
            })
        });
        let sva_driver = s.spawn(move || {
            tracing::dispatcher::with_default(d, || drive_sva(sh, sva_r, tenants, cfg))
        });
        let vmm_driver = s.spawn(move || {
            tracing::dispatcher::with_default(d, || drive_owner(sh, vmm_r, owner_r, phys_r, cfg))
        });
        let window = (cfg.groups / 10).max(1);
        let mut last_progress = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let n = sent();
            let rss = rss_bytes();
            if n >= window {
                // Window k (from 0) holds groups [(k + 1) * window, (k + 2) * window).
                let k = (n / window - 1).min(8) as usize;
                if rep.rss_windows.len() <= k {
                    rep.rss_windows.resize(k + 1, 0);
                }
                rep.rss_windows[k] = rep.rss_windows[k].max(rss);
                if let Some(live) = cfg.heap_live {
                    if rep.heap_windows.len() <= k {
                        rep.heap_windows.resize(k + 1, 0);
                    }
                    rep.heap_windows[k] = rep.heap_windows[k].max(live());
                }
            }
            if let Some(every) = cfg.progress {
                if last_progress.elapsed() >= every {
                    last_progress = Instant::now();
                    let heap = cfg.heap_live.map_or(String::new(), |f| {
                        format!(", heap {:.2} MiB live", f() as f64 / (1 << 20) as f64)
                    });
                    eprintln!(
                        "soak: {n} groups, {:.0} s, rss {:.1} MiB{heap}",
                        start.elapsed().as_secs_f64(),
                        rss as f64 / (1 << 20) as f64
                    );
                }
            }
            let out_of_time = cfg.time_limit.is_some_and(|t| start.elapsed() >= t);
            // A thread that ended on its own met a problem (recorded): stop the others too.
            let ended =
                sva_driver.is_finished() || vmm_driver.is_finished() || handler.is_finished();
            if n >= cfg.groups || out_of_time || ended || sh.stop.load(Relaxed) {
                break;
            }
        }
        sh.stop.store(true, Relaxed);
        if handler.is_finished() && !vmm_driver.is_finished() {
            // Nobody answers the owner's faults any more: reset the device so its waiting jobs
            // fail and its driver can stop.
            vmm_r.reset();
        }
        for (who, t) in [("sva driver", sva_driver), ("iommufd driver", vmm_driver)] {
            if t.join().is_err() {
                sh.problem(format!("the {who} panicked"));
            }
        }
        stop_handler.stop();
        match handler.join() {
            Ok(h) => {
                if let Some(e) = h.error {
                    sh.problem(format!("fault handler: {e}"));
                }
            }
            Err(_) => sh.problem("the fault handler panicked".into()),
        }
    });
    rep.elapsed = start.elapsed();
    tracing::dispatcher::with_default(&dispatch, || {
        teardown(&owner, &queue, &sh);
    });
    let (a, b) = (sva.stats(), vmm.stats());
    rep.groups_sva = a.groups_sent;
    rep.groups_iommufd = b.groups_sent;
    rep.groups = a.groups_sent + b.groups_sent;
    rep.answered = a.groups_answered + b.groups_answered;
    rep.overflow_answered = a.auto_success + b.auto_success;
    rep.abandoned = a.abandoned + b.abandoned;
    let outstanding = (sva.outstanding_groups() + vmm.outstanding_groups()) as u64;
    if outstanding > 0 {
        sh.problem(format!(
            "{outstanding} groups still outstanding at the devices after the drivers stopped"
        ));
    }
    drop((sva, vmm, iommu, phys));
    let (check, _, _) = obs.finish();
    rep.events = check.events;
    rep.lost = check.never_answered;
    rep.doubled = check
        .count(Invariant::ExactlyOneResponse)
        .saturating_sub(check.never_answered);
    rep.late =
        check.count(Invariant::NoDeliveryAfterDetach) + check.count(Invariant::NoDmaAfterUnbind);
    for v in check.violations.iter().take(20) {
        sh.problem(v.to_string());
    }
    rep.rss_end = rss_bytes();
    rep.disruptions = sh.disruptions.into_inner().unwrap_or_default();
    rep.problems = sh.problems.into_inner().unwrap_or_default();
    rep.dma_ok = sh.dma_ok.into_inner();
    rep.dma_failed_expected = sh.dma_failed_expected.into_inner();
    Ok(rep)
}

type World = (
    Arc<PhysMem>,
    Arc<EmuIommu>,
    Arc<IopfQueue>,
    Endpoint,
    Endpoint,
    Owner,
    Vec<Tenant>,
);

/// The IOMMU with its page request queue thread and one IOPF worker, `sva0` with two bound
/// processes, and `vmm0` owned through iommufd on a fault-capable HWPT.
fn build(obs: &Observer) -> Result<World, String> {
    let phys = Arc::new(PhysMem::new(FRAMES).map_err(|e| format!("physical memory: {e}"))?);
    let cfg = EmuIommuConfig {
        prq_depth: PRQ_DEPTH,
        ..EmuIommuConfig::default()
    };
    let iommu = EmuIommu::new("soak0", &phys, cfg).map_err(|e| format!("iommu: {e}"))?;
    let queue = IopfQueue::new("soak0", 1).map_err(|e| format!("iopf queue: {e}"))?;
    let ep_cfg = EndpointConfig {
        pri_credits: 256,
        max_group_pages: (PRQ_DEPTH / 2) as u32,
        ..EndpointConfig::default()
    };
    let endpoint = |group: &str, name: &str| {
        let g = Group::new(iommu.driver(), group);
        iommu
            .add_endpoint(&g, name, 1 << 16, ep_cfg.clone())
            .map_err(|e| format!("endpoint {name}: {e}"))
    };
    let sva = endpoint("sva", "sva0")?;
    let vmm = endpoint("vmm", "vmm0")?;
    obs.set_devices([sva.device().id().0, vmm.device().id().0]);
    iopf_queue_add_device(&queue, sva.device()).map_err(|e| format!("iopf add: {e}"))?;
    let tenants = (0..2)
        .map(|_| new_tenant(obs, &sva, &phys))
        .collect::<Result<Vec<_>, _>>()?;
    let owner = open_owner(&vmm)?;
    Ok((phys, iommu, queue, sva, vmm, owner, tenants))
}

/// A fresh process bound to `sva`.
fn new_tenant(obs: &Observer, sva: &Endpoint, phys: &Arc<PhysMem>) -> Result<Tenant, String> {
    let mm = Mm::new(phys).map_err(|e| format!("mm: {e}"))?;
    bind(obs, sva, mm)
}

/// Binds `mm` to `sva` (first time, or again after an unbind) and restarts its PASID.
fn bind(obs: &Observer, sva: &Endpoint, mm: Arc<Mm>) -> Result<Tenant, String> {
    let bond = sva_bind_device(sva.device(), &mm.as_address_space())
        .map_err(|e| format!("sva bind: {e}"))?;
    let pasid = bond.pasid();
    sva.start_pasid(pasid);
    obs.observe(Event::Bound { dev: 0, pasid });
    Ok(Tenant {
        mm,
        bond: Some(bond),
        pasid,
    })
}

fn open_owner(vmm: &Endpoint) -> Result<Owner, String> {
    let e = |what: &'static str| move |err: iommu_core::Error| format!("iommufd {what}: {err}");
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(vmm.device().clone()).map_err(e("bind"))?;
    let ioas = ictx.ioas_alloc().map_err(e("ioas"))?;
    let (fault_id, fd) = ictx.fault_queue_alloc(0).map_err(e("fault queue"))?;
    let hwpt = ictx
        .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
        .map_err(e("hwpt"))?;
    ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)
        .map_err(e("attach"))?;
    Ok(Owner {
        ictx,
        dev_id,
        ioas,
        fault_id,
        hwpt,
        fd,
        backed: Mutex::new(BTreeMap::new()),
    })
}

/// The owner's fault handler backs one faulting page with a fresh frame (once per page).
fn back_page(owner: &Owner, phys: &PhysMem, iova: u64) -> Result<(), String> {
    let mut backed = owner.backed.lock().unwrap_or_else(|p| p.into_inner());
    if backed.contains_key(&iova) {
        return Ok(());
    }
    let pfn = phys.alloc_frame().map_err(|e| format!("frame: {e}"))?;
    match owner.ictx.ioas_map(
        owner.ioas,
        Some(iova),
        pfn.addr().0,
        PAGE,
        IOMMU_READ | IOMMU_WRITE,
    ) {
        Ok(_) => {
            backed.insert(iova, pfn);
            Ok(())
        }
        Err(e) => {
            // The frame was allocated just above: freeing it cannot fail.
            let _ = phys.free_frame(pfn);
            Err(format!("map {iova:#x}: {e}"))
        }
    }
}

/// Unmaps `[base, base + len)` from the owner's IOAS and frees the frames backing it.
fn unback_range(owner: &Owner, phys: &PhysMem, base: u64, len: u64) -> Result<(), String> {
    let mut backed = owner.backed.lock().unwrap_or_else(|p| p.into_inner());
    let pages: Vec<u64> = backed.range(base..base + len).map(|(k, _)| *k).collect();
    if pages.is_empty() {
        return Ok(());
    }
    owner
        .ictx
        .ioas_unmap(owner.ioas, base, len)
        .map_err(|e| format!("unmap {base:#x}+{len:#x}: {e}"))?;
    for p in pages {
        if let Some(pfn) = backed.remove(&p) {
            phys.free_frame(pfn)
                .map_err(|e| format!("free the frame backing {p:#x}: {e}"))?;
        }
    }
    Ok(())
}

/// What a cycle does to its jobs while they are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Disruption {
    /// Nothing.
    None,
    /// Function-level reset of the device (`sva0` or `vmm0`): groups in flight are abandoned.
    Reset,
    /// `sva0`: the driver stops the PASID, unbinds the process and binds it again.
    Unbind,
    /// `sva0`: the process exits; it is unbound and a new process bound in its place.
    Exit,
    /// `vmm0`: the owner replaces its fault-capable HWPT by a new one and destroys the old
    /// (pending faults are auto-answered).
    Replace,
    /// `sva0`: twice the page request queue's depth of jobs at once (the IOMMU answers what
    /// it cannot queue).
    Overflow,
}

impl Disruption {
    /// Every disruption.
    pub const ALL: [Disruption; 5] = [
        Self::Reset,
        Self::Unbind,
        Self::Exit,
        Self::Replace,
        Self::Overflow,
    ];

    /// The name the command line and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Reset => "reset",
            Self::Unbind => "unbind",
            Self::Exit => "exit",
            Self::Replace => "replace",
            Self::Overflow => "overflow",
        }
    }

    /// The disruption called `name`.
    pub fn from_name(name: &str) -> Option<Disruption> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Starts one one-page write per page of `[base, base + n pages)`, polls them all until they
/// finish, calling `disrupt` once while they are in flight (once half of those left wait for
/// a page response).
/// Returns (completed, failed).
fn run_cycle(
    sh: &Shared,
    ep: &Endpoint,
    pasid: Option<u32>,
    base: u64,
    n: usize,
    mut disrupt: impl FnMut(),
) -> (u64, u64, Vec<DmaError>) {
    let deadline = Instant::now() + CYCLE_LIMIT;
    let mut jobs: Vec<_> = (0..n as u64)
        .map(|i| {
            let data = vec![(i as u8) | 1; PAGE as usize];
            Some(ep.start_dma(pasid, base + i * PAGE, PAGE, DmaKind::Write(data)))
        })
        .collect();
    let (mut ok, mut failed, mut errors) = (0, 0, Vec::new());
    let mut left = n;
    let mut disrupted = false;
    while left > 0 {
        let mut progressed = false;
        let mut waiting = 0;
        for slot in jobs.iter_mut() {
            let Some(job) = slot else { continue };
            match ep.poll_dma(job) {
                DmaPoll::Ready(r) => {
                    match r {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            failed += 1;
                            errors.push(e);
                        }
                    }
                    *slot = None;
                    left -= 1;
                    progressed = true;
                }
                DmaPoll::Pending => waiting += usize::from(job.is_waiting()),
            }
        }
        // Disrupt once at least half the jobs wait for a response (or none is left to).
        if !disrupted && (2 * waiting >= left || left == 0) {
            disrupted = true;
            disrupt();
        }
        if !progressed {
            if Instant::now() >= deadline {
                // Polled jobs have no response timeout: a cycle that never ends is a hang
                // somewhere below. Give up (the jobs are dropped, their groups abandoned).
                sh.problem(format!(
                    "{}: {left} of {n} DMA jobs made no progress for {CYCLE_LIMIT:?} ({:?})",
                    ep.name(),
                    ep.stats()
                ));
                sh.stop.store(true, Relaxed);
                failed += left as u64;
                break;
            }
            // No job finished this round: let the queue and the handler run.
            std::thread::yield_now();
        }
    }
    (ok, failed, errors)
}

/// Records a cycle's outcome: failures are expected only in a disrupted cycle — or, for a
/// `PriStalled` job, in a cycle that overlapped the other device's queue overflow (the two
/// devices share the IOMMU's page request queue, and a polled job gives up after
/// `MAX_AUTO_ROUNDS` rounds answered by the IOMMU).
fn account(
    sh: &Shared,
    who: &str,
    d: Disruption,
    overlapped_flood: bool,
    (ok, failed, errors): (u64, u64, Vec<DmaError>),
) {
    sh.dma_ok.fetch_add(ok, Relaxed);
    if d == Disruption::None {
        let stalled_by_flood =
            overlapped_flood && errors.iter().all(|e| *e == DmaError::PriStalled);
        if failed > 0 && stalled_by_flood {
            sh.disrupted("stalled by the other device's overflow");
            sh.dma_failed_expected.fetch_add(failed, Relaxed);
        } else if failed > 0 {
            sh.problem(format!(
                "{who}: {failed} DMA jobs failed in an undisturbed cycle: {}",
                errors.first().map_or(String::new(), |e| e.to_string())
            ));
        }
    } else {
        sh.disrupted(d.name());
        sh.dma_failed_expected.fetch_add(failed, Relaxed);
    }
}

/// This cycle's disruption: with probability 1/`one_in`, one of `kinds` that `cfg` allows.
fn pick(rng: &mut ChaCha8Rng, cfg: &Config, kinds: &[Disruption]) -> Disruption {
    let allowed: Vec<Disruption> = kinds
        .iter()
        .copied()
        .filter(|k| cfg.disruptions.contains(k))
        .collect();
    if cfg.disrupt_one_in == 0 || allowed.is_empty() {
        return Disruption::None;
    }
    if rng.random_range(0..cfg.disrupt_one_in) == 0 {
        allowed[rng.random_range(0..allowed.len())]
    } else {
        Disruption::None
    }
}

/// The SVA driver: each cycle maps fresh memory in one tenant, writes every page of it from
/// the device (one group per page), and unmaps it again.
fn drive_sva(sh: &Shared, sva: &Endpoint, mut tenants: Vec<Tenant>, cfg: &Config) {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let n = cfg.inflight;
    let phys = sva.iommu().phys().clone();
    while !sh.stop.load(Relaxed) {
        let t = rng.random_range(0..tenants.len());
        let d = pick(
            &mut rng,
            cfg,
            &[
                Disruption::Reset,
                Disruption::Unbind,
                Disruption::Exit,
                Disruption::Overflow,
            ],
        );
        let n = if d == Disruption::Overflow {
            FLOOD * PRQ_DEPTH
        } else {
            n
        };
        let len = n as u64 * PAGE;
        let tenant = &mut tenants[t];
        let va = match tenant.mm.mmap(len, Prot::READ_WRITE) {
            Ok(va) => va,
            Err(e) => {
                sh.problem(format!("sva: mmap: {e}"));
                return;
            }
        };
        let pasid = tenant.pasid;
        let mm = tenant.mm.clone();
        if d == Disruption::Overflow {
            sh.floods.fetch_add(1, SeqCst); // odd: a flood is running
        }
        let outcome = run_cycle(sh, sva, Some(pasid), va, n, || match d {
            Disruption::Reset => sva.reset(),
            Disruption::Exit => mm.exit(),
            Disruption::Unbind => {
                // A driver stops the PASID's DMA before it unbinds (SPEC: unbind requires
                // the device to have stopped using the PASID).
                if let Err(e) = sva.stop_pasid(pasid) {
                    sh.problem(format!("sva: stop_pasid {pasid}: {e}"));
                }
            }
            _ => {}
        });
        if d == Disruption::Overflow {
            sh.floods.fetch_add(1, SeqCst);
        }
        account(sh, "sva", d, false, outcome);
        match d {
            Disruption::Unbind | Disruption::Exit => {
                if let Some(b) = tenant.bond.take() {
                    if d == Disruption::Exit {
                        // An exited process's PASID is still stopped by its driver first.
                        let _ = sva.stop_pasid(pasid);
                    }
                    b.unbind();
                    sh.obs.observe(Event::UnbindReturned { dev: 0, pasid });
                }
                let next = if d == Disruption::Exit {
                    new_tenant(&sh.obs, sva, &phys)
                } else {
                    let _ = tenant.mm.munmap(va, len);
                    bind(&sh.obs, sva, tenant.mm.clone())
                };
                match next {
                    Ok(n) => *tenant = n,
                    Err(e) => {
                        sh.problem(format!("sva: {e}"));
                        return;
                    }
                }
            }
            _ => {
                if let Err(e) = tenant.mm.munmap(va, len) {
                    sh.problem(format!("sva: munmap: {e}"));
                }
            }
        }
    }
    for t in tenants {
        if let Some(b) = t.bond {
            b.unbind();
            sh.obs.observe(Event::UnbindReturned {
                dev: 0,
                pasid: t.pasid,
            });
        }
    }
}

/// The iommufd driver: each cycle writes one IOVA slot from the device (the owner's handler
/// backs each faulting page), then unmaps the slot and frees its frames.
fn drive_owner(sh: &Shared, vmm: &Endpoint, owner: &Owner, phys: &PhysMem, cfg: &Config) {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    let n = cfg.inflight;
    let len = n as u64 * PAGE;
    let mut hwpt = owner.hwpt;
    let mut slot = 0u64;
    while !sh.stop.load(Relaxed) {
        let base = IOVA_BASE + (slot % IOVA_SLOTS) * len;
        slot += 1;
        let d = pick(&mut rng, cfg, &[Disruption::Reset, Disruption::Replace]);
        let mut replaced = None;
        let floods = sh.floods.load(SeqCst);
        let outcome = run_cycle(sh, vmm, None, base, n, || match d {
            Disruption::Reset => vmm.reset(),
            Disruption::Replace => {
                let r = owner
                    .ictx
                    .hwpt_alloc(
                        owner.dev_id,
                        owner.ioas,
                        IOMMU_HWPT_FAULT_ID_VALID,
                        owner.fault_id,
                        0,
                        &[],
                    )
                    .and_then(|h| {
                        owner
                            .ictx
                            .device_replace(owner.dev_id, IOMMU_NO_PASID, h)
                            .map(|()| h)
                    });
                match r {
                    Ok(h) => replaced = Some(h),
                    Err(e) => sh.problem(format!("iommufd: replace: {e}")),
                }
            }
            _ => {}
        });
        let overlapped_flood = floods % 2 == 1 || sh.floods.load(SeqCst) != floods;
        account(sh, "iommufd", d, overlapped_flood, outcome);
        if let Some(h) = replaced {
            if let Err(e) = owner.ictx.destroy(hwpt) {
                sh.problem(format!("iommufd: destroy replaced hwpt {hwpt}: {e}"));
            }
            hwpt = h;
        }
        if let Err(e) = unback_range(owner, phys, base, len) {
            sh.problem(format!("iommufd: {e}"));
        }
    }
}

/// Detaches the owner, frees what it backed and shuts the IOPF queue down.
fn teardown(owner: &Owner, queue: &IopfQueue, sh: &Shared) {
    if let Err(e) = owner.ictx.device_detach(owner.dev_id, IOMMU_NO_PASID) {
        sh.problem(format!("iommufd: detach at the end: {e}"));
    }
    queue.shutdown();
}

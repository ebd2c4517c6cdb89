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

mod drivers;
mod report;
mod world;

pub use drivers::Disruption;
use drivers::{drive_owner, drive_sva};
pub use report::{rss_bytes, Report};
use world::{back_page, build, teardown};

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
    /// Stop once this many page request groups were sent (both devices together; at least
    /// 1). The count is checked every 20 ms, so the soak sends more than this, by up to 20 ms'
    /// worth of groups (a few thousand even for 1).
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

/// Runs a soak. `Err` only when the world cannot be built.
pub fn run(cfg: &Config) -> Result<Report, String> {
    if cfg.groups == 0 {
        return Err("groups must be at least 1: a soak of no groups checks nothing".into());
    }
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

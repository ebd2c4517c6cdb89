//! The two drivers: cycles of one-page DMA jobs in flight, a seeded share of them disrupted,
//! and how each cycle's outcome is accounted.

use super::world::{bind, new_tenant, unback_range, Owner, Tenant};
use super::*;

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
pub(super) fn drive_sva(sh: &Shared, sva: &Endpoint, mut tenants: Vec<Tenant>, cfg: &Config) {
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
pub(super) fn drive_owner(
    sh: &Shared,
    vmm: &Endpoint,
    owner: &Owner,
    phys: &PhysMem,
    cfg: &Config,
) {
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

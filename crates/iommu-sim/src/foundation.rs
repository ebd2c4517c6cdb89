//! The built-in scenario of the foundation layer: the IOMMU core's object model under load.
//!
//! Two mock IOMMUs; a group of two PASID-capable NICs, and a group mixing a GPU with a device
//! that has no PASID support. Processes (owner type `Process`) and a VMM (owner type `Vmm`)
//! take PASIDs from the global allocator and attach, replace and detach domains on them, while
//! reader threads play the fault path: typed lookups of every live PASID. The run checks, as it
//! goes, the invariants this layer owns:
//!
//! * a lookup never returns an attachment whose detach returned before the lookup began;
//! * a lookup never returns a handle of another owner type (EBUSY instead);
//! * rejected calls (a second attach to a busy PASID, a PASID beyond a member's range) fail
//!   with the expected errno and change nothing;
//! * at the end nothing is attached, every PASID is freed, and the driver saw no contract
//!   violation.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_handle_get, detach_device_pasid, group_claim_dma_owner,
    group_release_dma_owner, replace_device_pasid, Device, DmaOwner, Domain, GlobalPasid, Group,
    IommuDriver, PasidAllocator,
};

/// Owner data of a process's attachment.
struct Process {
    generation: u64,
}

/// Owner data of a VMM's attachment.
struct Vmm {
    generation: u64,
}

/// The owner types a tenant attaches as: made from the attachment's generation.
trait OwnerData: Send + Sync + 'static {
    /// The owner data of the attachment of this generation.
    fn at(generation: u64) -> Self;
}

impl OwnerData for Process {
    fn at(generation: u64) -> Self {
        Process { generation }
    }
}

impl OwnerData for Vmm {
    fn at(generation: u64) -> Self {
        Vmm { generation }
    }
}

/// Knobs of the scenario.
#[derive(Debug, Clone)]
pub struct Config {
    /// Configuration rounds (each: attach, replace, detach on every tenant's PASID).
    pub rounds: u64,
    /// Reader threads playing the fault path.
    pub readers: usize,
    /// Tenants (processes and VMMs) with one PASID each.
    pub tenants: usize,
}

/// Most reader threads: each is an OS thread, and the machine runs a handful usefully.
pub const MAX_READERS: usize = 256;
/// Most tenants: one PASID each from the NICs' 2^16 (the global allocator is shared).
pub const MAX_TENANTS: usize = 4096;
/// Most rounds: a round's generations are `2 × round` and `2 × round + 1`.
pub const MAX_ROUNDS: u64 = u32::MAX as u64;

impl Config {
    /// Refuses knobs beyond their limits, naming the knob, its value and the limit; and zero
    /// rounds, readers or tenants, with which the run would check nothing and report that
    /// every invariant held.
    pub fn validate(&self) -> Result<(), String> {
        let over = |what: &str, v: u64, max: u64| format!("{what} {v} is above the limit {max}");
        for (what, v) in [
            ("rounds", self.rounds),
            ("readers", self.readers as u64),
            ("tenants", self.tenants as u64),
        ] {
            if v == 0 {
                return Err(format!(
                    "{what} must be at least 1: with none the run checks nothing"
                ));
            }
        }
        if self.readers > MAX_READERS {
            return Err(over("readers", self.readers as u64, MAX_READERS as u64));
        }
        if self.tenants > MAX_TENANTS {
            return Err(over("tenants", self.tenants as u64, MAX_TENANTS as u64));
        }
        if self.rounds > MAX_ROUNDS {
            return Err(over("rounds", self.rounds, MAX_ROUNDS));
        }
        Ok(())
    }
}

/// What the run did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub attaches: u64,
    pub replaces: u64,
    pub detaches: u64,
    pub rejected_as_expected: u64,
    pub lookups_hit: u64,
    pub lookups_enoent: u64,
    pub lookups_ebusy: u64,
    pub violations: Vec<String>,
    pub elapsed: Duration,
}

struct Tenant {
    pasid: GlobalPasid,
    /// Highest generation known detached: written only after detach/replace returned.
    retired: AtomicU64,
}

/// The scenario's hardware: two mock IOMMUs, a group of two PASID-capable NICs, and a group
/// of a GPU and a device without PASID support.
struct Rig {
    iommus: [Arc<MockDriver>; 2],
    groups: [Arc<Group>; 2],
    nics: [Arc<Device>; 2],
    gpu: Arc<Device>,
    /// Never attached: it is there so group1 mixes PASID and non-PASID members.
    _legacy: Arc<Device>,
}

impl Rig {
    fn build() -> Result<Self, String> {
        let iommus: [Arc<MockDriver>; 2] = [MockDriver::new("iommu0"), MockDriver::new("iommu1")];
        let g0 = Group::new(iommus[0].clone() as Arc<dyn IommuDriver>, "group0");
        let nics = [
            g0.add_device("nic0", 1 << 16).map_err(probe("nic0"))?,
            g0.add_device("nic1", 1 << 16).map_err(probe("nic1"))?,
        ];
        let g1 = Group::new(iommus[1].clone() as Arc<dyn IommuDriver>, "group1");
        let gpu = g1.add_device("gpu0", 1 << 20).map_err(probe("gpu0"))?;
        let legacy = g1.add_device("legacy0", 0).map_err(probe("legacy0"))?;
        Ok(Rig {
            iommus,
            groups: [g0, g1],
            nics,
            gpu,
            _legacy: legacy,
        })
    }
}

fn probe(what: &'static str) -> impl Fn(iommu_core::Error) -> String {
    move |e| format!("probe {what}: {e}")
}

/// Runs the scenario. `Err` for knobs beyond their limits ([`Config::validate`]) and for
/// setup failures (no PASID left, a reader thread the host would not start).
pub fn run(cfg: &Config) -> Result<Report, String> {
    cfg.validate()?;
    let start = Instant::now();
    let rig = Rig::build()?;
    let mut report = Report::default();

    // The VMM owns group1 for DMA; processes share group0 with the kernel's default domain.
    if let Err(e) = group_claim_dma_owner(&rig.groups[1], DmaOwner(0x766d6d)) {
        report
            .violations
            .push(format!("claiming group1 failed: {e}"));
    }

    let ida = PasidAllocator::global();
    let tenants: Arc<Vec<Tenant>> = Arc::new(
        (0..cfg.tenants)
            .map(|i| {
                Ok(Tenant {
                    pasid: ida
                        .alloc(rig.nics[0].max_pasids())
                        .map_err(|e| format!("PASID for tenant {i}: {e}"))?,
                    retired: AtomicU64::new(0),
                })
            })
            .collect::<Result<_, String>>()?,
    );
    let groups = rig.groups.clone();
    let done = Arc::new(AtomicBool::new(false));
    // However `run` returns (a setup error after the readers started too), they stop.
    struct StopReaders(Arc<AtomicBool>);
    impl Drop for StopReaders {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let _stop_readers = StopReaders(done.clone());

    let ready = Arc::new(AtomicUsize::new(0));
    let readers = spawn_readers(cfg.readers, &tenants, &groups, &done, &ready);
    let readers = match readers {
        Ok(r) => r,
        Err((started, e)) => {
            let n = started.len();
            done.store(true, SeqCst);
            tally_readers(&mut report, started);
            return Err(format!("starting reader {} of {}: {e}", n + 1, cfg.readers));
        }
    };
    // The rounds start once every reader has looked every tenant up once, so every reader
    // races the configuration: a short run used to end before a reader had started, and
    // reported "all held" over 0 lookups. A reader that ended (panicked) is not waited for.
    while ready.load(SeqCst) < readers.len() && !readers.iter().any(|r| r.is_finished()) {
        thread::yield_now();
    }

    let devs: [&Arc<Device>; 2] = [&rig.nics[1], &rig.gpu];
    let doms: Vec<[Arc<Domain>; 2]> = devs
        .iter()
        .map(|d| Ok([Domain::alloc_paging(d)?, Domain::alloc_paging(d)?]))
        .collect::<iommu_core::Result<_>>()
        .map_err(|e| format!("paging domains: {e}"))?;

    for round in 1..=cfg.rounds {
        for (i, t) in tenants.iter().enumerate() {
            let side = i % 2; // even tenants are processes on group0, odd ones VMMs on group1
            if side == 0 {
                cycle::<Process>(&mut report, t, devs[side], &doms[side], round);
            } else {
                cycle::<Vmm>(&mut report, t, devs[side], &doms[side], round);
            }
        }
    }

    // The NICs support 2^16 PASIDs: one beyond that is refused with EINVAL.
    match attach_device_pasid(
        &doms[0][0],
        &rig.nics[0],
        1 << 16,
        Process { generation: 0 },
    ) {
        Err(e) if e.errno_name() == "EINVAL" => report.rejected_as_expected += 1,
        other => report
            .violations
            .push(format!("out-of-range PASID: {:?}", other.map(|_| ()))),
    }

    done.store(true, SeqCst);
    tally_readers(&mut report, readers);

    check_left_clean(&mut report, &rig);
    drop(tenants);
    report.elapsed = start.elapsed();
    Ok(report)
}

type Readers = Vec<thread::JoinHandle<ReaderTally>>;

/// Starts `n` reader threads playing the fault path until `done`. If the host refuses a
/// thread, the ones started so far are returned with the error (the caller stops them).
fn spawn_readers(
    n: usize,
    tenants: &Arc<Vec<Tenant>>,
    groups: &[Arc<Group>; 2],
    done: &Arc<AtomicBool>,
    ready: &Arc<AtomicUsize>,
) -> Result<Readers, (Readers, std::io::Error)> {
    let mut started = Vec::with_capacity(n);
    for _ in 0..n {
        let (tenants, groups, done, ready) =
            (tenants.clone(), groups.clone(), done.clone(), ready.clone());
        match thread::Builder::new()
            .name("fault-path".into())
            .spawn(move || read_loop(&tenants, &groups, &done, &ready))
        {
            Ok(h) => started.push(h),
            Err(e) => return Err((started, e)),
        }
    }
    Ok(started)
}

/// Waits for the readers and adds up what they saw.
fn tally_readers(report: &mut Report, readers: Vec<thread::JoinHandle<ReaderTally>>) {
    for r in readers {
        let Ok((hit, enoent, ebusy, violations)) = r.join() else {
            report.violations.push("a reader thread panicked".into());
            continue;
        };
        report.lookups_hit += hit;
        report.lookups_enoent += enoent;
        report.lookups_ebusy += ebusy;
        report.violations.extend(violations);
    }
}

/// One round on one tenant's PASID, with owner type `O`: attach, a second attach that must be
/// refused, replace, detach.
fn cycle<O: OwnerData>(
    report: &mut Report,
    t: &Tenant,
    dev: &Arc<Device>,
    dom: &[Arc<Domain>; 2],
    round: u64,
) {
    let pasid = t.pasid.get();
    let gen = round * 2;
    let res = attach_device_pasid(&dom[0], dev, pasid, O::at(gen)).map(|_| ());
    check(report, "attach", res);
    report.attaches += 1;

    // A second attach must be refused and must not disturb the first.
    match attach_device_pasid(&dom[1], dev, pasid, Process { generation: 0 }) {
        Err(e) if e.errno_name() == "EBUSY" => report.rejected_as_expected += 1,
        other => report.violations.push(format!(
            "second attach to PASID {pasid}: {:?}",
            other.map(|_| ())
        )),
    }

    let res =
        replace_device_pasid(&dom[1], dev, pasid, O::at(gen + 1)).map(|r| r.new.domain().clone());
    report.replaces += 1;
    match res {
        Ok(d) => {
            t.retired.store(gen, SeqCst);
            match detach_device_pasid(&d, dev, pasid) {
                Ok(_) => t.retired.store(gen + 1, SeqCst),
                Err(e) => report.violations.push(format!("detach: {e}")),
            }
            report.detaches += 1;
        }
        Err(e) => report.violations.push(format!("replace: {e}")),
    }
}

/// At the end: group1 released, no PASID attached in any group, no contract violation seen by
/// either IOMMU and no PASID left programmed in it.
fn check_left_clean(report: &mut Report, rig: &Rig) {
    if let Err(e) = group_release_dma_owner(&rig.groups[1]) {
        report.violations.push(format!("releasing group1: {e}"));
    }
    for g in &rig.groups {
        if g.pasid_attachments() != 0 {
            report
                .violations
                .push(format!("{} still has PASID attachments", g.name()));
        }
    }
    for m in &rig.iommus {
        for v in m.contract_violations() {
            report.violations.push(format!("{}: {v}", m.name()));
        }
        if !m.hw().pasids.is_empty() {
            report
                .violations
                .push(format!("{}: PASIDs still programmed", m.name()));
        }
    }
}

fn check(report: &mut Report, what: &str, res: iommu_core::Result<()>) {
    if let Err(e) = res {
        report.violations.push(format!("{what}: {e}"));
    }
}

type ReaderTally = (u64, u64, u64, Vec<String>);

fn read_loop(
    tenants: &[Tenant],
    groups: &[Arc<Group>; 2],
    done: &AtomicBool,
    ready: &AtomicUsize,
) -> ReaderTally {
    let (mut hit, mut enoent, mut ebusy, mut violations) = (0, 0, 0, Vec::new());
    let mut first = true;
    loop {
        for (i, t) in tenants.iter().enumerate() {
            let floor = t.retired.load(SeqCst);
            let pasid = t.pasid.get();
            // Ask for the right owner type, then for the wrong one.
            let (right, wrong) = if i % 2 == 0 {
                (
                    attach_handle_get::<Process>(&groups[0], pasid).map(|h| h.generation),
                    attach_handle_get::<Vmm>(&groups[0], pasid).map(|h| h.generation),
                )
            } else {
                (
                    attach_handle_get::<Vmm>(&groups[1], pasid).map(|h| h.generation),
                    attach_handle_get::<Process>(&groups[1], pasid).map(|h| h.generation),
                )
            };
            match right {
                Ok(gen) if gen <= floor => violations.push(format!(
                    "PASID {pasid}: lookup returned generation {gen} after {floor} was detached"
                )),
                Ok(_) => hit += 1,
                Err(e) if e.errno_name() == "ENOENT" => enoent += 1,
                Err(e) => violations.push(format!("PASID {pasid}: unexpected {e}")),
            }
            match wrong {
                Ok(gen) => violations.push(format!(
                    "PASID {pasid}: handle of the wrong owner type returned (generation {gen})"
                )),
                Err(e) if e.errno_name() == "EBUSY" => ebusy += 1,
                Err(_) => enoent += 1,
            }
        }
        if first {
            // Every tenant looked up once: the configuration rounds may start.
            ready.fetch_add(1, SeqCst);
            first = false;
        }
        if done.load(SeqCst) {
            break;
        }
    }
    (hit, enoent, ebusy, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_beyond_their_limits_are_refused_before_anything_runs() {
        let ok = Config {
            rounds: 1,
            readers: 1,
            tenants: 2,
        };
        for (cfg, knob) in [
            (
                Config {
                    readers: usize::MAX,
                    ..ok.clone()
                },
                "readers",
            ),
            (
                Config {
                    readers: 0,
                    ..ok.clone()
                },
                "readers",
            ),
            (
                Config {
                    rounds: 0,
                    ..ok.clone()
                },
                "rounds",
            ),
            (
                Config {
                    tenants: MAX_TENANTS + 1,
                    ..ok.clone()
                },
                "tenants",
            ),
            (
                Config {
                    rounds: u64::MAX,
                    ..ok.clone()
                },
                "rounds",
            ),
        ] {
            let e = run(&cfg).unwrap_err();
            assert!(e.starts_with(knob), "{e}");
        }
        let r = run(&ok).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    /// However short the configuration, every reader races it: it looks every tenant up (the
    /// right owner type and the wrong one) at least once before the rounds start.
    #[test]
    fn a_one_round_run_still_has_every_reader_looking_up() {
        let cfg = Config {
            rounds: 1,
            readers: 2,
            tenants: 3,
        };
        let r = run(&cfg).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let lookups = r.lookups_hit + r.lookups_enoent + r.lookups_ebusy;
        assert!(
            lookups >= (cfg.readers * cfg.tenants * 2) as u64,
            "{lookups} lookups by {} readers of {} tenants",
            cfg.readers,
            cfg.tenants
        );
    }
}

//! Runs a validated [`Scenario`] on the software IOMMU, in one of two modes:
//!
//! * **threads** (the default): real concurrency — one thread per DMA job, one firing the
//!   scenario's events, one fault handler per iommufd owner, each IOMMU's page request queue
//!   thread and IOPF workers ([`threads`]);
//! * **deterministic** (`--seed N`): no thread but the caller's; one scheduler picks the next
//!   actor (a DMA job's next step, a page request queue's next request, an IOPF queue's next
//!   group, an owner's next batch) from a seeded RNG, so the same file and seed give the same
//!   event sequence, summed up in the report's event-log hash ([`deterministic`]).
//!
//! Both build the same world ([`World`]) and end the same way: every job's data is read back
//! and compared, and everything the run observed — the core's and the emulator's trace points
//! and the engine's own observations — went through the invariant checker as it happened
//! ([`crate::observe`]).

mod deterministic;
mod threads;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue, SvaBond};
use iommu_core::{IOMMU_READ, IOMMU_WRITE};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, Pfn, PhysMem};
use iommufd::uapi::{IOMMUFD_PAGE_RESP_SUCCESS, IOMMU_HWPT_FAULT_ID_VALID};
use iommufd::{FaultFd, Ictx, FAULT_RECORD_SIZE, IOMMU_NO_PASID};

use crate::invariants::{Event, Invariant, Violation};
use crate::observe::Observer;
use crate::report::{RunReport, StageLatency, TraceSpan};
use crate::scenario::{Action, JobOp, JobTarget, Scenario};

const PAGE: u64 = 4096;
/// Size of one job-level DMA call: events interleave with jobs at this granularity.
const CHUNK: u64 = 256 << 10;
/// Pages each flooding actor touches on an `overflow` event.
const FLOOD_PAGES: u64 = 32;
/// Flooding actors per device on an `overflow` event.
const FLOOD_THREADS: u64 = 8;

/// How the scenario's actors are interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real threads, real concurrency.
    Threads,
    /// One scheduler driven by a seeded RNG: same file and seed, same event sequence.
    Deterministic {
        /// The RNG seed.
        seed: u64,
    },
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Divides every job's length (at least one page, two for copies): 1 runs the file as is.
    pub scale: u64,
    /// Record a trace span per job.
    pub trace: bool,
    /// Threads or deterministic.
    pub mode: Mode,
    /// Show a progress bar on stderr once the run has taken a second (terminals only).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            scale: 1,
            trace: true,
            mode: Mode::Threads,
            progress: false,
        }
    }
}

/// The largest page request group device `d` sends: half its IOMMU's page request queue (at
/// most 256). A group larger than the queue could never be queued whole: every try would
/// overflow and be auto-answered, and the device would retry forever.
fn max_group_pages(scenario: &Scenario, d: usize) -> u32 {
    (scenario.iommus[scenario.devices[d].iommu].prq_depth / 2).clamp(1, 256)
}

/// Byte `off` of job `seed`'s write pattern.
fn pattern(seed: u64, off: u64) -> u8 {
    (off as u8) ^ ((off >> 12) as u8).wrapping_mul(31) ^ (seed as u8) ^ ((seed >> 8) as u8)
}

fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn to_emu_prot(p: crate::scenario::Prot) -> iommu_emu::Prot {
    iommu_emu::Prot {
        read: p.read,
        write: p.write,
        exec: p.exec,
    }
}

/// One iommufd owner: its context, device, IOAS, HWPT and fault queue.
struct Owner {
    ictx: Ictx,
    dev_id: u32,
    ioas: u32,
    fault: Option<FaultFd>,
    frames: Mutex<Vec<Pfn>>,
    records: AtomicU64,
    batches: Mutex<StageLatency>,
}

/// An owner's fault handler state: its read buffer and the pages it already backed.
struct Serving {
    buf: Vec<u8>,
    backed: BTreeSet<u64>,
}

impl Serving {
    fn new() -> Self {
        Serving {
            buf: vec![0u8; 1024 * FAULT_RECORD_SIZE],
            backed: BTreeSet::new(),
        }
    }
}

impl Owner {
    /// Backs one page at `iova` with a fresh frame mapped through the IOAS.
    fn back(&self, phys: &PhysMem, iova: u64) -> Result<(), String> {
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
                phys.free_frame(pfn);
                Err(format!("map {iova:#x}: {e}"))
            }
        }
    }

    /// One batch of the fault handler: reads whole groups, backs every page, answers each
    /// group once. Returns the records handled (0: nothing was queued).
    fn serve_once(&self, phys: &PhysMem, s: &mut Serving) -> usize {
        let Some(fd) = &self.fault else { return 0 };
        let t0 = Instant::now();
        let n: usize = fd.read(&mut s.buf).unwrap_or_default();
        if n == 0 {
            return 0;
        }
        let mut resp: Vec<u8> = Vec::new();
        let mut last_cookie = None;
        for rec in s.buf[..n].chunks_exact(FAULT_RECORD_SIZE) {
            let word = |o: usize| u32::from_ne_bytes(rec[o..o + 4].try_into().expect("4 bytes"));
            let addr = u64::from_ne_bytes(rec[24..32].try_into().expect("8 bytes"));
            let cookie = word(36);
            self.records.fetch_add(1, Relaxed);
            let iova = addr & !(PAGE - 1);
            if s.backed.insert(iova) && self.back(phys, iova).is_err() {
                s.backed.remove(&iova);
            }
            if last_cookie != Some(cookie) {
                last_cookie = Some(cookie);
                resp.extend_from_slice(&cookie.to_ne_bytes());
                resp.extend_from_slice(&IOMMUFD_PAGE_RESP_SUCCESS.to_ne_bytes());
            }
        }
        let _ = fd.write(&resp);
        self.batches
            .lock()
            .expect("batches")
            .record(t0.elapsed().as_nanos() as u64);
        n / FAULT_RECORD_SIZE
    }
}

/// What a job produced.
#[derive(Default)]
struct JobOutcome {
    error: Option<String>,
    last_read: Vec<u8>,
    bytes: u64,
    latency: StageLatency,
    span: Option<(u64, u64)>,
}

/// What a mode's runner hands back for verification.
struct Ran {
    outcomes: Vec<JobOutcome>,
    /// Per job: owner jobs' data read back through the device (None: not read).
    owner_reads: Vec<Option<Result<Vec<u8>, String>>>,
    /// (event index, start ns, duration ns) of every event fired.
    fired: Vec<(usize, u64, u64)>,
    /// Scheduler steps (deterministic mode).
    steps: Option<u64>,
    /// Actors the deterministic scheduler found waiting for a response nobody would send.
    stuck: Vec<String>,
}

/// Everything a scenario builds before its jobs start.
struct World<'s> {
    scenario: &'s Scenario,
    phys: Arc<PhysMem>,
    iommus: Vec<Arc<EmuIommu>>,
    queues: Vec<Arc<IopfQueue>>,
    eps: Vec<Endpoint>,
    mms: Vec<Arc<Mm>>,
    vma_addr: Vec<Vec<u64>>,
    bonds: BTreeMap<(usize, usize), Mutex<Option<SvaBond>>>,
    pasids: BTreeMap<(usize, usize), u32>,
    /// (device, pasid, base) flood regions per IOMMU.
    floods: BTreeMap<usize, Vec<(usize, u32, u64)>>,
    owners: Vec<Owner>,
    obs: Arc<Observer>,
    job_len: Vec<u64>,
    /// Problems found while building (binds that failed, pins that failed).
    extra: Vec<String>,
}

impl<'s> World<'s> {
    /// Builds the scenario's hardware, processes, bonds and owners. `manual`: no hidden
    /// threads (page request queues and IOPF queues are run by the deterministic scheduler).
    fn build(scenario: &'s Scenario, scale: u64, manual: bool, obs: Arc<Observer>) -> Self {
        let scale = scale.max(1);
        let job_len = scenario
            .jobs
            .iter()
            .map(|j| {
                let min = if j.op == JobOp::Copy { 2 * PAGE } else { PAGE };
                (j.len / scale / PAGE * PAGE).max(min).min(j.len)
            })
            .collect();
        let mut extra: Vec<String> = Vec::new();

        // ---- memory ----
        let vma_pages: u64 = scenario
            .processes
            .iter()
            .flat_map(|p| &p.vmas)
            .map(|v| v.size / PAGE)
            .sum();
        let owner_pages: u64 = scenario
            .jobs
            .iter()
            .filter(|j| matches!(j.target, JobTarget::Owner(..)))
            .map(|j| j.len.div_ceil(PAGE))
            .sum();
        let flood_pages = FLOOD_PAGES * FLOOD_THREADS * scenario.devices.len() as u64;
        let pages = vma_pages + owner_pages + flood_pages;
        let phys = Arc::new(PhysMem::new((pages + pages / 128 + 1024) as usize));
        phys.prefault();

        // ---- IOMMUs, queues, groups, endpoints ----
        let mut iommus = Vec::new();
        let mut queues = Vec::new();
        for s in &scenario.iommus {
            let cfg = EmuIommuConfig {
                pasid_bits: s.pasid_bits,
                iotlb_entries: s.iotlb_entries as usize,
                prq_depth: s.prq_depth as usize,
                prq_thread: !manual,
                ..EmuIommuConfig::default()
            };
            let iommu = EmuIommu::new(&s.name, &phys, cfg).expect("scenario IOMMU");
            queues.push(if manual {
                IopfQueue::new_manual(&s.name)
            } else {
                IopfQueue::new(&s.name, s.workers.max(1) as usize).expect("IOPF queue")
            });
            iommus.push(iommu);
        }
        let mut groups: BTreeMap<(usize, String), Arc<Group>> = BTreeMap::new();
        let owned: BTreeSet<usize> = scenario.owners.iter().map(|o| o.1).collect();
        let mut eps: Vec<Endpoint> = Vec::new();
        for (i, d) in scenario.devices.iter().enumerate() {
            let iommu = &iommus[d.iommu];
            let group = groups
                .entry((d.iommu, d.group.clone()))
                .or_insert_with(|| Group::new(iommu.driver(), d.group.clone()))
                .clone();
            let cfg = EndpointConfig {
                ats: d.ats,
                pri: d.pri,
                pri_credits: d.pri_credits,
                max_group_pages: max_group_pages(scenario, i),
                ..EndpointConfig::default()
            };
            let max_pasids = if d.pasid_bits == 0 {
                0
            } else {
                1u32 << d.pasid_bits
            };
            let ep = iommu
                .add_endpoint(
                    &group,
                    &format!("0000:{:02x}:{:02x}.0", d.iommu, i + 4),
                    max_pasids,
                    cfg,
                )
                .expect("scenario endpoint");
            if d.pri && !owned.contains(&i) {
                iopf_queue_add_device(&queues[d.iommu], ep.device()).expect("IOPF queue add");
            }
            eps.push(ep);
        }
        obs.set_devices(eps.iter().map(|e| e.device().id().0));

        // ---- processes, VMAs, bonds ----
        let mms: Vec<Arc<Mm>> = scenario
            .processes
            .iter()
            .map(|_| Mm::new(&phys).expect("mm"))
            .collect();
        let vma_addr: Vec<Vec<u64>> = scenario
            .processes
            .iter()
            .zip(&mms)
            .map(|(p, mm)| {
                p.vmas
                    .iter()
                    .map(|v| mm.mmap(v.size, to_emu_prot(v.prot)).expect("mmap"))
                    .collect()
            })
            .collect();
        // Per overflow-target device with a bond: a flood region in its bonded process.
        let flood_iommus: BTreeSet<usize> = scenario
            .events
            .iter()
            .filter(|e| e.action == Action::Overflow)
            .filter_map(|e| e.iommu)
            .collect();
        let mut bonds: BTreeMap<(usize, usize), Mutex<Option<SvaBond>>> = BTreeMap::new();
        let mut pasids: BTreeMap<(usize, usize), u32> = BTreeMap::new();
        for &(d, p) in &scenario.bonds {
            match sva_bind_device(eps[d].device(), &mms[p].as_address_space()) {
                Ok(b) => {
                    obs.observe(Event::Bound {
                        dev: d as u64,
                        pasid: b.pasid(),
                    });
                    pasids.insert((d, p), b.pasid());
                    bonds.insert((d, p), Mutex::new(Some(b)));
                }
                Err(e) => extra.push(format!(
                    "bind {} to {} failed: {e}",
                    scenario.devices[d].name, scenario.processes[p].name
                )),
            }
        }
        let mut floods: BTreeMap<usize, Vec<(usize, u32, u64)>> = BTreeMap::new();
        for (&(d, p), &pasid) in &pasids {
            let io = scenario.devices[d].iommu;
            if flood_iommus.contains(&io)
                && !floods.get(&io).is_some_and(|v| v.iter().any(|f| f.0 == d))
            {
                if let Ok(base) = mms[p].mmap(
                    FLOOD_PAGES * FLOOD_THREADS * PAGE,
                    iommu_emu::Prot::READ_WRITE,
                ) {
                    floods.entry(io).or_default().push((d, pasid, base));
                }
            }
        }

        // ---- iommufd owners ----
        let mut owners: Vec<Owner> = Vec::new();
        for (name, d, fault) in &scenario.owners {
            let ictx = Ictx::new();
            let setup = || -> iommu_core::Result<(u32, u32, Option<FaultFd>)> {
                let dev_id = ictx.bind_device(eps[*d].device().clone())?;
                let ioas = ictx.ioas_alloc()?;
                let (hwpt, fault_fd) = if *fault {
                    let (fault_id, fd) = ictx.fault_queue_alloc(0)?;
                    let h =
                        ictx.hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])?;
                    (h, Some(fd))
                } else {
                    (ictx.hwpt_alloc(dev_id, ioas, 0, 0, 0, &[])?, None)
                };
                ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)?;
                Ok((dev_id, ioas, fault_fd))
            };
            match setup() {
                Ok((dev_id, ioas, fault)) => owners.push(Owner {
                    ictx,
                    dev_id,
                    ioas,
                    fault,
                    frames: Mutex::new(Vec::new()),
                    records: AtomicU64::new(0),
                    batches: Mutex::new(StageLatency::default()),
                }),
                Err(e) => extra.push(format!("owner {name}: setup failed: {e}")),
            }
        }
        let mut world = World {
            scenario,
            phys,
            iommus,
            queues,
            eps,
            mms,
            vma_addr,
            bonds,
            pasids,
            floods,
            owners,
            obs,
            job_len,
            extra,
        };
        // Owners without a fault queue get their job ranges pinned up front.
        for j in &scenario.jobs {
            if let JobTarget::Owner(o, iova) = j.target {
                let Some(owner) = world.owners.get(o).filter(|o| o.fault.is_none()) else {
                    continue;
                };
                let mut a = iova & !(PAGE - 1);
                while a < iova + j.len {
                    if let Err(e) = owner.back(&world.phys, a) {
                        world.extra.push(format!("owner pin: {e}"));
                    }
                    a += PAGE;
                }
            }
        }
        world
    }

    /// The (PASID, start address) a job's DMA uses, or why it cannot run.
    fn job_target(&self, i: usize) -> Result<(Option<u32>, u64), String> {
        let j = &self.scenario.jobs[i];
        match j.target {
            JobTarget::Process(p, v) => match self.pasids.get(&(j.device, p)) {
                Some(&pasid) => Ok((Some(pasid), self.vma_addr[p][v] + j.offset)),
                None => Err("device not bound to the process".into()),
            },
            JobTarget::Owner(o, iova) if o < self.owners.len() => Ok((None, iova)),
            JobTarget::Owner(..) => Err("owner was not set up".into()),
        }
    }

    /// Whether the fired events explain a failure of job `i`.
    fn affected(&self, fired: &[usize], i: usize) -> bool {
        let j = &self.scenario.jobs[i];
        fired.iter().any(|&k| {
            let e = &self.scenario.events[k];
            match (e.action, &j.target) {
                (Action::ResetDevice, _) => e.device == Some(j.device),
                (Action::ReplaceHwpt, JobTarget::Owner(o, _)) => e.owner == Some(*o),
                (Action::Exit, JobTarget::Process(p, _)) => e.process == Some(*p),
                (Action::Unbind, JobTarget::Process(p, _)) => {
                    e.process == Some(*p) && e.device == Some(j.device)
                }
                (Action::Munmap | Action::Mprotect, JobTarget::Process(p, v)) => {
                    e.process == Some(*p) && e.vma == Some(*v)
                }
                _ => false,
            }
        })
    }

    /// Groups answered so far, over every device (what `after_groups` counts).
    fn groups_answered(&self) -> u64 {
        self.eps.iter().map(|e| e.stats().groups_answered).sum()
    }

    /// Total bytes the jobs move (for the progress bar).
    fn total_bytes(&self) -> u64 {
        self.scenario
            .jobs
            .iter()
            .zip(&self.job_len)
            .map(|(j, &len)| {
                let span = if j.op == JobOp::Copy { len / 2 } else { len };
                span * j.repeat
            })
            .sum()
    }

    /// Fires event `i`, except `overflow` (each mode floods its own way). With `dev_locks`
    /// (threads mode) an unbind first waits for the device's DMA chunks in flight, so a chunk
    /// completed before the unbind is recorded before it.
    fn fire(&self, i: usize, dev_locks: Option<&[std::sync::RwLock<()>]>) {
        let scenario = self.scenario;
        let e = &scenario.events[i];
        let vma = |p: usize, v: usize| (self.vma_addr[p][v], scenario.processes[p].vmas[v].size);
        match e.action {
            Action::Unbind => {
                let (Some(d), Some(p)) = (e.device, e.process) else {
                    return;
                };
                let Some(slot) = self.bonds.get(&(d, p)) else {
                    return;
                };
                let _w = dev_locks.map(|l| l[d].write().expect("device lock"));
                if let Some(b) = slot.lock().expect("bond").take() {
                    b.unbind();
                    self.obs.observe(Event::UnbindReturned {
                        dev: d as u64,
                        pasid: self.pasids[&(d, p)],
                    });
                }
            }
            Action::Exit => {
                if let Some(p) = e.process {
                    self.mms[p].exit();
                }
            }
            Action::Munmap => {
                if let (Some(p), Some(v)) = (e.process, e.vma) {
                    let (a, len) = vma(p, v);
                    let _ = self.mms[p].munmap(a, len);
                }
            }
            Action::Mprotect => {
                if let (Some(p), Some(v), Some(prot)) = (e.process, e.vma, e.prot) {
                    let (a, len) = vma(p, v);
                    let _ = self.mms[p].mprotect(a, len, to_emu_prot(prot));
                }
            }
            Action::ReplaceHwpt => {
                if let Some(o) = e.owner.and_then(|o| self.owners.get(o)) {
                    if let Ok(h) = o.ictx.hwpt_alloc(o.dev_id, o.ioas, 0, 0, 0, &[]) {
                        let _ = o.ictx.device_replace(o.dev_id, IOMMU_NO_PASID, h);
                    }
                }
            }
            Action::ResetDevice => {
                if let Some(d) = e.device {
                    self.eps[d].reset();
                }
            }
            Action::Overflow => {}
        }
    }

    /// The flood regions of an `overflow` event: (device, PASID, address) per flooding actor.
    fn flood_targets(&self, i: usize) -> Vec<(usize, u32, u64)> {
        let e = &self.scenario.events[i];
        let Some(list) = e.iommu.and_then(|io| self.floods.get(&io)) else {
            return Vec::new();
        };
        list.iter()
            .flat_map(|&(d, pasid, base)| {
                (0..FLOOD_THREADS).map(move |t| (d, pasid, base + t * FLOOD_PAGES * PAGE))
            })
            .collect()
    }

    /// Detaches owners, unbinds what is still bound, shuts the IOPF queues down.
    fn teardown(&self) {
        for o in &self.owners {
            let _ = o.ictx.device_detach(o.dev_id, IOMMU_NO_PASID);
        }
        for b in self.bonds.values() {
            if let Some(b) = b.lock().expect("bond").take() {
                b.unbind();
            }
        }
        for q in &self.queues {
            q.shutdown();
        }
    }
}

/// Runs `scenario` and reports what happened; the report's invariants say whether it was
/// correct.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> RunReport {
    let start = Instant::now();
    let obs = Observer::with_log(matches!(opts.mode, Mode::Deterministic { .. }));
    let dispatch = obs.dispatch();
    tracing::dispatcher::with_default(&dispatch, || {
        let manual = matches!(opts.mode, Mode::Deterministic { .. });
        let world = World::build(scenario, opts.scale, manual, obs.clone());
        let ran = match opts.mode {
            Mode::Threads => threads::run(&world, opts, &dispatch),
            Mode::Deterministic { seed } => deterministic::run(&world, seed, opts),
        };
        let (mut report, late) = verify(&world, &ran, opts);
        world.teardown();
        drop(world);
        let (mut check, hash, _lines) = obs.finish();
        for v in late {
            add_violation(&mut check, v);
        }
        if let Mode::Deterministic { seed } = opts.mode {
            report.mode = "deterministic".into();
            report.seed = Some(seed);
            report.event_log_hash = Some(hash);
        }
        report.invariants = Some(check);
        report.elapsed_s = start.elapsed().as_secs_f64();
        report
    })
}

fn add_violation(check: &mut crate::invariants::CheckReport, v: Violation) {
    if let Some(c) = check.counts.iter_mut().find(|(i, _)| *i == v.invariant) {
        c.1 += 1;
    }
    check.violations.push(v);
}

/// Reads every job's data back and compares it, and gathers the report's figures.
/// Returns the report and the violations found at the end (added to the checker's).
fn verify(world: &World<'_>, ran: &Ran, opts: &RunOptions) -> (RunReport, Vec<Violation>) {
    let scenario = world.scenario;
    let fired: Vec<usize> = ran.fired.iter().map(|f| f.0).collect();
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        mode: "threads".into(),
        seed: Some(scenario.seed),
        jobs: scenario.jobs.len() as u64,
        ..RunReport::default()
    };
    if opts.trace {
        for &(k, st, dur) in &ran.fired {
            let e = &scenario.events[k];
            report.trace.push(TraceSpan {
                name: format!("{:?}", e.action).to_lowercase(),
                category: "event".into(),
                thread: scenario.jobs.len() as u64,
                start_ns: st,
                duration_ns: dur.max(1),
            });
        }
    }
    let mut extra = world.extra.clone();
    let mut dma_lat = StageLatency::default();
    let mut expected_failures = 0u64;
    for (i, out) in ran.outcomes.iter().enumerate() {
        let j = &scenario.jobs[i];
        report.bytes += out.bytes;
        dma_lat.merge(&out.latency);
        if let (true, Some((st, dur))) = (opts.trace, out.span) {
            report.trace.push(TraceSpan {
                name: j.name.clone(),
                category: "job".into(),
                thread: i as u64,
                start_ns: st,
                duration_ns: dur,
            });
        }
        if world.affected(&fired, i) {
            if out.error.is_some() {
                expected_failures += 1;
            }
            continue;
        }
        if let Some(err) = &out.error {
            extra.push(format!(
                "job {} failed with no event to explain it: {err}",
                j.name
            ));
            continue;
        }
        let len = world.job_len[i];
        let mut got = vec![0u8; len as usize];
        let read = match j.target {
            JobTarget::Process(p, v) => world.mms[p]
                .read(world.vma_addr[p][v] + j.offset, &mut got)
                .map_err(|e| e.to_string()),
            JobTarget::Owner(..) => match &ran.owner_reads[i] {
                Some(Ok(data)) => {
                    got.clone_from(data);
                    Ok(())
                }
                Some(Err(e)) => Err(e.clone()),
                None => Err("not read back".into()),
            },
        };
        if let Err(e) = read {
            extra.push(format!("job {}: read-back failed: {e}", j.name));
            continue;
        }
        let seed = name_seed(&j.name);
        let mismatched = match j.op {
            JobOp::Write => got
                .iter()
                .enumerate()
                .filter(|(k, b)| **b != pattern(seed, j.offset + *k as u64))
                .count() as u64,
            JobOp::Fill => got.iter().filter(|b| **b != (seed as u8 | 1)).count() as u64,
            JobOp::Read => {
                got.iter()
                    .zip(&out.last_read)
                    .filter(|(a, b)| a != b)
                    .count() as u64
                    + (got.len() as u64).abs_diff(out.last_read.len() as u64)
            }
            JobOp::Copy => {
                let h = (len / 2) as usize;
                got[..h]
                    .iter()
                    .zip(&got[h..2 * h])
                    .filter(|(a, b)| a != b)
                    .count() as u64
            }
        };
        world.obs.observe(Event::JobVerified {
            job: j.name.clone(),
            mismatched_bytes: mismatched,
        });
    }

    // ---- counters; nothing may be left outstanding at a device ----
    let mut late: Vec<Violation> = ran
        .stuck
        .iter()
        .map(|m| Violation {
            invariant: Invariant::ExactlyOneResponse,
            event_index: None,
            message: m.clone(),
        })
        .collect();
    let mut strays = 0u64;
    for (i, ep) in world.eps.iter().enumerate() {
        let st = ep.stats();
        report.page_requests += st.page_requests;
        report.groups += st.groups_sent;
        report.responses[0] += st.success + st.auto_success;
        report.responses[1] += st.invalid;
        report.responses[2] += st.failure;
        strays += st.stray_responses;
        let outstanding = ep.outstanding_groups();
        if outstanding != 0 {
            late.push(Violation {
                invariant: Invariant::ExactlyOneResponse,
                event_index: None,
                message: format!(
                    "device {}: {outstanding} page request groups still outstanding at the end",
                    scenario.devices[i].name
                ),
            });
        }
    }
    for m in extra {
        late.push(Violation {
            invariant: Invariant::DataVerified,
            event_index: None,
            message: m,
        });
    }
    let stage = &mut report.faults_by_stage;
    stage.insert(
        "sva".into(),
        world.mms.iter().map(|m| m.stats().faults).sum(),
    );
    stage.insert(
        "iommufd".into(),
        world.owners.iter().map(|o| o.records.load(Relaxed)).sum(),
    );
    stage.insert("expected_dma_failures".into(), expected_failures);
    stage.insert(
        "prq_overflow".into(),
        world.iommus.iter().map(|m| m.stats().prq_overflows).sum(),
    );
    stage.insert("events_fired".into(), fired.len() as u64);
    stage.insert("stray_responses".into(), strays);
    if let Some(steps) = ran.steps {
        stage.insert("scheduler_steps".into(), steps);
    }
    report.latency.insert("dma_job".into(), dma_lat);
    for (stage, lat) in world.obs.stage_latencies() {
        if !lat.is_empty() {
            report.latency.insert(stage.into(), lat);
        }
    }
    let mut batches = StageLatency::default();
    for o in &world.owners {
        batches.merge(&o.batches.lock().expect("batches"));
    }
    if !batches.is_empty() {
        report.latency.insert("iommufd_batch".into(), batches);
    }
    (report, late)
}

/// The bytes job `i` writes for chunk `[off, off + n)` (write jobs).
fn write_chunk(j: &crate::scenario::JobSpec, off: u64, buf: &mut [u8]) {
    let seed = name_seed(&j.name);
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, j.offset + off + k as u64);
    }
}

/// The byte fill jobs write.
fn fill_byte(j: &crate::scenario::JobSpec) -> u8 {
    name_seed(&j.name) as u8 | 1
}

/// The run's progress bar: bytes moved by the jobs, drawn on stderr only once the run has
/// taken [`Progress::AFTER`] (and only on a terminal; indicatif hides it otherwise).
struct Progress {
    bar: indicatif::ProgressBar,
    enabled: bool,
    start: Instant,
    shown: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// How long a run goes before its progress bar appears.
    const AFTER: Duration = Duration::from_secs(1);

    fn new(world: &World<'_>, enabled: bool) -> Self {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let bar =
            ProgressBar::with_draw_target(Some(world.total_bytes()), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
            )
            .expect("progress template")
            .progress_chars("=> "),
        );
        Progress {
            bar,
            enabled,
            start: Instant::now(),
            shown: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Shows the bar once the run has taken long enough.
    fn tick(&self) {
        if self.enabled
            && !self.shown.load(Relaxed)
            && self.start.elapsed() >= Self::AFTER
            && !self.shown.swap(true, Relaxed)
        {
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }

    /// `n` more bytes moved.
    fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.tick();
    }

    /// Names what is happening (an event firing).
    fn message(&self, m: String) {
        self.bar.set_message(m);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Keeps wall-clock durations in nanoseconds.
fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

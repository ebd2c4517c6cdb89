//! Runs a validated [`Scenario`] on the software IOMMU, in threads: one thread per DMA job, one
//! firing the scenario's events, one fault handler per iommufd owner, and the IOPF queue's
//! workers per IOMMU. What can genuinely be observed is fed to the invariant [`Checker`]; the
//! endpoints' own counters give the exactly-once accounting at the end of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue, SvaBond};
use iommu_core::{IOMMU_READ, IOMMU_WRITE};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, Pfn, PhysMem};
use iommufd::uapi::{IOMMUFD_PAGE_RESP_SUCCESS, IOMMU_HWPT_FAULT_ID_VALID};
use iommufd::{FaultFd, Ictx, FAULT_RECORD_SIZE, IOMMU_NO_PASID};

use crate::invariants::{Checker, Event, Invariant, Violation};
use crate::report::{RunReport, StageLatency, TraceSpan};
use crate::scenario::{Action, JobOp, JobTarget, Scenario, Trigger};

const PAGE: u64 = 4096;
/// Size of one job-level DMA call: events interleave with jobs at this granularity.
const CHUNK: u64 = 256 << 10;
/// Pages each flooding thread touches on an `overflow` event.
const FLOOD_PAGES: u64 = 32;
/// Flooding threads per device on an `overflow` event.
const FLOOD_THREADS: u64 = 8;

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Divides every job's length (at least one page, two for copies): 1 runs the file as is.
    pub scale: u64,
    /// Record a trace span per job.
    pub trace: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            scale: 1,
            trace: true,
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

    /// The fault handler: reads whole groups, backs every page, answers each group once.
    fn handle(&self, phys: &PhysMem, stop: &AtomicBool) {
        let Some(fd) = &self.fault else { return };
        let mut buf = vec![0u8; 1024 * FAULT_RECORD_SIZE];
        let mut backed = BTreeSet::new();
        loop {
            let stopping = stop.load(Relaxed);
            let _ = fd.wait_readable(Some(Duration::from_millis(5)));
            loop {
                let t0 = Instant::now();
                let n: usize = fd.read(&mut buf).unwrap_or_default();
                if n == 0 {
                    break;
                }
                let mut resp: Vec<u8> = Vec::new();
                let mut last_cookie = None;
                for rec in buf[..n].chunks_exact(FAULT_RECORD_SIZE) {
                    let word = |o: usize| u32::from_ne_bytes(rec[o..o + 4].try_into().unwrap());
                    let addr = u64::from_ne_bytes(rec[24..32].try_into().unwrap());
                    let cookie = word(36);
                    self.records.fetch_add(1, Relaxed);
                    let iova = addr & !(PAGE - 1);
                    if backed.insert(iova) && self.back(phys, iova).is_err() {
                        backed.remove(&iova);
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
            }
            if stopping {
                return;
            }
        }
    }
}

/// What a job thread produced.
#[derive(Default)]
struct JobOutcome {
    error: Option<String>,
    last_read: Vec<u8>,
    bytes: u64,
    latency: StageLatency,
    span: Option<(u64, u64)>,
}

/// Runs `scenario` and reports what happened; the report's invariants say whether it was correct.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> RunReport {
    let start = Instant::now();
    let scale = opts.scale.max(1);
    let job_len = |i: usize| {
        let j = &scenario.jobs[i];
        let min = if j.op == JobOp::Copy { 2 * PAGE } else { PAGE };
        (j.len / scale / PAGE * PAGE).max(min).min(j.len)
    };
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
            ..EmuIommuConfig::default()
        };
        let iommu = EmuIommu::new(&s.name, &phys, cfg).expect("scenario IOMMU");
        queues.push(IopfQueue::new(&s.name, s.workers.max(1) as usize).expect("IOPF queue"));
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

    // ---- processes, VMAs, bonds ----
    let checker = Mutex::new(Checker::new());
    let observe = |e: Event| {
        checker.lock().expect("checker").observe(&e);
    };
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
                observe(Event::Bound {
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
    // (device, pasid, base) flood regions per IOMMU.
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
        let setup = || -> iommu_core::Result<Owner> {
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
            Ok(Owner {
                ictx: Ictx::new(),
                dev_id,
                ioas,
                fault: fault_fd,
                frames: Mutex::new(Vec::new()),
                records: AtomicU64::new(0),
                batches: Mutex::new(StageLatency::default()),
            })
        };
        match setup() {
            Ok(mut o) => {
                o.ictx = ictx;
                owners.push(o);
            }
            Err(e) => panic!("owner {name}: setup failed: {e}"),
        }
    }
    // Owners without a fault queue get their job ranges pinned up front.
    for j in &scenario.jobs {
        if let JobTarget::Owner(o, iova) = j.target {
            if owners[o].fault.is_none() {
                let mut a = iova & !(PAGE - 1);
                while a < iova + j.len {
                    if let Err(e) = owners[o].back(&phys, a) {
                        extra.push(format!("owner pin: {e}"));
                    }
                    a += PAGE;
                }
            }
        }
    }

    let affected = |fired: &[usize], i: usize| -> bool {
        let j = &scenario.jobs[i];
        fired.iter().any(|&k| {
            let e = &scenario.events[k];
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
    };

    // ---- run ----
    let dev_locks: Vec<RwLock<()>> = eps.iter().map(|_| RwLock::new(())).collect();
    let jobs_done = AtomicBool::new(false);
    let handlers_stop = AtomicBool::new(false);
    // (event index, start ns, duration ns) of every event fired.
    let fired: Mutex<Vec<(usize, u64, u64)>> = Mutex::new(Vec::new());
    let answered = || -> u64 { eps.iter().map(|e| e.stats().groups_answered).sum() };
    let run_start = Instant::now();

    let (outcomes, owner_reads) = std::thread::scope(|s| {
        for o in &owners {
            let (phys, stop) = (&phys, &handlers_stop);
            s.spawn(move || o.handle(phys, stop));
        }
        // Events.
        let events = s.spawn(|| {
            let mut pending: Vec<usize> = (0..scenario.events.len()).collect();
            while !pending.is_empty() {
                let now_ms = run_start.elapsed().as_millis() as u64;
                let groups = answered();
                let done = jobs_done.load(Relaxed);
                let mut keep = Vec::new();
                for i in pending {
                    let e = &scenario.events[i];
                    let due = match e.trigger {
                        Trigger::AtMs(ms) => now_ms >= ms,
                        Trigger::AfterGroups(g) => groups >= g,
                    };
                    if due {
                        let t0 = Instant::now();
                        fire(
                            i, scenario, &eps, &mms, &vma_addr, &bonds, &pasids, &owners, &floods,
                            &dev_locks, &observe,
                        );
                        fired.lock().expect("fired").push((
                            i,
                            t0.duration_since(run_start).as_nanos() as u64,
                            t0.elapsed().as_nanos() as u64,
                        ));
                    } else if !(done && matches!(e.trigger, Trigger::AfterGroups(_))) {
                        keep.push(i);
                    }
                }
                pending = keep;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Jobs.
        let handles: Vec<_> = (0..scenario.jobs.len())
            .map(|i| {
                let (eps, vma_addr, pasids, dev_locks, observe) =
                    (&eps, &vma_addr, &pasids, &dev_locks, &observe);
                s.spawn(move || {
                    run_job(
                        i,
                        scenario,
                        job_len(i),
                        eps,
                        vma_addr,
                        pasids,
                        dev_locks,
                        observe,
                        run_start,
                    )
                })
            })
            .collect();
        let outs: Vec<JobOutcome> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| JobOutcome {
                    error: Some("job thread panicked".into()),
                    ..JobOutcome::default()
                })
            })
            .collect();
        jobs_done.store(true, Relaxed);
        let _ = events.join();
        // Owner jobs read back through the device while the handlers still run.
        let fired: Vec<usize> = fired.lock().expect("fired").iter().map(|f| f.0).collect();
        let owner_reads: Vec<Option<Result<Vec<u8>, String>>> = (0..scenario.jobs.len())
            .map(|i| {
                let j = &scenario.jobs[i];
                let JobTarget::Owner(_, iova) = j.target else {
                    return None;
                };
                if outs[i].error.is_some() || affected(&fired, i) {
                    return None;
                }
                let mut got = vec![0u8; job_len(i) as usize];
                Some(
                    eps[j.device]
                        .dma_read(None, iova, &mut got)
                        .map(|()| got)
                        .map_err(|e| e.to_string()),
                )
            })
            .collect();
        handlers_stop.store(true, Relaxed);
        (outs, owner_reads)
    });
    let fired_spans = fired.into_inner().expect("fired");
    let fired: Vec<usize> = fired_spans.iter().map(|f| f.0).collect();
    let affected = |i: usize| affected(&fired, i);

    // ---- verify ----
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        mode: "threads".into(),
        seed: Some(scenario.seed),
        jobs: scenario.jobs.len() as u64,
        ..RunReport::default()
    };
    if opts.trace {
        for &(k, st, dur) in &fired_spans {
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
    let mut dma_lat = StageLatency::default();
    let mut expected_failures = 0u64;
    for (i, out) in outcomes.iter().enumerate() {
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
        if affected(i) {
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
        let len = job_len(i);
        let mut got = vec![0u8; len as usize];
        let read = match j.target {
            JobTarget::Process(p, v) => mms[p]
                .read(vma_addr[p][v] + j.offset, &mut got)
                .map_err(|e| e.to_string()),
            JobTarget::Owner(..) => match &owner_reads[i] {
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
        observe(Event::JobVerified {
            job: j.name.clone(),
            mismatched_bytes: mismatched,
        });
    }

    // ---- exactly-once accounting, counters ----
    let mut violations_extra: Vec<Violation> = Vec::new();
    let mut bad_path_strays = 0u64;
    for (i, ep) in eps.iter().enumerate() {
        let st = ep.stats();
        report.page_requests += st.page_requests;
        report.groups += st.groups_sent;
        report.responses[0] += st.success + st.auto_success;
        report.responses[1] += st.invalid;
        report.responses[2] += st.failure;
        let outstanding = ep.outstanding_groups() as u64;
        // A reset abandons every occupied slot, including groups already answered but not yet
        // consumed, so `abandoned` may overlap `answered`. Exactly once means: nothing left
        // outstanding, never more answers than groups, every unanswered group abandoned by a
        // reset or timeout, and stray responses only for those (a late answer).
        let unanswered = st.groups_sent.saturating_sub(st.groups_answered);
        // When an event takes a device's fault-capable attachment away mid-group (unbind,
        // replace onto a non-fault HWPT, exit), the core answers each later request of that
        // group Invalid on its "bad request" path, partial ones too, as Linux does: the first
        // answers the group, the rest (at most a group's size minus one per such event) reach
        // the device as stray responses it never applies. Those are counted, not violations.
        let d = &scenario.devices[i];
        let group_cap = u64::from((d.pri_credits).min(max_group_pages(scenario, i)));
        let detaching = fired
            .iter()
            .filter(|&&k| {
                let e = &scenario.events[k];
                match e.action {
                    Action::Unbind => e.device == Some(i),
                    Action::ReplaceHwpt => e.owner.is_some_and(|o| scenario.owners[o].1 == i),
                    Action::Exit => e.process.is_some_and(|p| scenario.bonds.contains(&(i, p))),
                    _ => false,
                }
            })
            .count() as u64;
        let bad_path = st
            .stray_responses
            .saturating_sub(unanswered)
            .min(detaching * group_cap.saturating_sub(1));
        bad_path_strays += bad_path;
        if outstanding != 0
            || st.groups_answered > st.groups_sent
            || unanswered > st.abandoned
            || st.stray_responses - bad_path > unanswered
        {
            violations_extra.push(Violation {
                invariant: Invariant::ExactlyOneResponse,
                event_index: None,
                message: format!(
                    "device {}: {} groups sent, {} answered, {} abandoned by reset, {} stray responses, {} outstanding",
                    scenario.devices[i].name,
                    st.groups_sent,
                    st.groups_answered,
                    st.abandoned,
                    st.stray_responses,
                    outstanding
                ),
            });
        }
    }
    for m in &extra {
        violations_extra.push(Violation {
            invariant: Invariant::DataVerified,
            event_index: None,
            message: m.clone(),
        });
    }
    report
        .faults_by_stage
        .insert("sva".into(), mms.iter().map(|m| m.stats().faults).sum());
    report.faults_by_stage.insert(
        "iommufd".into(),
        owners.iter().map(|o| o.records.load(Relaxed)).sum(),
    );
    report
        .faults_by_stage
        .insert("expected_dma_failures".into(), expected_failures);
    report.faults_by_stage.insert(
        "prq_overflow".into(),
        iommus.iter().map(|m| m.stats().prq_overflows).sum(),
    );
    report
        .faults_by_stage
        .insert("events_fired".into(), fired.len() as u64);
    report
        .faults_by_stage
        .insert("bad_path_stray_responses".into(), bad_path_strays);
    report.latency.insert("dma_job".into(), dma_lat);
    let mut batches = StageLatency::default();
    for o in &owners {
        batches.merge(&o.batches.lock().expect("batches"));
    }
    if !batches.is_empty() {
        report.latency.insert("iommufd_batch".into(), batches);
    }

    // ---- teardown ----
    for o in &owners {
        let _ = o.ictx.device_detach(o.dev_id, IOMMU_NO_PASID);
    }
    for b in bonds.values() {
        if let Some(b) = b.lock().expect("bond").take() {
            b.unbind();
        }
    }
    for q in &queues {
        q.shutdown();
    }
    let mut check = checker.into_inner().expect("checker").finish();
    for v in violations_extra {
        if let Some(c) = check.counts.iter_mut().find(|(i, _)| *i == v.invariant) {
            c.1 += 1;
        }
        check.violations.push(v);
    }
    report.invariants = Some(check);
    report.elapsed_s = start.elapsed().as_secs_f64();
    report
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    i: usize,
    scenario: &Scenario,
    len: u64,
    eps: &[Endpoint],
    vma_addr: &[Vec<u64>],
    pasids: &BTreeMap<(usize, usize), u32>,
    dev_locks: &[RwLock<()>],
    observe: &(dyn Fn(Event) + Sync),
    run_start: Instant,
) -> JobOutcome {
    let j = &scenario.jobs[i];
    let ep = &eps[j.device];
    let mut out = JobOutcome::default();
    let t0 = Instant::now();
    let (pasid, base) = match j.target {
        JobTarget::Process(p, v) => match pasids.get(&(j.device, p)) {
            Some(&pasid) => (Some(pasid), vma_addr[p][v] + j.offset),
            None => {
                out.error = Some("device not bound to the process".into());
                return out;
            }
        },
        JobTarget::Owner(_, iova) => (None, iova),
    };
    let seed = name_seed(&j.name);
    let (span_len, src_half) = if j.op == JobOp::Copy {
        (len / 2, len / 2)
    } else {
        (len, 0)
    };
    let mut buf = vec![0u8; CHUNK as usize];
    if j.op == JobOp::Read {
        out.last_read = vec![0u8; len as usize];
    }
    'outer: for _ in 0..j.repeat {
        let mut off = 0;
        while off < span_len {
            let n = CHUNK.min(span_len - off);
            let guard = dev_locks[j.device].read().expect("device lock");
            let c0 = Instant::now();
            let r = match j.op {
                JobOp::Write => {
                    for (k, b) in buf[..n as usize].iter_mut().enumerate() {
                        *b = pattern(seed, j.offset + off + k as u64);
                    }
                    ep.dma_write(pasid, base + off, &buf[..n as usize])
                }
                JobOp::Fill => ep.dma_fill(pasid, base + off, n, seed as u8 | 1),
                JobOp::Read => ep.dma_read(
                    pasid,
                    base + off,
                    &mut out.last_read[off as usize..(off + n) as usize],
                ),
                JobOp::Copy => ep.dma_copy(pasid, base + off, base + src_half + off, n),
            };
            out.latency.record(c0.elapsed().as_nanos() as u64);
            match r {
                Ok(()) => {
                    out.bytes += n;
                    if let Some(p) = pasid {
                        observe(Event::Dma {
                            dev: j.device as u64,
                            pasid: p,
                        });
                    }
                }
                Err(e) => {
                    out.error = Some(e.to_string());
                    break 'outer;
                }
            }
            drop(guard);
            off += n;
        }
    }
    out.span = Some((
        t0.duration_since(run_start).as_nanos() as u64,
        t0.elapsed().as_nanos() as u64,
    ));
    out
}

#[allow(clippy::too_many_arguments)]
fn fire(
    i: usize,
    scenario: &Scenario,
    eps: &[Endpoint],
    mms: &[Arc<Mm>],
    vma_addr: &[Vec<u64>],
    bonds: &BTreeMap<(usize, usize), Mutex<Option<SvaBond>>>,
    pasids: &BTreeMap<(usize, usize), u32>,
    owners: &[Owner],
    floods: &BTreeMap<usize, Vec<(usize, u32, u64)>>,
    dev_locks: &[RwLock<()>],
    observe: &(dyn Fn(Event) + Sync),
) {
    let e = &scenario.events[i];
    let vma = |p: usize, v: usize| (vma_addr[p][v], scenario.processes[p].vmas[v].size);
    match e.action {
        Action::Unbind => {
            let (Some(d), Some(p)) = (e.device, e.process) else {
                return;
            };
            let Some(slot) = bonds.get(&(d, p)) else {
                return;
            };
            // Waits for the device's in-flight job chunks, so a DMA that completed before
            // the unbind is recorded before it.
            let _w = dev_locks[d].write().expect("device lock");
            if let Some(b) = slot.lock().expect("bond").take() {
                b.unbind();
                observe(Event::UnbindReturned {
                    dev: d as u64,
                    pasid: pasids[&(d, p)],
                });
            }
        }
        Action::Exit => {
            if let Some(p) = e.process {
                mms[p].exit();
            }
        }
        Action::Munmap => {
            if let (Some(p), Some(v)) = (e.process, e.vma) {
                let (a, len) = vma(p, v);
                let _ = mms[p].munmap(a, len);
            }
        }
        Action::Mprotect => {
            if let (Some(p), Some(v), Some(prot)) = (e.process, e.vma, e.prot) {
                let (a, len) = vma(p, v);
                let _ = mms[p].mprotect(a, len, to_emu_prot(prot));
            }
        }
        Action::ReplaceHwpt => {
            if let Some(o) = e.owner.and_then(|o| owners.get(o)) {
                if let Ok(h) = o.ictx.hwpt_alloc(o.dev_id, o.ioas, 0, 0, 0, &[]) {
                    let _ = o.ictx.device_replace(o.dev_id, IOMMU_NO_PASID, h);
                }
            }
        }
        Action::ResetDevice => {
            if let Some(d) = e.device {
                eps[d].reset();
            }
        }
        Action::Overflow => {
            let Some(list) = e.iommu.and_then(|io| floods.get(&io)) else {
                return;
            };
            std::thread::scope(|s| {
                for &(d, pasid, base) in list {
                    for t in 0..FLOOD_THREADS {
                        let ep = &eps[d];
                        s.spawn(move || {
                            let mut b = [0u8; 64];
                            for k in 0..FLOOD_PAGES {
                                let a = base + (t * FLOOD_PAGES + k) * PAGE;
                                let _ = ep.dma_read(Some(pasid), a, &mut b);
                            }
                        });
                    }
                }
            });
        }
    }
}

//! Building the world a scenario describes, before its jobs start: physical memory, the IOMMUs
//! with their page request queues and IOPF queues, the devices (endpoints) in their groups, the
//! processes with their VMAs, the SVA bonds, the flood regions of `overflow` events and the
//! iommufd owners. Both modes run on the same world; [`World::teardown`] undoes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue, SvaBond};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, PhysMem};
use iommufd::IOMMU_NO_PASID;

use super::owner::Owner;
use super::{FLOOD_PAGES, FLOOD_THREADS, PAGE};
use crate::invariants::Event;
use crate::observe::Observer;
use crate::scenario::{Action, JobOp, JobTarget, Scenario};

/// Everything a scenario builds before its jobs start.
pub(super) struct World<'s> {
    pub(super) scenario: &'s Scenario,
    pub(super) phys: Arc<PhysMem>,
    pub(super) iommus: Vec<Arc<EmuIommu>>,
    pub(super) queues: Vec<Arc<IopfQueue>>,
    pub(super) eps: Vec<Endpoint>,
    pub(super) mms: Vec<Arc<Mm>>,
    /// Per process, the address of each of its VMAs.
    pub(super) vma_addr: Vec<Vec<u64>>,
    pub(super) bonds: BTreeMap<(usize, usize), Mutex<Option<SvaBond>>>,
    pub(super) pasids: BTreeMap<(usize, usize), u32>,
    /// (device, pasid, base) flood regions per IOMMU.
    pub(super) floods: BTreeMap<usize, Vec<(usize, u32, u64)>>,
    /// Per scenario owner (same index), the owner if its setup succeeded: a failed one
    /// leaves a hole, so an owner's index never shifts onto another's.
    pub(super) owners: Vec<Option<Owner>>,
    pub(super) obs: Arc<Observer>,
    /// Per job, the bytes it moves once scaled.
    pub(super) job_len: Vec<u64>,
    /// Problems found while building (binds that failed, pins that failed).
    pub(super) extra: Vec<String>,
}

/// The SVA bonds that were made, and the PASID of each.
type Bonds = (
    BTreeMap<(usize, usize), Mutex<Option<SvaBond>>>,
    BTreeMap<(usize, usize), u32>,
);

impl<'s> World<'s> {
    /// Builds the scenario's hardware, processes, bonds and owners. `manual`: no hidden
    /// threads (page request queues and IOPF queues are run by the deterministic scheduler).
    /// `Err` names what could not be built and why; what was built is dropped (bonds unbind,
    /// queues shut down). Scenario validation refuses every configuration that fails here, so
    /// an `Err` is the host running out of something (memory, threads, PASIDs).
    pub(super) fn build(
        scenario: &'s Scenario,
        scale: u64,
        manual: bool,
        obs: Arc<Observer>,
    ) -> Result<Self, String> {
        let job_len = job_lengths(scenario, scale);
        let extra: Vec<String> = Vec::new();
        let phys = physical_memory(scenario)?;
        let (iommus, queues) = iommus_and_queues(scenario, &phys, manual)?;
        let eps = endpoints(scenario, &iommus, &queues)?;
        obs.set_devices(eps.iter().map(|e| e.device().id().0));
        let mms: Vec<Arc<Mm>> = scenario
            .processes
            .iter()
            .map(|p| Mm::new(&phys).map_err(|e| format!("process '{}': {e}", p.name)))
            .collect::<Result<_, _>>()?;
        let vma_addr = map_vmas(scenario, &mms)?;
        let (bonds, pasids) = bind(scenario, &eps, &mms, &obs)?;
        let floods = flood_regions(scenario, &pasids, &mms);
        let owners = open_owners(scenario, &eps)?;
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
        world.pin_owner_jobs();
        Ok(world)
    }

    /// Owners without a fault queue get their job ranges pinned up front.
    fn pin_owner_jobs(&mut self) {
        for j in &self.scenario.jobs {
            if let JobTarget::Owner(o, iova) = j.target {
                let Some(owner) = self
                    .owners
                    .get(o)
                    .and_then(Option::as_ref)
                    .filter(|o| o.fault.is_none())
                else {
                    continue;
                };
                // Validation keeps `iova + len` inside the IOVA space.
                let end = iova.saturating_add(j.len);
                let mut a = iova & !(PAGE - 1);
                while a < end {
                    if let Err(e) = owner.back(&self.phys, a) {
                        self.extra.push(format!("owner pin: {e}"));
                    }
                    a += PAGE;
                }
            }
        }
    }

    /// The (PASID, start address) a job's DMA uses, or why it cannot run.
    pub(super) fn job_target(&self, i: usize) -> Result<(Option<u32>, u64), String> {
        let j = &self.scenario.jobs[i];
        match j.target {
            JobTarget::Process(p, v) => match self.pasids.get(&(j.device, p)) {
                Some(&pasid) => Ok((Some(pasid), self.vma_addr[p][v] + j.offset)),
                None => Err("device not bound to the process".into()),
            },
            JobTarget::Owner(o, iova) if self.owner(o).is_some() => Ok((None, iova)),
            JobTarget::Owner(..) => Err("owner was not set up".into()),
        }
    }

    /// Scenario owner `o`, if its setup succeeded.
    pub(super) fn owner(&self, o: usize) -> Option<&Owner> {
        self.owners.get(o).and_then(Option::as_ref)
    }

    /// The owners whose setup succeeded, with their scenario index.
    pub(super) fn live_owners(&self) -> impl Iterator<Item = (usize, &Owner)> {
        self.owners
            .iter()
            .enumerate()
            .filter_map(|(k, o)| Some((k, o.as_ref()?)))
    }

    /// Groups answered so far, over every device (what `after_groups` counts).
    pub(super) fn groups_answered(&self) -> u64 {
        self.eps.iter().map(|e| e.stats().groups_answered).sum()
    }

    /// The devices' PRI counters, summed (what the run's ledger is checked against).
    pub(super) fn device_totals(&self) -> super::DeviceTotals {
        let mut t = super::DeviceTotals::default();
        for st in self.eps.iter().map(Endpoint::stats) {
            t.groups_sent += st.groups_sent;
            t.answered_by_software += st.success + st.invalid + st.failure;
            t.answered_by_iommu += st.auto_success;
            t.stray += st.stray_responses;
        }
        t
    }

    /// Total bytes the jobs move (for the progress bar).
    pub(super) fn total_bytes(&self) -> u64 {
        self.scenario
            .jobs
            .iter()
            .zip(&self.job_len)
            .map(|(j, &len)| j.span(len) * j.repeat)
            .sum()
    }

    /// Detaches owners, unbinds what is still bound, shuts the IOPF queues down.
    pub(super) fn teardown(&self) {
        for (_, o) in self.live_owners() {
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

/// Each job's length divided by `scale`, in whole pages: at least one page (two for copies),
/// at most the file's length.
fn job_lengths(scenario: &Scenario, scale: u64) -> Vec<u64> {
    let scale = scale.max(1);
    scenario
        .jobs
        .iter()
        .map(|j| {
            let min = if j.op == JobOp::Copy { 2 * PAGE } else { PAGE };
            (j.len / scale / PAGE * PAGE).max(min).min(j.len)
        })
        .collect()
}

/// Physical memory for the run: a budget of frames for every VMA, every owner job and every
/// flood region plus slack for page tables, capped at [`PhysMem::MAX_FRAMES`]. It follows use:
/// nothing is prefaulted, and a frame costs host memory only once a fault or a DMA writes it,
/// so a large lazy VMA costs what the run touches. Running out is `ENOMEM` where a frame is
/// allocated (a fault answered Invalid), never a panic. If the host cannot reserve the
/// budget's address range, the budget halves until it can.
fn physical_memory(scenario: &Scenario) -> Result<Arc<PhysMem>, String> {
    let vma_pages = scenario
        .processes
        .iter()
        .flat_map(|p| &p.vmas)
        .fold(0u64, |n, v| n.saturating_add(v.size / PAGE));
    let owner_pages = scenario
        .jobs
        .iter()
        .filter(|j| matches!(j.target, JobTarget::Owner(..)))
        .fold(0u64, |n, j| n.saturating_add(j.len.div_ceil(PAGE)));
    let flood_pages = (FLOOD_PAGES * FLOOD_THREADS).saturating_mul(scenario.devices.len() as u64);
    let pages = vma_pages
        .saturating_add(owner_pages)
        .saturating_add(flood_pages);
    let wanted = pages.saturating_add(pages / 128).saturating_add(1024);
    let mut budget = usize::try_from(wanted)
        .unwrap_or(usize::MAX)
        .min(PhysMem::MAX_FRAMES);
    loop {
        match PhysMem::new(budget) {
            Ok(phys) => return Ok(Arc::new(phys)),
            Err(_) if budget > 1 => budget /= 2,
            Err(e) => {
                return Err(format!(
                    "physical memory: the host cannot map one page: {e}"
                ))
            }
        }
    }
}

/// The IOMMUs and their IOPF queues.
type Iommus = (Vec<Arc<EmuIommu>>, Vec<Arc<IopfQueue>>);

/// One emulated IOMMU and one IOPF queue per scenario IOMMU.
fn iommus_and_queues(
    scenario: &Scenario,
    phys: &Arc<PhysMem>,
    manual: bool,
) -> Result<Iommus, String> {
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
        let iommu =
            EmuIommu::new(&s.name, phys, cfg).map_err(|e| format!("IOMMU '{}': {e}", s.name))?;
        queues.push(if manual {
            IopfQueue::new_manual(&s.name)
        } else {
            IopfQueue::new(&s.name, s.workers.max(1) as usize)
                .map_err(|e| format!("IOMMU '{}': IOPF queue: {e}", s.name))?
        });
        iommus.push(iommu);
    }
    Ok((iommus, queues))
}

/// The largest page request group device `d` sends: half its IOMMU's page request queue (at
/// most 256). A group larger than the queue could never be queued whole: every try would
/// overflow and be auto-answered, and the device would retry forever.
fn max_group_pages(scenario: &Scenario, d: usize) -> u32 {
    (scenario.iommus[scenario.devices[d].iommu].prq_depth / 2).clamp(1, 256)
}

/// One endpoint per device, in its group; PRI devices not owned through iommufd report their
/// faults to their IOMMU's IOPF queue (owned ones report to their owner's fault queue).
fn endpoints(
    scenario: &Scenario,
    iommus: &[Arc<EmuIommu>],
    queues: &[Arc<IopfQueue>],
) -> Result<Vec<Endpoint>, String> {
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
            .map_err(|e| format!("device '{}': {e}", d.name))?;
        if d.pri && !owned.contains(&i) {
            iopf_queue_add_device(&queues[d.iommu], ep.device())
                .map_err(|e| format!("device '{}': IOPF queue: {e}", d.name))?;
        }
        eps.push(ep);
    }
    Ok(eps)
}

/// The scenario's protection in the emulator's terms.
pub(super) fn to_emu_prot(p: crate::scenario::Prot) -> iommu_emu::Prot {
    iommu_emu::Prot {
        read: p.read,
        write: p.write,
        exec: p.exec,
    }
}

/// Maps every process's VMAs; returns their addresses, per process.
fn map_vmas(scenario: &Scenario, mms: &[Arc<Mm>]) -> Result<Vec<Vec<u64>>, String> {
    scenario
        .processes
        .iter()
        .zip(mms)
        .map(|(p, mm)| {
            p.vmas
                .iter()
                .map(|v| {
                    mm.mmap(v.size, to_emu_prot(v.prot))
                        .map_err(|e| format!("process '{}': mmap of VMA '{}': {e}", p.name, v.name))
                })
                .collect()
        })
        .collect()
}

/// Binds each (device, process) bond through SVA.
fn bind(
    scenario: &Scenario,
    eps: &[Endpoint],
    mms: &[Arc<Mm>],
    obs: &Observer,
) -> Result<Bonds, String> {
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
            Err(e) => {
                return Err(format!(
                    "bind of device '{}' to process '{}': {e}",
                    scenario.devices[d].name, scenario.processes[p].name
                ))
            }
        }
    }
    Ok((bonds, pasids))
}

/// Per overflow-target IOMMU, per bonded device behind it (once): a flood region in the
/// device's bonded process.
fn flood_regions(
    scenario: &Scenario,
    pasids: &BTreeMap<(usize, usize), u32>,
    mms: &[Arc<Mm>],
) -> BTreeMap<usize, Vec<(usize, u32, u64)>> {
    let flood_iommus: BTreeSet<usize> = scenario
        .events
        .iter()
        .filter(|e| e.action == Action::Overflow)
        .filter_map(|e| e.iommu)
        .collect();
    let mut floods: BTreeMap<usize, Vec<(usize, u32, u64)>> = BTreeMap::new();
    for (&(d, p), &pasid) in pasids {
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
    floods
}

/// Opens every iommufd owner, at its scenario index (`Some` each: a setup that fails fails
/// the build; the slots stay optional so an owner is always found at its own index).
fn open_owners(scenario: &Scenario, eps: &[Endpoint]) -> Result<Vec<Option<Owner>>, String> {
    scenario
        .owners
        .iter()
        .map(|(name, d, fault)| {
            Owner::open(eps[*d].device(), *fault)
                .map(Some)
                .map_err(|e| format!("owner '{name}': {e}"))
        })
        .collect()
}

//! Validation: what serde cannot check — names unique, references resolvable, values in range,
//! jobs inside their VMAs, one trigger per event — each error naming the line, the field and
//! what was expected. One step per table of the file, in the file's order of dependence.

use std::collections::BTreeMap;

use toml::Spanned;

use super::fields::Ctx;
use super::limits::{
    IOVA_END, MAX_AFTER_GROUPS, MAX_AT_MS, MAX_FILE_BYTES, MAX_JOB_LEN, MAX_PROCESS_VM, MAX_REPEAT,
};
use super::raw::{RawBond, RawDevice, RawEvent, RawFile, RawIommu, RawJob, RawProcess};
use super::spec::{
    Action, DeviceSpec, EventSpec, IommuSpec, JobOp, JobSpec, JobTarget, ProcessSpec, Scenario,
    Trigger, VmaSpec,
};
use super::ScenarioError;

/// A name's index in its list, per kind of name (VMA names per process).
type NameMap = BTreeMap<String, usize>;

/// The names references resolve against, once every table that defines one was read.
struct Names {
    iommus: NameMap,
    devices: NameMap,
    processes: NameMap,
    /// Per process.
    vmas: Vec<NameMap>,
    owners: NameMap,
}

impl Scenario {
    /// Parses and validates a scenario file's text (at most [`MAX_FILE_BYTES`]).
    pub fn parse(src: &str) -> Result<Scenario, ScenarioError> {
        if src.len() as u64 > MAX_FILE_BYTES {
            return Err(ScenarioError {
                line: 0,
                field: "(file)".into(),
                message: format!(
                    "{} bytes: a scenario file is at most {MAX_FILE_BYTES} bytes (4 MiB)",
                    src.len()
                ),
            });
        }
        let cx = Ctx { src };
        let raw: RawFile = toml::from_str(src).map_err(|e| ScenarioError {
            line: e.span().map_or(0, |s| cx.line(&s)),
            field: "(file)".into(),
            message: printable(e.message().trim()),
        })?;
        cx.counts(&raw)?;
        cx.name(&raw.scenario.name, "scenario.name")?;

        let iommu_names = cx.names(raw.iommu.iter().map(|i| &i.name), "iommu.name")?;
        let iommus = raw
            .iommu
            .iter()
            .map(|i| cx.iommu(i))
            .collect::<Result<Vec<_>, _>>()?;
        let dev_names = cx.names(raw.device.iter().map(|d| &d.name), "device.name")?;
        let devices = cx.devices(&raw.device, &iommu_names, &iommus)?;
        let proc_names = cx.names(raw.process.iter().map(|p| &p.name), "process.name")?;
        let (processes, vma_names) = cx.processes(&raw.process)?;
        let bonds = cx.bonds(&raw.bond, &dev_names, &proc_names, &iommus, &devices)?;
        let owner_names = cx.names(raw.owner.iter().map(|o| &o.name), "owner.name")?;
        let owners = cx.owners(&raw, &dev_names, &devices, &bonds)?;
        let names = Names {
            iommus: iommu_names,
            devices: dev_names,
            processes: proc_names,
            vmas: vma_names,
            owners: owner_names,
        };

        cx.names(raw.job.iter().map(|j| &j.name), "job.name")?;
        let built = Built {
            devices: &devices,
            processes: &processes,
            bonds: &bonds,
            owners: &owners,
        };
        let jobs = raw
            .job
            .iter()
            .map(|j| cx.job(j, &names, &built))
            .collect::<Result<Vec<_>, _>>()?;
        cx.job_totals(&raw.job, &jobs)?;
        let events = raw
            .event
            .iter()
            .map(|e| cx.event(e, &names, &built))
            .collect::<Result<Vec<_>, _>>()?;
        cx.overlapping_jobs(&raw.job, &jobs, &events, &built)?;

        Ok(Scenario {
            name: raw.scenario.name.into_inner(),
            seed: raw.scenario.seed,
            iommus,
            devices,
            processes,
            bonds,
            owners,
            jobs,
            events,
        })
    }
}

/// What the tables read so far resolved to (what later tables are checked against).
pub(super) struct Built<'a> {
    pub(super) devices: &'a [DeviceSpec],
    pub(super) processes: &'a [ProcessSpec],
    pub(super) bonds: &'a [(usize, usize)],
    pub(super) owners: &'a [(String, usize, bool)],
}

/// `s` with control characters escaped (serde's messages may quote the file's text).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One validation step per table.
impl Ctx<'_> {
    /// An `[[iommu]]`: its sizes in range, defaults filled in.
    fn iommu(&self, i: &RawIommu) -> Result<IommuSpec, ScenarioError> {
        Ok(IommuSpec {
            name: i.name.get_ref().clone(),
            prq_depth: self.opt_range(&i.prq_depth, "iommu.prq_depth", 1, 65_536, 2048)?,
            iotlb_entries: self.opt_range(
                &i.iotlb_entries,
                "iommu.iotlb_entries",
                1,
                1 << 20,
                1024,
            )?,
            pasid_bits: self.opt_range(&i.pasid_bits, "iommu.pasid_bits", 0, 20, 20)?,
            workers: self.opt_range(&i.workers, "iommu.workers", 1, 64, 2)?,
        })
    }

    /// The `[[device]]`s: at least one, each behind a known IOMMU, no group spanning IOMMUs.
    fn devices(
        &self,
        raw: &[RawDevice],
        iommu_names: &NameMap,
        iommus: &[IommuSpec],
    ) -> Result<Vec<DeviceSpec>, ScenarioError> {
        if raw.is_empty() {
            return self.err(
                &(0..0),
                "device",
                "a scenario needs at least one [[device]]",
            );
        }
        let mut group_iommu: BTreeMap<String, usize> = BTreeMap::new();
        let mut devices = Vec::new();
        for d in raw {
            let iommu = self.lookup(iommu_names, &d.iommu, "device.iommu", "IOMMU")?;
            if let Some(g) = &d.group {
                self.name(g, "device.group")?;
            }
            let group = d.group.as_ref().unwrap_or(&d.name);
            if let Some(&other) = group_iommu.get(group.get_ref()) {
                if other != iommu {
                    return self.err(
                        &group.span(),
                        "device.group",
                        format!(
                            "group '{}' is behind IOMMU '{}'; a group cannot span IOMMUs",
                            group.get_ref(),
                            iommus[other].name
                        ),
                    );
                }
            }
            group_iommu.insert(group.get_ref().clone(), iommu);
            devices.push(DeviceSpec {
                name: d.name.get_ref().clone(),
                iommu,
                group: group.get_ref().clone(),
                pasid_bits: self.opt_range(&d.pasid_bits, "device.pasid_bits", 0, 20, 20)?,
                pri_credits: self.opt_range(&d.pri_credits, "device.pri_credits", 1, 512, 32)?,
                ats: d.ats.as_ref().is_none_or(|v| *v.get_ref()),
                pri: d.pri.as_ref().is_none_or(|v| *v.get_ref()),
            });
        }
        Ok(devices)
    }

    /// The `[[process]]`es and their VMAs, whose sizes add up to at most
    /// [`MAX_PROCESS_VM`]; returns them and each process's VMA names.
    fn processes(
        &self,
        raw: &[RawProcess],
    ) -> Result<(Vec<ProcessSpec>, Vec<NameMap>), ScenarioError> {
        let mut vma_names = Vec::new();
        let mut processes = Vec::new();
        for p in raw {
            let names = self.names(p.vma.iter().map(|v| &v.name), "process.vma.name")?;
            let mut total = 0u64;
            let mut vmas = Vec::new();
            for v in &p.vma {
                let size = self.size(&v.size, "process.vma.size", true)?;
                total = match total.checked_add(size) {
                    Some(t) if t <= MAX_PROCESS_VM => t,
                    _ => {
                        return self.err(
                            &v.size.span(),
                            "process.vma.size",
                            format!(
                                "process '{}': its VMAs add up to more than {MAX_PROCESS_VM} bytes (64 TiB), the limit of one process's address space",
                                p.name.get_ref()
                            ),
                        )
                    }
                };
                vmas.push(VmaSpec {
                    name: v.name.get_ref().clone(),
                    size,
                    prot: self.prot(&v.prot, "process.vma.prot")?,
                });
            }
            vma_names.push(names);
            processes.push(ProcessSpec {
                name: p.name.get_ref().clone(),
                vmas,
            });
        }
        Ok((processes, vma_names))
    }

    /// The `[[bond]]`s: each (device, process) once; the device PASID-, PRI- and ATS-capable
    /// (SVA faults pages in); the process's PASID inside the device's PASID range. Processes
    /// get PASIDs 1, 2, ... in the order of their first bond, as the run's allocator gives
    /// them; a device's range is below 2^min(its pasid_bits, its IOMMU's).
    fn bonds(
        &self,
        raw: &[RawBond],
        dev_names: &NameMap,
        proc_names: &NameMap,
        iommus: &[IommuSpec],
        devices: &[DeviceSpec],
    ) -> Result<Vec<(usize, usize)>, ScenarioError> {
        let mut bonds = Vec::new();
        let mut pasid_of: BTreeMap<usize, u32> = BTreeMap::new();
        for (k, b) in raw.iter().enumerate() {
            let d = self.lookup(dev_names, &b.device, "bond.device", "device")?;
            let p = self.lookup(proc_names, &b.process, "bond.process", "process")?;
            let dev = &devices[d];
            let iommu = &iommus[dev.iommu];
            if dev.pasid_bits == 0 || iommu.pasid_bits == 0 {
                return self.err(&b.device.span(), "bond.device", format!(
                    "device '{}' has no PASID support: SVA needs pasid_bits > 0 on the device and its IOMMU",
                    dev.name
                ));
            }
            if !dev.pri || !dev.ats {
                return self.err(
                    &b.device.span(),
                    "bond.device",
                    format!(
                        "device '{}' has {}: SVA memory is faulted in on demand, which needs pri = true and ats = true (PCIe PRI works through ATS)",
                        dev.name,
                        if dev.pri { "ats = false" } else { "pri = false" }
                    ),
                );
            }
            if bonds.contains(&(d, p)) {
                return self.err(
                    &b.device.span(),
                    "bond",
                    "the same (device, process) is bonded twice",
                );
            }
            let next = u32::try_from(pasid_of.len() + 1).unwrap_or(u32::MAX);
            let pasid = *pasid_of.entry(p).or_insert(next);
            let bits = dev.pasid_bits.min(iommu.pasid_bits);
            if u64::from(pasid) >= 1u64 << bits {
                return self.err(
                    &b.process.span(),
                    "bond.process",
                    format!(
                        "[[bond]] #{}: process '{}' gets PASID {pasid} (processes get PASIDs 1, 2, ... in the order of their first bond), but device '{}' takes PASIDs below {} (pasid_bits {bits}: device {} bits, IOMMU '{}' {} bits), so only the first {} processes bonded can be bonded to it: widen pasid_bits or bond it to processes bonded earlier",
                        k + 1,
                        b.process.get_ref(),
                        dev.name,
                        1u64 << bits,
                        dev.pasid_bits,
                        iommu.name,
                        iommu.pasid_bits,
                        (1u64 << bits) - 1
                    ),
                );
            }
            bonds.push((d, p));
        }
        Ok(bonds)
    }

    /// The `[[owner]]`s, (name, device index, fault-capable HWPT) each: a fault-capable one on
    /// a device with PRI (and ATS), at most one per group (iommufd claims the whole group), and
    /// none in a group with an SVA bond (a group with PASID attachments cannot change owner).
    fn owners(
        &self,
        raw: &RawFile,
        dev_names: &NameMap,
        devices: &[DeviceSpec],
        bonds: &[(usize, usize)],
    ) -> Result<Vec<(String, usize, bool)>, ScenarioError> {
        let mut owners: Vec<(String, usize, bool)> = Vec::new();
        for (k, o) in raw.owner.iter().enumerate() {
            let d = self.lookup(dev_names, &o.device, "owner.device", "device")?;
            let dev = &devices[d];
            let fault = o.fault.as_ref().is_none_or(|f| *f.get_ref());
            if fault && (!dev.pri || !dev.ats) {
                let span = o.fault.as_ref().map_or(o.device.span(), Spanned::span);
                return self.err(
                    &span,
                    "owner.fault",
                    format!(
                        "[[owner]] #{} '{}': a fault-capable HWPT (fault = true, the default) needs a device that can report page faults, but device '{}' has {} (PRI needs pri = true and ats = true); set fault = false to pin the jobs' IOVAs instead",
                        k + 1,
                        o.name.get_ref(),
                        dev.name,
                        if dev.pri { "ats = false" } else { "pri = false" }
                    ),
                );
            }
            let same_group =
                |x: usize| devices[x].iommu == dev.iommu && devices[x].group == dev.group;
            if let Some(m) = owners.iter().position(|other| same_group(other.1)) {
                let od = &devices[owners[m].1].name;
                let why = if owners[m].1 == d {
                    format!("device '{}' is already owned", dev.name)
                } else {
                    format!(
                        "device '{}' is in group '{}' with device '{od}', owned",
                        dev.name, dev.group
                    )
                };
                return self.err(
                    &o.device.span(),
                    "owner.device",
                    format!(
                        "[[owner]] #{} '{}': {why} by [[owner]] #{} '{}' (line {}): iommufd claims a whole group, so a group has at most one owner",
                        k + 1,
                        o.name.get_ref(),
                        m + 1,
                        owners[m].0,
                        self.line(&raw.owner[m].name.span())
                    ),
                );
            }
            if let Some(bi) = bonds.iter().position(|&(bd, _)| same_group(bd)) {
                let bd = bonds[bi].0;
                return self.err(
                    &o.device.span(),
                    "owner.device",
                    format!(
                        "[[owner]] #{} '{}': device '{}' is in group '{}', where [[bond]] #{} (line {}) binds device '{}' to process '{}' by SVA: a group with PASID attachments cannot be owned through iommufd (EBUSY)",
                        k + 1,
                        o.name.get_ref(),
                        dev.name,
                        dev.group,
                        bi + 1,
                        self.line(&raw.bond[bi].device.span()),
                        devices[bd].name,
                        raw.bond[bi].process.get_ref(),
                    ),
                );
            }
            owners.push((o.name.get_ref().clone(), d, fault));
        }
        Ok(owners)
    }

    /// A `[[job]]`: a known device, one target, a length in `1..=MAX_JOB_LEN` inside its
    /// target, a repeat count in `1..=MAX_REPEAT`, and memory it may write if it writes.
    fn job(&self, j: &RawJob, names: &Names, built: &Built<'_>) -> Result<JobSpec, ScenarioError> {
        let device = self.lookup(&names.devices, &j.device, "job.device", "device")?;
        let len = self.size(&j.len, "job.len", false)?;
        if len == 0 {
            return self.err(&j.len.span(), "job.len", "expected a length above 0");
        }
        if len > MAX_JOB_LEN {
            return self.err(
                &j.len.span(),
                "job.len",
                format!("{len} bytes: a job moves at most {MAX_JOB_LEN} bytes (1 GiB) per run"),
            );
        }
        if *j.op.get_ref() == JobOp::Copy && len < 2 {
            return self.err(
                &j.len.span(),
                "job.len",
                "a copy moves the first half of its range onto the second: expected len of 2 or more",
            );
        }
        let repeat = match &j.repeat {
            Some(r) => u64::from(self.range(r, "job.repeat", 1, MAX_REPEAT)?),
            None => 1,
        };
        let offset = j
            .offset
            .as_ref()
            .map_or(Ok(0), |o| self.size(o, "job.offset", false))?;
        let target = match (&j.process, &j.owner) {
            (Some(p), None) => {
                if let Some(i) = &j.iova {
                    return self.err(
                        &i.span(),
                        "job.iova",
                        "a process job addresses its VMA with offset; iova is for owner jobs",
                    );
                }
                let (pi, vi) = self.process_target(j, p, names, built.processes, (offset, len))?;
                if !built.bonds.contains(&(device, pi)) {
                    return self.err(
                        &j.device.span(),
                        "job.device",
                        format!(
                            "device '{}' is not bonded to process '{}': add a [[bond]]",
                            j.device.get_ref(),
                            p.get_ref()
                        ),
                    );
                }
                let vma = &built.processes[pi].vmas[vi];
                if *j.op.get_ref() != JobOp::Read && !vma.prot.write {
                    return self.err(
                        &j.op.span(),
                        "job.op",
                        format!(
                            "job '{}' writes, but VMA '{}' of process '{}' is read-only: expected op = \"read\" or a VMA with prot \"rw\"",
                            j.name.get_ref(),
                            vma.name,
                            p.get_ref()
                        ),
                    );
                }
                JobTarget::Process(pi, vi)
            }
            (None, Some(o)) => self.owner_target(j, o, names, built, device, len)?,
            _ => {
                return self.err(
                    &j.name.span(),
                    "job",
                    "expected exactly one of process (with vma) or owner",
                )
            }
        };
        Ok(JobSpec {
            name: j.name.get_ref().clone(),
            device,
            op: *j.op.get_ref(),
            target,
            offset,
            len,
            repeat,
        })
    }

    /// An owner job's target: the owner's own device, no VMA fields, and
    /// `iova + len` inside the IOVA space ([`IOVA_END`]).
    fn owner_target(
        &self,
        j: &RawJob,
        o: &Spanned<String>,
        names: &Names,
        built: &Built<'_>,
        device: usize,
        len: u64,
    ) -> Result<JobTarget, ScenarioError> {
        let oi = self.lookup(&names.owners, o, "job.owner", "owner")?;
        for (field, given) in [
            ("vma", j.vma.as_ref().map(Spanned::span)),
            ("offset", j.offset.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = given {
                return self.err(
                    &span,
                    &format!("job.{field}"),
                    format!("an owner job addresses its owner's IOVA space with iova; {field} is for process jobs"),
                );
            }
        }
        let owner_dev = built.owners[oi].1;
        if owner_dev != device {
            return self.err(
                &j.device.span(),
                "job.device",
                format!(
                    "owner '{}' owns device '{}', not '{}': an owner job runs on its owner's device",
                    o.get_ref(),
                    built.devices[owner_dev].name,
                    j.device.get_ref()
                ),
            );
        }
        let iova = j
            .iova
            .as_ref()
            .map_or(Ok(0), |i| self.size(i, "job.iova", false))?;
        if iova.checked_add(len).is_none_or(|end| end > IOVA_END) {
            let span = j.iova.as_ref().map_or(j.len.span(), Spanned::span);
            return self.err(
                &span,
                "job.iova",
                format!(
                    "iova {iova:#x} + len {len:#x} runs past the end of the IOVA space ({IOVA_END:#x}, 48 bits)"
                ),
            );
        }
        Ok(JobTarget::Owner(oi, iova))
    }

    /// A process job's (process, VMA) indices: the VMA named, `offset + len` inside it.
    fn process_target(
        &self,
        j: &RawJob,
        p: &Spanned<String>,
        names: &Names,
        processes: &[ProcessSpec],
        (offset, len): (u64, u64),
    ) -> Result<(usize, usize), ScenarioError> {
        let pi = self.lookup(&names.processes, p, "job.process", "process")?;
        let Some(v) = &j.vma else {
            return self.err(&p.span(), "job.vma", "a process job needs a vma");
        };
        let vi = self.lookup(&names.vmas[pi], v, "job.vma", "VMA")?;
        let size = processes[pi].vmas[vi].size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return self.err(
                &j.len.span(),
                "job.len",
                format!(
                    "offset {offset} + len {len} runs past VMA '{}' ({size} bytes)",
                    v.get_ref()
                ),
            );
        }
        Ok((pi, vi))
    }

    /// An `[[event]]`: one trigger within its limit, exactly the targets its action needs,
    /// each resolvable; an unbind names a bonded pair, an overflow an IOMMU with a bonded
    /// device (the devices that flood).
    fn event(
        &self,
        e: &RawEvent,
        names: &Names,
        built: &Built<'_>,
    ) -> Result<EventSpec, ScenarioError> {
        let action = *e.action.get_ref();
        let trigger = match (&e.at_ms, &e.after_groups) {
            (Some(t), None) => {
                if *t.get_ref() > MAX_AT_MS {
                    return self.err(
                        &t.span(),
                        "event.at_ms",
                        format!(
                            "{} ms: a timed event fires at most {MAX_AT_MS} ms (10 minutes) after the start",
                            t.get_ref()
                        ),
                    );
                }
                Trigger::AtMs(*t.get_ref())
            }
            (None, Some(n)) => {
                if *n.get_ref() > MAX_AFTER_GROUPS {
                    return self.err(
                        &n.span(),
                        "event.after_groups",
                        format!("{} groups: the limit is {MAX_AFTER_GROUPS}", n.get_ref()),
                    );
                }
                Trigger::AfterGroups(*n.get_ref())
            }
            _ => {
                return self.err(
                    &e.action.span(),
                    "event",
                    "expected exactly one trigger: at_ms or after_groups",
                )
            }
        };
        self.event_fields(e)?;
        let process = e
            .process
            .as_ref()
            .map(|p| self.lookup(&names.processes, p, "event.process", "process"))
            .transpose()?;
        let vma = match (&e.vma, process) {
            (Some(v), Some(pi)) => Some(self.lookup(&names.vmas[pi], v, "event.vma", "VMA")?),
            _ => None,
        };
        let spec = EventSpec {
            action,
            trigger,
            device: e
                .device
                .as_ref()
                .map(|d| self.lookup(&names.devices, d, "event.device", "device"))
                .transpose()?,
            process,
            vma,
            owner: e
                .owner
                .as_ref()
                .map(|o| self.lookup(&names.owners, o, "event.owner", "owner"))
                .transpose()?,
            iommu: e
                .iommu
                .as_ref()
                .map(|i| self.lookup(&names.iommus, i, "event.iommu", "IOMMU"))
                .transpose()?,
            prot: e
                .prot
                .as_ref()
                .map(|p| self.prot(p, "event.prot"))
                .transpose()?,
        };
        self.event_target(e, &spec, built)?;
        Ok(spec)
    }

    /// An unbind's pair is bonded; an overflow's IOMMU has a bonded device to flood with.
    fn event_target(
        &self,
        e: &RawEvent,
        spec: &EventSpec,
        built: &Built<'_>,
    ) -> Result<(), ScenarioError> {
        match (spec.action, spec.device, spec.process, spec.iommu) {
            (Action::Unbind, Some(d), Some(p), _) if !built.bonds.contains(&(d, p)) => self.err(
                &e.action.span(),
                "event.process",
                format!(
                    "unbind of device '{}' from process '{}', which no [[bond]] binds",
                    built.devices[d].name, built.processes[p].name
                ),
            ),
            (Action::Overflow, _, _, Some(io))
                if !built
                    .bonds
                    .iter()
                    .any(|&(d, _)| built.devices[d].iommu == io) =>
            {
                self.err(
                    &e.iommu.as_ref().map_or(e.action.span(), Spanned::span),
                    "event.iommu",
                    format!(
                        "overflow of IOMMU '{}', which has no device bonded to a process: nothing would flood its page request queue",
                        e.iommu.as_ref().map_or("", |i| i.get_ref().as_str())
                    ),
                )
            }
            _ => Ok(()),
        }
    }

    /// An event gives every target field its action needs, and no other.
    fn event_fields(&self, e: &RawEvent) -> Result<(), ScenarioError> {
        let action = *e.action.get_ref();
        let given: [(&str, bool); 6] = [
            ("device", e.device.is_some()),
            ("process", e.process.is_some()),
            ("vma", e.vma.is_some()),
            ("owner", e.owner.is_some()),
            ("iommu", e.iommu.is_some()),
            ("prot", e.prot.is_some()),
        ];
        for (field, present) in given {
            let needed = action.needs().contains(&field);
            if needed && !present {
                return self.err(
                    &e.action.span(),
                    &format!("event.{field}"),
                    format!("action {action:?} needs {}", action.needs().join(", ")),
                );
            }
            if !needed && present {
                return self.err(
                    &e.action.span(),
                    &format!("event.{field}"),
                    format!(
                        "action {action:?} takes no {field} (it needs {})",
                        action.needs().join(", ")
                    ),
                );
            }
        }
        Ok(())
    }
}

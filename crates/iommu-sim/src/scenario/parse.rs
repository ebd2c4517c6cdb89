//! Validation: what serde cannot check — names unique, references resolvable, values in range,
//! jobs inside their VMAs, one trigger per event — each error naming the line, the field and
//! what was expected. One step per table of the file, in the file's order of dependence.

use std::collections::BTreeMap;

use toml::Spanned;

use super::fields::Ctx;
use super::raw::{RawBond, RawDevice, RawEvent, RawFile, RawIommu, RawJob, RawOwner, RawProcess};
use super::spec::{
    DeviceSpec, EventSpec, IommuSpec, JobSpec, JobTarget, ProcessSpec, Scenario, Trigger, VmaSpec,
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
    /// Parses and validates a scenario file's text.
    pub fn parse(src: &str) -> Result<Scenario, ScenarioError> {
        let cx = Ctx { src };
        let raw: RawFile = toml::from_str(src).map_err(|e| ScenarioError {
            line: e.span().map_or(0, |s| cx.line(&s)),
            field: "(file)".into(),
            message: e.message().trim().to_string(),
        })?;

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
        let owners = raw
            .owner
            .iter()
            .map(|o| cx.owner(o, &dev_names))
            .collect::<Result<Vec<_>, _>>()?;
        let names = Names {
            iommus: iommu_names,
            devices: dev_names,
            processes: proc_names,
            vmas: vma_names,
            owners: owner_names,
        };

        cx.names(raw.job.iter().map(|j| &j.name), "job.name")?;
        let jobs = raw
            .job
            .iter()
            .map(|j| cx.job(j, &names, &processes, &bonds))
            .collect::<Result<Vec<_>, _>>()?;
        let events = raw
            .event
            .iter()
            .map(|e| cx.event(e, &names))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Scenario {
            name: raw.scenario.name,
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
                ats: d.ats,
                pri: d.pri,
            });
        }
        Ok(devices)
    }

    /// The `[[process]]`es and their VMAs; returns them and each process's VMA names.
    fn processes(
        &self,
        raw: &[RawProcess],
    ) -> Result<(Vec<ProcessSpec>, Vec<NameMap>), ScenarioError> {
        let mut vma_names = Vec::new();
        let mut processes = Vec::new();
        for p in raw {
            let names = self.names(p.vma.iter().map(|v| &v.name), "process.vma.name")?;
            let vmas = p
                .vma
                .iter()
                .map(|v| {
                    Ok(VmaSpec {
                        name: v.name.get_ref().clone(),
                        size: self.size(&v.size, "process.vma.size", true)?,
                        prot: self.prot(&v.prot, "process.vma.prot")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            vma_names.push(names);
            processes.push(ProcessSpec {
                name: p.name.get_ref().clone(),
                vmas,
            });
        }
        Ok((processes, vma_names))
    }

    /// The `[[bond]]`s: each (device, process) once, the device and its IOMMU PASID-capable.
    fn bonds(
        &self,
        raw: &[RawBond],
        dev_names: &NameMap,
        proc_names: &NameMap,
        iommus: &[IommuSpec],
        devices: &[DeviceSpec],
    ) -> Result<Vec<(usize, usize)>, ScenarioError> {
        let mut bonds = Vec::new();
        for b in raw {
            let d = self.lookup(dev_names, &b.device, "bond.device", "device")?;
            let p = self.lookup(proc_names, &b.process, "bond.process", "process")?;
            if devices[d].pasid_bits == 0 || iommus[devices[d].iommu].pasid_bits == 0 {
                return self.err(&b.device.span(), "bond.device", format!(
                    "device '{}' has no PASID support: SVA needs pasid_bits > 0 on the device and its IOMMU",
                    devices[d].name
                ));
            }
            if bonds.contains(&(d, p)) {
                return self.err(
                    &b.device.span(),
                    "bond",
                    "the same (device, process) is bonded twice",
                );
            }
            bonds.push((d, p));
        }
        Ok(bonds)
    }

    /// An `[[owner]]`: (name, device index, fault-capable HWPT).
    fn owner(
        &self,
        o: &RawOwner,
        dev_names: &NameMap,
    ) -> Result<(String, usize, bool), ScenarioError> {
        Ok((
            o.name.get_ref().clone(),
            self.lookup(dev_names, &o.device, "owner.device", "device")?,
            o.fault,
        ))
    }

    /// A `[[job]]`: a known device, a non-zero length, and one target.
    fn job(
        &self,
        j: &RawJob,
        names: &Names,
        processes: &[ProcessSpec],
        bonds: &[(usize, usize)],
    ) -> Result<JobSpec, ScenarioError> {
        let device = self.lookup(&names.devices, &j.device, "job.device", "device")?;
        let len = self.size(&j.len, "job.len", false)?;
        if len == 0 {
            return self.err(&j.len.span(), "job.len", "expected a length above 0");
        }
        let offset = j
            .offset
            .as_ref()
            .map_or(Ok(0), |o| self.size(o, "job.offset", false))?;
        let target = match (&j.process, &j.owner) {
            (Some(p), None) => {
                let (pi, vi) = self.process_target(j, p, names, processes, (offset, len))?;
                if !bonds.contains(&(device, pi)) {
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
                JobTarget::Process(pi, vi)
            }
            (None, Some(o)) => {
                let oi = self.lookup(&names.owners, o, "job.owner", "owner")?;
                let iova = j
                    .iova
                    .as_ref()
                    .map_or(Ok(0), |i| self.size(i, "job.iova", false))?;
                JobTarget::Owner(oi, iova)
            }
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
            repeat: j.repeat,
        })
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

    /// An `[[event]]`: one trigger, exactly the targets its action needs, each resolvable.
    fn event(&self, e: &RawEvent, names: &Names) -> Result<EventSpec, ScenarioError> {
        let action = *e.action.get_ref();
        let trigger = match (&e.at_ms, &e.after_groups) {
            (Some(t), None) => Trigger::AtMs(*t.get_ref()),
            (None, Some(n)) => Trigger::AfterGroups(*n.get_ref()),
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
        Ok(EventSpec {
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
        })
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

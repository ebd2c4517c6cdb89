//! Scenario files: what a simulation run is made of, in TOML (format: `docs/scenarios.md`).
//!
//! Parsing is in two steps. `toml` + `serde` turn the text into raw records, rejecting syntax
//! errors, unknown fields, missing fields and wrong types with the line they are on. Then
//! [`Scenario::parse`] checks what serde cannot — names unique, references resolvable, values in
//! range, jobs inside their VMAs, one trigger per event — and every error names the line, the
//! field and what was expected. A file that fails any check runs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// A scenario file's error: where, which field, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// 1-based line of the offending value (0 when the file as a whole is wrong).
    pub line: usize,
    /// The field, as `table.field` (`device.iommu`).
    pub field: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.message)
    }
}

impl std::error::Error for ScenarioError {}

// ---- raw records, as serde reads them ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    scenario: RawHeader,
    #[serde(default)]
    iommu: Vec<RawIommu>,
    #[serde(default)]
    device: Vec<RawDevice>,
    #[serde(default)]
    process: Vec<RawProcess>,
    #[serde(default)]
    bond: Vec<RawBond>,
    #[serde(default)]
    owner: Vec<RawOwner>,
    #[serde(default)]
    job: Vec<RawJob>,
    #[serde(default)]
    event: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default = "one")]
    seed: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIommu {
    name: Spanned<String>,
    prq_depth: Option<Spanned<u64>>,
    iotlb_entries: Option<Spanned<u64>>,
    pasid_bits: Option<Spanned<u64>>,
    workers: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Spanned<String>,
    iommu: Spanned<String>,
    group: Option<Spanned<String>>,
    pasid_bits: Option<Spanned<u64>>,
    pri_credits: Option<Spanned<u64>>,
    #[serde(default = "yes")]
    ats: bool,
    #[serde(default = "yes")]
    pri: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    name: Spanned<String>,
    #[serde(default)]
    vma: Vec<RawVma>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVma {
    name: Spanned<String>,
    size: Spanned<RawSize>,
    prot: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBond {
    device: Spanned<String>,
    process: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    name: Spanned<String>,
    device: Spanned<String>,
    #[serde(default = "yes")]
    fault: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    device: Spanned<String>,
    op: Spanned<JobOp>,
    process: Option<Spanned<String>>,
    vma: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    iova: Option<Spanned<RawSize>>,
    offset: Option<Spanned<RawSize>>,
    len: Spanned<RawSize>,
    #[serde(default = "one")]
    repeat: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    action: Spanned<Action>,
    at_ms: Option<Spanned<u64>>,
    after_groups: Option<Spanned<u64>>,
    device: Option<Spanned<String>>,
    process: Option<Spanned<String>>,
    vma: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    iommu: Option<Spanned<String>>,
    prot: Option<Spanned<String>>,
}

fn one() -> u64 {
    1
}

fn yes() -> bool {
    true
}

// ---- the validated scenario ----

/// A DMA operation a job performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOp {
    /// Device reads memory.
    Read,
    /// Device writes a pattern.
    Write,
    /// Device fills with a byte.
    Fill,
    /// Device copies the first half of the range onto the second.
    Copy,
}

/// What an event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Unbind a device from a process (`device`, `process`).
    Unbind,
    /// The process exits (`process`).
    Exit,
    /// Unmap a VMA (`process`, `vma`).
    Munmap,
    /// Change a VMA's protection (`process`, `vma`, `prot`).
    Mprotect,
    /// Replace an iommufd owner's HWPT by one without a fault queue (`owner`).
    ReplaceHwpt,
    /// Reset a device with requests in flight (`device`).
    ResetDevice,
    /// Flood an IOMMU's page request queue until it overflows (`iommu`).
    Overflow,
}

impl Action {
    /// The target fields the action needs.
    fn needs(self) -> &'static [&'static str] {
        match self {
            Self::Unbind => &["device", "process"],
            Self::Exit => &["process"],
            Self::Munmap => &["process", "vma"],
            Self::Mprotect => &["process", "vma", "prot"],
            Self::ReplaceHwpt => &["owner"],
            Self::ResetDevice => &["device"],
            Self::Overflow => &["iommu"],
        }
    }
}

/// Memory protection of a VMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prot {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

/// An IOMMU instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuSpec {
    /// Unique name.
    pub name: String,
    /// Page request queue entries (VT-d: 2,048).
    pub prq_depth: u32,
    /// IOTLB entries.
    pub iotlb_entries: u32,
    /// PASID width in bits (0 to 20).
    pub pasid_bits: u32,
    /// IOPF queue worker threads.
    pub workers: u32,
}

/// A PCIe function behind an IOMMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Unique name.
    pub name: String,
    /// Index into [`Scenario::iommus`].
    pub iommu: usize,
    /// IOMMU group name; devices naming the same group share it.
    pub group: String,
    /// PASID width in bits (0: no PASID).
    pub pasid_bits: u32,
    /// Outstanding page request credits (PRI allocation).
    pub pri_credits: u32,
    /// Address Translation Services (a device TLB).
    pub ats: bool,
    /// Page Request Interface.
    pub pri: bool,
}

/// A VMA of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaSpec {
    /// Name, unique within its process.
    pub name: String,
    /// Bytes, a multiple of 4 KiB.
    pub size: u64,
    /// Protection.
    pub prot: Prot,
}

/// A process with lazily populated memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Unique name.
    pub name: String,
    /// Its VMAs.
    pub vmas: Vec<VmaSpec>,
}

/// What a job's addresses refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTarget {
    /// A VMA of a bound process, through SVA: (process, vma) indices.
    Process(usize, usize),
    /// An iommufd owner's IOVA space: (owner index, IOVA).
    Owner(usize, u64),
}

/// A DMA job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Unique name.
    pub name: String,
    /// Index into [`Scenario::devices`].
    pub device: usize,
    /// The operation.
    pub op: JobOp,
    /// Where it reads/writes.
    pub target: JobTarget,
    /// Offset into the VMA (process jobs).
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// How many times it runs.
    pub repeat: u64,
}

/// When an event fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Milliseconds after the start.
    AtMs(u64),
    /// After this many page request groups were answered.
    AfterGroups(u64),
}

/// A timed or count-triggered event; targets are indices into the scenario's lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// What happens.
    pub action: Action,
    /// When.
    pub trigger: Trigger,
    /// Target device.
    pub device: Option<usize>,
    /// Target process.
    pub process: Option<usize>,
    /// Target VMA (within `process`).
    pub vma: Option<usize>,
    /// Target iommufd owner.
    pub owner: Option<usize>,
    /// Target IOMMU.
    pub iommu: Option<usize>,
    /// New protection (mprotect).
    pub prot: Option<Prot>,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Seed for deterministic mode.
    pub seed: u64,
    /// IOMMUs.
    pub iommus: Vec<IommuSpec>,
    /// Devices.
    pub devices: Vec<DeviceSpec>,
    /// Processes.
    pub processes: Vec<ProcessSpec>,
    /// SVA bonds: (device, process) indices.
    pub bonds: Vec<(usize, usize)>,
    /// iommufd owners: (name, device index, fault-capable HWPT).
    pub owners: Vec<(String, usize, bool)>,
    /// DMA jobs.
    pub jobs: Vec<JobSpec>,
    /// Events.
    pub events: Vec<EventSpec>,
}

/// Turns byte offsets into line numbers and builds errors.
struct Ctx<'a> {
    src: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.src[..span.start.min(self.src.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: &Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(ScenarioError {
            line: self.line(span),
            field: field.into(),
            message: message.into(),
        })
    }

    fn range(&self, v: &Spanned<u64>, field: &str, lo: u64, hi: u64) -> Result<u32, ScenarioError> {
        let x = *v.get_ref();
        if x < lo || x > hi {
            return self.err(
                &v.span(),
                field,
                format!("{x} is out of range: expected {lo} to {hi}"),
            );
        }
        Ok(x as u32)
    }

    fn opt_range(
        &self,
        v: &Option<Spanned<u64>>,
        field: &str,
        lo: u64,
        hi: u64,
        default: u32,
    ) -> Result<u32, ScenarioError> {
        v.as_ref()
            .map_or(Ok(default), |v| self.range(v, field, lo, hi))
    }

    fn size(
        &self,
        v: &Spanned<RawSize>,
        field: &str,
        page_aligned: bool,
    ) -> Result<u64, ScenarioError> {
        let bytes = match v.get_ref() {
            RawSize::Bytes(b) => Some(*b),
            RawSize::Text(t) => parse_size(t),
        };
        let Some(bytes) = bytes else {
            return self.err(
                &v.span(),
                field,
                "not a size: expected bytes or a number with K, KiB, M, MiB, G or GiB",
            );
        };
        if page_aligned && (bytes == 0 || bytes % 4096 != 0) {
            return self.err(
                &v.span(),
                field,
                format!("{bytes} bytes: expected a non-zero multiple of 4 KiB"),
            );
        }
        Ok(bytes)
    }

    fn prot(&self, v: &Spanned<String>, field: &str) -> Result<Prot, ScenarioError> {
        let s = v.get_ref();
        let ok = !s.is_empty() && s.chars().all(|c| "rwx".contains(c)) && s.contains('r');
        let uniq: BTreeSet<char> = s.chars().collect();
        if !ok || uniq.len() != s.len() {
            return self.err(
                &v.span(),
                field,
                format!("'{s}': expected r, rw, rx or rwx"),
            );
        }
        Ok(Prot {
            read: true,
            write: s.contains('w'),
            exec: s.contains('x'),
        })
    }

    fn lookup(
        &self,
        names: &BTreeMap<String, usize>,
        v: &Spanned<String>,
        field: &str,
        what: &str,
    ) -> Result<usize, ScenarioError> {
        names.get(v.get_ref()).copied().map_or_else(
            || {
                let known: Vec<&str> = names.keys().map(String::as_str).collect();
                self.err(
                    &v.span(),
                    field,
                    format!(
                        "unknown {what} '{}' (expected one of: {})",
                        v.get_ref(),
                        known.join(", ")
                    ),
                )
            },
            Ok,
        )
    }

    fn names<'n>(
        &self,
        items: impl Iterator<Item = &'n Spanned<String>>,
        field: &str,
    ) -> Result<BTreeMap<String, usize>, ScenarioError> {
        let mut map = BTreeMap::new();
        for (i, n) in items.enumerate() {
            if n.get_ref().is_empty() {
                return self.err(&n.span(), field, "empty name");
            }
            if map.insert(n.get_ref().clone(), i).is_some() {
                return self.err(
                    &n.span(),
                    field,
                    format!("duplicate name '{}'", n.get_ref()),
                );
            }
        }
        Ok(map)
    }
}

fn parse_size(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
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
            .map(|i| {
                Ok(IommuSpec {
                    name: i.name.get_ref().clone(),
                    prq_depth: cx.opt_range(&i.prq_depth, "iommu.prq_depth", 1, 65_536, 2048)?,
                    iotlb_entries: cx.opt_range(
                        &i.iotlb_entries,
                        "iommu.iotlb_entries",
                        1,
                        1 << 20,
                        1024,
                    )?,
                    pasid_bits: cx.opt_range(&i.pasid_bits, "iommu.pasid_bits", 0, 20, 20)?,
                    workers: cx.opt_range(&i.workers, "iommu.workers", 1, 64, 2)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let dev_names = cx.names(raw.device.iter().map(|d| &d.name), "device.name")?;
        if raw.device.is_empty() {
            return cx.err(
                &(0..0),
                "device",
                "a scenario needs at least one [[device]]",
            );
        }
        let mut group_iommu: BTreeMap<String, usize> = BTreeMap::new();
        let mut devices = Vec::new();
        for d in &raw.device {
            let iommu = cx.lookup(&iommu_names, &d.iommu, "device.iommu", "IOMMU")?;
            let group = d.group.as_ref().unwrap_or(&d.name);
            if let Some(&other) = group_iommu.get(group.get_ref()) {
                if other != iommu {
                    return cx.err(
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
                pasid_bits: cx.opt_range(&d.pasid_bits, "device.pasid_bits", 0, 20, 20)?,
                pri_credits: cx.opt_range(&d.pri_credits, "device.pri_credits", 1, 512, 32)?,
                ats: d.ats,
                pri: d.pri,
            });
        }

        let proc_names = cx.names(raw.process.iter().map(|p| &p.name), "process.name")?;
        let mut vma_names = Vec::new();
        let mut processes = Vec::new();
        for p in &raw.process {
            let names = cx.names(p.vma.iter().map(|v| &v.name), "process.vma.name")?;
            let vmas = p
                .vma
                .iter()
                .map(|v| {
                    Ok(VmaSpec {
                        name: v.name.get_ref().clone(),
                        size: cx.size(&v.size, "process.vma.size", true)?,
                        prot: cx.prot(&v.prot, "process.vma.prot")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            vma_names.push(names);
            processes.push(ProcessSpec {
                name: p.name.get_ref().clone(),
                vmas,
            });
        }

        let mut bonds = Vec::new();
        for b in &raw.bond {
            let d = cx.lookup(&dev_names, &b.device, "bond.device", "device")?;
            let p = cx.lookup(&proc_names, &b.process, "bond.process", "process")?;
            if devices[d].pasid_bits == 0 || iommus[devices[d].iommu].pasid_bits == 0 {
                return cx.err(&b.device.span(), "bond.device", format!(
                    "device '{}' has no PASID support: SVA needs pasid_bits > 0 on the device and its IOMMU",
                    devices[d].name
                ));
            }
            if bonds.contains(&(d, p)) {
                return cx.err(
                    &b.device.span(),
                    "bond",
                    "the same (device, process) is bonded twice",
                );
            }
            bonds.push((d, p));
        }

        let owner_names = cx.names(raw.owner.iter().map(|o| &o.name), "owner.name")?;
        let owners = raw
            .owner
            .iter()
            .map(|o| {
                Ok((
                    o.name.get_ref().clone(),
                    cx.lookup(&dev_names, &o.device, "owner.device", "device")?,
                    o.fault,
                ))
            })
            .collect::<Result<Vec<_>, ScenarioError>>()?;

        cx.names(raw.job.iter().map(|j| &j.name), "job.name")?;
        let mut jobs = Vec::new();
        for j in &raw.job {
            let device = cx.lookup(&dev_names, &j.device, "job.device", "device")?;
            let len = cx.size(&j.len, "job.len", false)?;
            if len == 0 {
                return cx.err(&j.len.span(), "job.len", "expected a length above 0");
            }
            let offset = j
                .offset
                .as_ref()
                .map_or(Ok(0), |o| cx.size(o, "job.offset", false))?;
            let target = match (&j.process, &j.owner) {
                (Some(p), None) => {
                    let pi = cx.lookup(&proc_names, p, "job.process", "process")?;
                    let Some(v) = &j.vma else {
                        return cx.err(&p.span(), "job.vma", "a process job needs a vma");
                    };
                    let vi = cx.lookup(&vma_names[pi], v, "job.vma", "VMA")?;
                    let size = processes[pi].vmas[vi].size;
                    if offset.checked_add(len).is_none_or(|end| end > size) {
                        return cx.err(
                            &j.len.span(),
                            "job.len",
                            format!(
                                "offset {offset} + len {len} runs past VMA '{}' ({size} bytes)",
                                v.get_ref()
                            ),
                        );
                    }
                    if !bonds.contains(&(device, pi)) {
                        return cx.err(
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
                    let oi = cx.lookup(&owner_names, o, "job.owner", "owner")?;
                    let iova = j
                        .iova
                        .as_ref()
                        .map_or(Ok(0), |i| cx.size(i, "job.iova", false))?;
                    JobTarget::Owner(oi, iova)
                }
                _ => {
                    return cx.err(
                        &j.name.span(),
                        "job",
                        "expected exactly one of process (with vma) or owner",
                    )
                }
            };
            jobs.push(JobSpec {
                name: j.name.get_ref().clone(),
                device,
                op: *j.op.get_ref(),
                target,
                offset,
                len,
                repeat: j.repeat,
            });
        }

        let mut events = Vec::new();
        for e in &raw.event {
            let action = *e.action.get_ref();
            let trigger = match (&e.at_ms, &e.after_groups) {
                (Some(t), None) => Trigger::AtMs(*t.get_ref()),
                (None, Some(n)) => Trigger::AfterGroups(*n.get_ref()),
                _ => {
                    return cx.err(
                        &e.action.span(),
                        "event",
                        "expected exactly one trigger: at_ms or after_groups",
                    )
                }
            };
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
                    return cx.err(
                        &e.action.span(),
                        &format!("event.{field}"),
                        format!("action {action:?} needs {}", action.needs().join(", ")),
                    );
                }
                if !needed && present {
                    return cx.err(
                        &e.action.span(),
                        &format!("event.{field}"),
                        format!(
                            "action {action:?} takes no {field} (it needs {})",
                            action.needs().join(", ")
                        ),
                    );
                }
            }
            let process = e
                .process
                .as_ref()
                .map(|p| cx.lookup(&proc_names, p, "event.process", "process"))
                .transpose()?;
            let vma = match (&e.vma, process) {
                (Some(v), Some(pi)) => Some(cx.lookup(&vma_names[pi], v, "event.vma", "VMA")?),
                _ => None,
            };
            events.push(EventSpec {
                action,
                trigger,
                device: e
                    .device
                    .as_ref()
                    .map(|d| cx.lookup(&dev_names, d, "event.device", "device"))
                    .transpose()?,
                process,
                vma,
                owner: e
                    .owner
                    .as_ref()
                    .map(|o| cx.lookup(&owner_names, o, "event.owner", "owner"))
                    .transpose()?,
                iommu: e
                    .iommu
                    .as_ref()
                    .map(|i| cx.lookup(&iommu_names, i, "event.iommu", "IOMMU"))
                    .transpose()?,
                prot: e
                    .prot
                    .as_ref()
                    .map(|p| cx.prot(p, "event.prot"))
                    .transpose()?,
            });
        }

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

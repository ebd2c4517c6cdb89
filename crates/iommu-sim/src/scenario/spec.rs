//! The validated scenario: what a run is made of, every reference already resolved to an
//! index and every value in range (what [`Scenario::parse`] returns).

use serde::Deserialize;

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
    pub(super) fn needs(self) -> &'static [&'static str] {
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

impl JobSpec {
    /// Bytes one run of the job moves when it is `len` bytes long: a copy reads half its
    /// length and writes the other half.
    pub fn span(&self, len: u64) -> u64 {
        if self.op == JobOp::Copy {
            len / 2
        } else {
            len
        }
    }
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

impl EventSpec {
    /// Whether this event, once fired, cuts job `j` short or changes the memory under it: the
    /// job's failure is then expected and its data is not compared.
    pub fn cuts_short(&self, j: &JobSpec) -> bool {
        match (self.action, &j.target) {
            (Action::ResetDevice, _) => self.device == Some(j.device),
            (Action::ReplaceHwpt, JobTarget::Owner(o, _)) => self.owner == Some(*o),
            (Action::Exit, JobTarget::Process(p, _)) => self.process == Some(*p),
            (Action::Unbind, JobTarget::Process(p, _)) => {
                self.process == Some(*p) && self.device == Some(j.device)
            }
            (Action::Munmap | Action::Mprotect, JobTarget::Process(p, v)) => {
                self.process == Some(*p) && self.vma == Some(*v)
            }
            _ => false,
        }
    }
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

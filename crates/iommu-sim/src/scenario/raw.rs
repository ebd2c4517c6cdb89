//! A scenario file as serde reads it: one record shape per TOML table, unknown fields refused,
//! names and values kept with their byte spans (`Spanned`) so validation can name the line.

use serde::Deserialize;
use toml::Spanned;

use super::spec::{Action, JobOp};

/// The whole file: one `[scenario]` header and arrays of tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) scenario: RawHeader,
    #[serde(default)]
    pub(super) iommu: Vec<RawIommu>,
    #[serde(default)]
    pub(super) device: Vec<RawDevice>,
    #[serde(default)]
    pub(super) process: Vec<RawProcess>,
    #[serde(default)]
    pub(super) bond: Vec<RawBond>,
    #[serde(default)]
    pub(super) owner: Vec<RawOwner>,
    #[serde(default)]
    pub(super) job: Vec<RawJob>,
    #[serde(default)]
    pub(super) event: Vec<RawEvent>,
}

/// `[scenario]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub(super) name: Spanned<String>,
    #[serde(default = "one")]
    pub(super) seed: u64,
}

/// `[[iommu]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIommu {
    pub(super) name: Spanned<String>,
    pub(super) prq_depth: Option<Spanned<u64>>,
    pub(super) iotlb_entries: Option<Spanned<u64>>,
    pub(super) pasid_bits: Option<Spanned<u64>>,
    pub(super) workers: Option<Spanned<u64>>,
}

/// `[[device]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub(super) name: Spanned<String>,
    pub(super) iommu: Spanned<String>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) pasid_bits: Option<Spanned<u64>>,
    pub(super) pri_credits: Option<Spanned<u64>>,
    pub(super) ats: Option<Spanned<bool>>,
    pub(super) pri: Option<Spanned<bool>>,
}

/// `[[process]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) vma: Vec<RawVma>,
}

/// `[[process.vma]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVma {
    pub(super) name: Spanned<String>,
    pub(super) size: Spanned<RawSize>,
    pub(super) prot: Spanned<String>,
}

/// A size: bytes, or text with a unit (`64K`, `2 MiB`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `[[bond]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBond {
    pub(super) device: Spanned<String>,
    pub(super) process: Spanned<String>,
}

/// `[[owner]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOwner {
    pub(super) name: Spanned<String>,
    pub(super) device: Spanned<String>,
    pub(super) fault: Option<Spanned<bool>>,
}

/// `[[job]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) name: Spanned<String>,
    pub(super) device: Spanned<String>,
    pub(super) op: Spanned<JobOp>,
    pub(super) process: Option<Spanned<String>>,
    pub(super) vma: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) iova: Option<Spanned<RawSize>>,
    pub(super) offset: Option<Spanned<RawSize>>,
    pub(super) len: Spanned<RawSize>,
    pub(super) repeat: Option<Spanned<u64>>,
}

/// `[[event]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvent {
    pub(super) action: Spanned<Action>,
    pub(super) at_ms: Option<Spanned<u64>>,
    pub(super) after_groups: Option<Spanned<u64>>,
    pub(super) device: Option<Spanned<String>>,
    pub(super) process: Option<Spanned<String>>,
    pub(super) vma: Option<Spanned<String>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) iommu: Option<Spanned<String>>,
    pub(super) prot: Option<Spanned<String>>,
}

/// The default seed.
fn one() -> u64 {
    1
}

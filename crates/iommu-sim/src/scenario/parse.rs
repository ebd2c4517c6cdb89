//! Validation: what serde cannot check — names unique, references resolvable, values in range,
//! jobs inside their VMAs, one trigger per event — each error naming the line, the field and
//! what was expected. One step per table of the file, in the file's order of dependence.

use std::collections::BTreeMap;

use super::fields::Ctx;
use super::limits::MAX_FILE_BYTES;
use super::raw::RawFile;
use super::spec::{DeviceSpec, ProcessSpec, Scenario};
use super::ScenarioError;

/// A name's index in its list, per kind of name (VMA names per process).
pub(super) type NameMap = BTreeMap<String, usize>;

/// The names references resolve against, once every table that defines one was read.
pub(super) struct Names {
    pub(super) iommus: NameMap,
    pub(super) devices: NameMap,
    pub(super) processes: NameMap,
    /// Per process.
    pub(super) vmas: Vec<NameMap>,
    pub(super) owners: NameMap,
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

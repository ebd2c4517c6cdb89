//! Scenario files: what a simulation run is made of, in TOML (format: `docs/scenarios.md`).
//!
//! Parsing is in two steps. `toml` + `serde` turn the text into raw records, rejecting syntax
//! errors, unknown fields, missing fields and wrong types with the line they are on. Then
//! [`Scenario::parse`] checks what serde cannot — names unique, references resolvable, values in
//! range, jobs inside their VMAs, one trigger per event — and every error names the line, the
//! field and what was expected. A file that fails any check runs nothing.

mod fields;
mod parse;
mod raw;
mod spec;

use std::fmt;

pub use spec::{
    Action, DeviceSpec, EventSpec, IommuSpec, JobOp, JobSpec, JobTarget, ProcessSpec, Prot,
    Scenario, Trigger, VmaSpec,
};

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

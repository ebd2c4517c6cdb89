//! Scenario files: what a simulation run is made of, in TOML (format: `docs/scenarios.md`).
//!
//! Parsing is in two steps. `toml` + `serde` turn the text into raw records, rejecting syntax
//! errors, unknown fields, missing fields and wrong types with the line they are on. Then
//! [`Scenario::parse`] checks what serde cannot — names unique, references resolvable, values in
//! range, jobs inside their VMAs, one trigger per event — and every error names the line, the
//! field and what was expected. A file that fails any check runs nothing: every configuration
//! the engine would refuse or run into a violation is refused here, so `check` and `run` agree.
//! What a file may size is bounded ([`limits`]), and [`read_text`] reads at most
//! [`limits::MAX_FILE_BYTES`] of a regular file.

mod events;
mod fields;
mod jobs;
pub mod limits;
mod parse;
mod raw;
mod rules;
mod spec;
mod topology;

use std::fmt;
use std::io::Read;
use std::path::Path;

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

/// Reads a scenario file's text: a regular file (a device, FIFO or directory is refused before
/// it is opened, so neither `/dev/zero` nor a FIFO can exhaust memory or hang), at most
/// [`limits::MAX_FILE_BYTES`], UTF-8. `Err` says why, for the command line.
pub fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("cannot read: not a regular file".into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(limits::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limits::MAX_FILE_BYTES {
        return Err(format!(
            "more than {} bytes (4 MiB): a scenario file is at most that",
            limits::MAX_FILE_BYTES
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

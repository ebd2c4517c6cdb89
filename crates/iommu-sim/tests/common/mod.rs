//! What the integration tests share: the binary under test, the shipped scenarios, a run in
//! either mode, and scenario text built from the tables most tests repeat.

#![allow(
    dead_code,
    reason = "each test binary includes this module and uses only part of it, so `expect` \
              would be unfulfilled in some of them"
)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};

use iommu_sim::engine::{run, Mode, RunOptions};
use iommu_sim::report::RunReport;
use iommu_sim::scenario::Scenario;

/// Runs the `iommu-sim` binary with `args`.
pub fn iommu_sim<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_iommu-sim"))
        .args(args)
        .output()
        .expect("run iommu-sim")
}

/// Runs the binary with `args`, asserts that it failed, and returns what it said on stderr.
#[track_caller]
pub fn refused<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = iommu_sim(args);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh directory for one test's files, unique to this test process.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iommu-sim-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir
}

/// The shipped scenarios (`scenarios/*.toml` at the workspace root).
pub fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

/// The text of shipped scenario `name`.
pub fn shipped(name: &str) -> String {
    std::fs::read_to_string(scenarios_dir().join(name)).expect("read scenario")
}

/// Runs `s` in `mode` with every job divided by `scale`, tracing on.
pub fn run_scenario(s: &Scenario, scale: u64, mode: Mode) -> RunReport {
    let opts = RunOptions {
        scale,
        trace: true,
        mode,
        ..RunOptions::default()
    };
    run(s, &opts)
}

/// Scenario text, one table at a time, laid out as a person writes it: a blank line before
/// each table, one `key = value` a line.
pub struct ScenarioText(String);

impl ScenarioText {
    /// The `[scenario]` header and one `[[iommu]]`.
    pub fn new(name: &str, iommu: &str) -> Self {
        ScenarioText(format!(
            "\n[scenario]\nname = \"{name}\"\n\n[[iommu]]\nname = \"{iommu}\"\n"
        ))
    }

    /// A `[[device]]` behind `iommu`, then its `extra` lines.
    pub fn device(self, name: &str, iommu: &str, extra: &[&str]) -> Self {
        self.table(
            "device",
            &[
                &format!("name = \"{name}\""),
                &format!("iommu = \"{iommu}\""),
            ],
        )
        .lines(extra)
    }

    /// A `[[process]]` with its VMAs, (name, size) each, all `rw`.
    pub fn process(self, name: &str, vmas: &[(&str, &str)]) -> Self {
        let vmas: Vec<String> = vmas
            .iter()
            .map(|(v, size)| format!("{{ name = \"{v}\", size = \"{size}\", prot = \"rw\" }}"))
            .collect();
        self.table(
            "process",
            &[
                &format!("name = \"{name}\""),
                &format!("vma = [{}]", vmas.join(", ")),
            ],
        )
    }

    /// A `[[bond]]` of `device` to `process`.
    pub fn bond(self, device: &str, process: &str) -> Self {
        self.table(
            "bond",
            &[
                &format!("device = \"{device}\""),
                &format!("process = \"{process}\""),
            ],
        )
    }

    /// A `[[job]]` of `device` on VMA `vma` of `process`, then its `extra` lines.
    pub fn job(
        self,
        name: &str,
        device: &str,
        op: &str,
        (process, vma): (&str, &str),
        len: &str,
        extra: &[&str],
    ) -> Self {
        self.table(
            "job",
            &[
                &format!("name = \"{name}\""),
                &format!("device = \"{device}\""),
                &format!("op = \"{op}\""),
                &format!("process = \"{process}\""),
                &format!("vma = \"{vma}\""),
                &format!("len = \"{len}\""),
            ],
        )
        .lines(extra)
    }

    /// An `[[event]]`: its action, then its other lines (trigger and targets).
    pub fn event(self, action: &str, lines: &[&str]) -> Self {
        self.table("event", &[&format!("action = \"{action}\"")])
            .lines(lines)
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.0
    }

    fn table(mut self, name: &str, lines: &[&str]) -> Self {
        let _ = write!(self.0, "\n[[{name}]]\n");
        self.lines(lines)
    }

    fn lines(mut self, lines: &[&str]) -> Self {
        for l in lines {
            self.0.push_str(l);
            self.0.push('\n');
        }
        self
    }
}

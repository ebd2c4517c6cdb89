//! Fuzzer of the scenario parser (issue 11, item 5c): arbitrary text and mutated scenario files
//! (numbers and sizes pushed to extremes, tables removed or duplicated, lines dropped, control
//! characters injected into strings, files cut short).
//!
//! * `check` never panics: `Scenario::parse` (what `iommu-sim check` and `run` call) returns a
//!   scenario or an error naming a line and a field, for any input.
//! * `check` and `run` agree: a file `check` accepts runs in deterministic mode at a tiny scale
//!   with every invariant held and within a bounded time (DESIGN §4: a bad file is refused as a
//!   whole, before anything runs).
//!
//! Cases: `PROPTEST_CASES` (defaults below, sized for CI); see docs/fuzzing.md.

use std::sync::mpsc;
use std::time::Duration;

use iommu_sim::engine::{run, Mode, RunOptions};
use iommu_sim::scenario::Scenario;
use proptest::prelude::*;
use proptest::test_runner::Config;

const FILES: [&str; 3] = [
    include_str!("../../../scenarios/default.toml"),
    include_str!("../../../scenarios/overflow.toml"),
    include_str!("../../../scenarios/sva-two-devices.toml"),
];

/// Numbers a hostile file writes.
const EXTREMES: [&str; 14] = [
    "0",
    "1",
    "-1",
    "255",
    "4096",
    "65536",
    "1048576",
    "2147483647",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "99999999999999999999999",
    "1e308",
    "nan",
];

/// Size units, including ones the parser may not know.
const UNITS: [&str; 8] = ["B", "KiB", "MiB", "GiB", "TiB", "EiB", "", "kb"];

/// Text injected at the start of a string value: escapes TOML accepts (control characters,
/// an ANSI escape, a line break, a bidi override) and raw control characters it refuses.
const INJECT: [&str; 8] = [
    "\\u001b[31m",
    "\\n",
    "\\u0000",
    "\\r",
    "\\u202e",
    "\u{7}",
    "\r",
    "\\t\\b\\f",
];

#[derive(Debug, Clone)]
enum Mutation {
    Number { pick: usize, value: usize },
    Unit { pick: usize, unit: usize },
    RemoveTable { pick: usize },
    DuplicateTable { pick: usize },
    DeleteLine { pick: usize },
    Inject { pick: usize, what: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pick = 0usize..10_000;
    prop_oneof![
        6 => (pick.clone(), 0..EXTREMES.len()).prop_map(|(pick, value)| Mutation::Number { pick, value }),
        2 => (pick.clone(), 0..UNITS.len()).prop_map(|(pick, unit)| Mutation::Unit { pick, unit }),
        2 => pick.clone().prop_map(|pick| Mutation::RemoveTable { pick }),
        2 => pick.clone().prop_map(|pick| Mutation::DuplicateTable { pick }),
        1 => pick.clone().prop_map(|pick| Mutation::DeleteLine { pick }),
        2 => (pick, 0..INJECT.len()).prop_map(|(pick, what)| Mutation::Inject { pick, what }),
        1 => (0usize..10_000).prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// Byte ranges of the maximal digit runs of `text`.
fn digit_runs(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Line ranges `[start, end)` of each table: a header line up to the next header.
fn tables(lines: &[&str]) -> Vec<(usize, usize)> {
    let heads: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with('['))
        .collect();
    heads
        .iter()
        .enumerate()
        .map(|(k, &s)| (s, heads.get(k + 1).copied().unwrap_or(lines.len())))
        .collect()
}

fn apply(text: &str, m: &Mutation) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let join = |v: Vec<&str>| v.join("\n") + "\n";
    match *m {
        Mutation::Number { pick, value } => {
            let runs = digit_runs(text);
            if runs.is_empty() {
                return text.to_string();
            }
            let (s, e) = runs[pick % runs.len()];
            format!("{}{}{}", &text[..s], EXTREMES[value], &text[e..])
        }
        Mutation::Unit { pick, unit } => {
            let at: Vec<usize> = text.match_indices("iB\"").map(|(i, _)| i - 1).collect();
            if at.is_empty() {
                return text.to_string();
            }
            let s = at[pick % at.len()];
            format!("{}{}{}", &text[..s], UNITS[unit], &text[s + 3..])
        }
        Mutation::RemoveTable { pick } | Mutation::DuplicateTable { pick } => {
            let t = tables(&lines);
            if t.is_empty() {
                return text.to_string();
            }
            let (s, e) = t[pick % t.len()];
            let mut v: Vec<&str> = lines[..s].to_vec();
            if matches!(m, Mutation::DuplicateTable { .. }) {
                v.extend(&lines[s..e]);
                v.extend(&lines[s..e]);
            }
            v.extend(&lines[e..]);
            join(v)
        }
        Mutation::DeleteLine { pick } => {
            let mut v = lines.clone();
            if !v.is_empty() {
                v.remove(pick % v.len());
            }
            join(v)
        }
        Mutation::Inject { pick, what } => {
            let at: Vec<usize> = text.match_indices("= \"").map(|(i, _)| i + 3).collect();
            if at.is_empty() {
                return text.to_string();
            }
            let s = at[pick % at.len()];
            format!("{}{}{}", &text[..s], INJECT[what], &text[s..])
        }
        Mutation::Truncate { at } => {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text[..at].to_string()
        }
    }
}

fn mutated() -> impl Strategy<Value = String> {
    (0..FILES.len(), prop::collection::vec(mutation(), 1..5)).prop_map(|(f, ms)| {
        ms.iter()
            .fold(FILES[f].to_string(), |text, m| apply(&text, m))
    })
}

/// Any text, as `check` reads it (a file is read as UTF-8; invalid bytes are refused before
/// parsing, so lossy decoding covers what reaches the parser).
fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[\\[\\]a-z_=\" 0-9.{},\n#-]{0,400}",
    ]
}

/// `PROPTEST_CASES`, else `release` in release builds (`.ci/run`'s fuzz step) and a tenth of it
/// in the debug build of `cargo test --workspace`.
fn cases(release: u32) -> u32 {
    let default = if cfg!(debug_assertions) {
        release / 10
    } else {
        release
    };
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a run of an accepted file must never take: the longest honest run at a tiny scale is
/// well under a second here. This bounds a hang, it measures nothing.
const RUN_BOUND: Duration = Duration::from_secs(60);

/// Runs `scenario` in deterministic mode at a tiny scale on its own thread; `Err` on a panic,
/// a failed invariant, or a run past [`RUN_BOUND`].
fn run_tiny(scenario: Scenario) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("fuzz-run".into())
        .spawn(move || {
            let opts = RunOptions {
                scale: u64::MAX,
                trace: false,
                mode: Mode::Deterministic { seed: 7 },
                progress: false,
            };
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&scenario, &opts)));
            let _ = tx.send(r.map(|report| {
                report
                    .invariants
                    .as_ref()
                    .map(|c| (c.passed(), report.text()))
            }));
        })
        .map_err(|e| format!("cannot spawn: {e}"))?;
    match rx.recv_timeout(RUN_BOUND) {
        Ok(Ok(Some((true, _)))) => Ok(()),
        Ok(Ok(Some((false, text)))) => Err(format!("run failed its invariants:\n{text}")),
        Ok(Ok(None)) => Err("run checked no invariants".into()),
        Ok(Err(_)) => Err("run panicked".into()),
        Err(_) => Err(format!("run still going after {RUN_BOUND:?}")),
    }
}

proptest! {
    #![proptest_config(Config { cases: cases(20_000), ..Config::default() })]

    /// `check` never panics, whatever the text; a refusal names a field.
    #[test]
    fn check_never_panics_on_any_text(text in prop_oneof![arbitrary_text(), mutated()]) {
        if let Err(e) = Scenario::parse(&text) {
            prop_assert!(!e.field.is_empty() && !e.message.is_empty(), "{:?}", e);
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: cases(64), max_shrink_iters: 64, ..Config::default() })]

    /// A file `check` accepts runs, deterministically and at a tiny scale, with every invariant
    /// held and in bounded time. (Files with large declared VMAs used to pass `check` and then
    /// panic in `PhysMem::new` or run past the bound, because physical memory was sized by the
    /// declaration: the case is in fuzz_scenario.proptest-regressions and in
    /// `a_large_lazy_vma_runs_at_a_tiny_scale`.)
    #[test]
    fn every_file_check_accepts_runs(text in mutated()) {
        if let Ok(scenario) = Scenario::parse(&text) {
            if let Err(e) = run_tiny(scenario) {
                prop_assert!(false, "{}\n--- file ---\n{}", e, text);
            }
        }
    }
}

/// The unmutated files are the baseline of both properties: accepted, and they run.
#[test]
fn the_shipped_scenarios_pass_check_and_run_tiny() {
    for text in FILES {
        let s = Scenario::parse(text).expect("shipped scenario");
        run_tiny(s).unwrap();
    }
}

/// Found by the fuzzer: a scenario whose VMA is declared large passes `check`, but `run` at a
/// tiny scale (one page per job) sizes physical memory by the declaration: with `1048576GiB`
/// (1 PiB) it panicked in `PhysMem::new` (ENOMEM from the host); under a memory limit a
/// `4096MiB` VMA did the same, and one sequence ran past [`RUN_BOUND`]. Physical memory now
/// follows use.
#[test]
fn a_large_lazy_vma_runs_at_a_tiny_scale() {
    // 32 TiB: validation now refuses more than 64 TiB per process (1 PiB was the finding).
    let text = FILES[0].replacen("size = \"8MiB\"", "size = \"32768GiB\"", 1);
    assert_ne!(text, FILES[0]);
    let s = Scenario::parse(&text).expect("check accepts it");
    run_tiny(s).unwrap();
}

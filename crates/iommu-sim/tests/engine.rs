//! The threads-mode engine: every shipped scenario runs and every invariant holds, events that
//! break a running job are expected failures (not violations), and the `run FILE` command line.

mod common;

use std::ffi::OsStr;

use common::{iommu_sim, run_scenario, scenarios_dir, scratch_dir, shipped, ScenarioText};
use iommu_sim::engine::Mode;
use iommu_sim::invariants::{CheckReport, Invariant};
use iommu_sim::report::RunReport;
use iommu_sim::scenario::Scenario;

/// Runs scenario `text` in threads mode.
fn run_text(text: &str, scale: u64) -> RunReport {
    let s = Scenario::parse(text).unwrap_or_else(|e| panic!("scenario: {e}"));
    run_scenario(&s, scale, Mode::Threads)
}

/// Runs shipped scenario `name` in threads mode.
fn run_file(name: &str, scale: u64) -> RunReport {
    run_text(&shipped(name), scale)
}

/// Every group sent was accounted for, one way each, and the report says so.
#[track_caller]
fn assert_reconciles(r: &RunReport) {
    let l = &r.groups_ledger;
    assert!(l.sent > 0, "no page request group was sent:\n{}", r.text());
    assert!(l.reconciles(), "{l:?}\n{}", r.text());
    assert_eq!(l.accounted(), l.sent);
    assert_eq!(r.json()["page_request_groups"]["reconciles"], true);
    assert!(r.text().contains("(reconciles)"), "{}", r.text());
    let inv = r.invariants.as_ref().expect("checked");
    assert_eq!(inv.count(Invariant::EveryGroupAccounted), 0);
}

fn assert_passed(r: &RunReport) {
    let inv = r.invariants.as_ref().expect("invariants checked");
    assert!(inv.passed(), "{}", r.text());
    assert_eq!(r.mode, "threads");
    assert_reconciles(r);
    // Threads mode is not reproducible: it has no seed, in the text or the JSON.
    assert_eq!(r.seed, None);
    assert!(r.json().get("seed").is_none());
    assert!(!r.text().contains("seed"), "{}", r.text());
}

#[test]
fn every_shipped_scenario_passes_every_invariant() {
    let mut seen = 0;
    for entry in std::fs::read_dir(scenarios_dir()).expect("scenarios/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Debug builds are slow: shrink the jobs (the events and topology stay as shipped).
        let r = run_file(&name, 8);
        assert_passed(&r);
        assert_eq!(
            r.trace.iter().filter(|t| t.category == "job").count() as u64,
            r.jobs
        );
        seen += 1;
    }
    assert!(seen >= 3, "found only {seen} scenarios");
}

#[test]
fn every_shipped_scenario_passes_in_deterministic_mode() {
    for name in ["default.toml", "sva-two-devices.toml", "overflow.toml"] {
        let s = Scenario::parse(&shipped(name)).expect("scenario");
        let r = run_scenario(&s, 8, Mode::Deterministic { seed: 11 });
        let inv = r.invariants.as_ref().expect("invariants checked");
        assert!(inv.passed(), "{name}:\n{}", r.text());
        assert_reconciles(&r);
        assert!(r.counters["scheduler/steps"] > 0);
    }
}

#[test]
fn sva_two_devices_verifies_both_jobs() {
    let r = run_file("sva-two-devices.toml", 4);
    assert_passed(&r);
    assert_eq!(r.bytes, 4 << 20);
    assert_eq!(r.counters["requests/sva_pages_faulted_in"], 1024);
    assert!(!r.latency["dma_job"].is_empty());
}

#[test]
fn default_scenario_drives_sva_and_iommufd_faults() {
    let r = run_file("default.toml", 1);
    assert_passed(&r);
    assert!(
        r.counters["requests/sva_pages_faulted_in"] > 0,
        "{}",
        r.text()
    );
    assert_eq!(r.counters["iommufd/handler_errors"], 0, "{}", r.text());
    // Whether the VMM's job faults before the HWPT replace cuts it short is a race in threads
    // mode (the SVA jobs can reach the event's group count within a millisecond of the start,
    // before the VMM's DMA thread runs); deterministic mode settles it the same way every run.
    let s = Scenario::parse(&shipped("default.toml")).unwrap();
    let d = run_scenario(&s, 1, Mode::Deterministic { seed: 1 });
    assert!(
        d.invariants.as_ref().is_some_and(|i| i.passed()),
        "{}",
        d.text()
    );
    assert_reconciles(&d);
    assert!(
        d.counters["requests/iommufd_records_read"] > 0,
        "{}",
        d.text()
    );
    // The five timed events always fire; the two count-triggered ones only if the jobs (which
    // the timed events may cut short) produce 200 and 400 groups first.
    assert!(r.counters["events/fired"] >= 5, "{}", r.text());
}

#[test]
fn overflow_scenario_overflows_and_loses_nothing() {
    let r = run_file("overflow.toml", 1);
    assert_passed(&r);
    assert!(r.counters["prq/overflows"] > 0, "{}", r.text());
    // The IOMMU answered what it could not queue: each such group is in the ledger.
    assert_eq!(
        r.groups_ledger.iommu_overflow,
        r.counters["prq/overflow_responses"],
        "{}",
        r.text()
    );
    assert_eq!(r.bytes, 8 << 20);
}

/// One device writing 4 x 32 MiB into a VMA that is unmapped after 4 groups.
fn munmap_while_running() -> ScenarioText {
    ScenarioText::new("munmap-while-running", "iommu0")
        .device("dev0", "iommu0", &["pri_credits = 8"])
        .process("p", &[("buf", "32MiB")])
        .bond("dev0", "p")
        .job(
            "big-write",
            "dev0",
            "write",
            ("p", "buf"),
            "32MiB",
            &["repeat = 4"],
        )
        .event(
            "munmap",
            &["after_groups = 4", "process = \"p\"", "vma = \"buf\""],
        )
}

/// Asserts that every invariant held and that exactly one job failed, explained by an event.
#[track_caller]
fn assert_one_expected_failure(r: &RunReport) -> &CheckReport {
    let inv = r.invariants.as_ref().expect("invariants");
    assert!(inv.passed(), "{}", r.text());
    assert_eq!(r.counters["dma/expected_failures"], 1, "{}", r.text());
    inv
}

#[test]
fn munmap_while_job_runs_is_an_expected_failure_not_a_violation() {
    let r = run_text(munmap_while_running().text(), 1);
    // 128 MiB of writes in 256 KiB chunks cannot finish before 4 groups are answered.
    let inv = assert_one_expected_failure(&r);
    assert_eq!(r.counters["events/fired"], 1);
    assert!(r.bytes < 128 << 20);
    // The job was affected: it is not verified, so no JobVerified and no data violation.
    assert_eq!(inv.count(Invariant::DataVerified), 0);
}

/// Two devices bonded to one process; the first is unbound after 4 groups, mid-job. The long
/// job repeats 64 times (1 GiB of fills, well over 100 ms) so that the event thread, which
/// polls every millisecond, fires before it ends even on a loaded machine (with 8 repeats it
/// sometimes finished first).
fn unbind_while_running() -> ScenarioText {
    ScenarioText::new("unbind-while-running", "iommu0")
        .device("dev0", "iommu0", &[])
        .device("dev1", "iommu0", &[])
        .process("p", &[("a", "16MiB"), ("b", "4MiB")])
        .bond("dev0", "p")
        .bond("dev1", "p")
        .job(
            "long",
            "dev0",
            "fill",
            ("p", "a"),
            "16MiB",
            &["repeat = 64"],
        )
        .job("other-device", "dev1", "write", ("p", "b"), "4MiB", &[])
        .event(
            "unbind",
            &["after_groups = 4", "device = \"dev0\"", "process = \"p\""],
        )
}

#[test]
fn unbind_while_job_runs_stops_its_dma_and_spares_the_other_device() {
    let r = run_text(unbind_while_running().text(), 1);
    let inv = assert_one_expected_failure(&r);
    assert_eq!(inv.count(Invariant::NoDmaAfterUnbind), 0);
}

#[test]
fn run_file_command_writes_outputs_and_exits_zero() {
    let dir = scratch_dir("engine");
    let (json, svg, trace) = (dir.join("r.json"), dir.join("r.svg"), dir.join("t.json"));
    let file = scenarios_dir().join("sva-two-devices.toml");
    let out = iommu_sim([
        OsStr::new("run"),
        file.as_os_str(),
        OsStr::new("--scale"),
        OsStr::new("8"),
        OsStr::new("--json"),
        json.as_os_str(),
        OsStr::new("--plot"),
        svg.as_os_str(),
        OsStr::new("--trace"),
        trace.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("scenario 'sva-two-devices' (threads mode"),
        "{text}"
    );
    assert!(text.contains("invariants     all held"), "{text}");
    for p in [&json, &svg, &trace] {
        assert!(
            std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false),
            "{}",
            p.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A device without PRI writing to lazily populated memory. Validation refuses such a bond,
/// so the scenario is validated with PRI and PRI is taken away from the validated spec: the
/// engine must still report what it cannot explain.
fn no_pri() -> Scenario {
    let text = ScenarioText::new("no-pri", "iommu0")
        .device("dev0", "iommu0", &[])
        .process("p", &[("buf", "64KiB")])
        .bond("dev0", "p")
        .job("w", "dev0", "write", ("p", "buf"), "64KiB", &[]);
    let mut s = Scenario::parse(text.text()).unwrap_or_else(|e| panic!("scenario: {e}"));
    s.devices[0].pri = false;
    s
}

#[test]
fn a_failure_no_event_explains_is_a_violation() {
    // Without PRI the device cannot fault lazily populated memory in: with no event to blame,
    // the engine must report it, not pass quietly.
    let r = run_scenario(&no_pri(), 1, Mode::Threads);
    let inv = r.invariants.as_ref().expect("invariants");
    assert!(!inv.passed(), "{}", r.text());
    assert!(inv.count(Invariant::DataVerified) > 0, "{}", r.text());
}

/// An owner whose setup fails stops the run before anything runs, naming the owner (it used to
/// be skipped, shifting the owners after it so a job ran through another owner's device).
#[test]
fn a_failed_owner_fails_the_build_naming_it() {
    let text = ScenarioText::new("owner-hole", "iommu0")
        .device("dev0", "iommu0", &[])
        .device("dev1", "iommu0", &[])
        .text()
        .to_string()
        + "\n[[owner]]\nname = \"a\"\ndevice = \"dev0\"\n\n[[owner]]\nname = \"c\"\ndevice = \"dev1\"\n\
           \n[[job]]\nname = \"c-write\"\ndevice = \"dev1\"\nop = \"write\"\nowner = \"c\"\n\
           iova = \"1GiB\"\nlen = \"64KiB\"\n";
    let mut s = Scenario::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    // A second owner of dev0 between them (refused by validation; built here by hand): its
    // setup fails at run time.
    s.owners.insert(1, ("b".into(), 0, false));
    for j in &mut s.jobs {
        if let iommu_sim::scenario::JobTarget::Owner(o, _) = &mut j.target {
            *o += 1;
        }
    }
    let r = run_scenario(&s, 1, Mode::Threads);
    let inv = r.invariants.as_ref().expect("checked");
    let msgs: Vec<String> = inv.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("nothing ran") && m.contains("owner 'b'")),
        "{msgs:?}"
    );
    assert_eq!(r.bytes, 0, "{}", r.text());
}

/// A scenario built by hand, so never validated, may hold an event at `u64::MAX` ms: virtual
/// time saturates instead of wrapping (a debug panic, or an early event in release), and the
/// run ends without waiting for it.
#[test]
fn an_unvalidated_huge_event_time_neither_wraps_nor_waits() {
    let mut s = Scenario::parse(munmap_while_running().text()).unwrap_or_else(|e| panic!("{e}"));
    for e in &mut s.events {
        e.trigger = iommu_sim::scenario::Trigger::AtMs(u64::MAX);
    }
    for mode in [Mode::Deterministic { seed: 3 }, Mode::Threads] {
        let r = run_scenario(&s, 64, mode);
        let inv = r.invariants.as_ref().expect("checked");
        assert!(inv.passed(), "{}", r.text());
        // The event still fires, once, after the jobs (not never, not early).
        assert_eq!(r.counters["events/fired"], 1, "{}", r.text());
    }
}

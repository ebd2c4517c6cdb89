//! The binary's default run: exits 0, reports, and every invariant holds.

mod common;

use std::ffi::OsStr;

use common::{iommu_sim, refused, scratch_dir};

/// A bare `iommu-sim`.
const NO_ARGS: [&str; 0] = [];

#[test]
fn default_run_passes_and_reports_every_figure() {
    let out = iommu_sim(["foundation", "--rounds", "200", "--tenants", "6"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{text}", out.status);
    assert!(
        text.contains("1200 attaches, 1200 replaces, 1200 detaches"),
        "{text}"
    );
    assert!(
        text.contains("1201 bad calls refused as expected"),
        "{text}"
    );
    assert!(text.contains("invariants: all held"), "{text}");
}

#[test]
fn bad_argument_is_refused_with_a_message() {
    assert!(refused(["foundation", "--tenants", "0"]).contains("--tenants"));
}

#[test]
fn quick_bench_prints_every_figure_with_its_ratio() {
    let dir = scratch_dir("bench-json");
    let json = dir.join("bench.json");
    let out = iommu_sim([
        OsStr::new("bench"),
        OsStr::new("--quick"),
        OsStr::new("--json"),
        json.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("CPUs idle in the second before timing"),
        "{text}"
    );
    for want in [
        "floor: routing pipeline",
        "floor: zero + write one 4 KiB frame",
        "e2e fault group, prepared pages, 1 in flight",
        "e2e fault group, prepared pages, 256 in flight",
        "e2e fault group, fresh zeroed pages, 64 in flight",
        "latency of one fault, p99.9",
        "fault fd record (read + response), batches of 256",
        "cross-thread handoff",
        "attach_handle_get (1,024 live PASIDs)",
        "under attach/detach churn",
        "IOTLB-hit translation",
        "IOTLB-miss translation",
        "iommu-pt map 4 KiB",
        "iommu-pt unmap 4 KiB",
        "iommu-pt map 2 MiB",
        "iommu-pt unmap 2 MiB",
        "map+unmap 2 MiB range",
        "end-to-end runs behind each median, fastest-slowest",
        "e2e, 2 devices on 2 IOMMU units, 64 in flight each",
        "two units 64 each: ",
        "latency p99.9 (ns of one fault): ",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let ratios = text
        .lines()
        .filter(|l| l.starts_with("attach_handle_get"))
        .count();
    assert_eq!(ratios, 2);
    // The JSON figures under their stable names, every one a positive number.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let positive = |x: &serde_json::Value| x.as_f64().is_some_and(|f| f > 0.0);
    for key in ["e2e_routing_groups_per_s", "e2e_fresh_groups_per_s"] {
        for n in ["1", "4", "16", "64", "256"] {
            assert!(positive(&v[key][n]), "{key}.{n} in {v}");
        }
    }
    assert!(
        positive(&v["e2e_two_units_groups_per_s"]),
        "two units in {v}"
    );
    let r = &v["e2e_runs_ns"]["two_units"];
    let (lo, hi) = (r[0].as_f64().unwrap_or(0.0), r[1].as_f64().unwrap_or(0.0));
    let median = 1e9 / v["e2e_two_units_groups_per_s"].as_f64().unwrap_or(f64::NAN);
    assert!(
        lo > 0.0 && median >= lo * 0.999 && median <= hi * 1.001,
        "two units: {median} ns outside its runs {lo}-{hi}"
    );
    for p in ["p50", "p99", "p999"] {
        assert!(positive(&v["latency_ns"][p]), "latency_ns.{p} in {v}");
    }
    // The median p99.9 lies within its runs' lowest and highest.
    let r = &v["latency_runs_ns"]["p999"];
    let (lo, hi) = (r[0].as_f64().unwrap_or(0.0), r[1].as_f64().unwrap_or(0.0));
    let p999 = v["latency_ns"]["p999"].as_f64().unwrap_or(f64::NAN);
    assert!(
        lo > 0.0 && lo <= p999 && p999 <= hi,
        "latency p99.9 {p999} ns outside its runs {lo}-{hi}"
    );
    for n in ["1", "16", "256"] {
        assert!(positive(&v["fd_records_per_s"][n]), "fd_records_per_s.{n}");
    }
    for f in ["routing", "memory", "handoff"] {
        assert!(positive(&v["floors_ns"][f]), "floors_ns.{f}");
    }
    // The fastest and slowest run behind each end-to-end median, in that order, and the
    // median (written as groups per second, rounded) between them.
    for (kind, rate) in [
        ("routing", "e2e_routing_groups_per_s"),
        ("fresh", "e2e_fresh_groups_per_s"),
    ] {
        for n in ["1", "4", "16", "64", "256"] {
            let r = &v["e2e_runs_ns"][kind][n];
            let (lo, hi) = (r[0].as_f64().unwrap_or(0.0), r[1].as_f64().unwrap_or(0.0));
            assert!(lo > 0.0 && lo <= hi, "e2e_runs_ns.{kind}.{n} in {v}");
            let median = 1e9 / v[rate][n].as_f64().unwrap_or(f64::NAN);
            assert!(
                median >= lo * 0.999 && median <= hi * 1.001,
                "{rate}.{n}: {median} ns outside its runs {lo}-{hi}"
            );
        }
    }
    assert_eq!(v["load"], serde_json::json!(false));
}

#[test]
fn bench_refuses_a_json_path_it_cannot_write() {
    let out = iommu_sim(["bench", "--quick", "--json", "/nonexistent-dir/b.json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write /nonexistent-dir/b.json"),
        "{err}"
    );
}

#[test]
fn no_arguments_runs_the_built_in_default_scenario_and_every_invariant_holds() {
    let out = iommu_sim(NO_ARGS);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{text}", out.status);
    assert!(text.contains("<built-in default scenario>"), "{text}");
    assert!(text.contains("scenario 'default' (threads mode"), "{text}");
    assert!(text.contains("invariants     all held"), "{text}");
    assert!(text.contains("events/fired"), "{text}");
    assert!(!text.contains("faults/"), "{text}");
    assert!(!text.contains("seed"), "{text}");
    assert!(text.contains("(reconciles)"), "{text}");
    // Latency per stage, from the trace points and the jobs; an owner's batches only if it
    // handled a fault (on a loaded machine the HWPT replace can come before the owner's job
    // faults at all).
    for stage in ["dma_job", "page_request_group", "fault_handler"] {
        assert!(text.contains(stage), "{stage} missing:\n{text}");
    }
    let owner_handled = !text.contains("requests/iommufd_records_read 0\n");
    assert_eq!(text.contains("iommufd_batch"), owner_handled, "{text}");
}

fn deterministic_json(seed: &str, path: &std::path::Path) -> serde_json::Value {
    let out = iommu_sim(
        [
            "run",
            "--mode",
            "deterministic",
            "--seed",
            seed,
            "--scale",
            "8",
            "--json",
        ]
        .map(OsStr::new)
        .into_iter()
        .chain([path.as_os_str()]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("event log hash"), "{text}");
    serde_json::from_str(&std::fs::read_to_string(path).expect("json written")).expect("json")
}

#[test]
fn deterministic_runs_write_the_same_event_log_hash_for_the_same_seed() {
    let dir = scratch_dir("cli");
    let a = deterministic_json("3", &dir.join("a.json"));
    let b = deterministic_json("3", &dir.join("b.json"));
    let c = deterministic_json("4", &dir.join("c.json"));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(a["mode"], "deterministic");
    assert_eq!(a["event_log_hash"], b["event_log_hash"]);
    assert_ne!(a["event_log_hash"], c["event_log_hash"]);
    let inv = a["invariants"].as_object().expect("invariants object");
    for name in [
        "exactly_one_response",
        "no_delivery_after_detach",
        "no_dma_after_unbind",
        "no_pasid_reuse",
        "data_verified",
        "every_group_accounted",
    ] {
        assert_eq!(inv[name], 0, "{name}: {inv:?}");
    }
}

/// An output path that cannot be written is refused before the scenario runs (it used to run
/// the whole scenario and fail at the end).
#[test]
fn run_refuses_output_paths_it_cannot_write_before_running() {
    for flag in ["--json", "--plot", "--trace"] {
        let out = iommu_sim(["run", "--no-progress", flag, "/nonexistent-dir/out"]);
        assert!(!out.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot write /nonexistent-dir/out"),
            "{flag}: {err}"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("invariants"),
            "{flag}: the scenario ran:\n{text}"
        );
    }
}

#[test]
fn a_seed_without_deterministic_mode_is_refused() {
    assert!(refused(["run", "--seed", "1"]).contains("--mode deterministic"));
}

//! Deterministic mode: the same scenario and seed give the same event sequence (compared by
//! the event-log hash), and another seed gives another interleaving.
//!
//! One test in its own binary: PASIDs come from the process-wide allocator, so a scenario run
//! concurrently by another test could take the PASIDs this one expects.

mod common;

use common::run_scenario;
use iommu_sim::engine::Mode;
use iommu_sim::scenario::Scenario;

/// Debug builds are slow: shorter jobs, same topology and events.
const SCALE: u64 = 4;

/// A deterministic run of `s` with `seed` that passed every invariant.
fn det(s: &Scenario, seed: u64) -> iommu_sim::report::RunReport {
    let r = run_scenario(s, SCALE, Mode::Deterministic { seed });
    let inv = r.invariants.as_ref().expect("checked");
    assert!(inv.passed(), "{}", r.text());
    assert_eq!(r.mode, "deterministic");
    assert_eq!(r.seed, Some(seed));
    r
}

#[test]
fn same_seed_replays_the_same_events_and_another_seed_differs() {
    let s = Scenario::parse(iommu_sim::DEFAULT_SCENARIO).expect("default scenario");
    let a = det(&s, 1);
    let b = det(&s, 1);
    let c = det(&s, 2);
    let (ha, hb, hc) = (a.event_log_hash, b.event_log_hash, c.event_log_hash);
    assert!(ha.is_some());
    assert_eq!(ha, hb, "same seed, different event sequence");
    assert_ne!(ha, hc, "seeds 1 and 2 gave the same event sequence");
    // Same seed: the same figures too, not only the same hash.
    // Same seed: the same report, byte for byte (every figure is virtual time).
    let (ja, jb) = (
        serde_json::to_string_pretty(&a.json()).expect("json"),
        serde_json::to_string_pretty(&b.json()).expect("json"),
    );
    assert_eq!(ja, jb, "same seed, different JSON");
    assert_eq!(a.text(), b.text(), "same seed, different text");
    assert!(a.json().get("elapsed_s").is_none(), "{ja}");
    assert_eq!(a.json()["latency_time"], "virtual");
    assert!(!a.text().contains("elapsed"), "{}", a.text());
    // No stage shows as taking no time: the shortest costs one scheduler step.
    for (stage, h) in &a.latency {
        assert!(h.quantile(0.0) >= 1_000, "{stage}: {}", a.text());
    }
    assert!(!a.text().contains(" 0.00 "), "{}", a.text());
    assert!(a.groups_ledger.reconciles(), "{}", a.text());
    // The run went through every kind of event of the default scenario.
    assert_eq!(a.counters["events/fired"], 7, "{}", a.text());
    // The trace names its tracks after the agents and its events as the file spells them.
    let spans = |cat: &'static str| a.trace.iter().filter(move |t| t.category == cat);
    for ev in spans("event") {
        assert!(
            [
                "unbind",
                "exit",
                "munmap",
                "mprotect",
                "replace_hwpt",
                "reset_device",
                "overflow"
            ]
            .contains(&ev.name.as_str()),
            "{ev:?}"
        );
    }
    let has = |name: &str, track: &str| {
        spans("event").any(|t| t.name == name && t.track.starts_with(track))
    };
    assert!(has("reset_device", "device "), "{:?}", a.trace);
    assert!(has("mprotect", "process "), "{:?}", a.trace);
    assert!(has("replace_hwpt", "owner vmm"), "{:?}", a.trace);
    assert!(has("overflow", "queue "), "{:?}", a.trace);
    let jobs: Vec<_> = spans("job").collect();
    assert_eq!(jobs.len() as u64, a.jobs);
    assert!(
        jobs.iter().all(|t| t.track.starts_with("device ")),
        "{jobs:?}"
    );

    // A threads-mode run is not reproducible and carries no hash.
    let t = run_scenario(&s, SCALE, Mode::Threads);
    assert_eq!(t.event_log_hash, None);
    assert!(t.json().get("event_log_hash").is_none());
    // ... and no seed: it does not use one.
    assert_eq!(t.seed, None);
    assert!(t.json().get("seed").is_none());
    assert!(t.groups_ledger.reconciles(), "{}", t.text());
}

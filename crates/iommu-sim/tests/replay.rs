//! Deterministic mode: the same scenario and seed give the same event sequence (compared by
//! the event-log hash), and another seed gives another interleaving.
//!
//! One test in its own binary: PASIDs come from the process-wide allocator, so a scenario run
//! concurrently by another test could take the PASIDs this one expects.

use iommu_sim::engine::{run, Mode, RunOptions};
use iommu_sim::scenario::Scenario;

fn det(s: &Scenario, seed: u64) -> iommu_sim::report::RunReport {
    let opts = RunOptions {
        // Debug builds are slow: shorter jobs, same topology and events.
        scale: 4,
        mode: Mode::Deterministic { seed },
        ..RunOptions::default()
    };
    let r = run(s, &opts);
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
    assert_eq!(
        (a.groups, a.page_requests, a.responses, a.bytes),
        (b.groups, b.page_requests, b.responses, b.bytes)
    );
    assert_eq!(a.faults_by_stage, b.faults_by_stage);
    assert_eq!(a.json()["event_log_hash"], b.json()["event_log_hash"]);
    // The run went through every kind of event of the default scenario.
    assert_eq!(a.faults_by_stage["events_fired"], 7, "{}", a.text());

    // A threads-mode run is not reproducible and carries no hash.
    let t = run(
        &s,
        &RunOptions {
            scale: 4,
            ..RunOptions::default()
        },
    );
    assert_eq!(t.event_log_hash, None);
    assert!(t.json().get("event_log_hash").is_none());
}

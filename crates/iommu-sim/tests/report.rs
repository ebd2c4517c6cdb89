//! Reports: the text summary, JSON (with one counter per invariant), the SVG plot and the
//! Chrome trace carry the run's figures.

use iommu_sim::invariants::{Checker, Event, Invariant};
use iommu_sim::report::{RunReport, StageLatency, TraceSpan};

fn sample(violate: bool) -> RunReport {
    let mut c = Checker::new();
    c.observe(&Event::GroupRequested {
        dev: 1,
        pasid: Some(3),
        grpid: 0,
    });
    c.observe(&Event::Responded {
        dev: 1,
        grpid: 0,
        code: 0,
    });
    if violate {
        c.observe(&Event::Responded {
            dev: 1,
            grpid: 0,
            code: 0,
        });
    }
    let mut fault_in = StageLatency::default();
    for ns in 1..=1000u64 {
        fault_in.record(ns * 100);
    }
    let mut r = RunReport {
        scenario: "t".into(),
        mode: "deterministic".into(),
        seed: Some(9),
        elapsed_s: 0.25,
        jobs: 2,
        bytes: 8 << 20,
        page_requests: 2048,
        groups: 64,
        responses: [60, 3, 1],
        invariants: Some(c.finish()),
        event_log_hash: Some(0xabcdef),
        ..RunReport::default()
    };
    r.faults_by_stage.insert("sva".into(), 2048);
    r.latency.insert("fault_in".into(), fault_in);
    r.trace.push(TraceSpan {
        name: "fault-in".into(),
        category: "sva".into(),
        thread: 2,
        start_ns: 1500,
        duration_ns: 2500,
    });
    r
}

#[test]
fn text_summary_has_counts_quantiles_and_invariants() {
    let t = sample(false).text();
    for want in [
        "2048 in 64 groups",
        "60 success, 3 invalid, 1 failure",
        "faults/sva",
        "fault_in",
        "event log hash 0000000000abcdef",
        "all held over 2 events",
    ] {
        assert!(t.contains(want), "{want:?} missing in\n{t}");
    }
    // p50 of 100..=100000 ns in steps of 100 is about 50 µs.
    let line = t.lines().find(|l| l.contains("fault_in")).unwrap();
    let p50: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((49.0..=51.0).contains(&p50), "{line}");
}

#[test]
fn text_summary_names_violations() {
    let t = sample(true).text();
    assert!(
        t.contains("VIOLATED") && t.contains("exactly_one_response: 1"),
        "{t}"
    );
}

#[test]
fn json_has_every_invariant_counter_and_the_hash() {
    let v = sample(true).json();
    for inv in Invariant::ALL {
        assert!(v["invariants"][inv.name()].is_u64(), "{}", inv.name());
    }
    assert_eq!(v["invariants"]["exactly_one_response"], 1);
    assert_eq!(v["passed"], false);
    assert_eq!(v["event_log_hash"], "0000000000abcdef");
    assert_eq!(v["responses"]["failure"], 1);
    assert_eq!(v["latency"]["fault_in"]["samples"], 1000);
}

#[test]
fn svg_plot_and_chrome_trace_are_written() {
    let r = sample(false);
    let dir = std::env::temp_dir().join(format!("iommu-sim-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (j, p, t) = (
        dir.join("r.json"),
        dir.join("r.svg"),
        dir.join("r.trace.json"),
    );
    r.write_outputs(Some(&j), Some(&p), Some(&t)).unwrap();
    let svg = std::fs::read_to_string(&p).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("fault_in: p50"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    let e = &trace["traceEvents"][0];
    assert_eq!(
        (e["ph"].as_str(), e["ts"].as_f64(), e["dur"].as_f64()),
        (Some("X"), Some(1.5), Some(2.5))
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    assert_eq!(json["groups"], 64);
    std::fs::remove_dir_all(&dir).unwrap();
}

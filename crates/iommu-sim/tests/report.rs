//! Reports: the text summary, JSON (with one counter per invariant), the SVG plot and the
//! Chrome trace carry the run's figures.

use iommu_sim::invariants::{Checker, Event, Invariant};
use iommu_sim::report::{escape, GroupLedger, RunReport, StageLatency, TraceSpan};

/// 64 groups: 60 handler (57 success, 2 invalid, 1 failure), 2 auto, 1 IOMMU, 1 reset.
fn ledger() -> GroupLedger {
    GroupLedger {
        sent: 64,
        handler: [57, 2, 1],
        auto_iommufd: 1,
        no_handler: 1,
        iommu_overflow: 1,
        abandoned_reset: 1,
        stray_responses: 1,
        ..GroupLedger::default()
    }
}

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
        virtual_time: true,
        jobs: 2,
        bytes: 8 << 20,
        page_requests: 2048,
        groups_ledger: ledger(),
        invariants: Some(c.finish()),
        event_log_hash: Some(0xabcdef),
        ..RunReport::default()
    };
    r.counters
        .insert("requests/sva_pages_faulted_in".into(), 2048);
    r.latency.insert("fault_in".into(), fault_in);
    r.trace.push(TraceSpan {
        name: "reset_device".into(),
        category: "event".into(),
        track: "device gpu0".into(),
        start_ns: 1500,
        duration_ns: 2500,
    });
    r
}

#[test]
fn text_summary_has_counts_quantiles_and_invariants() {
    let t = sample(false).text();
    for want in [
        "page requests  2048",
        "64 sent = 60 answered by a handler + 2 auto-answered + 1 answered by the IOMMU + 1 abandoned + 0 unattributed + 0 outstanding (reconciles)",
        "(57 success, 2 invalid, 1 failure)",
        "(1 iommufd auto-response, 0 dropped unanswered, 1 no fault handler)",
        "(1 on device reset, 0 by their DMA",
        "1 stray at a device",
        "requests/sva_pages_faulted_in",
        "virtual µs",
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

/// A run in which nothing happened does not claim that every invariant held.
#[test]
fn text_summary_of_a_run_without_events_says_there_was_nothing_to_check() {
    let mut r = sample(false);
    r.invariants.as_mut().expect("checked").events = 0;
    let t = r.text();
    assert!(t.contains("nothing to check"), "{t}");
    assert!(!t.contains("all held"), "{t}");
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
    let g = &v["page_request_groups"];
    assert_eq!(g["sent"], 64);
    assert_eq!(g["answered_by_handler"]["failure"], 1);
    assert_eq!(g["auto_answered"]["iommufd_auto_response"], 1);
    assert_eq!(g["answered_by_iommu"]["prq_overflow"], 1);
    assert_eq!(g["abandoned"]["device_reset"], 1);
    assert_eq!(g["discarded_responses"]["stray_at_device"], 1);
    assert_eq!(g["reconciles"], true);
    assert_eq!(v["counters"]["requests/sva_pages_faulted_in"], 2048);
    assert_eq!(v["latency_time"], "virtual");
    assert!(v.get("elapsed_s").is_none());
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
    let events = trace["traceEvents"].as_array().unwrap();
    // The track is named after its agent, the span as the scenario spells the action.
    let track = events
        .iter()
        .find(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .expect("a named track");
    assert_eq!(track["args"]["name"], "device gpu0");
    let e = events.iter().find(|e| e["ph"] == "X").expect("a span");
    assert_eq!(
        (e["name"].as_str(), e["ts"].as_f64(), e["dur"].as_f64()),
        (Some("reset_device"), Some(1.5), Some(2.5))
    );
    assert_eq!(e["tid"], track["tid"]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    assert_eq!(json["page_request_groups"]["sent"], 64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_ledger_that_does_not_add_up_says_so() {
    let mut r = sample(false);
    r.groups_ledger.sent += 1;
    assert!(!r.groups_ledger.reconciles());
    assert!(r.text().contains("(DOES NOT RECONCILE)"), "{}", r.text());
    assert_eq!(r.json()["page_request_groups"]["reconciles"], false);
    let mut r = sample(false);
    r.groups_ledger.outstanding = 1;
    r.groups_ledger.sent += 1;
    assert!(
        !r.groups_ledger.reconciles(),
        "an unanswered group never reconciles"
    );
}

#[test]
fn threads_mode_text_and_json_carry_no_seed_and_say_wall_clock() {
    let mut r = sample(false);
    r.mode = "threads".into();
    r.seed = None;
    r.event_log_hash = None;
    r.virtual_time = false;
    r.elapsed_s = Some(0.5);
    let (t, v) = (r.text(), r.json());
    assert!(!t.contains("seed") && v.get("seed").is_none(), "{t}");
    assert!(
        t.contains("µs, wall clock") && t.contains("(wall clock)"),
        "{t}"
    );
    assert_eq!(v["elapsed_s"], 0.5);
    assert_eq!(v["latency_time"], "wall_clock");
}

#[test]
fn names_are_printed_escaped() {
    let hostile = "x\u{1b}[2J\nscenario 'forged' (threads mode)";
    assert_eq!(escape("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
    let mut r = sample(true);
    r.scenario = hostile.into();
    r.latency
        .insert(hostile.into(), r.latency["fault_in"].clone());
    r.counters.insert(hostile.into(), 1);
    if let Some(inv) = r.invariants.as_mut() {
        inv.violations[0].message = format!("job '{hostile}' read back 1 wrong bytes");
    }
    let t = r.text();
    assert!(!t.contains('\u{1b}'), "{t:?}");
    assert!(
        !t.lines().any(|l| l.starts_with("scenario 'forged'")),
        "a name forged a report line:\n{t}"
    );
    assert!(t.contains("x\\u{1b}[2J\\nscenario"), "{t:?}");
    // JSON escapes through serde; the SVG's captions are escaped text too.
    let j = serde_json::to_string(&r.json()).unwrap();
    assert!(!j.contains('\u{1b}'));
    let svg = r.svg().unwrap();
    assert!(!svg.contains('\u{1b}'));
}

#[test]
fn plot_uses_one_log_time_axis_for_every_panel() {
    let mut r = sample(false);
    let mut slow = StageLatency::default();
    for ns in [5_000_000u64, 9_000_000] {
        slow.record(ns);
    }
    r.latency.insert("slow".into(), slow);
    let svg = r.svg().unwrap();
    // Both panels say the same unit and scale, and both reach the slow stage's milliseconds:
    // one axis for all.
    assert_eq!(
        svg.matches("latency (virtual µs, log scale)").count(),
        2,
        "{}",
        &svg[..400.min(svg.len())]
    );
    assert!(!svg.contains("2^x"), "the old log2-bucket axis");
}

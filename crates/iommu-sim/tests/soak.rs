//! A short soak: one long-lived world under SVA and iommufd traffic with every kind of
//! disruption; every group is accounted for and no response is lost, doubled or late.

use iommu_sim::soak::{run, Config, Disruption};

#[test]
fn short_soak_accounts_for_every_group() {
    // Threads decide how many cycles each driver runs, so one short soak may miss a kind of
    // disruption: soak again (up to four seeds) until every kind has happened in some run.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 1..=4 {
        let r = run(&Config {
            groups: 40_000,
            seed,
            disrupt_one_in: 4,
            ..Config::default()
        })
        .expect("soak world builds");
        assert!(r.groups() >= 40_000, "{}", r.text());
        assert_eq!(r.groups(), r.answered + r.abandoned, "{}", r.text());
        assert_eq!((r.lost, r.doubled, r.late), (0, 0, 0), "{}", r.text());
        assert!(r.problems.is_empty(), "{}", r.text());
        seen.extend(r.disruptions.keys().copied());
        if Disruption::ALL.iter().all(|d| seen.contains(d.name())) {
            return;
        }
    }
    panic!("not every kind of disruption happened in four short soaks: {seen:?}");
}

#[test]
fn soak_refuses_out_of_range_knobs() {
    let knobs = [
        (
            "inflight",
            Config {
                inflight: 0,
                ..Config::default()
            },
        ),
        (
            "inflight",
            Config {
                inflight: 257,
                ..Config::default()
            },
        ),
        (
            "groups",
            Config {
                groups: 0,
                ..Config::default()
            },
        ),
    ];
    for (knob, cfg) in knobs {
        let e = run(&cfg).unwrap_err();
        assert!(e.contains(knob), "{knob}: {e}");
    }
}

/// A soak too short to sample memory in two tenths says so instead of comparing a tenth no
/// sample fell into (which reads 0) with one that has a sample, and a soak without
/// disruptions says "none".
#[test]
fn a_tiny_soak_reports_what_it_could_not_measure() {
    let r = run(&Config {
        groups: 1,
        disrupt_one_in: 0,
        ..Config::default()
    })
    .expect("soak world builds");
    let text = r.text();
    assert!(r.passed(), "{text}");
    assert!(text.contains("  disruptions    none\n"), "{text}");
    let rss = text
        .lines()
        .find(|l| l.starts_with("  rss"))
        .expect("rss line");
    assert!(
        !rss.contains(" 0.0 "),
        "a tenth without a sample shown as 0 MiB: {rss}"
    );
    let sampled = r.rss_windows.iter().filter(|&&b| b > 0).count();
    if sampled < 2 {
        assert!(rss.contains("too short to compare"), "{rss}");
    } else {
        assert!(rss.contains("within 10 %"), "{rss}");
    }
}

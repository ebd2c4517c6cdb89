//! A short soak: one long-lived world under SVA and iommufd traffic with every kind of
//! disruption; every group is accounted for and no response is lost, doubled or late.

use iommu_sim::soak::{run, Config};

#[test]
fn short_soak_accounts_for_every_group() {
    for seed in [1, 2] {
        let r = run(&Config {
            groups: 40_000,
            seed,
            ..Config::default()
        })
        .expect("soak world builds");
        assert!(r.groups >= 40_000, "{}", r.text());
        assert_eq!(r.groups, r.answered + r.abandoned, "{}", r.text());
        assert_eq!((r.lost, r.doubled, r.late), (0, 0, 0), "{}", r.text());
        assert!(r.problems.is_empty(), "{}", r.text());
        // Every kind of disruption happened at least once over 40,000 groups.
        assert!(r.disruptions.len() >= 5, "{}", r.text());
    }
}

#[test]
fn soak_refuses_out_of_range_inflight() {
    for inflight in [0, 257] {
        let e = run(&Config {
            inflight,
            ..Config::default()
        })
        .unwrap_err();
        assert!(e.contains("inflight"), "{e}");
    }
}

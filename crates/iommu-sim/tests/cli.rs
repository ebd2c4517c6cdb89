//! The binary's default run: exits 0, reports, and every invariant holds.

use std::process::Command;

#[test]
fn default_run_passes_and_reports_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_iommu-sim"))
        .args(["run", "--rounds", "200", "--tenants", "6"])
        .output()
        .expect("run iommu-sim");
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
    let out = Command::new(env!("CARGO_BIN_EXE_iommu-sim"))
        .args(["run", "--tenants", "0"])
        .output()
        .expect("run iommu-sim");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tenants"));
}

#[test]
fn quick_bench_prints_every_figure_with_its_ratio() {
    let out = Command::new(env!("CARGO_BIN_EXE_iommu-sim"))
        .args(["bench", "--quick"])
        .output()
        .expect("run iommu-sim bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "cross-thread handoff",
        "attach_handle_get (1,024 live PASIDs)",
        "under attach/detach churn",
        "map+unmap 4 KiB",
        "map+unmap 2 MiB",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let ratios = text
        .lines()
        .filter(|l| l.starts_with("attach_handle_get"))
        .count();
    assert_eq!(ratios, 2);
}

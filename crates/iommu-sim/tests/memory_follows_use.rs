//! Physical memory follows use (issue 11): a valid scenario with a large lazy VMA and a small
//! job runs with small resident memory; it used to prefault the VMA's full size.

mod common;

use common::run_scenario;
use iommu_sim::engine::Mode;
use iommu_sim::scenario::Scenario;

/// Resident bytes of this process (`/proc/self/statm`, second field, in 4 KiB pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_64_gib_lazy_vma_with_a_small_job_runs_in_small_memory() {
    let text = r#"
[scenario]
name = "big-lazy-vma"

[[iommu]]
name = "iommu0"

[[device]]
name = "dev0"
iommu = "iommu0"

[[process]]
name = "app"
vma = [{ name = "buf", size = "64GiB", prot = "rw" }]

[[bond]]
device = "dev0"
process = "app"

[[job]]
name = "touch-a-little"
device = "dev0"
op = "write"
process = "app"
vma = "buf"
len = "1MiB"
"#;
    let s = Scenario::parse(text).unwrap_or_else(|e| panic!("scenario: {e}"));
    let before = resident_bytes();

    let r = run_scenario(&s, 1, Mode::Threads);

    let grown = resident_bytes().saturating_sub(before);
    let inv = r.invariants.as_ref().expect("invariants checked");
    assert!(inv.passed(), "{}", r.text());
    assert!(r.groups_ledger.sent > 0, "{}", r.text());
    // 1 MiB written plus tables, queues and report: far below the VMA's 64 GiB.
    assert!(grown < 256 << 20, "resident memory grew by {grown} bytes");
}

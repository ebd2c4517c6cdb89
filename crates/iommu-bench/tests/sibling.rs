//! Two functions behind one IOMMU (`E2e::sibling`, what `scale_probe` measures) fault at the
//! same time from two threads, each into its own process, and every group completes: `run`
//! panics on any DMA error, on memory running out, or (through the watchdog) on a hang.

use std::sync::mpsc;
use std::time::Duration;

use iommu_bench::e2e::{E2e, Pages};

#[test]
fn siblings_behind_one_iommu_fault_concurrently_and_every_group_completes() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        for pages in [Pages::Prepared, Pages::Fresh] {
            // Chunks of 256 pages: several map/fault/unmap rounds per run.
            let first = E2e::new(pages, 256);
            let second = first.sibling("dev1");
            std::thread::scope(|s| {
                for (stack, in_flight) in [(&first, 16), (&second, 64)] {
                    s.spawn(move || stack.run(2_000, in_flight, None));
                }
            });
            // Both keep working after the concurrent runs; the first alone too.
            second.run(300, 1, None);
            drop(second);
            first.run(300, 4, None);
        }
        done.send(()).expect("the test waits");
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the runs finish (no lost response, no hang)");
}

//! Runs the `virtio_queue_sva` example's flow (`iommu_vmm::demo`) on a small size, so CI
//! exercises exactly what the example shows.

use iommu_vmm::demo::{run_hwpt, run_sva, DemoConfig};

const SMALL: DemoConfig = DemoConfig {
    chains: 8,
    input_len: 5000,
};

#[test]
fn sva_device_processes_a_swapped_out_queue_through_pri() {
    let r = run_sva(&SMALL).expect("setup");
    assert!(r.problems().is_empty(), "{:?}\n{r:#?}", r.problems());
    assert_eq!(r.verified.bytes_ok, 8 * 5008);
    assert_eq!(
        r.pages_unmapped, r.region_pages,
        "every page started unmapped"
    );
    assert!(r.pages_swapped_out > 0 && r.groups_sent > 0);
}

#[test]
fn iommufd_device_processes_an_unmapped_queue_through_a_user_handler() {
    let r = run_hwpt(&SMALL).expect("setup");
    assert!(r.problems().is_empty(), "{:?}\n{r:#?}", r.problems());
    assert_eq!(r.verified.bytes_ok, 8 * 5008);
    assert_eq!(
        r.pages_made_present, r.pages_unmapped,
        "every page of the region was touched"
    );
}

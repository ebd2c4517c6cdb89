//! Runs the `vmm_fault_handler` example's flow (SPEC §5: a user-space VMM resolving a PRI
//! device's I/O page faults through a fault-capable paging HWPT and the fault fd) on a small
//! size, so CI exercises exactly what the example shows.

#[path = "../examples/vmm_fault_handler.rs"]
mod vmm;

#[test]
fn vmm_fault_handler_backs_every_page_and_the_dma_lands() {
    let r = vmm::run_vmm(256 << 10).expect("setup");
    assert!(r.ok(), "{:?}\n{r:#?}", r.problems());
    assert_eq!(r.bytes, 256 << 10);
    assert_eq!(r.pages_mapped, 64);
    assert_eq!(r.faults, 64, "one fault record per untouched page");
    assert!(r.groups >= 1 && r.batches >= 1 && r.epoll_wakeups >= 1);
    assert_eq!(r.fault_stats.auto_responses, 0);
}

#[test]
fn vmm_fault_handler_handles_a_partial_page_job() {
    // Not a multiple of a page: rounded up, every byte still checked.
    let r = vmm::run_vmm(3 * 4096 + 100).expect("setup");
    assert!(r.ok(), "{:?}\n{r:#?}", r.problems());
    assert_eq!(r.pages_mapped, 4);
}

#[test]
fn vmm_fault_handler_refuses_pages_outside_guest_ram_and_answers_every_group() {
    // The device writes 256 KiB but only the first 128 KiB are guest RAM: the group holding
    // the pages beyond is answered Invalid, the DMA fails, and still every group is answered
    // exactly once, by the handler (no auto-response), and nothing leaks.
    let r = vmm::run_vmm_with(256 << 10, 128 << 10).expect("setup");
    assert!(!r.dma_ok, "{r:#?}");
    assert!(r.handler_error.is_none(), "{r:#?}");
    assert!(r.groups_invalid >= 1 && r.pages_mapped <= 32, "{r:#?}");
    let s = r.fault_stats;
    assert_eq!(
        (s.queued, s.user_responses, s.auto_responses),
        (r.groups, r.groups, 0)
    );
    assert_eq!(r.iopf[0], r.groups);
    assert_eq!(
        r.iopf[2], r.groups_invalid,
        "IOPF core saw the Invalid answers"
    );
    assert_eq!(r.endpoint_groups, (r.groups, r.groups));
    assert_eq!(r.endpoint_anomalies, 0);
    assert_eq!(r.leaked_frames, 0);
}

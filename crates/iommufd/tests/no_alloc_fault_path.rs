//! The iommufd fault path allocates nothing per fault group in steady state (issue 10): a
//! device behind the emulated IOMMU faults on a fault-capable HWPT, the group goes through the
//! page request queue to iommufd's handler, user space reads its record from the fault fd and
//! writes the response, and the device takes it — watched by a counting global allocator after
//! a warm-up round.
//!
//! One test in this binary on purpose: the allocator counts every thread of the process.

use std::alloc::System;
use std::sync::Arc;

use iommu_core::Group;
use iommu_emu::{DmaError, DmaKind, DmaPoll, EmuIommu, EmuIommuConfig, EndpointConfig, PhysMem};
use iommufd::uapi::{
    IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_INVALID, IOMMU_HWPT_FAULT_ID_VALID,
};
use iommufd::{Ictx, IOMMU_NO_PASID};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use zerocopy::IntoBytes;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const GROUPS: u64 = 1024;

#[test]
fn iommufd_fault_groups_allocate_nothing_in_steady_state() {
    let phys = Arc::new(PhysMem::new(256).unwrap());
    let iommu = EmuIommu::new("alloc", &phys, EmuIommuConfig::default()).unwrap();
    let group = Group::new(iommu.driver(), "g");
    let ep = iommu
        .add_endpoint(&group, "dev", 0, EndpointConfig::default())
        .unwrap();
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(ep.device().clone()).unwrap();
    let ioas = ictx.ioas_alloc().unwrap();
    let (fault_id, fd) = ictx.fault_queue_alloc(0).unwrap();
    let hwpt = ictx
        .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
        .unwrap();
    ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt).unwrap();

    let mut record = [IommuHwptPgfault::default()];
    let mut round = |n: u64| {
        let engine = ep.engine();
        for i in 0..n {
            let mut job = ep.start_dma(None, 0x10_0000 + (i % 64) * 4096, 64, DmaKind::Fill(1));
            // The device faults and sends its group; this thread reports it (the iommufd
            // handler queues it), then plays user space: read the record, answer it.
            assert_eq!(engine.poll(&mut job), DmaPoll::Pending);
            while !job.is_waiting() {
                assert_eq!(engine.poll(&mut job), DmaPoll::Pending);
            }
            // (The queue thread may have taken it first, if it had not gone to sleep yet.)
            while fd.pending() == 0 {
                engine.help();
            }
            assert_eq!(fd.read(record.as_mut_bytes()).unwrap(), 40);
            let resp = [IommuHwptPageResponse {
                cookie: record[0].cookie,
                code: IOMMUFD_PAGE_RESP_INVALID,
            }];
            assert_eq!(fd.write(resp.as_bytes()).unwrap(), 8);
            // The VMM refused the page: the DMA fails, the group answered exactly once.
            assert!(matches!(
                engine.poll(&mut job),
                DmaPoll::Ready(Err(DmaError::PageRequestInvalid { .. }))
            ));
        }
    };
    round(GROUPS);
    let before = ep.stats();
    let region = Region::new(GLOBAL);
    round(GROUPS);
    let change = region.change();
    let after = ep.stats();
    assert_eq!(after.groups_sent - before.groups_sent, GROUPS);
    assert_eq!(after.invalid - before.invalid, GROUPS);
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{GROUPS} fault groups through the fault fd allocated ({change:?})"
    );
}

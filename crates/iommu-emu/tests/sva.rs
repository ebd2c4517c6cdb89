//! SVA through the emulator end to end (DESIGN §3, SPEC §3.5, §4.8): device DMA into untouched
//! process memory, permission and VMA checks answered Invalid, PASID sharing, unbind with faults
//! in flight, mm exit.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{ep_cfg, wait_for, Fx};
use iommu_core::{iopf_stats, sva_bind_device, Group, IopfQueue};
use iommu_emu::demo::{run_sva_demand_paging, DemoConfig};
use iommu_emu::{DmaError, EmuIommu, EmuIommuConfig, EndpointConfig, FaultReason, Mm, Prot};

#[test]
fn demo_flow_on_one_mib_faults_every_page_in_through_devices() {
    let cfg = DemoConfig {
        bytes_per_device: 1 << 20,
        endpoint: ep_cfg(|c| c.max_group_pages = 32),
        ..DemoConfig::default()
    };
    let r = run_sva_demand_paging(&cfg).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.pages_faulted, 512, "every page faulted in by a device");
    assert_eq!(r.page_requests, 512, "one request per untouched page");
    assert!(r.groups_sent >= 16, "groups capped at 32 pages: {r:?}");
    assert_eq!(r.responses, [r.groups_sent - r.auto_responses, 0, 0]);
}

#[test]
fn dma_write_to_read_only_vma_is_answered_invalid_and_writes_nothing() {
    let fx = Fx::new();
    let (ep, _mm, ro, bond) = fx.sva_endpoint(4 * 4096, Prot::READ);
    let p = Some(bond.pasid());

    let err = ep.dma_write(p, ro, &[0xee; 4 * 4096]).unwrap_err();
    assert!(matches!(err, DmaError::PageRequestInvalid { .. }), "{err}");
    // A DMA read of the same range is allowed: demand-zero pages, nothing was written.
    let mut back = vec![1u8; 4 * 4096];
    ep.dma_read(p, ro, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0));
    let st = iopf_stats(ep.device()).unwrap();
    assert_eq!((st.invalid, st.failure), (1, 0));
    assert!(ep.pri_enabled(), "Invalid keeps PRI enabled");
}

#[test]
fn dma_outside_any_vma_is_answered_invalid() {
    let fx = Fx::new();
    let (ep, _mm, buf, bond) = fx.sva_endpoint(4096, Prot::READ_WRITE);
    let p = Some(bond.pasid());
    // One page past the VMA: the group of both pages is answered Invalid (sticky error).
    let err = ep.dma_write(p, buf, &[7; 8192]).unwrap_err();
    assert!(matches!(err, DmaError::PageRequestInvalid { .. }), "{err}");
    let err = ep.dma_read(p, 0x2000, &mut [0; 8]).unwrap_err();
    assert_eq!(err, DmaError::PageRequestInvalid { iova: 0x2000 });
    // The VMA itself still works.
    ep.dma_write(p, buf, b"fine").unwrap();
}

#[test]
fn mprotect_to_read_only_stops_device_writes_through_cached_translations() {
    let fx = Fx::new();
    let (ep, mm, buf, bond) = fx.sva_endpoint(4096, Prot::READ_WRITE);
    let p = Some(bond.pasid());
    ep.dma_write(p, buf, b"before").unwrap();
    assert!(
        ep.atc_len() > 0 && fx.iommu.iotlb_len() > 0,
        "translation cached"
    );

    mm.mprotect(buf, 4096, Prot::READ).unwrap();

    let err = ep.dma_write(p, buf, b"after!").unwrap_err();
    assert!(matches!(err, DmaError::PageRequestInvalid { .. }), "{err}");
    let mut back = [0u8; 6];
    mm.read(buf, &mut back).unwrap();
    assert_eq!(&back, b"before");
}

#[test]
fn two_devices_on_one_mm_share_one_pasid_and_one_domain_per_iommu() {
    let fx = Fx::new();
    let a = fx.endpoint("a", EndpointConfig::default());
    let b = fx.endpoint("b", EndpointConfig::default());
    let other = EmuIommu::new("dmar1", &fx.phys, EmuIommuConfig::default()).unwrap();
    let q1 = IopfQueue::new("dmar1", 1).unwrap();
    let c = other
        .add_endpoint(
            &Group::new(other.driver(), "grp-c"),
            "c",
            1 << 20,
            EndpointConfig::default(),
        )
        .unwrap();
    iommu_core::iopf_queue_add_device(&q1, c.device()).unwrap();

    let mm = Mm::new(&fx.phys).unwrap();
    let buf = mm.mmap(3 * 4096, Prot::READ_WRITE).unwrap();
    let space = mm.as_address_space();
    let ba = sva_bind_device(a.device(), &space).unwrap();
    let bb = sva_bind_device(b.device(), &space).unwrap();
    let bc = sva_bind_device(c.device(), &space).unwrap();
    assert_eq!(ba.pasid(), bb.pasid());
    assert_eq!(ba.pasid(), bc.pasid());
    assert!(
        Arc::ptr_eq(ba.domain(), bb.domain()),
        "one SVA domain per IOMMU"
    );
    assert!(!Arc::ptr_eq(ba.domain(), bc.domain()));
    assert_eq!(mm.secondary_tlbs(), 2, "one secondary TLB per SVA domain");

    let p = Some(ba.pasid());
    a.dma_write(p, buf, &[0xa; 4096]).unwrap();
    b.dma_write(p, buf + 4096, &[0xb; 4096]).unwrap();
    c.dma_write(p, buf + 8192, &[0xc; 4096]).unwrap();
    // Each device reads what the others wrote: one address space.
    let mut x = [0u8; 1];
    c.dma_read(p, buf, &mut x).unwrap();
    assert_eq!(x, [0xa]);
    a.dma_read(p, buf + 8192, &mut x).unwrap();
    assert_eq!(x, [0xc]);
    mm.read(buf + 4096, &mut x).unwrap();
    assert_eq!(x, [0xb]);
    drop((ba, bb, bc));
    assert_eq!(mm.secondary_tlbs(), 0, "freed SVA domains unregister");
}

#[test]
fn dma_after_unbind_fails_without_a_context() {
    let fx = Fx::new();
    let (ep, _mm, buf, bond) = fx.sva_endpoint(4096, Prot::READ_WRITE);
    let pasid = bond.pasid();
    ep.dma_write(Some(pasid), buf, b"x").unwrap();
    drop(bond);
    let err = ep.dma_read(Some(pasid), buf, &mut [0; 1]).unwrap_err();
    match err {
        DmaError::Fault(f) => assert_eq!(f.reason, FaultReason::NoContext),
        e => panic!("unexpected {e}"),
    }
    assert!(fx
        .iommu
        .fault_log()
        .iter()
        .any(|r| r.pasid == Some(pasid) && r.reason == FaultReason::NoContext));
}

#[test]
fn unbind_while_faults_are_in_flight_answers_every_group_once() {
    let fx = Fx::with(16384, EmuIommuConfig::default());
    let cfg = ep_cfg(|c| c.max_group_pages = 4);
    let eps = [fx.endpoint("a", cfg.clone()), fx.endpoint("b", cfg)];
    let mm = Mm::new(&fx.phys).unwrap();
    let region = mm.mmap(8 << 20, Prot::READ_WRITE).unwrap();
    let space = mm.as_address_space();
    let bonds: Vec<_> = eps
        .iter()
        .map(|e| sva_bind_device(e.device(), &space).unwrap())
        .collect();
    let pasid = bonds[0].pasid();
    let unbound = AtomicBool::new(false);

    std::thread::scope(|s| {
        let workers: Vec<_> = eps
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                let unbound = &unbound;
                s.spawn(move || {
                    let mut results = Vec::new();
                    // Distinct untouched 64 KiB chunks, until the DMA fails after unbind.
                    for k in 0..32u64 {
                        let va = region + ((k * 2 + i as u64) << 16);
                        let was_unbound = unbound.load(Ordering::SeqCst);
                        let r = ep.dma_fill(Some(pasid), va, 1 << 16, 0x5a);
                        results.push((was_unbound, r));
                        if r.is_err() {
                            break;
                        }
                    }
                    results
                })
            })
            .collect();
        assert!(
            wait_for(|| eps.iter().all(|e| e.stats().groups_sent >= 2)),
            "devices never faulted"
        );
        drop(bonds);
        unbound.store(true, Ordering::SeqCst);
        for w in workers {
            for (was_unbound, r) in w.join().unwrap() {
                match r {
                    Ok(()) => assert!(!was_unbound, "DMA started after unbind succeeded"),
                    Err(DmaError::Fault(f)) => assert_eq!(f.reason, FaultReason::NoContext),
                    Err(e) => panic!("unexpected DMA error {e}"),
                }
            }
        }
    });
    for ep in &eps {
        let st = ep.stats();
        assert_eq!(st.groups_sent, st.groups_answered, "{st:?}");
        assert_eq!(
            (st.stray_responses, st.invalid, st.failure),
            (0, 0, 0),
            "{st:?}"
        );
        assert_eq!(ep.outstanding_groups(), 0);
        let core = iopf_stats(ep.device()).unwrap();
        assert_eq!(core.groups, core.success, "{core:?}");
        assert_eq!(core.dropped_unanswered, 0);
    }
}

#[test]
fn device_faults_fail_after_the_mm_exits() {
    let fx = Fx::new();
    let (ep, mm, buf, bond) = fx.sva_endpoint(2 * 4096, Prot::READ_WRITE);
    let p = Some(bond.pasid());
    ep.dma_write(p, buf, b"alive").unwrap();
    let in_use = fx.phys.frames_in_use();
    mm.exit();
    assert!(
        fx.phys.frames_in_use() < in_use,
        "exit frees the data frame"
    );
    let err = ep.dma_read(p, buf, &mut [0; 5]).unwrap_err();
    assert!(matches!(err, DmaError::PageRequestInvalid { .. }), "{err}");
}

#[test]
fn running_out_of_physical_memory_answers_invalid_and_never_panics() {
    let fx = Fx::with(64, EmuIommuConfig::default());
    // 256 pages > 64 frames
    let (ep, mm, buf, bond) = fx.sva_endpoint(1 << 20, Prot::READ_WRITE);
    let err = ep
        .dma_fill(Some(bond.pasid()), buf, 1 << 20, 1)
        .unwrap_err();
    assert!(matches!(err, DmaError::PageRequestInvalid { .. }), "{err}");
    assert_eq!(fx.phys.alloc_frame().unwrap_err().errno_name(), "ENOMEM");
    // Memory comes back with munmap (the old range is gone), and the device can fault again.
    mm.munmap(buf, 1 << 20).unwrap();
    let gone = ep.dma_fill(Some(bond.pasid()), buf, 4096, 2);
    assert!(matches!(gone, Err(DmaError::PageRequestInvalid { .. })));
    let again = mm.mmap(8 << 12, Prot::READ_WRITE).unwrap();
    ep.dma_fill(Some(bond.pasid()), again, 8 << 12, 3).unwrap();
}

//! Hostile input (issue 11): sizes, times, addresses and PASIDs a caller may pass, each refused
//! with an errno (and nothing changed) or honoured, never a panic; memory follows use.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ep_cfg, Fx};
use iommu_core::{sva_bind_device, Domain, DomainRequest, Group};
use iommu_emu::iommu::{VtdS1, HWPT_DATA_VTD_S1, VTD_S1_SIZE};
use iommu_emu::{EmuIommu, EmuIommuConfig, EndpointConfig, Mm, Perms, PhysAddr, PhysMem, Prot};

/// Resident pages of this process (`/proc/self/statm`, second field).
fn resident_pages() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn physical_memory_beyond_its_limit_is_einval_not_a_panic() {
    for frames in [usize::MAX, PhysMem::MAX_FRAMES + 1] {
        let e = PhysMem::new(frames).unwrap_err();
        assert_eq!(e.errno_name(), "EINVAL", "{e}");
        assert!(e.to_string().contains("MAX_FRAMES"), "{e}");
    }
    assert_eq!(
        PhysMem::with_bytes(u64::MAX).unwrap_err().errno_name(),
        "EINVAL"
    );
}

#[test]
fn a_large_memory_costs_only_the_frames_it_hands_out() {
    let before = resident_pages();
    // 1 TiB of frames: prefaulted, or with per-frame bookkeeping sized up front, this would not
    // fit in the test machine.
    let phys = PhysMem::new(PhysMem::MAX_FRAMES).unwrap();
    for _ in 0..256 {
        let f = phys.alloc_frame().unwrap();
        phys.write(f.addr(), &[0xa5; 4096]).unwrap();
    }
    let grown = resident_pages().saturating_sub(before);

    assert_eq!(phys.frames_in_use(), 256);
    // 256 frames written (1 MiB); allow the allocator and test harness some slack.
    assert!(grown < 16 * 1024, "resident pages grew by {grown}");
}

#[test]
fn exhausting_the_budget_fails_the_fault_not_the_process() {
    // Room for the IOMMU's and the mm's tables and a few pages, not for the whole buffer.
    let fx = Fx::with(16, EmuIommuConfig::default());
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let mm = Mm::new(&fx.phys).unwrap();
    let buf = mm.mmap(64 << 10, Prot::READ_WRITE).unwrap();
    let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();

    let r = ep.dma_write(Some(bond.pasid()), buf, &[1u8; 64 << 10]);

    assert!(r.is_err(), "the DMA must fail once memory runs out");
    assert!(fx.phys.frames_in_use() <= fx.phys.capacity());
    let paging = Domain::alloc_paging(ep.device());
    if let Ok(d) = paging {
        // Second-stage tables come from the same exhausted memory: ENOMEM, nothing mapped.
        let e = fx
            .iommu
            .map(&d, 0x40_0000_0000, PhysAddr(0), 4096, Perms::READ)
            .unwrap_err();
        assert_eq!(e.errno_name(), "ENOMEM", "{e}");
        assert_eq!(fx.iommu.iova_to_phys(&d, 0x40_0000_0000), None);
    }
}

#[test]
fn a_response_timeout_of_duration_max_means_no_timeout() {
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", ep_cfg(|c| c.response_timeout = Duration::MAX));
    let mm = Mm::new(&fx.phys).unwrap();
    let buf = mm.mmap(8192, Prot::READ_WRITE).unwrap();
    let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();

    // Faults, waits for the IOPF queue's answer with no deadline, then completes.
    ep.dma_write(Some(bond.pasid()), buf, b"no deadline")
        .unwrap();
    ep.stop_pasid(bond.pasid()).unwrap();

    let mut back = [0u8; 11];
    mm.read(buf, &mut back).unwrap();
    assert_eq!(&back, b"no deadline");
}

#[test]
fn a_physical_range_that_wraps_is_refused_and_maps_nothing() {
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let d = Domain::alloc_paging(ep.device()).unwrap();
    let top: u64 = !0xfff;

    let emu = fx
        .iommu
        .map(&d, 0x10_0000, PhysAddr(top), 0x2000, Perms::READ)
        .unwrap_err();
    let core = d
        .map(0x10_0000, top, 0x2000, iommu_core::IOMMU_READ)
        .unwrap_err();
    let iova_wrap = d
        .map(top, 0x1000, 0x2000, iommu_core::IOMMU_READ)
        .unwrap_err();

    assert_eq!(emu.errno_name(), "EINVAL", "{emu}");
    assert_eq!(core.errno_name(), "EINVAL", "{core}");
    assert_eq!(iova_wrap.errno_name(), "EINVAL", "{iova_wrap}");
    assert_eq!(fx.iommu.iova_to_phys(&d, 0x10_0000), None);
    assert_eq!(fx.iommu.iova_to_phys(&d, 0x10_1000), None);
}

#[test]
fn pasids_beyond_20_bits_are_refused() {
    let phys = Arc::new(PhysMem::new(64).unwrap());
    let cfg = EmuIommuConfig {
        pasid_bits: 21,
        ..EmuIommuConfig::default()
    };
    assert_eq!(
        EmuIommu::new("dmar0", &phys, cfg).unwrap_err().errno_name(),
        "EINVAL"
    );
    let fx = Fx::new();
    let group = Group::new(fx.iommu.driver(), "grp");
    let e = fx
        .iommu
        .add_endpoint(&group, "dev0", (1 << 20) + 1, EndpointConfig::default())
        .unwrap_err();
    assert_eq!(e.errno_name(), "EINVAL", "{e}");

    let ep = fx.endpoint("dev1", EndpointConfig::default());
    let d = Domain::alloc_paging(ep.device()).unwrap();
    assert_eq!(
        group.devices().len(),
        0,
        "the refused endpoint left no device"
    );
    let e = iommu_core::attach_device_pasid(&d, ep.device(), 1 << 20, ()).unwrap_err();
    assert_eq!(e.errno_name(), "EINVAL", "{e}");
    // A DMA tagged with a PASID the bus cannot carry fails; it does not panic.
    assert!(ep.dma_write(Some(1 << 20), 0, b"x").is_err());
    assert!(ep.dma_write(Some(u32::MAX), 0, b"x").is_err());
    assert_eq!(ep.stop_pasid(u32::MAX).unwrap_err().errno_name(), "EINVAL");
}

#[test]
fn binding_an_exited_mm_is_einval() {
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let mm = Mm::new(&fx.phys).unwrap();
    mm.exit();

    let e = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap_err();

    assert_eq!(e.errno_name(), "EINVAL", "{e}");
    assert_eq!(
        mm.as_address_space().iommu_mm().pasid(),
        None,
        "no PASID taken"
    );
}

#[test]
fn nested_driver_data_is_validated() {
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let parent = Domain::alloc_paging(ep.device()).unwrap();
    let good = VtdS1 {
        flags: 0,
        pgtbl_addr: 0x1000,
        addr_width: 48,
    }
    .to_bytes();
    let nested = |data_type: u32, data: &[u8]| {
        Domain::alloc(
            ep.device(),
            DomainRequest::Nested {
                parent: &parent,
                data_type,
                data,
            },
            None,
        )
        .map(|_| ())
        .map_err(|e| e.errno_name())
    };
    let mut long = [0u8; VTD_S1_SIZE + 8];
    long[..VTD_S1_SIZE].copy_from_slice(&good);
    let mut long_dirty = long;
    long_dirty[VTD_S1_SIZE + 3] = 1;
    let bad_flags = VtdS1 {
        flags: 1 << 3,
        ..VtdS1::parse(HWPT_DATA_VTD_S1, &good).unwrap()
    }
    .to_bytes();
    let bad_width = VtdS1 {
        addr_width: 39,
        ..VtdS1::parse(HWPT_DATA_VTD_S1, &good).unwrap()
    }
    .to_bytes();

    assert_eq!(nested(HWPT_DATA_VTD_S1, &good), Ok(()));
    assert_eq!(nested(HWPT_DATA_VTD_S1, &long), Ok(()));
    assert_eq!(nested(0, &[]), Err("EOPNOTSUPP"));
    assert_eq!(nested(0xdead, &good), Err("EOPNOTSUPP"));
    assert_eq!(nested(HWPT_DATA_VTD_S1, &good[..16]), Err("EINVAL"));
    assert_eq!(nested(HWPT_DATA_VTD_S1, &long_dirty), Err("E2BIG"));
    assert_eq!(nested(HWPT_DATA_VTD_S1, &bad_flags), Err("EINVAL"));
    assert_eq!(nested(HWPT_DATA_VTD_S1, &bad_width), Err("EINVAL"));
}

#[test]
fn a_device_without_pri_cannot_have_fault_reporting() {
    let fx = Fx::new();
    for cfg in [
        ep_cfg(|c| c.pri = false),
        ep_cfg(|c| c.ats = false), // PRI needs ATS
    ] {
        let group = Group::new(fx.iommu.driver(), "grp");
        let ep = fx.iommu.add_endpoint(&group, "dev", 1 << 20, cfg).unwrap();
        let e = iommu_core::iopf_queue_add_device(&fx.queue, ep.device()).unwrap_err();
        assert_eq!(e.errno_name(), "ENODEV", "{e}");
        assert!(iommu_core::iopf_stats(ep.device()).is_none(), "not enabled");
    }
}

#[test]
fn cache_sizes_beyond_their_limits_are_einval() {
    let phys = Arc::new(PhysMem::new(64).unwrap());
    let cfg = EmuIommuConfig {
        iotlb_entries: usize::MAX,
        ..EmuIommuConfig::default()
    };
    let e = EmuIommu::new("dmar0", &phys, cfg).unwrap_err();
    assert_eq!(e.errno_name(), "EINVAL", "{e}");

    let fx = Fx::new();
    let group = Group::new(fx.iommu.driver(), "grp");
    let cfg = ep_cfg(|c| c.atc_entries = EndpointConfig::MAX_ATC_ENTRIES + 1);
    let e = fx.iommu.add_endpoint(&group, "dev0", 16, cfg).unwrap_err();
    assert_eq!(e.errno_name(), "EINVAL", "{e}");
    assert_eq!(group.devices().len(), 0, "nothing probed");
}

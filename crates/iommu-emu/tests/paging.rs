//! Paging, identity and nested domains: DMA on the RID and on PASIDs through second-stage
//! tables populated with `EmuIommu::map`, invalidation on unmap and on PASID replace, domain
//! IDs.

mod common;

use common::{iommu_cfg, Fx};
use iommu_core::error::Condition;
use iommu_core::{
    attach_device_pasid, replace_device_pasid, DefaultDomainKind, Domain, DomainRequest,
};
use iommu_emu::{DmaError, EndpointConfig, FaultReason};
use iommu_pt::{Perms, PhysAddr};

const IOVA: u64 = 0x10_0000;

#[test]
fn rid_dma_through_the_default_domain_and_unmap_invalidates_every_cache() {
    let fx = Fx::new();
    let ep = fx.endpoint("nic0", EndpointConfig::default());
    let domain = ep.group().default_domain().unwrap();
    let frames = [
        fx.phys.alloc_frame().unwrap(),
        fx.phys.alloc_frame().unwrap(),
    ];
    for (i, f) in frames.iter().enumerate() {
        fx.iommu
            .map(
                &domain,
                IOVA + i as u64 * 4096,
                f.addr(),
                4096,
                Perms::READ_WRITE,
            )
            .unwrap();
    }
    // Unaligned, crossing the page boundary.
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    ep.dma_write(None, IOVA + 1000, &data).unwrap();
    let mut back = vec![0u8; 5000];
    ep.dma_read(None, IOVA + 1000, &mut back).unwrap();
    assert_eq!(back, data);
    let mut tail = vec![0u8; 5000 - 3096];
    fx.phys.read(frames[1].addr(), &mut tail).unwrap();
    assert_eq!(&tail[..], &data[3096..]);
    assert!(
        ep.stats().atc_hits > 0,
        "the second access hit the device TLB"
    );

    assert_eq!(fx.iommu.unmap(&domain, IOVA + 4096, 4096).unwrap(), 4096);
    let err = ep.dma_read(None, IOVA + 4096, &mut [0; 8]).unwrap_err();
    assert!(
        matches!(err, DmaError::Fault(f) if f.reason == FaultReason::NotPresent && !f.recoverable),
        "{err}"
    );
    ep.dma_read(None, IOVA, &mut [0; 8]).unwrap();
    assert_eq!(
        fx.iommu.iova_to_phys(&domain, IOVA + 5),
        Some(PhysAddr(frames[0].addr().0 + 5))
    );
    assert_eq!(
        fx.iommu
            .unmap(&domain, IOVA + 4096, 4096)
            .unwrap_err()
            .errno_name(),
        "ENOENT"
    );
    assert_eq!(
        fx.iommu
            .map(&domain, IOVA, frames[1].addr(), 4096, Perms::READ)
            .unwrap_err()
            .errno_name(),
        "EEXIST"
    );
}

#[test]
fn identity_domain_passes_physical_addresses_through() {
    let fx = Fx::with(
        64,
        iommu_cfg(|c| c.default_domain = DefaultDomainKind::Identity),
    );
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let f = fx.phys.alloc_frame().unwrap();
    ep.dma_write(None, f.addr().0 + 8, b"raw").unwrap();
    let mut b = [0u8; 3];
    fx.phys.read(PhysAddr(f.addr().0 + 8), &mut b).unwrap();
    assert_eq!(&b, b"raw");
    assert_eq!(
        ep.dma_read(None, 0x1000, &mut b),
        Err(DmaError::BadAddress { pa: 0x1000 })
    );
}

#[test]
fn nested_domain_translates_through_its_parent_and_replace_flushes_the_pasid() {
    let fx = Fx::new();
    let ep = fx.endpoint("vf0", EndpointConfig::default());
    let dev = ep.device();
    let parent = Domain::alloc_paging(dev).unwrap();
    let other = Domain::alloc_paging(dev).unwrap();
    let (fa, fb) = (
        fx.phys.alloc_frame().unwrap(),
        fx.phys.alloc_frame().unwrap(),
    );
    fx.iommu
        .map(&parent, IOVA, fa.addr(), 4096, Perms::READ_WRITE)
        .unwrap();
    fx.iommu
        .map(&other, IOVA, fb.addr(), 4096, Perms::READ_WRITE)
        .unwrap();
    let s1 = iommu_emu::iommu::VtdS1 {
        flags: 0,
        pgtbl_addr: 0,
        addr_width: 48,
    }
    .to_bytes();
    let nested = Domain::alloc(
        dev,
        DomainRequest::Nested {
            parent: &parent,
            data_type: iommu_emu::iommu::HWPT_DATA_VTD_S1,
            data: &s1,
        },
        None,
    )
    .unwrap();
    assert_ne!(fx.iommu.domain_did(&nested), fx.iommu.domain_did(&parent));
    assert_eq!(
        fx.iommu
            .map(&nested, IOVA, fa.addr(), 4096, Perms::READ)
            .unwrap_err()
            .errno_name(),
        "EINVAL",
        "a nested domain has no second stage of its own"
    );

    let _h = attach_device_pasid(&nested, dev, 3, ()).unwrap();
    ep.dma_write(Some(3), IOVA, b"via parent").unwrap();
    let mut b = [0u8; 10];
    fx.phys.read(fa.addr(), &mut b).unwrap();
    assert_eq!(&b, b"via parent");

    // Replace: the cached translation of the old domain must not survive.
    let r = replace_device_pasid(&other, dev, 3, ()).unwrap();
    assert!(r.old.is_some());
    ep.dma_write(Some(3), IOVA, b"via other!").unwrap();
    fx.phys.read(fb.addr(), &mut b).unwrap();
    assert_eq!(&b, b"via other!");
    fx.phys.read(fa.addr(), &mut b).unwrap();
    assert_eq!(&b, b"via parent");
}

#[test]
fn another_iommus_domain_is_refused() {
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let other = Fx::new();
    let ep2 = other.endpoint("dev1", EndpointConfig::default());
    let foreign = ep2.group().default_domain().unwrap();
    let f = fx.phys.alloc_frame().unwrap();
    let err = fx
        .iommu
        .map(&foreign, IOVA, f.addr(), 4096, Perms::READ)
        .unwrap_err();
    assert_eq!(err.errno_name(), "EINVAL");
    assert_eq!(err.condition(), Condition::ForeignDomain);
    assert_eq!(fx.iommu.domain_did(&foreign), None);
    assert!(fx
        .iommu
        .domain_did(&ep.group().default_domain().unwrap())
        .is_some());
    // The core refuses to attach it to this IOMMU's device as well.
    assert_eq!(
        attach_device_pasid(&foreign, ep.device(), 1, ())
            .unwrap_err()
            .errno_name(),
        "EINVAL"
    );
}

#[test]
fn core_domain_map_reaches_the_emulated_tables_and_dma_sees_it() {
    use iommu_core::{IOMMU_READ, IOMMU_WRITE};
    let fx = Fx::new();
    let ep = fx.endpoint("nic0", EndpointConfig::default());
    let domain = Domain::alloc_paging(ep.device()).unwrap();
    iommu_core::attach_group(&domain, ep.group()).unwrap();
    let frame = fx.phys.alloc_frame().unwrap();
    // Through the core (what iommufd's IOAS does), not the emulator's own API.
    domain
        .map(IOVA, frame.addr().0, 4096, IOMMU_READ | IOMMU_WRITE)
        .unwrap();
    assert_eq!(domain.iova_to_phys(IOVA + 8), Some(frame.addr().0 + 8));
    ep.dma_write(None, IOVA + 8, b"via Domain::map").unwrap();
    let mut back = [0u8; 15];
    fx.phys
        .read(PhysAddr(frame.addr().0 + 8), &mut back)
        .unwrap();
    assert_eq!(&back, b"via Domain::map");
    // Read-only mapping: a DMA write is refused.
    domain
        .map(IOVA + 4096, frame.addr().0, 4096, IOMMU_READ)
        .unwrap();
    assert!(ep.dma_write(None, IOVA + 4096, b"x").is_err());
    assert_eq!(domain.unmap(IOVA, 8192).unwrap(), 8192);
    assert_eq!(domain.iova_to_phys(IOVA), None);
    assert!(
        ep.dma_read(None, IOVA, &mut [0; 4]).is_err(),
        "unmap invalidated the caches"
    );
    iommu_core::detach_group(&domain, ep.group()).unwrap();
}

/// The paging-structure cache serves walks of a span while its tables stand and never after
/// an unmap freed them: here the freed last-level table comes back as a data frame full of
/// entries that look present, and DMA after the remap still goes where the new tables say.
#[test]
fn a_freed_last_level_table_is_never_walked_through_the_paging_structure_cache() {
    let fx = Fx::new();
    let ep = fx.endpoint("nic0", EndpointConfig::default());
    let domain = ep.group().default_domain().unwrap();
    let span = 0x4000_0000u64; // a 2 MiB span of its own
    let [a, b, c, decoy] = [(); 4].map(|_| fx.phys.alloc_frame().unwrap());
    fx.iommu
        .map(&domain, span, a.addr(), 4096, Perms::READ_WRITE)
        .unwrap();
    ep.dma_read(None, span, &mut [0; 8]).unwrap();
    let walked_from_cache = fx.iommu.stats().psc_hits;
    // Another page of the span: IOTLB and device TLB miss, the cached last-level table serves.
    fx.iommu
        .map(&domain, span + 0x2000, c.addr(), 4096, Perms::READ_WRITE)
        .unwrap();
    ep.dma_write(None, span + 0x2000, &[0xc0; 16]).unwrap();
    assert_eq!(fx.iommu.stats().psc_hits, walked_from_cache + 1);

    // Unmapping the whole span frees its last-level table; the next frame handed out is it.
    fx.iommu.unmap(&domain, span, 0x20_0000).unwrap();
    let reused = fx.phys.alloc_frame().unwrap();
    let fake_entry = decoy.addr().0 | 0b11; // present, read/write, at the decoy frame
    fx.phys
        .write(reused.addr(), &fake_entry.to_le_bytes().repeat(512))
        .unwrap();
    fx.iommu
        .map(&domain, span + 0x1000, b.addr(), 4096, Perms::READ_WRITE)
        .unwrap();
    ep.dma_write(None, span + 0x1000, &[0xb0; 16]).unwrap();
    let mut back = [0u8; 16];
    fx.phys.read(b.addr(), &mut back).unwrap();
    assert_eq!(back, [0xb0; 16], "the write went through the new tables");
    fx.phys.read(decoy.addr(), &mut back).unwrap();
    assert_eq!(back, [0; 16], "nothing went through the freed table");
    let err = ep.dma_read(None, span, &mut [0; 8]).unwrap_err();
    assert!(
        matches!(err, DmaError::Fault(f) if f.reason == FaultReason::NotPresent),
        "{err}"
    );
}

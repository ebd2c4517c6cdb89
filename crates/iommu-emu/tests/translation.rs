//! Translation through the emulator equals a reference model, across random map/unmap
//! sequences on a paging domain and random mmap/munmap/mprotect/touch sequences on an mm — with
//! the IOTLB and device TLBs warm, so a missed invalidation shows up as a wrong answer.

mod common;

use std::collections::BTreeMap;

use common::Fx;
use iommu_core::sva_bind_device;
use iommu_emu::{EndpointConfig, FaultReason, Mm, Prot};
use iommu_pt::{Access, FaultKind, Perms, Pfn};
use proptest::prelude::*;

const BASE: u64 = 0x1_0000_0000;
const PAGES: u64 = 48;

#[derive(Debug, Clone)]
enum PagingOp {
    Map { page: u64, n: u64, writable: bool },
    Unmap { page: u64, n: u64 },
}

fn paging_op() -> impl Strategy<Value = PagingOp> {
    prop_oneof![
        (0..PAGES, 1..6u64, any::<bool>()).prop_map(|(page, n, writable)| PagingOp::Map {
            page,
            n,
            writable
        }),
        (0..PAGES, 1..10u64).prop_map(|(page, n)| PagingOp::Unmap { page, n }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn paging_domain_translation_matches_the_reference_model(
        ops in proptest::collection::vec(paging_op(), 1..24)
    ) {
        let fx = Fx::new();
        let ep = fx.endpoint("dev0", EndpointConfig::default());
        let dev = ep.device();
        let domain = ep.group().default_domain().unwrap();
        // vpn -> (frame, writable)
        let mut model: BTreeMap<u64, (Pfn, bool)> = BTreeMap::new();
        let mut ever_mapped = 0u64;
        for op in ops {
            match op {
                PagingOp::Map { page, n, writable } => {
                    // One map call per page, each with its own frame: mapped pages answer EEXIST
                    // and keep their old frame.
                    let perms = if writable { Perms::READ_WRITE } else { Perms::READ };
                    for vpn in (page..page + n).map(|p| (BASE >> 12) + p) {
                        let frame = fx.phys.alloc_frame().unwrap();
                        let r = fx.iommu.map(&domain, vpn << 12, frame.addr(), 4096, perms);
                        match model.entry(vpn) {
                            std::collections::btree_map::Entry::Occupied(_) => {
                                prop_assert_eq!(r.unwrap_err().errno_name(), "EEXIST");
                                fx.phys.free_frame(frame).unwrap();
                            }
                            std::collections::btree_map::Entry::Vacant(v) => {
                                r.unwrap();
                                v.insert((frame, writable));
                            }
                        }
                    }
                }
                PagingOp::Unmap { page, n } => {
                    let start = BASE + (page << 12);
                    let gone: Vec<u64> = model
                        .range(start >> 12..(start >> 12) + n)
                        .map(|(v, _)| *v)
                        .collect();
                    let r = fx.iommu.unmap(&domain, start, n << 12);
                    if gone.is_empty() {
                        prop_assert_eq!(r.unwrap_err().errno_name(), "ENOENT");
                    } else {
                        prop_assert_eq!(r.unwrap(), gone.len() as u64 * 4096);
                    }
                    for v in gone {
                        let (f, _) = model.remove(&v).unwrap();
                        fx.phys.free_frame(f).unwrap();
                    }
                }
            }
            ever_mapped += model.len() as u64;
            // Twice: the second round hits the IOTLB.
            for _ in 0..2 {
                for p in 0..PAGES + 8 {
                    let va = BASE + (p << 12) + 0x123;
                    let r = fx.iommu.translate(dev, None, va, Access::READ);
                    let w = fx.iommu.translate(dev, None, va, Access::WRITE);
                    match model.get(&(va >> 12)) {
                        Some((f, writable)) => {
                            prop_assert_eq!(r.unwrap().pa.0, f.addr().0 + 0x123);
                            if *writable {
                                prop_assert_eq!(w.unwrap().pa.0, f.addr().0 + 0x123);
                            } else {
                                prop_assert_eq!(
                                    w.unwrap_err().reason,
                                    FaultReason::Permission(FaultKind::NotWritable)
                                );
                            }
                        }
                        None => {
                            let e = r.unwrap_err();
                            prop_assert_eq!(e.reason, FaultReason::NotPresent);
                            prop_assert!(!e.recoverable, "default domain takes no faults");
                        }
                    }
                }
            }
        }
        // Translations are re-asked in a second round: the cache was exercised.
        prop_assert_eq!(fx.iommu.stats().iotlb_hits > 0, ever_mapped > 0);
    }
}

#[derive(Debug, Clone)]
enum MmOp {
    Touch { page: u64 },
    Munmap { page: u64, n: u64 },
    Mprotect { page: u64, n: u64, writable: bool },
    Remap { page: u64, n: u64 },
    DmaWrite { page: u64 },
}

fn mm_op() -> impl Strategy<Value = MmOp> {
    prop_oneof![
        (0..PAGES).prop_map(|page| MmOp::Touch { page }),
        (0..PAGES, 1..8u64).prop_map(|(page, n)| MmOp::Munmap { page, n }),
        (0..PAGES, 1..8u64, any::<bool>()).prop_map(|(page, n, writable)| MmOp::Mprotect {
            page,
            n,
            writable
        }),
        (0..PAGES, 1..8u64).prop_map(|(page, n)| MmOp::Remap { page, n }),
        (0..PAGES).prop_map(|page| MmOp::DmaWrite { page }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sva_translation_matches_the_mm_page_table(ops in proptest::collection::vec(mm_op(), 1..24)) {
        let fx = Fx::new();
        let ep = fx.endpoint("dev0", EndpointConfig::default());
        let mm = Mm::new(&fx.phys).unwrap();
        mm.mmap_fixed(BASE, PAGES << 12, Prot::READ_WRITE).unwrap();
        let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();
        let pasid = Some(bond.pasid());
        for op in ops {
            match op {
                MmOp::Touch { page } => {
                    let _ = mm.write(BASE + (page << 12), &[page as u8]);
                }
                MmOp::Munmap { page, n } => mm.munmap(BASE + (page << 12), n << 12).unwrap(),
                MmOp::Mprotect { page, n, writable } => {
                    let prot = if writable { Prot::READ_WRITE } else { Prot::READ };
                    let _ = mm.mprotect(BASE + (page << 12), n << 12, prot);
                }
                MmOp::Remap { page, n } => {
                    let _ = mm.mmap_fixed(BASE + (page << 12), n << 12, Prot::READ_WRITE);
                }
                MmOp::DmaWrite { page } => {
                    // Faults the page in through PRI when the VMA allows it.
                    let _ = ep.dma_write(pasid, BASE + (page << 12) + 8, &[0xd0]);
                }
            }
            for _ in 0..2 {
                for p in 0..PAGES + 4 {
                    let va = BASE + (p << 12) + 0x40;
                    let r = fx.iommu.translate(ep.device(), pasid, va, Access::READ.user());
                    let w = fx.iommu.translate(ep.device(), pasid, va, Access::WRITE.user());
                    let writable = mm
                        .vmas()
                        .iter()
                        .any(|(s, e, prot)| *s <= va && va < *e && prot.write);
                    match mm.translate(va) {
                        Some(pa) => {
                            prop_assert_eq!(r.unwrap().pa, pa);
                            prop_assert_eq!(w.is_ok(), writable);
                        }
                        None => {
                            prop_assert_eq!(r.unwrap_err().reason, FaultReason::NotPresent);
                            prop_assert!(w.is_err());
                        }
                    }
                }
            }
        }
    }
}

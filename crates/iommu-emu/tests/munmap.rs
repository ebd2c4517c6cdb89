//! After munmap returns, no DMA ever reads the old frame (DESIGN §4, mm invalidation before
//! free): the IOTLB and device TLBs are invalidated and DMA in flight completes before the frame
//! is freed. The freed frame is immediately reused and filled with a marker (the frame pool is
//! LIFO), so any stale translation would read the marker.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{ep_cfg, wait_for, Fx};
use iommu_core::sva_bind_device;
use iommu_emu::{DmaError, Endpoint, EndpointConfig, Mm, Prot};

const OLD: u8 = 0xab;
const MARKER: u8 = 0xee;

fn devices(fx: &Fx) -> Vec<Endpoint> {
    vec![
        fx.endpoint("ats", EndpointConfig::default()),
        fx.endpoint("no-ats", ep_cfg(|c| c.ats = false)),
    ]
}

#[test]
fn dma_after_munmap_never_sees_the_reused_frame() {
    let fx = Fx::new();
    let mm = Mm::new(&fx.phys).unwrap();
    let va = mm.mmap(4096, Prot::READ_WRITE).unwrap();
    // The no-ATS device cannot use PRI, so the CPU faults the page in first.
    mm.write(va, &[OLD; 4096]).unwrap();
    for ep in devices(&fx) {
        let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();
        let p = Some(bond.pasid());
        let mut b = [0u8; 64];
        ep.dma_read(p, va, &mut b).unwrap(); // caches the translation
        ep.dma_read(p, va, &mut b).unwrap();
        assert_eq!(b, [OLD; 64]);
        let old = mm.translate(va).unwrap();

        mm.munmap(va, 4096).unwrap();
        let reused = fx.phys.alloc_frame().unwrap();
        assert_eq!(
            reused,
            old.pfn(),
            "the pool hands the freed frame out again"
        );
        fx.phys.fill(reused.addr(), 4096, MARKER).unwrap();

        let mut b = [0u8; 64];
        match ep.dma_read(p, va, &mut b) {
            Err(DmaError::PageRequestInvalid { .. }) => {} // ATS + PRI: no VMA any more
            Err(DmaError::Fault(_)) => {}                  // untranslated: not present
            r => panic!("DMA after munmap: {r:?}, data {:x?}", &b[..4]),
        }
        assert!(!b.contains(&MARKER));
        fx.phys.free_frame(reused).unwrap();
        // Map it again for the next device.
        mm.mmap_fixed(va, 4096, Prot::READ_WRITE).unwrap();
        mm.write(va, &[OLD; 4096]).unwrap();
    }
}

#[test]
fn concurrent_dma_reads_racing_munmap_never_see_the_reused_frame() {
    let fx = Fx::new();
    let eps = devices(&fx);
    let mm = Mm::new(&fx.phys).unwrap();
    let space = mm.as_address_space();
    let bonds: Vec<_> = eps
        .iter()
        .map(|e| sva_bind_device(e.device(), &space).unwrap())
        .collect();
    let p = Some(bonds[0].pasid());
    for _round in 0..40 {
        let va = mm.mmap(2 * 4096, Prot::READ_WRITE).unwrap();
        mm.write(va, &[OLD; 2 * 4096]).unwrap();
        let unmapped = AtomicBool::new(false);
        let reads_ok = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let readers: Vec<_> = eps
                .iter()
                .map(|ep| {
                    let (unmapped, reads_ok) = (&unmapped, &reads_ok);
                    s.spawn(move || {
                        let mut seen_error = false;
                        loop {
                            let done = unmapped.load(Ordering::SeqCst);
                            let mut b = vec![0u8; 2 * 4096];
                            match ep.dma_read(p, va, &mut b) {
                                Ok(()) => {
                                    assert!(
                                        b.iter().all(|&x| x == OLD),
                                        "DMA read a frame it no longer owns"
                                    );
                                    assert!(!seen_error, "a stale translation came back");
                                    reads_ok.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(DmaError::PageRequestInvalid { .. } | DmaError::Fault(_)) => {
                                    assert!(!b.contains(&MARKER));
                                    seen_error = true;
                                }
                                Err(e) => panic!("unexpected {e}"),
                            }
                            if done {
                                return;
                            }
                        }
                    })
                })
                .collect();
            // Let the readers warm their caches, then pull the pages from under them.
            assert!(wait_for(|| reads_ok.load(Ordering::SeqCst) >= 4));
            let frames: Vec<_> = [va, va + 4096]
                .iter()
                .map(|&a| mm.translate(a).unwrap().pfn())
                .collect();
            mm.munmap(va, 2 * 4096).unwrap();
            let mut reused = vec![
                fx.phys.alloc_frame().unwrap(),
                fx.phys.alloc_frame().unwrap(),
            ];
            for f in &reused {
                fx.phys.fill(f.addr(), 4096, MARKER).unwrap();
            }
            reused.sort();
            let mut old = frames.clone();
            old.sort();
            assert_eq!(reused, old, "the pool hands the freed frames out again");
            unmapped.store(true, Ordering::SeqCst);
            for r in readers {
                r.join().unwrap();
            }
            for f in reused {
                fx.phys.free_frame(f).unwrap();
            }
        });
    }
}

#[test]
fn device_faults_racing_munmap_and_mmap_leak_no_frame() {
    let fx = Fx::new();
    let eps = devices(&fx);
    let baseline = fx.phys.frames_in_use();
    let mm = Mm::new(&fx.phys).unwrap();
    let bonds: Vec<_> = eps
        .iter()
        .map(|e| sva_bind_device(e.device(), &mm.as_address_space()).unwrap())
        .collect();
    let p = Some(bonds[0].pasid());
    const VA: u64 = 0x7000_0000;
    const LEN: u64 = 16 * 4096;
    mm.mmap_fixed(VA, LEN, Prot::READ_WRITE).unwrap();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // Only the ATS device can fault pages in; the other one reads what is resident.
        let writer = s.spawn(|| {
            let mut outcomes = [0u32; 2];
            while !stop.load(Ordering::SeqCst) {
                match eps[0].dma_fill(p, VA, LEN, 0x11) {
                    Ok(()) => outcomes[0] += 1,
                    Err(DmaError::PageRequestInvalid { .. }) => outcomes[1] += 1,
                    Err(e) => panic!("unexpected {e}"),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            outcomes
        });
        let reader = s.spawn(|| {
            let mut b = vec![0u8; LEN as usize];
            while !stop.load(Ordering::SeqCst) {
                match eps[1].dma_read(p, VA, &mut b) {
                    Ok(()) => assert!(b.iter().all(|&x| x == 0x11 || x == 0)),
                    Err(DmaError::Fault(_)) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        });
        let deadline = std::time::Instant::now() + common::GUARD;
        let mut rounds = 0;
        while rounds < 200 || done.load(Ordering::SeqCst) < 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "writer made no progress"
            );
            mm.munmap(VA, LEN).unwrap();
            mm.mmap_fixed(VA, LEN, Prot::READ_WRITE).unwrap();
            rounds += 1;
        }
        stop.store(true, Ordering::SeqCst);
        let outcomes = writer.join().unwrap();
        reader.join().unwrap();
        assert!(outcomes[0] + outcomes[1] > 0);
    });
    drop(bonds);
    mm.exit();
    drop(mm);
    assert_eq!(
        fx.phys.frames_in_use(),
        baseline,
        "every frame and table came back"
    );
}

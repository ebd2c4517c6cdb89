//! `AtsIommu` behind vm-memory's `IommuMemory`: a miss resolved by PRI, permission failures,
//! invalidations reaching the IOTLB, a detach while a translation waits, devices without PRI
//! or ATS. Every test is bounded: waits are on conditions with deadlines, never sleeps.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use iommu_core::IOMMU_READ;
use iommu_emu::{DmaError, EndpointConfig, Prot};
use iommu_vmm::world::{HwptWorld, SvaWorld};
use vm_memory::iommu::Error as IommuError;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

/// The bound on anything a test waits for (the endpoints' response timeout).
const BOUND: Duration = Duration::from_secs(5);
const IOVA: u64 = 0x1_0000_0000;

fn config() -> EndpointConfig {
    EndpointConfig {
        response_timeout: BOUND,
        ..EndpointConfig::default()
    }
}

/// The reason of a failed translation (panics on any other error).
fn cannot_resolve<T: std::fmt::Debug>(r: Result<T, GuestMemoryError>) -> String {
    match r {
        Err(GuestMemoryError::IommuError(IommuError::CannotResolve { reason, .. })) => reason,
        other => panic!("expected CannotResolve, got {other:?}"),
    }
}

#[test]
fn miss_on_untouched_memory_is_resolved_by_pri_then_hits() {
    let w = SvaWorld::new(256, config()).unwrap();
    let va = w.mm.mmap(2 * 4096, Prot::READ_WRITE).unwrap();
    let mem = w.memory();

    // Straddles two untouched pages: one ATS request, one page request group of two pages.
    mem.write_slice(b"demand paged by the device", GuestAddress(va + 4090))
        .unwrap();

    let st = w.ep.stats();
    assert_eq!(st.groups_sent, 1);
    assert_eq!(st.page_requests, 2);
    assert_eq!(st.groups_answered, 1);
    let ats = mem.iommu().stats();
    assert_eq!((ats.translations, ats.hits, ats.ats_requests), (1, 0, 1));
    let mut back = [0u8; 26];
    w.mm.read(va + 4090, &mut back).unwrap();
    assert_eq!(&back, b"demand paged by the device");

    let mut again = [0u8; 26];
    mem.read_slice(&mut again, GuestAddress(va + 4090)).unwrap();
    assert_eq!(again, back);
    let ats = mem.iommu().stats();
    assert_eq!((ats.translations, ats.hits, ats.ats_requests), (2, 1, 1));
    assert_eq!(w.ep.stats().groups_sent, 1, "a hit sends nothing");
}

#[test]
fn write_through_a_read_only_iommu_mapping_is_cannot_resolve_with_the_permission_fault() {
    let w = HwptWorld::new(256, config(), false).unwrap();
    let frame = w.phys.alloc_frame().unwrap();
    w.phys
        .guest_memory()
        .write_obj(0x1234_5678u64, GuestAddress(frame.addr().0))
        .unwrap();
    w.ictx
        .ioas_map(w.ioas, Some(IOVA), frame.addr().0, 4096, IOMMU_READ)
        .unwrap();
    let mem = w.memory();

    let read: u64 = mem.read_obj(GuestAddress(IOVA)).unwrap();
    let reason = cannot_resolve(mem.write_obj(1u64, GuestAddress(IOVA)));

    assert_eq!(read, 0x1234_5678);
    assert!(reason.contains("Permission"), "{reason}");
    assert_eq!(mem.iommu().stats().failures, 1);
    assert_eq!(
        w.ep.stats().groups_sent,
        0,
        "not fault capable: no page request"
    );
    drop(mem);
    drop(w);
}

#[test]
fn write_to_a_read_only_vma_is_refused_by_the_sva_handler() {
    let w = SvaWorld::new(256, config()).unwrap();
    let va = w.mm.mmap(4096, Prot::READ).unwrap();
    let mem = w.memory();

    let zero: u64 = mem.read_obj(GuestAddress(va)).unwrap();
    let reason = cannot_resolve(mem.write_obj(7u64, GuestAddress(va)));

    assert_eq!(zero, 0);
    assert_eq!(
        reason,
        DmaError::PageRequestInvalid { iova: va }.to_string()
    );
    let st = w.ep.stats();
    assert_eq!((st.groups_sent, st.groups_answered, st.invalid), (2, 2, 1));
}

#[test]
fn swap_out_empties_the_iotlb_and_the_next_access_misses() {
    let w = SvaWorld::new(256, config()).unwrap();
    let va = w.mm.mmap(4096, Prot::READ_WRITE).unwrap();
    w.mm.write(va, b"resident").unwrap();
    let mem = w.memory();
    let mut buf = [0u8; 8];
    mem.read_slice(&mut buf, GuestAddress(va)).unwrap();
    mem.read_slice(&mut buf, GuestAddress(va)).unwrap();
    let before = mem.iommu().stats();
    assert_eq!((before.ats_requests, before.hits), (1, 1));
    assert_eq!(w.ep.stats().groups_sent, 0, "resident: no page request");

    assert_eq!(w.mm.swap_out(va, 4096).unwrap(), 1);
    mem.read_slice(&mut buf, GuestAddress(va)).unwrap();

    let after = mem.iommu().stats();
    assert_eq!(&buf, b"resident", "swapped back in with its contents");
    assert_eq!(
        after.ats_requests, 2,
        "the access after the swap-out missed"
    );
    assert_eq!(after.hits, 1);
    assert!(after.flushes > before.flushes);
    let st = w.ep.stats();
    assert_eq!((st.groups_sent, st.groups_answered), (1, 1));
}

#[test]
fn munmap_makes_the_next_access_fail_instead_of_hitting_a_stale_entry() {
    let w = SvaWorld::new(256, config()).unwrap();
    let va = w.mm.mmap(4096, Prot::READ_WRITE).unwrap();
    let mem = w.memory();
    mem.write_obj(5u64, GuestAddress(va)).unwrap();

    w.mm.munmap(va, 4096).unwrap();
    let reason = cannot_resolve(mem.read_obj::<u64>(GuestAddress(va)));

    assert_eq!(
        reason,
        DmaError::PageRequestInvalid { iova: va }.to_string()
    );
    assert_eq!(mem.iommu().stats().ats_requests, 2);
}

#[test]
fn pasid_stop_empties_the_iotlb_so_a_cached_translation_is_not_used() {
    let w = SvaWorld::new(256, config()).unwrap();
    let va = w.mm.mmap(4096, Prot::READ_WRITE).unwrap();
    let mem = w.memory();
    mem.write_obj(9u64, GuestAddress(va)).unwrap();
    assert_eq!(mem.read_obj::<u64>(GuestAddress(va)).unwrap(), 9, "cached");

    w.ep.stop_pasid(w.pasid()).unwrap();
    let reason = cannot_resolve(mem.read_obj::<u64>(GuestAddress(va)));

    assert_eq!(
        reason,
        DmaError::PasidStopped { pasid: w.pasid() }.to_string()
    );
    w.ep.start_pasid(w.pasid());
    assert_eq!(mem.read_obj::<u64>(GuestAddress(va)).unwrap(), 9);
}

#[test]
fn detach_while_a_translation_waits_for_its_page_response_answers_it() {
    let mut w = HwptWorld::new(256, config(), true).unwrap();
    let mem = w.memory();
    let (tx, rx) = mpsc::channel();
    // No handler reads the fault fd: the translation waits for a response nobody sends.
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(mem.read_obj::<u64>(GuestAddress(IOVA)));
    });
    let fd = w.fault_fd().unwrap();
    assert!(
        fd.wait_readable(Some(BOUND)).unwrap(),
        "the page request arrived"
    );

    let start = Instant::now();
    w.detach().unwrap();
    let r = rx.recv_timeout(BOUND).expect("answered, not hung");

    assert!(start.elapsed() < BOUND);
    let reason = cannot_resolve(r);
    assert_eq!(
        reason,
        DmaError::PageRequestInvalid { iova: IOVA }.to_string()
    );
    waiter.join().unwrap();
    let st = w.ep.stats();
    assert_eq!((st.groups_sent, st.groups_answered, st.invalid), (1, 1, 1));
    assert_eq!(w.fault_fd().unwrap().stats().auto_responses, 1);
}

#[test]
fn sva_unbind_while_a_translation_waits_answers_it_with_an_error() {
    // A manual IOPF queue: the SVA handler runs only when someone runs it (here: the unbind's
    // flush), so the translation is certainly waiting when the unbind starts.
    let queue = iommu_core::IopfQueue::new_manual("dmar0");
    let mut w = SvaWorld::with_queue(256, config(), queue.clone()).unwrap();
    let va = w.mm.mmap(4096, Prot::READ_WRITE).unwrap();
    let mem = w.memory();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(mem.read_obj::<u64>(GuestAddress(va)));
    });
    let deadline = Instant::now() + BOUND;
    while queue.pending() == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        queue.pending(),
        1,
        "the group reached the SVA handler's queue"
    );

    w.unbind();
    let r = rx.recv_timeout(BOUND).expect("answered, not hung");

    let reason = cannot_resolve(r);
    assert!(reason.contains("NoContext"), "{reason}");
    waiter.join().unwrap();
    let st = w.ep.stats();
    assert_eq!((st.groups_sent, st.groups_answered), (1, 1));
}

#[test]
fn a_page_request_nobody_answers_times_out_as_cannot_resolve() {
    let cfg = EndpointConfig {
        response_timeout: Duration::from_millis(100),
        ..config()
    };
    let w = HwptWorld::new(256, cfg, true).unwrap();
    let mem = w.memory();

    let start = Instant::now();
    let reason = cannot_resolve(mem.read_obj::<u64>(GuestAddress(IOVA)));

    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(reason.contains("no page response"), "{reason}");
    let st = w.ep.stats();
    assert_eq!((st.groups_sent, st.abandoned), (1, 1));
}

#[test]
fn device_without_pri_gets_cannot_resolve_at_once() {
    let cfg = EndpointConfig {
        pri: false,
        ..config()
    };
    // A fault-capable HWPT is refused for it, as Linux refuses to enable IOPF there.
    let refused = HwptWorld::new(256, cfg.clone(), true)
        .err()
        .expect("refused");
    assert!(refused.contains("ENODEV"), "{refused}");
    let w = HwptWorld::new(256, cfg, false).unwrap();
    let mem = w.memory();

    let start = Instant::now();
    let reason = cannot_resolve(mem.read_obj::<u64>(GuestAddress(IOVA)));

    assert!(start.elapsed() < BOUND / 2, "no wait for a response");
    assert!(reason.contains("unrecoverable"), "{reason}");
    assert_eq!(w.ep.stats().groups_sent, 0);
}

#[test]
fn device_without_ats_translates_resident_pages_but_a_miss_fails_at_once() {
    let cfg = EndpointConfig {
        ats: false,
        ..config()
    };
    // PRI needs ATS: no fault-capable HWPT either.
    assert!(HwptWorld::new(256, cfg.clone(), true).is_err());
    let w = HwptWorld::new(256, cfg, false).unwrap();
    let frame = w.phys.alloc_frame().unwrap();
    w.ictx
        .ioas_map(w.ioas, Some(IOVA), frame.addr().0, 4096, IOMMU_READ)
        .unwrap();
    let mem = w.memory();

    let mapped = mem.read_obj::<u64>(GuestAddress(IOVA));
    let start = Instant::now();
    let reason = cannot_resolve(mem.read_obj::<u64>(GuestAddress(IOVA + 4096)));

    assert_eq!(mapped.unwrap(), 0);
    assert!(start.elapsed() < BOUND / 2, "no wait for a response");
    assert!(reason.contains("unrecoverable"), "{reason}");
    assert_eq!(w.ep.stats().groups_sent, 0, "no PRI without ATS");
    drop(mem);
    drop(w);
}

#[test]
fn a_range_that_wraps_is_cannot_resolve() {
    let w = SvaWorld::new(64, config()).unwrap();
    let mem = w.memory();
    let mut buf = [0u8; 16];

    let reason = cannot_resolve(mem.read_slice(&mut buf, GuestAddress(u64::MAX - 4)));

    assert!(reason.contains("wraps"), "{reason}");
}

#[test]
fn device_reads_racing_swap_outs_never_see_an_older_value_than_published() {
    // The CPU writes k, publishes k, swaps the page out; the device reads concurrently. A read
    // that starts after k was published must see at least k: a translation cached before a
    // swap-out and used after it (the old frame) would show an older value.
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    let w = SvaWorld::new(256, config()).unwrap();
    let va = w.mm.mmap(4096, Prot::READ_WRITE).unwrap();
    w.mm.write(va, &0u64.to_le_bytes()).unwrap();
    let mem = w.memory();
    let published = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    const ROUNDS: u64 = 300;
    let deadline = Instant::now() + BOUND;

    let stale = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut stale = 0u32;
            while published.load(SeqCst) < ROUNDS {
                let floor = published.load(SeqCst);
                let v: u64 = mem.read_obj(GuestAddress(va)).unwrap();
                stale += u32::from(v < floor);
                reads.fetch_add(1, SeqCst);
            }
            stale
        });
        for k in 1..=ROUNDS {
            w.mm.write(va, &k.to_le_bytes()).unwrap();
            published.store(k, SeqCst);
            w.mm.swap_out(va, 4096).unwrap();
            // Let the reader in between swap-outs (bounded: a stuck reader fails below).
            let seen = reads.load(SeqCst);
            while k < ROUNDS && reads.load(SeqCst) == seen && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
        reader.join().unwrap()
    });

    assert_eq!(stale, 0);
    assert!(
        reads.load(SeqCst) >= ROUNDS - 1,
        "the reader raced every round"
    );
    assert!(Instant::now() < deadline, "no round waited out the bound");
    let st = w.ep.stats();
    assert_eq!(st.groups_sent, st.groups_answered);
    assert!(mem.iommu().stats().flushes > 1);
}

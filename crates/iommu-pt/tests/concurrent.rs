//! Stress: one thread maps, unmaps and splits while others walk the same tables.
//!
//! Every mapping ever made translates `iova` to `iova + OFFSET_RO` (read-only) or
//! `iova + OFFSET_RW` (read-write). A walker that ever sees another address, or an address
//! with the other offset's permissions, has seen garbage: a torn entry, a recycled table, or a
//! leaf mixed from two mappings. Table pages are freed only after a grace period in which every
//! walker finished a walk, which is the deferred-free contract of `Unmapped::freed_tables`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use iommu_pt::{
    walk, Access, ArenaTableMem, FaultKind, PageTable, Perms, Pfn, PhysAddr, SecondStage,
};

const M2: u64 = 2 << 20;
const SLOTS: u64 = 8;
const BASE: u64 = 0x80_0000_0000 - 4 * M2; // straddles a 512 GiB (level-3 entry) boundary
const OFFSET_RO: u64 = 1 << 30;
const OFFSET_RW: u64 = 2 << 30;
const WALKERS: usize = 2;
const MAPPER_STEPS: u32 = 40_000;

/// xorshift64: deterministic, dependency-free randomness for the threads.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Empty,
    Mapped,
    Partial,
}

#[test]
fn walkers_see_old_or_new_translation_or_fault_never_garbage() {
    let mem = ArenaTableMem::new(1 << 12).unwrap();
    let mut pt = PageTable::<SecondStage, _>::new(&mem).unwrap();
    let root = pt.root();
    let stop = AtomicBool::new(false);
    let walks_done: Vec<AtomicU64> = (0..WALKERS).map(|_| AtomicU64::new(0)).collect();

    let results = thread::scope(|s| {
        let walkers: Vec<_> = (0..WALKERS)
            .map(|w| {
                let (mem, stop, done) = (&mem, &stop, &walks_done[w]);
                s.spawn(move || {
                    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1);
                    let (mut translated, mut faulted) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let r = next(&mut rng);
                        let iova = BASE + r % (SLOTS * M2);
                        let access = if r >> 60 == 0 {
                            Access::WRITE
                        } else {
                            Access::READ
                        };
                        match walk::<SecondStage, _>(mem, root, iova, access) {
                            Ok(t) => {
                                let consistent = (t.pa == PhysAddr(iova + OFFSET_RO)
                                    && t.perms == Perms::READ)
                                    || (t.pa == PhysAddr(iova + OFFSET_RW)
                                        && t.perms == Perms::READ_WRITE);
                                assert!(consistent, "garbage translation {iova:#x} -> {t:?}");
                                translated += 1;
                            }
                            Err(f) => {
                                let allowed = f.kind == FaultKind::NotPresent
                                    || (access.write && f.kind == FaultKind::NotWritable);
                                assert!(allowed, "unexpected fault {f}");
                                faulted += 1;
                            }
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    (translated, faulted)
                })
            })
            .collect();

        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut slots = [Slot::Empty; SLOTS as usize];
        let mut quarantine: Vec<(Vec<u64>, Vec<Pfn>)> = Vec::new();
        for _ in 0..MAPPER_STEPS {
            let r = next(&mut rng);
            let slot = (r % SLOTS) as usize;
            let iova = BASE + slot as u64 * M2;
            let offset = if r & 0x100 == 0 { OFFSET_RO } else { OFFSET_RW };
            let perms = if offset == OFFSET_RO {
                Perms::READ
            } else {
                Perms::READ_WRITE
            };
            let freed = match slots[slot] {
                Slot::Empty => {
                    if r & 0x200 == 0 {
                        // One 2 MiB leaf.
                        pt.map(iova, PhysAddr(iova + offset), M2, perms).unwrap();
                    } else {
                        // Two 1 MiB halves: 4 KiB leaves, with the halves' offsets differing.
                        let other = OFFSET_RO + OFFSET_RW - offset;
                        let other_perms = if other == OFFSET_RO {
                            Perms::READ
                        } else {
                            Perms::READ_WRITE
                        };
                        pt.map(iova, PhysAddr(iova + offset), M2 / 2, perms)
                            .unwrap();
                        pt.map(
                            iova + M2 / 2,
                            PhysAddr(iova + M2 / 2 + other),
                            M2 / 2,
                            other_perms,
                        )
                        .unwrap();
                    }
                    slots[slot] = Slot::Mapped;
                    Vec::new()
                }
                Slot::Mapped => {
                    // A sub-range: splits a 2 MiB leaf while walkers translate through it.
                    let start = (r >> 12) % 512 * 4096;
                    let len = ((r >> 24) % 64 + 1).min((M2 - start) / 4096) * 4096;
                    slots[slot] = Slot::Partial;
                    pt.unmap(iova + start, len).unwrap().freed_tables
                }
                Slot::Partial => {
                    slots[slot] = Slot::Empty;
                    pt.unmap(iova, M2)
                        .map(|u| u.freed_tables)
                        .unwrap_or_default()
                }
            };
            // Grace period: free once every walker has completed a walk begun after the unmap.
            let snapshot = walks_done
                .iter()
                .map(|c| c.load(Ordering::SeqCst))
                .collect();
            quarantine.push((snapshot, freed));
            quarantine.retain(|(seen, tables)| {
                let quiescent = walks_done
                    .iter()
                    .zip(seen)
                    .all(|(c, &s)| c.load(Ordering::SeqCst) > s + 1);
                if quiescent {
                    pt.free_tables(tables.iter().copied());
                }
                !quiescent
            });
        }
        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = walkers.into_iter().map(|w| w.join().unwrap()).collect();
        for (_, tables) in quarantine {
            pt.free_tables(tables);
        }
        results
    });
    drop(pt);

    for (translated, faulted) in results {
        assert!(
            translated > 0 && faulted > 0,
            "walker saw {translated} translations, {faulted} faults"
        );
    }
    assert_eq!(mem.tables_in_use(), 0);
}

//! Property tests: random map/unmap sequences against a deliberately simple reference model,
//! a `BTreeMap` from 4 KiB page number to (physical page, permissions).

use std::collections::BTreeMap;

use iommu_pt::{
    Access, ArenaTableMem, FaultKind, FirstStage4, FirstStage5, Format, PageTable, Perms, PhysAddr,
    PtError, SecondStage,
};
use proptest::prelude::*;

const PAGE: u64 = 4096;
/// The window the operations touch: 16 MiB, i.e. 8 slots of 2 MiB.
const WINDOW_PAGES: u64 = 4096;
const SLOT_PAGES: u64 = 512;

#[derive(Clone, Debug)]
enum Op {
    Map {
        page: u64,
        pages: u64,
        pa_page: u64,
        perms: usize,
    },
    Unmap {
        page: u64,
        pages: u64,
    },
}

fn clamp(page: u64, pages: u64) -> u64 {
    pages.min(WINDOW_PAGES - page)
}

fn op() -> impl Strategy<Value = Op> {
    let slots = WINDOW_PAGES / SLOT_PAGES;
    prop_oneof![
        // Small 4 KiB-granular maps anywhere (edges of 2 MiB slots included).
        (0..WINDOW_PAGES, 1..64u64, 0..1u64 << 24, 0..4usize).prop_map(
            |(page, pages, pa_page, perms)| {
                Op::Map {
                    page,
                    pages: clamp(page, pages),
                    pa_page,
                    perms,
                }
            }
        ),
        // 2 MiB-aligned maps with 2 MiB-aligned physical addresses: large leaves.
        (0..slots, 1..3u64, 0..1u64 << 14, 0..4usize).prop_map(|(slot, n, pa_slot, perms)| {
            let page = slot * SLOT_PAGES;
            Op::Map {
                page,
                pages: clamp(page, n * SLOT_PAGES),
                pa_page: pa_slot * SLOT_PAGES,
                perms,
            }
        }),
        // Unmaps: small, slot-aligned, and long unaligned ones that split leaves at both ends.
        (0..WINDOW_PAGES, 1..64u64).prop_map(|(page, pages)| Op::Unmap {
            page,
            pages: clamp(page, pages)
        }),
        (0..slots, 1..3u64).prop_map(|(slot, n)| {
            let page = slot * SLOT_PAGES;
            Op::Unmap {
                page,
                pages: clamp(page, n * SLOT_PAGES),
            }
        }),
        (0..WINDOW_PAGES, 1..2048u64).prop_map(|(page, pages)| Op::Unmap {
            page,
            pages: clamp(page, pages)
        }),
    ]
}

/// The permission sets a format can express, indexed by `Op::Map::perms` (modulo).
fn perm_choices<F: Format>() -> Vec<Perms> {
    [
        Perms::READ,
        Perms::READ_WRITE,
        Perms::ALL,
        Perms::READ.with_exec().with_user(),
    ]
    .into_iter()
    .filter(|&p| F::supports(p))
    .collect()
}

/// Runs `ops` on a table and on the model, checking each result and, at the end, every page of
/// the window (query and walk) and that dropping the table returns every table page.
fn check_against_model<F: Format>(
    base: u64,
    ops: &[Op],
    probes: &[(u64, u64)],
) -> Result<(), TestCaseError> {
    let mem = ArenaTableMem::new(1 << 12).unwrap();
    let mut pt = PageTable::<F, _>::new(&mem).unwrap();
    let mut model: BTreeMap<u64, (u64, Perms)> = BTreeMap::new();
    let choices = perm_choices::<F>();
    let iova_of = |page: u64| base.wrapping_add(page * PAGE);

    for op in ops {
        match *op {
            Op::Map {
                page,
                pages,
                pa_page,
                perms,
            } => {
                let perms = choices[perms % choices.len()];
                let expected = match model.range(page..page + pages).next() {
                    Some((&taken, _)) => Err(PtError::AlreadyMapped {
                        iova: iova_of(taken),
                    }),
                    None => {
                        model.extend((0..pages).map(|i| (page + i, (pa_page + i, perms))));
                        Ok(())
                    }
                };
                let got = pt.map(iova_of(page), PhysAddr(pa_page * PAGE), pages * PAGE, perms);
                prop_assert_eq!(got, expected, "{:?}", op);
            }
            Op::Unmap { page, pages } => {
                let removed: Vec<u64> = model.range(page..page + pages).map(|(&p, _)| p).collect();
                for p in &removed {
                    model.remove(p);
                }
                let got = pt.unmap(iova_of(page), pages * PAGE);
                match got {
                    Ok(unmapped) => {
                        prop_assert_eq!(unmapped.bytes, removed.len() as u64 * PAGE, "{:?}", op);
                        pt.free_tables(unmapped.freed_tables);
                    }
                    Err(e) => {
                        prop_assert!(removed.is_empty(), "{:?}: {}", op, e);
                        prop_assert_eq!(
                            e,
                            PtError::NotMapped {
                                iova: iova_of(page),
                                len: pages * PAGE
                            }
                        );
                    }
                }
            }
        }
        prop_assert_eq!(pt.mapped_bytes(), model.len() as u64 * PAGE);
        for &(page, offset) in probes {
            let iova = iova_of(page) + offset;
            let walked = pt.walk(iova, Access::READ);
            match model.get(&page) {
                Some(&(pa_page, perms)) => {
                    let t = walked.map_err(|f| TestCaseError::fail(format!("{f} after {op:?}")))?;
                    prop_assert_eq!(t.pa, PhysAddr(pa_page * PAGE + offset));
                    prop_assert_eq!(t.perms, perms);
                }
                None => prop_assert_eq!(walked.map_err(|f| f.kind), Err(FaultKind::NotPresent)),
            }
        }
    }

    for page in 0..WINDOW_PAGES {
        let iova = iova_of(page);
        let queried = pt
            .query(iova)
            .map(|m| (m.translate(iova).unwrap().0 / PAGE, m.perms));
        prop_assert_eq!(queried, model.get(&page).copied(), "page {}", page);
    }
    drop(pt);
    prop_assert_eq!(mem.tables_in_use(), 0, "table pages leaked");
    Ok(())
}

fn probes() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((0..WINDOW_PAGES, 0..PAGE), 8)
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Lower half, straddling a 1 GiB boundary (PDPT entries change mid-window).
    #[test]
    fn first_stage_4_level_matches_model(ops in ops(), probes in probes()) {
        check_against_model::<FirstStage4>((1 << 30) - (8 << 20), &ops, &probes)?;
    }

    /// The top 16 MiB of the upper canonical half: ranges end at 2^64.
    #[test]
    fn first_stage_4_level_top_of_upper_half_matches_model(ops in ops(), probes in probes()) {
        check_against_model::<FirstStage4>(0u64.wrapping_sub(16 << 20), &ops, &probes)?;
    }

    /// Bottom of the 5-level upper half.
    #[test]
    fn first_stage_5_level_matches_model(ops in ops(), probes in probes()) {
        check_against_model::<FirstStage5>(0xff00_0000_0000_0000, &ops, &probes)?;
    }

    /// The top 16 MiB of the 48-bit second-stage IOVA space.
    #[test]
    fn second_stage_matches_model(ops in ops(), probes in probes()) {
        check_against_model::<SecondStage>((1 << 48) - (16 << 20), &ops, &probes)?;
    }
}

//! Directed tests, one file per topic: every error leaves the table untouched
//! ([`map_errors`], [`unmap_errors`]), huge-page selection ([`leaf_sizes`]), splitting and
//! table reclaim ([`split`]), accessed/dirty bits and fault kinds ([`walk`]), 5-level and
//! upper-half addresses ([`address_space`]). This file holds their shared fixtures.

mod address_space;
mod leaf_sizes;
mod map_errors;
mod split;
mod unmap_errors;
mod walk;

use alloc::vec::Vec;

use crate::spec::{first_stage as fs, second_stage as ss, ENTRIES};
use crate::*;

pub(super) const K4: u64 = 0x1000;
pub(super) const M2: u64 = 0x20_0000;
pub(super) const G1: u64 = 0x4000_0000;

pub(super) type Fs4<'m> = PageTable<FirstStage4, &'m ArenaTableMem>;

/// Everything observable about a table: its mappings, every raw entry of every table page
/// (accessed/dirty bits included) and how many pages the memory has handed out.
#[derive(Debug, PartialEq)]
pub(super) struct Snapshot {
    mappings: Vec<Mapping>,
    entries: Vec<(Pfn, Vec<u64>)>,
    tables_in_use: usize,
}

pub(super) fn snapshot<F: Format>(pt: &PageTable<F, &ArenaTableMem>) -> Snapshot {
    let mut entries = Vec::new();
    pt.for_each_table(pt.root(), F::LEVELS - 1, &mut |pfn, _| {
        let table = pt.mem().table(pfn).unwrap();
        entries.push((pfn, (0..ENTRIES).map(|i| table.load(i)).collect()));
    });
    Snapshot {
        mappings: pt.iter().collect(),
        entries,
        tables_in_use: pt.mem().tables_in_use(),
    }
}

/// A first-stage table with a 4 KiB page at 0x1000, a 2 MiB leaf at 2 MiB and a walked page,
/// so "nothing changed" is checked against a table that has content (and A/D bits) to lose.
pub(super) fn populated(mem: &ArenaTableMem) -> Fs4<'_> {
    let mut pt = PageTable::new(mem).unwrap();
    pt.map(K4, PhysAddr(0x7000), K4, Perms::READ_WRITE).unwrap();
    pt.map(M2, PhysAddr(0x4000_0000), M2, Perms::READ).unwrap();
    pt.walk(K4, Access::WRITE).unwrap();
    pt
}

pub(super) fn assert_map_rejected(iova: u64, pa: u64, len: u64, perms: Perms, expected: PtError) {
    let mem = ArenaTableMem::new(64).unwrap();
    let mut pt = populated(&mem);
    let before = snapshot(&pt);

    let result = pt.map(iova, PhysAddr(pa), len, perms);

    assert_eq!(result, Err(expected));
    assert_eq!(snapshot(&pt), before);
}

pub(super) fn assert_unmap_rejected(iova: u64, len: u64, expected: PtError) {
    let mem = ArenaTableMem::new(64).unwrap();
    let mut pt = populated(&mem);
    let before = snapshot(&pt);

    let result = pt.unmap(iova, len);

    assert_eq!(result, Err(expected));
    assert_eq!(snapshot(&pt), before);
}

/// Raw entries from the root down to the leaf for `iova` (root first).
pub(super) fn path<F: Format>(pt: &PageTable<F, &ArenaTableMem>, iova: u64) -> Vec<u64> {
    let lin = F::to_linear(iova).unwrap();
    let mut pfn = pt.root();
    let mut out = Vec::new();
    for level in (0..F::LEVELS).rev() {
        let pte = pt.mem().table(pfn).unwrap().load(format::index(lin, level));
        out.push(pte);
        if !F::is_present(pte) || F::is_leaf(pte, level) {
            break;
        }
        pfn = F::table_pfn(pte);
    }
    out
}

//! Directed tests: every error leaves the table untouched, huge-page selection, splitting,
//! accessed/dirty bits, fault kinds, 5-level addresses.

use alloc::vec::Vec;

use crate::spec::{first_stage as fs, second_stage as ss, ENTRIES};
use crate::*;

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

type Fs4<'m> = PageTable<FirstStage4, &'m ArenaTableMem>;

/// Everything observable about a table: its mappings, every raw entry of every table page
/// (accessed/dirty bits included) and how many pages the memory has handed out.
#[derive(Debug, PartialEq)]
struct Snapshot {
    mappings: Vec<Mapping>,
    entries: Vec<(Pfn, Vec<u64>)>,
    tables_in_use: usize,
}

fn snapshot<F: Format>(pt: &PageTable<F, &ArenaTableMem>) -> Snapshot {
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
fn populated(mem: &ArenaTableMem) -> Fs4<'_> {
    let mut pt = PageTable::new(mem).unwrap();
    pt.map(K4, PhysAddr(0x7000), K4, Perms::READ_WRITE).unwrap();
    pt.map(M2, PhysAddr(0x4000_0000), M2, Perms::READ).unwrap();
    pt.walk(K4, Access::WRITE).unwrap();
    pt
}

fn assert_map_rejected(iova: u64, pa: u64, len: u64, perms: Perms, expected: PtError) {
    let mem = ArenaTableMem::new(64);
    let mut pt = populated(&mem);
    let before = snapshot(&pt);

    let result = pt.map(iova, PhysAddr(pa), len, perms);

    assert_eq!(result, Err(expected));
    assert_eq!(snapshot(&pt), before);
}

fn assert_unmap_rejected(iova: u64, len: u64, expected: PtError) {
    let mem = ArenaTableMem::new(64);
    let mut pt = populated(&mem);
    let before = snapshot(&pt);

    let result = pt.unmap(iova, len);

    assert_eq!(result, Err(expected));
    assert_eq!(snapshot(&pt), before);
}

#[test]
fn map_misaligned_iova_returns_einval_and_changes_nothing() {
    assert_map_rejected(
        0x10_0800,
        0x9000,
        K4,
        Perms::READ,
        PtError::MisalignedIova { iova: 0x10_0800 },
    );
    assert_eq!(PtError::MisalignedIova { iova: 0 }.errno(), errno::EINVAL);
}

#[test]
fn map_misaligned_pa_returns_einval_and_changes_nothing() {
    assert_map_rejected(
        0x10_0000,
        0x9010,
        K4,
        Perms::READ,
        PtError::MisalignedPhys { pa: 0x9010 },
    );
}

#[test]
fn map_misaligned_length_returns_einval_and_changes_nothing() {
    assert_map_rejected(
        0x10_0000,
        0x9000,
        0x1800,
        Perms::READ,
        PtError::MisalignedLength { len: 0x1800 },
    );
}

#[test]
fn map_zero_length_returns_einval_and_changes_nothing() {
    assert_map_rejected(
        0x10_0000,
        0x9000,
        0,
        Perms::READ,
        PtError::ZeroLength { iova: 0x10_0000 },
    );
}

#[test]
fn map_iova_overflow_returns_einval_and_changes_nothing() {
    let iova = 0xffff_ffff_ffff_f000;
    assert_map_rejected(
        iova,
        0x9000,
        2 * K4,
        Perms::READ,
        PtError::RangeOverflow {
            start: iova,
            len: 2 * K4,
        },
    );
}

#[test]
fn map_pa_overflow_returns_einval_and_changes_nothing() {
    let pa = 0xffff_ffff_ffff_f000;
    assert_map_rejected(
        0x10_0000,
        pa,
        2 * K4,
        Perms::READ,
        PtError::RangeOverflow {
            start: pa,
            len: 2 * K4,
        },
    );
}

#[test]
fn map_non_canonical_iova_returns_einval_and_changes_nothing() {
    let iova = 0x0000_8000_0000_0000;
    assert_map_rejected(
        iova,
        0x9000,
        K4,
        Perms::READ,
        PtError::NonCanonical { iova, va_bits: 48 },
    );
}

#[test]
fn map_across_the_canonical_hole_returns_einval_and_changes_nothing() {
    let iova = 0x7fff_ffff_f000;
    let expected = PtError::OutOfRange {
        iova,
        len: 2 * K4,
        va_bits: 48,
    };
    assert_map_rejected(iova, 0x9000, 2 * K4, Perms::READ, expected);
}

#[test]
fn map_spanning_both_canonical_halves_returns_einval_and_changes_nothing() {
    let len = 0xffff_ffff_ffff_f000;
    let expected = PtError::OutOfRange {
        iova: 0,
        len,
        va_bits: 48,
    };
    assert_map_rejected(0, 0, len, Perms::READ, expected);
}

#[test]
fn map_beyond_52_bit_physical_returns_einval_and_changes_nothing() {
    let pa = PhysAddr::LIMIT - K4;
    assert_map_rejected(
        0x10_0000,
        pa,
        2 * K4,
        Perms::READ,
        PtError::PhysOutOfRange { pa, len: 2 * K4 },
    );
}

#[test]
fn map_without_read_on_first_stage_returns_einval_and_changes_nothing() {
    let perms = Perms {
        read: false,
        write: true,
        exec: false,
        user: false,
    };
    assert_map_rejected(
        0x10_0000,
        0x9000,
        K4,
        perms,
        PtError::UnsupportedPerms { perms },
    );
}

#[test]
fn map_over_a_page_in_the_middle_returns_eexist_and_changes_nothing() {
    // The range starts on free pages, so a map without a pre-check would have written some.
    let expected = PtError::AlreadyMapped { iova: K4 };
    assert_map_rejected(0, 0x10_0000, 4 * K4, Perms::READ, expected);
    assert_eq!(expected.errno(), errno::EEXIST);
}

#[test]
fn map_over_a_large_leaf_returns_eexist_and_changes_nothing() {
    let expected = PtError::AlreadyMapped { iova: M2 };
    assert_map_rejected(M2 - 2 * K4, 0x10_0000, 3 * K4, Perms::READ, expected);
}

#[test]
fn map_without_table_memory_returns_enomem_and_changes_nothing() {
    // Root + 3 tables for the first page leave one free; a page at 1 GiB needs two more.
    let mem = ArenaTableMem::new(5);
    let mut pt = populated(&mem);
    let before = snapshot(&pt);

    let result = pt.map(G1 + K4, PhysAddr(0x9000), K4, Perms::READ);

    assert_eq!(result, Err(PtError::NoMemory { tables: 2 }));
    assert_eq!(result.unwrap_err().errno(), errno::ENOMEM);
    assert_eq!(snapshot(&pt), before);
}

#[test]
fn second_stage_rejects_iova_beyond_48_bits_and_user_perms() {
    let mem = ArenaTableMem::new(8);
    let mut pt = PageTable::<SecondStage, _>::new(&mem).unwrap();
    let before = snapshot(&pt);

    let too_high = pt.map(1 << 48, PhysAddr(0), K4, Perms::READ);
    let user = pt.map(0, PhysAddr(0), K4, Perms::READ.with_user());
    let nothing = pt.map(0, PhysAddr(0), K4, Perms::default());

    assert_eq!(
        too_high,
        Err(PtError::OutOfRange {
            iova: 1 << 48,
            len: K4,
            va_bits: 48
        })
    );
    assert_eq!(
        user,
        Err(PtError::UnsupportedPerms {
            perms: Perms::READ.with_user()
        })
    );
    assert_eq!(
        nothing,
        Err(PtError::UnsupportedPerms {
            perms: Perms::default()
        })
    );
    assert_eq!(snapshot(&pt), before);
}

#[test]
fn unmap_misaligned_iova_returns_einval_and_changes_nothing() {
    assert_unmap_rejected(K4 + 8, K4, PtError::MisalignedIova { iova: K4 + 8 });
}

#[test]
fn unmap_misaligned_length_returns_einval_and_changes_nothing() {
    assert_unmap_rejected(K4, K4 + 1, PtError::MisalignedLength { len: K4 + 1 });
}

#[test]
fn unmap_zero_length_returns_einval_and_changes_nothing() {
    assert_unmap_rejected(K4, 0, PtError::ZeroLength { iova: K4 });
}

#[test]
fn unmap_overflowing_range_returns_einval_and_changes_nothing() {
    let iova = 0xffff_ffff_ffff_0000;
    assert_unmap_rejected(
        iova,
        0x10_0000,
        PtError::RangeOverflow {
            start: iova,
            len: 0x10_0000,
        },
    );
}

#[test]
fn unmap_non_canonical_returns_einval_and_changes_nothing() {
    let iova = 0x1234_0000_0000_0000;
    assert_unmap_rejected(iova, K4, PtError::NonCanonical { iova, va_bits: 48 });
}

#[test]
fn unmap_of_nothing_mapped_returns_enoent_and_changes_nothing() {
    let expected = PtError::NotMapped {
        iova: 0x10_0000,
        len: 0x10_0000,
    };
    assert_unmap_rejected(0x10_0000, 0x10_0000, expected);
    assert_eq!(expected.errno(), errno::ENOENT);
}

#[test]
fn unmap_split_without_table_memory_returns_enomem_and_changes_nothing() {
    // Root + PDPT hold the 1 GiB leaf; splitting it down to 4 KiB needs two more, one is free.
    let mem = ArenaTableMem::new(3);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(G1, PhysAddr(G1), G1, Perms::READ).unwrap();
    let before = snapshot(&pt);

    let result = pt.unmap(G1 + M2 + K4, K4);

    assert_eq!(result, Err(PtError::NoMemory { tables: 2 }));
    assert_eq!(snapshot(&pt), before);
}

#[test]
fn aligned_2m_range_maps_one_2m_leaf() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();

    pt.map(4 * M2, PhysAddr(8 * M2), M2, Perms::READ_WRITE)
        .unwrap();

    let m = pt.query(4 * M2 + 0x1234).unwrap();
    assert_eq!(
        (m.iova, m.pa, m.size),
        (4 * M2, PhysAddr(8 * M2), PageSize::Size2M)
    );
    assert_eq!(pt.table_count(), 3, "root, PDPT, PD: no 4 KiB table");
}

#[test]
fn aligned_1g_range_maps_one_1g_leaf() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();

    pt.map(G1, PhysAddr(3 * G1), G1, Perms::READ).unwrap();

    assert_eq!(pt.iter().count(), 1);
    assert_eq!(pt.query(2 * G1 - K4).unwrap().size, PageSize::Size1G);
    assert_eq!(
        pt.walk(G1 + 0x1234_5678, Access::READ).unwrap().pa,
        PhysAddr(3 * G1 + 0x1234_5678)
    );
}

#[test]
fn misaligned_pa_falls_back_to_4k_leaves() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();

    pt.map(M2, PhysAddr(M2 + K4), M2, Perms::READ).unwrap();

    assert_eq!(pt.iter().count(), 512);
    assert!(pt.iter().all(|m| m.size == PageSize::Size4K));
}

#[test]
fn unaligned_range_uses_4k_edges_around_a_2m_middle() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();

    pt.map(M2 - K4, PhysAddr(3 * M2 - K4), K4 + M2 + K4, Perms::READ)
        .unwrap();

    let leaves: Vec<_> = pt.iter().map(|m| (m.iova, m.pa.0, m.size)).collect();
    assert_eq!(
        leaves,
        [
            (M2 - K4, 3 * M2 - K4, PageSize::Size4K),
            (M2, 3 * M2, PageSize::Size2M),
            (2 * M2, 4 * M2, PageSize::Size4K),
        ]
    );
}

#[test]
fn max_page_size_restricts_leaf_choice() {
    let mem = ArenaTableMem::new(16);
    let mut only_4k =
        PageTable::<FirstStage4, _>::with_max_page_size(&mem, PageSize::Size4K).unwrap();
    let mut up_to_2m =
        PageTable::<FirstStage4, _>::with_max_page_size(&mem, PageSize::Size2M).unwrap();

    only_4k.map(0, PhysAddr(0), M2, Perms::READ).unwrap();
    up_to_2m.map(0, PhysAddr(0), G1, Perms::READ).unwrap();

    assert_eq!(only_4k.iter().count(), 512);
    assert_eq!(up_to_2m.iter().count(), 512);
    assert!(up_to_2m.iter().all(|m| m.size == PageSize::Size2M));
}

#[test]
fn unmap_inside_a_1g_leaf_splits_down_to_4k_and_keeps_the_rest() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(G1, PhysAddr(2 * G1), G1, Perms::READ_WRITE).unwrap();
    pt.walk(G1, Access::WRITE).unwrap();

    let removed = pt.unmap(G1 + 3 * M2 + 5 * K4, K4).unwrap();

    assert_eq!(
        removed,
        Unmapped {
            bytes: K4,
            freed_tables: Vec::new()
        }
    );
    assert_eq!(pt.mapped_bytes(), G1 - K4);
    assert_eq!(
        pt.iter().filter(|m| m.size == PageSize::Size2M).count(),
        511
    );
    assert_eq!(
        pt.iter().filter(|m| m.size == PageSize::Size4K).count(),
        511
    );
    let kept = pt.query(G1 + 3 * M2 + 6 * K4).unwrap();
    assert_eq!(
        (kept.pa, kept.perms),
        (PhysAddr(2 * G1 + 3 * M2 + 6 * K4), Perms::READ_WRITE)
    );
    assert!(
        kept.accessed && kept.dirty,
        "split keeps the leaf's accessed/dirty bits"
    );
    assert!(pt.query(G1 + 3 * M2 + 5 * K4).is_none());
}

#[test]
fn unmap_across_two_2m_leaves_splits_both_ends() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0), 2 * M2, Perms::READ).unwrap();

    let removed = pt.unmap(M2 - K4, 2 * K4).unwrap();

    assert_eq!(removed.bytes, 2 * K4);
    assert_eq!(pt.mapped_bytes(), 2 * M2 - 2 * K4);
    assert!(pt.query(M2 - K4).is_none() && pt.query(M2).is_none());
    assert_eq!(pt.query(M2 + K4).unwrap().pa, PhysAddr(M2 + K4));
    assert_eq!(mem.tables_in_use(), 5);
}

#[test]
fn unmap_of_a_whole_table_span_unlinks_it_for_deferred_free() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(M2, PhysAddr(K4), M2, Perms::READ).unwrap();
    assert_eq!(mem.tables_in_use(), 4);

    let removed = pt.unmap(M2, M2).unwrap();

    assert_eq!(removed.bytes, M2);
    assert_eq!(removed.freed_tables.len(), 1);
    assert_eq!(mem.tables_in_use(), 4, "unlinked, not yet freed");
    pt.free_tables(removed.freed_tables);
    assert_eq!(mem.tables_in_use(), 3);
    assert_eq!(pt.table_count(), 3);
}

#[test]
fn unmap_skips_holes_and_counts_only_mapped_bytes() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0x10_0000, PhysAddr(0), K4, Perms::READ).unwrap();
    pt.map(0x10_3000, PhysAddr(0), K4, Perms::READ).unwrap();

    let removed = pt.unmap(0x10_0000, 0x10_0000).unwrap();

    assert_eq!(removed.bytes, 2 * K4);
    assert_eq!(pt.iter().count(), 0);
}

/// Raw entries from the root down to the leaf for `iova` (root first).
fn path<F: Format>(pt: &PageTable<F, &ArenaTableMem>, iova: u64) -> Vec<u64> {
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

#[test]
fn read_walk_sets_accessed_on_every_level_and_not_dirty() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0x40_0000, PhysAddr(0x9000), K4, Perms::READ_WRITE)
        .unwrap();
    assert!(path(&pt, 0x40_0000).iter().all(|pte| pte & fs::A == 0));

    let t = pt.walk(0x40_0010, Access::READ).unwrap();

    assert_eq!(
        t,
        Translation {
            pa: PhysAddr(0x9010),
            size: PageSize::Size4K,
            perms: Perms::READ_WRITE
        }
    );
    let entries = path(&pt, 0x40_0000);
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|pte| pte & fs::A != 0));
    assert!(entries.iter().all(|pte| pte & fs::D == 0));
}

#[test]
fn write_walk_sets_dirty_on_the_leaf_only() {
    let mem = ArenaTableMem::new(8);
    let mut pt = PageTable::<SecondStage, _>::new(&mem).unwrap();
    pt.map(M2, PhysAddr(G1), M2, Perms::READ_WRITE).unwrap();

    pt.walk(M2 + 0x10, Access::WRITE).unwrap();

    let entries = path(&pt, M2);
    assert_eq!(entries.len(), 3, "2 MiB leaf at level 1");
    assert!(entries.iter().all(|pte| pte & ss::A != 0));
    assert_eq!(entries.iter().filter(|&&pte| pte & ss::D != 0).count(), 1);
    assert!(entries[2] & ss::D != 0);
}

#[test]
fn denied_access_sets_no_accessed_or_dirty_bit_on_the_leaf() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0x9000), K4, Perms::READ).unwrap();

    let fault = pt.walk(0x10, Access::WRITE).unwrap_err();

    assert_eq!(
        fault,
        WalkFault {
            kind: FaultKind::NotWritable,
            level: 0,
            va: 0x10
        }
    );
    let leaf = *path(&pt, 0).last().unwrap();
    assert_eq!(leaf & (fs::A | fs::D), 0);
}

#[test]
fn user_access_to_supervisor_page_faults() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(M2), M2, Perms::READ_WRITE).unwrap();

    let fault = pt.walk(0, Access::READ.user()).unwrap_err();

    assert_eq!(
        fault,
        WalkFault {
            kind: FaultKind::SupervisorOnly,
            level: 1,
            va: 0
        }
    );
}

#[test]
fn fetch_from_no_execute_page_faults_and_executable_user_page_translates() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0x9000), K4, Perms::READ).unwrap();
    pt.map(
        K4,
        PhysAddr(0xa000),
        K4,
        Perms::READ.with_exec().with_user(),
    )
    .unwrap();

    let nx = pt.walk(0, Access::EXEC).unwrap_err();
    let ok = pt.walk(K4, Access::EXEC.user()).unwrap();

    assert_eq!(nx.kind, FaultKind::NotExecutable);
    assert_eq!(ok.pa, PhysAddr(0xa000));
}

#[test]
fn second_stage_read_of_write_only_page_faults() {
    let mem = ArenaTableMem::new(8);
    let mut pt = PageTable::<SecondStage, _>::new(&mem).unwrap();
    let write_only = Perms {
        read: false,
        write: true,
        exec: false,
        user: false,
    };
    pt.map(0, PhysAddr(0x9000), K4, write_only).unwrap();

    let read = pt.walk(0, Access::READ).unwrap_err();
    let write = pt.walk(0, Access::WRITE.user()).unwrap();

    assert_eq!(read.kind, FaultKind::NotReadable);
    assert_eq!(write.pa, PhysAddr(0x9000));
}

#[test]
fn not_present_fault_reports_the_level_where_the_walk_stopped() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0x9000), K4, Perms::READ).unwrap();

    let empty_root = pt.walk(1 << 40, Access::READ).unwrap_err();
    let empty_pd = pt.walk(G1 / 2, Access::READ).unwrap_err();
    let empty_pt = pt.walk(K4, Access::READ).unwrap_err();
    let non_canonical = pt.walk(1 << 47, Access::READ).unwrap_err();

    assert_eq!(
        (empty_root.kind, empty_root.level),
        (FaultKind::NotPresent, 3)
    );
    assert_eq!((empty_pd.kind, empty_pd.level), (FaultKind::NotPresent, 1));
    assert_eq!((empty_pt.kind, empty_pt.level), (FaultKind::NotPresent, 0));
    assert_eq!(non_canonical.kind, FaultKind::NonCanonical);
}

#[test]
fn walk_through_a_corrupt_entry_reports_bad_table() {
    let mem = ArenaTableMem::new(8);
    let pt = Fs4::new(&mem).unwrap();
    mem.table(pt.root()).unwrap().store(0, 0x5000 | fs::P);

    let fault = pt.walk(0, Access::READ).unwrap_err();

    assert_eq!((fault.kind, fault.level), (FaultKind::BadTable, 2));
}

#[test]
fn five_level_table_maps_above_the_4_level_limit() {
    let mem = ArenaTableMem::new(16);
    let mut pt = PageTable::<FirstStage5, _>::new(&mem).unwrap();
    let low = 0x00ff_ffff_ffe0_0000; // top 2 MiB of the lower half
    let high = 0xff00_0000_0000_0000; // bottom of the upper half
    let hole = 0x0100_0000_0000_0000;

    pt.map(low, PhysAddr(M2), M2, Perms::READ_WRITE).unwrap();
    pt.map(high, PhysAddr(K4), K4, Perms::READ).unwrap();
    let rejected = pt.map(hole, PhysAddr(0), K4, Perms::READ);

    assert_eq!(
        pt.walk(low + 0x123, Access::WRITE).unwrap().pa,
        PhysAddr(M2 + 0x123)
    );
    assert_eq!(
        pt.walk(high + 8, Access::READ).unwrap().pa,
        PhysAddr(K4 + 8)
    );
    assert_eq!(path(&pt, high).len(), 5, "a 4 KiB walk uses all 5 levels");
    assert_eq!(
        rejected,
        Err(PtError::NonCanonical {
            iova: hole,
            va_bits: 57
        })
    );
    let iovas: Vec<_> = pt.iter().map(|m| m.iova).collect();
    assert_eq!(iovas, [low, high]);
}

#[test]
fn top_page_of_the_upper_half_maps_and_unmaps() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    let top = 0xffff_ffff_ffff_f000;

    pt.map(top, PhysAddr(0x9000), K4, Perms::READ).unwrap();
    let walked = pt.walk(top + 0xfff, Access::READ).unwrap();
    let removed = pt.unmap(top, K4).unwrap();

    assert_eq!(walked.pa, PhysAddr(0x9fff));
    assert_eq!(removed.bytes, K4);
    assert!(pt.query(top).is_none());
}

#[test]
fn drop_frees_every_table_page() {
    let mem = ArenaTableMem::new(32);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0), 3 * M2 + K4, Perms::READ).unwrap();
    pt.map(0xffff_8000_0000_0000, PhysAddr(0), K4, Perms::READ)
        .unwrap();
    assert!(mem.tables_in_use() > 4);

    pt.destroy();

    assert_eq!(mem.tables_in_use(), 0);
}

#[test]
fn unmap_over_only_empty_tables_returns_enoent_and_keeps_them() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(M2 + K4, PhysAddr(0), K4, Perms::READ).unwrap();
    let _ = pt.unmap(M2 + K4, K4).unwrap(); // leaves an empty leaf table behind
    let before = snapshot(&pt);

    let result = pt.unmap(0, G1);

    assert_eq!(result, Err(PtError::NotMapped { iova: 0, len: G1 }));
    assert_eq!(snapshot(&pt), before);
}

#[test]
fn unmap_reclaims_empty_tables_it_covers_when_it_removes_something() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(M2 + K4, PhysAddr(0), K4, Perms::READ).unwrap();
    let _ = pt.unmap(M2 + K4, K4).unwrap();
    pt.map(0, PhysAddr(0), K4, Perms::READ).unwrap();

    let removed = pt.unmap(0, G1).unwrap();

    assert_eq!(removed.bytes, K4);
    assert_eq!(removed.freed_tables.len(), 3, "PD and both leaf tables");
    pt.free_tables(removed.freed_tables);
    assert_eq!(pt.table_count(), 2);
}

#[test]
fn map_over_an_empty_table_reuses_it_with_4k_leaves() {
    let mem = ArenaTableMem::new(8);
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(M2 + K4, PhysAddr(0), K4, Perms::READ).unwrap();
    let _ = pt.unmap(M2 + K4, K4).unwrap();
    let tables = mem.tables_in_use();

    pt.map(M2, PhysAddr(M2), M2, Perms::READ).unwrap();

    assert_eq!(mem.tables_in_use(), tables);
    assert_eq!(pt.iter().count(), 512);
    assert_eq!(
        pt.walk(2 * M2 - 1, Access::READ).unwrap().pa,
        PhysAddr(2 * M2 - 1)
    );
}

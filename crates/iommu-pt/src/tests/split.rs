//! Unmap inside large leaves (splitting), across them, and reclaiming or reusing tables.

use super::*;

#[test]
fn unmap_inside_a_1g_leaf_splits_down_to_4k_and_keeps_the_rest() {
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0x10_0000, PhysAddr(0), K4, Perms::READ).unwrap();
    pt.map(0x10_3000, PhysAddr(0), K4, Perms::READ).unwrap();

    let removed = pt.unmap(0x10_0000, 0x10_0000).unwrap();

    assert_eq!(removed.bytes, 2 * K4);
    assert_eq!(pt.iter().count(), 0);
}

#[test]
fn unmap_reclaims_empty_tables_it_covers_when_it_removes_something() {
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(8).unwrap();
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

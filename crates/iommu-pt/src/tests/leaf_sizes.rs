//! Leaf-size selection: the largest leaf that alignment, length and the table's maximum allow.

use super::*;

#[test]
fn aligned_2m_range_maps_one_2m_leaf() {
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();

    pt.map(M2, PhysAddr(M2 + K4), M2, Perms::READ).unwrap();

    assert_eq!(pt.iter().count(), 512);
    assert!(pt.iter().all(|m| m.size == PageSize::Size4K));
}

#[test]
fn unaligned_range_uses_4k_edges_around_a_2m_middle() {
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(16).unwrap();
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

//! Address-space shape: 5-level addresses, the top of the upper half, teardown.

use super::*;

#[test]
fn five_level_table_maps_above_the_4_level_limit() {
    let mem = ArenaTableMem::new(16).unwrap();
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
    let mem = ArenaTableMem::new(8).unwrap();
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
    let mem = ArenaTableMem::new(32).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(0, PhysAddr(0), 3 * M2 + K4, Perms::READ).unwrap();
    pt.map(0xffff_8000_0000_0000, PhysAddr(0), K4, Perms::READ)
        .unwrap();
    assert!(mem.tables_in_use() > 4);

    pt.destroy();

    assert_eq!(mem.tables_in_use(), 0);
}

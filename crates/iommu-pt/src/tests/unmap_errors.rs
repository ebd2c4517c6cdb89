//! Unmap errors: each returns its errno and leaves the table exactly as it was.

use super::*;

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
    let mem = ArenaTableMem::new(3).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(G1, PhysAddr(G1), G1, Perms::READ).unwrap();
    let before = snapshot(&pt);

    let result = pt.unmap(G1 + M2 + K4, K4);

    assert_eq!(result, Err(PtError::NoMemory { tables: 2 }));
    assert_eq!(snapshot(&pt), before);
}

#[test]
fn unmap_over_only_empty_tables_returns_enoent_and_keeps_them() {
    let mem = ArenaTableMem::new(8).unwrap();
    let mut pt = Fs4::new(&mem).unwrap();
    pt.map(M2 + K4, PhysAddr(0), K4, Perms::READ).unwrap();
    let _ = pt.unmap(M2 + K4, K4).unwrap(); // leaves an empty leaf table behind
    let before = snapshot(&pt);

    let result = pt.unmap(0, G1);

    assert_eq!(result, Err(PtError::NotMapped { iova: 0, len: G1 }));
    assert_eq!(snapshot(&pt), before);
}

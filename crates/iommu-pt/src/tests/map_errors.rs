//! Map errors: each returns its errno and leaves the table exactly as it was.

use super::*;

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
    let mem = ArenaTableMem::new(5).unwrap();
    let mut pt = populated(&mem);
    let before = snapshot(&pt);

    let result = pt.map(G1 + K4, PhysAddr(0x9000), K4, Perms::READ);

    assert_eq!(result, Err(PtError::NoMemory { tables: 2 }));
    assert_eq!(result.unwrap_err().errno(), errno::ENOMEM);
    assert_eq!(snapshot(&pt), before);
}

#[test]
fn second_stage_rejects_iova_beyond_48_bits_and_user_perms() {
    let mem = ArenaTableMem::new(8).unwrap();
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

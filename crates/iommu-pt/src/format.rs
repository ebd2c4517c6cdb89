//! The [`Format`] trait and the three formats: [`FirstStage4`], [`FirstStage5`], [`SecondStage`].
//!
//! A format turns [`Perms`] and addresses into entries and back, and says how virtual addresses
//! look (width, sign extension). All methods are `#[inline]` constant-time bit manipulation: the
//! table code is generic over the format and monomorphised, so the hot paths carry no indirection.

use crate::addr::{Access, Perms, Pfn};
use crate::error::FaultKind;
use crate::spec::{
    first_stage as fs, second_stage as ss, FirstStageEntry, SecondStageEntry, ADDR_MASK,
    BITS_PER_LEVEL, PAGE_SHIFT,
};

/// Bytes covered by one entry of a table at `level` (4 KiB at level 0, 2 MiB at 1, ...).
#[inline]
pub const fn level_size(level: u8) -> u64 {
    1 << (PAGE_SHIFT + BITS_PER_LEVEL * level as u32)
}

/// Index into the table at `level` for a linear (sign-stripped) address.
#[inline]
pub(crate) const fn index(lin: u64, level: u8) -> usize {
    ((lin >> (PAGE_SHIFT + BITS_PER_LEVEL * level as u32)) & 511) as usize
}

/// A multi-level page-table format: entry encoding and address-space shape.
///
/// Implementations are zero-sized markers. The provided methods derive everything the table
/// code needs from a handful of required ones; the highest level that may hold a leaf is 2
/// (1 GiB) in every format here.
pub trait Format: Send + Sync + 'static {
    /// Human-readable name, for diagnostics.
    const NAME: &'static str;
    /// Number of table levels (the root is level `LEVELS - 1`).
    const LEVELS: u8;
    /// Width of the virtual (input) address.
    const VA_BITS: u32;
    /// True when addresses are canonical (sign-extended from bit `VA_BITS - 1`), as on x86-64.
    const SIGN_EXTENDED: bool;
    /// True when entries carry a user/supervisor bit that user accesses are checked against.
    const HAS_USER: bool;
    /// The accessed bit (set on every entry a walk uses).
    const ACCESSED: u64;
    /// The dirty bit (set on the leaf of a write).
    const DIRTY: u64;
    /// The page-size bit that turns a level-1/2 entry into a leaf.
    const PAGE_SIZE: u64;

    /// True when the entry is valid (hardware would use it).
    fn is_present(pte: u64) -> bool;

    /// A non-leaf entry pointing at the table `pfn`, granting everything (the leaf decides).
    fn table_entry(pfn: Pfn) -> u64;

    /// A leaf entry at `level` mapping `pa` (aligned to the level's size) with `perms`.
    fn leaf_entry(pa: u64, level: u8, perms: Perms) -> u64;

    /// The permissions one entry grants (leaf or not).
    fn entry_perms(pte: u64) -> Perms;

    /// True when the format can express `perms` exactly.
    fn supports(perms: Perms) -> bool;

    /// One entry whose [`entry_perms`](Format::entry_perms) are the AND of the permissions of
    /// every entry of a walk, given the AND (`all`) and the OR (`any`) of their raw bits: lets
    /// the walker combine levels with two bit operations instead of decoding each entry.
    #[inline]
    fn combine(all: u64, any: u64) -> u64 {
        let _ = any;
        all
    }

    /// True when `pte` (present) at `level` maps a page rather than pointing at a table.
    #[inline]
    fn is_leaf(pte: u64, level: u8) -> bool {
        level == 0 || (level <= 2 && pte & Self::PAGE_SIZE != 0)
    }

    /// The base physical address a leaf at `level` maps.
    #[inline]
    fn leaf_addr(pte: u64, level: u8) -> u64 {
        pte & ADDR_MASK & !(level_size(level) - 1)
    }

    /// The table a non-leaf entry points at.
    #[inline]
    fn table_pfn(pte: u64) -> Pfn {
        Pfn((pte & ADDR_MASK) >> PAGE_SHIFT)
    }

    /// The entry of the leaf at `level - 1` that covers `pa` when a leaf `pte` at `level` is
    /// split into 512 smaller leaves: same permissions and accessed/dirty bits.
    #[inline]
    fn split_child(pte: u64, level: u8, pa: u64) -> u64 {
        let attrs = pte & !ADDR_MASK & !Self::PAGE_SIZE;
        let ps = if level - 1 > 0 { Self::PAGE_SIZE } else { 0 };
        attrs | ps | pa
    }

    /// Strips the sign extension: the linear address the table indices are taken from, or
    /// `None` for an address outside the address space (non-canonical, or too wide).
    #[inline]
    fn to_linear(va: u64) -> Option<u64> {
        let mask = (1u64 << Self::VA_BITS) - 1;
        if Self::SIGN_EXTENDED {
            let top = (va as i64) >> (Self::VA_BITS - 1);
            (top == 0 || top == -1).then_some(va & mask)
        } else {
            (va <= mask).then_some(va)
        }
    }

    /// The address (canonical form for sign-extended formats) of a linear address.
    #[inline]
    fn from_linear(lin: u64) -> u64 {
        if Self::SIGN_EXTENDED {
            let shift = 64 - Self::VA_BITS;
            (((lin << shift) as i64) >> shift) as u64
        } else {
            lin
        }
    }

    /// Checks an access against the permissions ANDed down the walk.
    #[inline]
    fn check(perms: Perms, access: Access) -> Result<(), FaultKind> {
        if Self::HAS_USER && access.user && !perms.user {
            Err(FaultKind::SupervisorOnly)
        } else if access.write && !perms.write {
            Err(FaultKind::NotWritable)
        } else if access.exec && !perms.exec {
            Err(FaultKind::NotExecutable)
        } else if access.read && !perms.read {
            Err(FaultKind::NotReadable)
        } else {
            Ok(())
        }
    }
}

#[inline]
fn first_stage_leaf(pa: u64, level: u8, perms: Perms) -> u64 {
    FirstStageEntry::ZERO
        .with_addr(pa)
        .with_present(true)
        .with_writable(perms.write)
        .with_user(perms.user)
        .with_no_execute(!perms.exec)
        .with_page_size(level > 0)
        .bits()
}

#[inline]
fn first_stage_perms(pte: u64) -> Perms {
    let e = FirstStageEntry::from_bits(pte);
    Perms {
        read: true,
        write: e.writable(),
        exec: !e.no_execute(),
        user: e.user(),
    }
}

/// x86-64 first stage, 4-level paging: 48-bit canonical VA (CPU page tables, VT-d first stage).
///
/// Cannot express a page without read permission.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstStage4;

/// x86-64 first stage, 5-level paging (LA57): 57-bit canonical VA.
///
/// Cannot express a page without read permission.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstStage5;

macro_rules! first_stage_format {
    ($ty:ty, $name:literal, $levels:literal, $va_bits:expr) => {
        impl Format for $ty {
            const NAME: &'static str = $name;
            const LEVELS: u8 = $levels;
            const VA_BITS: u32 = $va_bits;
            const SIGN_EXTENDED: bool = true;
            const HAS_USER: bool = true;
            const ACCESSED: u64 = fs::A;
            const DIRTY: u64 = fs::D;
            const PAGE_SIZE: u64 = fs::PS;

            #[inline]
            fn is_present(pte: u64) -> bool {
                FirstStageEntry::from_bits(pte).present()
            }

            #[inline]
            fn table_entry(pfn: Pfn) -> u64 {
                FirstStageEntry::table(pfn.addr().0).bits()
            }

            #[inline]
            fn leaf_entry(pa: u64, level: u8, perms: Perms) -> u64 {
                first_stage_leaf(pa, level, perms)
            }

            #[inline]
            fn entry_perms(pte: u64) -> Perms {
                first_stage_perms(pte)
            }

            #[inline]
            fn supports(perms: Perms) -> bool {
                perms.read
            }

            /// No-execute at any level forbids execution; the other bits must be set at all.
            #[inline]
            fn combine(all: u64, any: u64) -> u64 {
                let any_xd = FirstStageEntry::from_bits(any).no_execute();
                FirstStageEntry::from_bits(all)
                    .with_no_execute(any_xd)
                    .bits()
            }
        }
    };
}

first_stage_format!(
    FirstStage4,
    "x86-64 first stage, 4-level",
    4,
    fs::VA_BITS_4LEVEL
);
first_stage_format!(
    FirstStage5,
    "x86-64 first stage, 5-level",
    5,
    fs::VA_BITS_5LEVEL
);

/// Second stage for paging domains: 4 levels, 48-bit zero-extended IOVA, R/W/X bits.
///
/// Cannot express user/supervisor (every access is checked the same way) nor a present page
/// with no permission at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecondStage;

impl Format for SecondStage {
    const NAME: &'static str = "second stage, 4-level";
    const LEVELS: u8 = 4;
    const VA_BITS: u32 = ss::VA_BITS;
    const SIGN_EXTENDED: bool = false;
    const HAS_USER: bool = false;
    const ACCESSED: u64 = ss::A;
    const DIRTY: u64 = ss::D;
    const PAGE_SIZE: u64 = ss::PS;

    #[inline]
    fn is_present(pte: u64) -> bool {
        SecondStageEntry::from_bits(pte).present()
    }

    #[inline]
    fn table_entry(pfn: Pfn) -> u64 {
        SecondStageEntry::table(pfn.addr().0).bits()
    }

    #[inline]
    fn leaf_entry(pa: u64, level: u8, perms: Perms) -> u64 {
        SecondStageEntry::ZERO
            .with_addr(pa)
            .with_readable(perms.read)
            .with_writable(perms.write)
            .with_executable(perms.exec)
            .with_page_size(level > 0)
            .bits()
    }

    #[inline]
    fn entry_perms(pte: u64) -> Perms {
        let e = SecondStageEntry::from_bits(pte);
        Perms {
            read: e.readable(),
            write: e.writable(),
            exec: e.executable(),
            user: false,
        }
    }

    #[inline]
    fn supports(perms: Perms) -> bool {
        !perms.user && (perms.read || perms.write || perms.exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stage_canonical_rules_follow_bit_47() {
        assert_eq!(
            FirstStage4::to_linear(0x0000_7fff_ffff_f000),
            Some(0x7fff_ffff_f000)
        );
        assert_eq!(
            FirstStage4::to_linear(0xffff_8000_0000_0000),
            Some(0x8000_0000_0000)
        );
        assert_eq!(FirstStage4::to_linear(0x0000_8000_0000_0000), None);
        assert_eq!(FirstStage4::to_linear(0xfff7_8000_0000_0000), None);
        assert_eq!(
            FirstStage4::from_linear(0x8000_0000_0000),
            0xffff_8000_0000_0000
        );
    }

    #[test]
    fn five_level_canonical_rules_follow_bit_56() {
        assert_eq!(
            FirstStage5::to_linear(0x00ff_ffff_ffff_f000),
            Some(0x00ff_ffff_ffff_f000)
        );
        assert_eq!(
            FirstStage5::to_linear(0xff00_0000_0000_0000),
            Some(0x0100_0000_0000_0000)
        );
        assert_eq!(FirstStage5::to_linear(0x0100_0000_0000_0000), None);
    }

    #[test]
    fn second_stage_is_zero_extended() {
        assert_eq!(
            SecondStage::to_linear(0xffff_ffff_f000),
            Some(0xffff_ffff_f000)
        );
        assert_eq!(SecondStage::to_linear(0xffff_8000_0000_0000), None);
    }

    #[test]
    fn first_stage_leaf_encodes_hardware_bits() {
        let pte = FirstStage4::leaf_entry(0x20_0000, 1, Perms::READ.with_user());
        assert_eq!(pte, 0x20_0000 | fs::P | fs::US | fs::PS | fs::XD);
        assert_eq!(FirstStage4::entry_perms(pte), Perms::READ.with_user());
    }

    #[test]
    fn split_child_keeps_attributes_and_drops_page_size_at_level_0() {
        let pte = FirstStage4::leaf_entry(0x20_0000, 1, Perms::READ_WRITE) | fs::A | fs::D;
        let child = FirstStage4::split_child(pte, 1, 0x20_1000);
        assert_eq!(child, 0x20_1000 | fs::P | fs::W | fs::XD | fs::A | fs::D);
    }
}

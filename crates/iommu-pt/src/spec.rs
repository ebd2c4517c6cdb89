//! Hardware page-table entry formats: bit constants and the typed entry records built on them,
//! no logic beyond packing fields.
//!
//! Kept apart from the walking and mapping code (as OpenVMM keeps its hardware formats in `spec`
//! modules) so that each field can be checked against the manuals on its own: the layout tests
//! below compare every field of [`FirstStageEntry`] and [`SecondStageEntry`] with encodings
//! written out by hand from the Intel SDM (Vol. 3A §4.5, 4-level and 5-level paging) and the
//! VT-d specification (§9.7-§9.8, first- and second-stage entries). Every table holds
//! [`ENTRIES`] 64-bit entries and occupies one 4 KiB page.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Number of 64-bit entries in one page-table page.
pub const ENTRIES: usize = 512;

/// Bytes in one page-table page (and in the smallest leaf).
pub const TABLE_BYTES: u64 = 4096;

/// Bits of virtual address resolved by one table level (`log2(ENTRIES)`).
pub const BITS_PER_LEVEL: u32 = 9;

/// Shift of the 4 KiB page offset.
pub const PAGE_SHIFT: u32 = 12;

/// Physical-address width of both formats: output addresses are bits 12..=51 of an entry.
pub const PHYS_ADDR_BITS: u32 = 52;

/// Output-address field of an entry pointing at a table or a 4 KiB page (bits 12..=51).
pub const ADDR_MASK: u64 = ((1 << PHYS_ADDR_BITS) - 1) & !((1 << PAGE_SHIFT) - 1);

/// x86-64 first-stage entries, as the CPU (4-level and 5-level paging) and Intel VT-d
/// scalable-mode first-stage translation (SVA) read them.
///
/// Levels: PT (level 0, 4 KiB leaves), PD (level 1, 2 MiB leaves when [`PS`](first_stage::PS)),
/// PDPT (level 2, 1 GiB leaves when `PS`), PML4 (level 3) and, for 5-level paging, PML5
/// (level 4). Permissions are the AND of every level walked: an entry is readable when present,
/// writable when every level has [`W`](first_stage::W), user-accessible when every level has
/// [`US`](first_stage::US), executable when no level has [`XD`](first_stage::XD). Supervisor
/// writes honour `W` (CR0.WP = 1 semantics). PAT/PCD/PWT are not used and are always 0.
pub mod first_stage {
    /// Present: the entry is valid and (for leaves) readable.
    pub const P: u64 = 1 << 0;
    /// Read/write: writes are allowed through this entry.
    pub const W: u64 = 1 << 1;
    /// User/supervisor: user-mode (unprivileged, PASID without privilege) accesses are allowed.
    pub const US: u64 = 1 << 2;
    /// Accessed: set by the walker on every entry it uses.
    pub const A: u64 = 1 << 5;
    /// Dirty: set by the walker on the leaf of a write.
    pub const D: u64 = 1 << 6;
    /// Page size: in a PD (level 1) or PDPT (level 2) entry, the entry is a 2 MiB or 1 GiB leaf.
    pub const PS: u64 = 1 << 7;
    /// Execute disable (NX): instruction fetches through this entry fault.
    pub const XD: u64 = 1 << 63;
    /// Address width of 4-level paging (PML4 root).
    pub const VA_BITS_4LEVEL: u32 = 48;
    /// Address width of 5-level paging (PML5 root, LA57).
    pub const VA_BITS_5LEVEL: u32 = 57;
    /// Bits a non-leaf entry written by this crate carries: the leaf alone decides permissions.
    pub const TABLE_FLAGS: u64 = P | W | US;
}

/// Second-stage entries for paging (DMA/iommufd) domains: VT-d second-stage / EPT-like.
///
/// Levels as in [`first_stage`] with 4 levels (48-bit IOVA, zero-extended: no canonical form,
/// an IOVA at or above 2^48 is out of range). An entry is present when any of
/// [`R`](second_stage::R), [`W`](second_stage::W), [`X`](second_stage::X) is set; permissions
/// are the AND over the levels. There is no user/supervisor distinction. Accessed and dirty are
/// the VT-d second-stage A/D bits 8 and 9 (dirty only on leaves).
pub mod second_stage {
    /// Read: DMA reads are allowed.
    pub const R: u64 = 1 << 0;
    /// Write: DMA writes are allowed.
    pub const W: u64 = 1 << 1;
    /// Execute: requests with the execute attribute are allowed.
    pub const X: u64 = 1 << 2;
    /// Page size: in a level-1 or level-2 entry, the entry is a 2 MiB or 1 GiB leaf.
    pub const PS: u64 = 1 << 7;
    /// Accessed: set by the walker on every entry it uses.
    pub const A: u64 = 1 << 8;
    /// Dirty: set by the walker on the leaf of a write.
    pub const D: u64 = 1 << 9;
    /// IOVA width of the 4-level second stage.
    pub const VA_BITS: u32 = 48;
    /// Bits a non-leaf entry written by this crate carries: the leaf alone decides permissions.
    pub const TABLE_FLAGS: u64 = R | W | X;
}

/// Accessors and builders of one-bit fields and the address field of an entry record: each
/// getter is one AND, each builder one AND and one OR of a shifted bool, so encoding and
/// decoding stay branch-free and usable in `const` context.
macro_rules! entry_fields {
    ($ty:ident { $($(#[$doc:meta])* $get:ident, $set:ident => $mask:expr;)* }) => {
        impl $ty {
            /// The all-zero entry: not present.
            pub const ZERO: Self = Self(0);

            /// The entry whose raw bits are `bits`.
            #[inline(always)]
            pub const fn from_bits(bits: u64) -> Self {
                Self(bits)
            }

            /// The raw bits, as stored in the table.
            #[inline(always)]
            pub const fn bits(self) -> u64 {
                self.0
            }

            /// The output address (bits 12..=51): the next table, or the page a leaf maps (of a
            /// large leaf, only the bits above its size are meaningful).
            #[inline(always)]
            pub const fn addr(self) -> u64 {
                self.0 & ADDR_MASK
            }

            /// The same entry with its address field set to `addr` (bits outside 12..=51
            /// dropped).
            #[inline(always)]
            pub const fn with_addr(self, addr: u64) -> Self {
                Self((self.0 & !ADDR_MASK) | (addr & ADDR_MASK))
            }

            $(
                $(#[$doc])*
                #[inline(always)]
                pub const fn $get(self) -> bool {
                    self.0 & $mask != 0
                }

                #[doc = concat!("The same entry with [`", stringify!($get), "`](Self::", stringify!($get), ") set to `on`.")]
                #[inline(always)]
                pub const fn $set(self, on: bool) -> Self {
                    Self((self.0 & !$mask) | ((on as u64) << $mask.trailing_zeros()))
                }
            )*
        }
    };
}

/// One x86-64 first-stage entry (PML5E/PML4E/PDPTE/PDE/PTE) as a typed record over its 64 bits.
///
/// Field positions are the [`first_stage`] constants; a table entry is built with
/// [`table`](Self::table), a leaf from [`ZERO`](Self::ZERO) with the `with_*` builders.
#[repr(transparent)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FirstStageEntry(u64);

entry_fields!(FirstStageEntry {
    /// P: the entry is valid and (for leaves) readable.
    present, with_present => first_stage::P;
    /// R/W: writes are allowed through this entry.
    writable, with_writable => first_stage::W;
    /// U/S: user-mode accesses are allowed through this entry.
    user, with_user => first_stage::US;
    /// A: the walker has used this entry.
    accessed, with_accessed => first_stage::A;
    /// D: the walker has written through this leaf.
    dirty, with_dirty => first_stage::D;
    /// PS: in a PD or PDPT entry, the entry is a 2 MiB or 1 GiB leaf.
    page_size, with_page_size => first_stage::PS;
    /// XD: instruction fetches through this entry fault.
    no_execute, with_no_execute => first_stage::XD;
});

impl FirstStageEntry {
    /// A non-leaf entry pointing at the table at `addr`, granting everything
    /// ([`first_stage::TABLE_FLAGS`]): the leaf alone decides permissions.
    #[inline(always)]
    pub const fn table(addr: u64) -> Self {
        Self::ZERO
            .with_addr(addr)
            .with_present(true)
            .with_writable(true)
            .with_user(true)
    }
}

/// One second-stage entry (VT-d second-stage / EPT-like) as a typed record over its 64 bits.
///
/// Field positions are the [`second_stage`] constants.
#[repr(transparent)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SecondStageEntry(u64);

entry_fields!(SecondStageEntry {
    /// R: DMA reads are allowed.
    readable, with_readable => second_stage::R;
    /// W: DMA writes are allowed.
    writable, with_writable => second_stage::W;
    /// X: requests with the execute attribute are allowed.
    executable, with_executable => second_stage::X;
    /// PS: in a level-1 or level-2 entry, the entry is a 2 MiB or 1 GiB leaf.
    page_size, with_page_size => second_stage::PS;
    /// A: the walker has used this entry.
    accessed, with_accessed => second_stage::A;
    /// D: the walker has written through this leaf.
    dirty, with_dirty => second_stage::D;
});

impl SecondStageEntry {
    /// Present: any of R, W, X is set (one test, not three).
    #[inline(always)]
    pub const fn present(self) -> bool {
        self.0 & (second_stage::R | second_stage::W | second_stage::X) != 0
    }

    /// A non-leaf entry pointing at the table at `addr`, granting everything
    /// ([`second_stage::TABLE_FLAGS`]): the leaf alone decides permissions.
    #[inline(always)]
    pub const fn table(addr: u64) -> Self {
        Self::ZERO
            .with_addr(addr)
            .with_readable(true)
            .with_writable(true)
            .with_executable(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_mask_covers_bits_12_to_51() {
        assert_eq!(ADDR_MASK, 0x000f_ffff_ffff_f000);
        assert_eq!(ENTRIES as u64 * 8, TABLE_BYTES);
    }

    #[test]
    fn entries_are_one_little_endian_u64() {
        assert_eq!(core::mem::size_of::<FirstStageEntry>(), 8);
        assert_eq!(core::mem::align_of::<FirstStageEntry>(), 8);
        assert_eq!(core::mem::size_of::<SecondStageEntry>(), 8);
        assert_eq!(core::mem::align_of::<SecondStageEntry>(), 8);
        let e = FirstStageEntry::from_bits(0x8000_0000_1234_5027);
        assert_eq!(e.as_bytes(), 0x8000_0000_1234_5027u64.to_ne_bytes());
        assert_eq!(FirstStageEntry::read_from_bytes(e.as_bytes()), Ok(e));
    }

    /// SDM Vol. 3A table 4-20 (PTE) and 4-18/4-19 (PDE/PDPTE mapping a page): P bit 0, R/W 1,
    /// U/S 2, A 5, D 6, PS 7, XD 63, address 12..=51 (MAXPHYADDR 52).
    #[test]
    fn first_stage_fields_sit_at_their_sdm_bits() {
        let one = |e: FirstStageEntry| e.bits();
        let z = FirstStageEntry::ZERO;
        assert_eq!(one(z.with_present(true)), 0x0000_0000_0000_0001);
        assert_eq!(one(z.with_writable(true)), 0x0000_0000_0000_0002);
        assert_eq!(one(z.with_user(true)), 0x0000_0000_0000_0004);
        assert_eq!(one(z.with_accessed(true)), 0x0000_0000_0000_0020);
        assert_eq!(one(z.with_dirty(true)), 0x0000_0000_0000_0040);
        assert_eq!(one(z.with_page_size(true)), 0x0000_0000_0000_0080);
        assert_eq!(one(z.with_no_execute(true)), 0x8000_0000_0000_0000);
        assert_eq!(one(z.with_addr(u64::MAX)), 0x000f_ffff_ffff_f000);
    }

    #[test]
    fn first_stage_2m_user_rw_dirty_leaf_matches_its_hand_encoding() {
        let leaf = FirstStageEntry::ZERO
            .with_addr(0x1234_5620_0000)
            .with_present(true)
            .with_writable(true)
            .with_user(true)
            .with_accessed(true)
            .with_dirty(true)
            .with_page_size(true)
            .with_no_execute(true);
        assert_eq!(leaf.bits(), 0x8000_1234_5620_00e7);
        let raw = FirstStageEntry::from_bits(0x8000_1234_5620_00e7);
        assert_eq!(
            (
                raw.present(),
                raw.writable(),
                raw.user(),
                raw.accessed(),
                raw.dirty()
            ),
            (true, true, true, true, true)
        );
        assert_eq!(
            (raw.page_size(), raw.no_execute(), raw.addr()),
            (true, true, 0x1234_5620_0000)
        );
        assert_eq!(FirstStageEntry::table(0x7000).bits(), 0x7007);
        assert_eq!(
            FirstStageEntry::table(0x7000).bits(),
            0x7000 | first_stage::TABLE_FLAGS
        );
    }

    #[test]
    fn first_stage_builders_clear_as_well_as_set() {
        let all = FirstStageEntry::from_bits(u64::MAX);
        assert_eq!(all.with_no_execute(false).bits(), 0x7fff_ffff_ffff_ffff);
        assert_eq!(all.with_present(false).bits(), 0xffff_ffff_ffff_fffe);
        assert_eq!(all.with_addr(0).bits(), 0xfff0_0000_0000_0fff);
    }

    /// VT-d §9.8 second-stage entries: R bit 0, W 1, X 2, PS 7, A 8, D 9, address 12..=51.
    #[test]
    fn second_stage_fields_sit_at_their_vtd_bits() {
        let one = |e: SecondStageEntry| e.bits();
        let z = SecondStageEntry::ZERO;
        assert_eq!(one(z.with_readable(true)), 0x001);
        assert_eq!(one(z.with_writable(true)), 0x002);
        assert_eq!(one(z.with_executable(true)), 0x004);
        assert_eq!(one(z.with_page_size(true)), 0x080);
        assert_eq!(one(z.with_accessed(true)), 0x100);
        assert_eq!(one(z.with_dirty(true)), 0x200);
        assert_eq!(one(z.with_addr(u64::MAX)), 0x000f_ffff_ffff_f000);
    }

    #[test]
    fn second_stage_1g_read_only_leaf_matches_its_hand_encoding() {
        let leaf = SecondStageEntry::ZERO
            .with_addr(0x80_4000_0000)
            .with_readable(true)
            .with_page_size(true)
            .with_accessed(true);
        assert_eq!(leaf.bits(), 0x0000_0080_4000_0181);
        let raw = SecondStageEntry::from_bits(0x0000_0080_4000_0181);
        assert_eq!(
            (
                raw.readable(),
                raw.writable(),
                raw.executable(),
                raw.present()
            ),
            (true, false, false, true)
        );
        assert_eq!(
            (raw.page_size(), raw.accessed(), raw.dirty()),
            (true, true, false)
        );
        assert_eq!(raw.addr(), 0x80_4000_0000);
        assert!(
            !SecondStageEntry::from_bits(0x80_4000_0180).present(),
            "A and PS alone"
        );
        assert_eq!(SecondStageEntry::table(0x7000).bits(), 0x7007);
    }
}

//! Hardware page-table entry formats: plain bit constants, no logic.
//!
//! Kept apart from the walking and mapping code (as OpenVMM keeps its hardware formats in `spec`
//! modules) so that each constant can be checked against the manuals on its own. Every table holds
//! [`ENTRIES`] 64-bit entries and occupies one 4 KiB page.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_mask_covers_bits_12_to_51() {
        assert_eq!(ADDR_MASK, 0x000f_ffff_ffff_f000);
        assert_eq!(ENTRIES as u64 * 8, TABLE_BYTES);
    }
}

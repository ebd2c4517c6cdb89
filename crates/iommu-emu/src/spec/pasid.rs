//! The scalable-mode PASID-table entry: [`PasidEntry`].
//!
//! Layout per the VT-d specification (scalable-mode PASID-table entry), as Linux's
//! `intel/pasid.h` `pasid_set_*` helpers write it. In scalable mode DMA without a PASID is
//! translated through the entry of `RID_PASID`, so the emulator uses this one record for both
//! the RID context and every PASID context.

use super::{flag, get, set, set_flag};

/// PASID Granular Translation Type (word 0, bits 8:6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pgtt {
    /// First-stage translation only (the CPU's page table: SVA).
    FirstStage,
    /// Second-stage translation only (an IOMMU-owned table: DMA API, iommufd IOAS).
    SecondStage,
    /// Nested: first stage over second stage.
    Nested,
    /// Pass-through (identity).
    PassThrough,
}

impl Pgtt {
    #[inline]
    const fn bits(self) -> u64 {
        match self {
            Pgtt::FirstStage => 1,
            Pgtt::SecondStage => 2,
            Pgtt::Nested => 3,
            Pgtt::PassThrough => 4,
        }
    }

    #[inline]
    const fn from_bits(b: u64) -> Option<Pgtt> {
        match b {
            1 => Some(Pgtt::FirstStage),
            2 => Some(Pgtt::SecondStage),
            3 => Some(Pgtt::Nested),
            4 => Some(Pgtt::PassThrough),
            _ => None,
        }
    }
}

/// A scalable-mode PASID-table entry: 64 bytes, eight 64-bit words.
///
/// | word | bits  | field |
/// |------|-------|-------|
/// | 0    | 0     | present (P) |
/// | 0    | 1     | fault processing disable (FPD) |
/// | 0    | 4:2   | second-stage address width (AW; 2 = 48 bits, 4 levels) |
/// | 0    | 8:6   | PASID granular translation type (PGTT) |
/// | 0    | 63:12 | second-stage page-table pointer (SSPTPTR) |
/// | 1    | 15:0  | domain ID (DID) |
/// | 2    | 3:2   | first-stage paging mode (FSPM; 0 = 4 levels) |
/// | 2    | 63:12 | first-stage page-table pointer (FSPTPTR) |
/// | 3–7  | all   | not modelled (0) |
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PasidEntry(pub [u64; 8]);

const _: () = assert!(core::mem::size_of::<PasidEntry>() == 64);

impl PasidEntry {
    /// Words 0 to 2 hold every field the emulator models; words 3 to 7 stay 0.
    pub const MODELLED_WORDS: usize = 3;

    /// The entry whose first [`PasidEntry::MODELLED_WORDS`] words are `w` (the rest 0).
    #[inline]
    pub const fn from_modelled(w: [u64; Self::MODELLED_WORDS]) -> PasidEntry {
        PasidEntry([w[0], w[1], w[2], 0, 0, 0, 0, 0])
    }

    /// The words that hold the modelled fields (what a context table needs to keep).
    #[inline]
    pub const fn modelled(&self) -> [u64; Self::MODELLED_WORDS] {
        [self.0[0], self.0[1], self.0[2]]
    }

    /// AW encoding of a 48-bit (4-level) second stage.
    pub const AW_48: u64 = 2;
    /// FSPM encoding of a 4-level first stage.
    pub const FSPM_4LEVEL: u64 = 0;

    const P: u32 = 0;
    const FPD: u32 = 1;
    const AW_SHIFT: u32 = 2;
    const AW_BITS: u32 = 3;
    const PGTT_SHIFT: u32 = 6;
    const PGTT_BITS: u32 = 3;
    const PTR_SHIFT: u32 = 12;
    const PTR_BITS: u32 = 52;
    const DID_BITS: u32 = 16;
    const FSPM_SHIFT: u32 = 2;
    const FSPM_BITS: u32 = 2;

    /// A present entry of type `pgtt` for domain `did`; the table pointers are added with
    /// [`PasidEntry::with_ssptptr`] / [`PasidEntry::with_fsptptr`].
    #[inline]
    pub const fn new(did: u16, pgtt: Pgtt) -> PasidEntry {
        let mut w = [0u64; 8];
        w[0] = set_flag(w[0], Self::P, true);
        w[0] = set(w[0], Self::PGTT_SHIFT, Self::PGTT_BITS, pgtt.bits());
        w[1] = set(w[1], 0, Self::DID_BITS, did as u64);
        PasidEntry(w)
    }

    /// A not-present entry that still names domain `did`.
    #[inline]
    pub const fn not_present(did: u16) -> PasidEntry {
        let mut w = [0u64; 8];
        w[1] = set(w[1], 0, Self::DID_BITS, did as u64);
        PasidEntry(w)
    }

    /// This entry with a 4-level second-stage table rooted at frame `pfn`.
    #[inline]
    pub const fn with_ssptptr(mut self, pfn: u64) -> PasidEntry {
        self.0[0] = set(self.0[0], Self::PTR_SHIFT, Self::PTR_BITS, pfn);
        self.0[0] = set(self.0[0], Self::AW_SHIFT, Self::AW_BITS, Self::AW_48);
        self
    }

    /// This entry with a 4-level first-stage table rooted at frame `pfn`.
    #[inline]
    pub const fn with_fsptptr(mut self, pfn: u64) -> PasidEntry {
        self.0[2] = set(self.0[2], Self::PTR_SHIFT, Self::PTR_BITS, pfn);
        self.0[2] = set(
            self.0[2],
            Self::FSPM_SHIFT,
            Self::FSPM_BITS,
            Self::FSPM_4LEVEL,
        );
        self
    }

    /// This entry with fault processing disabled (`on`) or enabled.
    #[inline]
    pub const fn with_fpd(mut self, on: bool) -> PasidEntry {
        self.0[0] = set_flag(self.0[0], Self::FPD, on);
        self
    }

    /// Present bit.
    #[inline]
    pub const fn present(&self) -> bool {
        flag(self.0[0], Self::P)
    }
    /// Fault processing disable.
    #[inline]
    pub const fn fpd(&self) -> bool {
        flag(self.0[0], Self::FPD)
    }
    /// Second-stage address width encoding.
    #[inline]
    pub const fn aw(&self) -> u64 {
        get(self.0[0], Self::AW_SHIFT, Self::AW_BITS)
    }
    /// Translation type; `None` for a reserved encoding.
    #[inline]
    pub const fn pgtt(&self) -> Option<Pgtt> {
        Pgtt::from_bits(get(self.0[0], Self::PGTT_SHIFT, Self::PGTT_BITS))
    }
    /// Second-stage root frame.
    #[inline]
    pub const fn ssptptr(&self) -> u64 {
        get(self.0[0], Self::PTR_SHIFT, Self::PTR_BITS)
    }
    /// Domain ID.
    #[inline]
    pub const fn did(&self) -> u16 {
        get(self.0[1], 0, Self::DID_BITS) as u16
    }
    /// First-stage paging mode encoding.
    #[inline]
    pub const fn fspm(&self) -> u64 {
        get(self.0[2], Self::FSPM_SHIFT, Self::FSPM_BITS)
    }
    /// First-stage root frame.
    #[inline]
    pub const fn fsptptr(&self) -> u64 {
        get(self.0[2], Self::PTR_SHIFT, Self::PTR_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_stage_entry_fields_sit_at_their_vtd_bits() {
        let e = PasidEntry::new(0xbeef, Pgtt::SecondStage)
            .with_ssptptr(0xf_ffff_ffff_fabc)
            .with_fpd(true);
        // Word 0: P (0), FPD (1), AW 2 at 4:2, PGTT 2 at 8:6, SSPTPTR at 63:12.
        let w0 = 1 | 1 << 1 | 2 << 2 | 2 << 6 | 0xf_ffff_ffff_fabc << 12;
        assert_eq!(e, PasidEntry([w0, 0xbeef, 0, 0, 0, 0, 0, 0]));
        assert_eq!(core::mem::size_of::<PasidEntry>(), 64);
        assert!(e.present() && e.fpd());
        assert_eq!(e.aw(), PasidEntry::AW_48);
        assert_eq!(e.pgtt(), Some(Pgtt::SecondStage));
        assert_eq!((e.ssptptr(), e.did()), (0xf_ffff_ffff_fabc, 0xbeef));
    }

    #[test]
    fn first_stage_entry_fields_sit_at_their_vtd_bits() {
        let e = PasidEntry::new(7, Pgtt::FirstStage).with_fsptptr(0x1234);
        // Word 0: P, PGTT 1 at 8:6. Word 1: DID. Word 2: FSPM 0 at 3:2, FSPTPTR at 63:12.
        assert_eq!(e, PasidEntry([1 | 1 << 6, 7, 0x1234 << 12, 0, 0, 0, 0, 0]));
        assert_eq!(e.pgtt(), Some(Pgtt::FirstStage));
        assert_eq!((e.fsptptr(), e.fspm(), e.did()), (0x1234, 0, 7));
        assert!(!e.fpd());
        assert_eq!(PasidEntry::from_modelled(e.modelled()), e);
    }

    #[test]
    fn pass_through_nested_and_not_present_entries() {
        assert_eq!(PasidEntry::new(1, Pgtt::PassThrough).0[0], 1 | 4 << 6);
        assert_eq!(PasidEntry::new(1, Pgtt::Nested).0[0], 1 | 3 << 6);
        let off = PasidEntry::not_present(9);
        assert_eq!(off.0, [0, 9, 0, 0, 0, 0, 0, 0]);
        assert!(!off.present());
        assert_eq!(off.pgtt(), None);
    }
}

//! Errors of the mapping API and faults of the walker.

use crate::addr::Perms;

/// Linux errno values returned by [`PtError::errno`] (positive, as in `libc`).
pub mod errno {
    /// No such entry: nothing mapped where an unmap asked.
    pub const ENOENT: i32 = 2;
    /// Out of memory: no page-table page could be allocated.
    pub const ENOMEM: i32 = 12;
    /// Already exists: a map would overlap an existing mapping.
    pub const EEXIST: i32 = 17;
    /// Invalid argument: misaligned, empty, overflowing or out-of-range request.
    pub const EINVAL: i32 = 22;
}

/// Why a map or unmap request was refused.
///
/// Every variant names the value that was wrong. A request that returns an error has changed
/// nothing: the whole range is validated (and every table page it needs allocated) before the
/// first entry is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PtError {
    /// Part of the range is already mapped (map never replaces a mapping).
    #[error("iova {iova:#x} is already mapped")]
    AlreadyMapped {
        /// The first address found mapped (canonical form).
        iova: u64,
    },
    /// The IOVA is not 4 KiB aligned.
    #[error("iova {iova:#x} is not 4 KiB aligned")]
    MisalignedIova {
        /// The offending IOVA.
        iova: u64,
    },
    /// The length is not a multiple of 4 KiB.
    #[error("length {len:#x} is not a multiple of 4 KiB")]
    MisalignedLength {
        /// The offending length.
        len: u64,
    },
    /// The physical address is not 4 KiB aligned.
    #[error("physical address {pa:#x} is not 4 KiB aligned")]
    MisalignedPhys {
        /// The offending physical address.
        pa: u64,
    },
    /// No page-table page could be allocated.
    #[error("out of page-table memory ({tables} table pages needed)")]
    NoMemory {
        /// How many table pages the request needed in total.
        tables: usize,
    },
    /// The IOVA is not canonical for a sign-extended (first-stage) format.
    #[error("iova {iova:#x} is not canonical for a {va_bits}-bit address space")]
    NonCanonical {
        /// The offending IOVA.
        iova: u64,
        /// The format's virtual-address width.
        va_bits: u32,
    },
    /// Nothing at all is mapped in the range an unmap asked for.
    #[error("nothing is mapped in [{iova:#x}, +{len:#x})")]
    NotMapped {
        /// Start of the range.
        iova: u64,
        /// Length of the range.
        len: u64,
    },
    /// The range leaves the address space: beyond the VA width, or across the canonical hole.
    #[error("range [{iova:#x}, +{len:#x}) leaves the {va_bits}-bit address space")]
    OutOfRange {
        /// Start of the range.
        iova: u64,
        /// Length of the range.
        len: u64,
        /// The format's virtual-address width.
        va_bits: u32,
    },
    /// The physical range reaches beyond the 52-bit physical-address width.
    #[error("physical range [{pa:#x}, +{len:#x}) exceeds 52 bits")]
    PhysOutOfRange {
        /// Start of the physical range.
        pa: u64,
        /// Length of the range.
        len: u64,
    },
    /// `iova + len` (or `pa + len`) overflows 64 bits.
    #[error("range [{start:#x}, +{len:#x}) overflows")]
    RangeOverflow {
        /// Start of the overflowing range (IOVA or physical address).
        start: u64,
        /// Length of the range.
        len: u64,
    },
    /// The format cannot express these permissions (see [`Format::supports`]).
    ///
    /// [`Format::supports`]: crate::Format::supports
    #[error("permissions {perms:?} cannot be expressed by this format")]
    UnsupportedPerms {
        /// The offending permissions.
        perms: Perms,
    },
    /// The length is zero.
    #[error("zero-length range at iova {iova:#x}")]
    ZeroLength {
        /// The start of the empty range.
        iova: u64,
    },
}

impl PtError {
    /// The errno Linux returns for the same condition (positive, see [`errno`]).
    pub const fn errno(&self) -> i32 {
        match self {
            PtError::AlreadyMapped { .. } => errno::EEXIST,
            PtError::NoMemory { .. } => errno::ENOMEM,
            PtError::NotMapped { .. } => errno::ENOENT,
            PtError::MisalignedIova { .. }
            | PtError::MisalignedLength { .. }
            | PtError::MisalignedPhys { .. }
            | PtError::NonCanonical { .. }
            | PtError::OutOfRange { .. }
            | PtError::PhysOutOfRange { .. }
            | PtError::RangeOverflow { .. }
            | PtError::UnsupportedPerms { .. }
            | PtError::ZeroLength { .. } => errno::EINVAL,
        }
    }
}

/// Why a walk did not produce a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// An entry points at a frame the table memory does not hold (a corrupt or foreign table).
    BadTable,
    /// The address is not canonical (first stage) or beyond the IOVA width (second stage).
    NonCanonical,
    /// No present entry: the page (or a table on the way) is not mapped.
    NotPresent,
    /// An instruction fetch hit a no-execute page.
    NotExecutable,
    /// A read hit a page without read permission (second stage only).
    NotReadable,
    /// A write hit a read-only page.
    NotWritable,
    /// A user-mode access hit a supervisor-only page.
    SupervisorOnly,
}

/// A failed walk: what went wrong and at which level.
///
/// `level` is the table level (0 = the 4 KiB table, `LEVELS - 1` = the root) of the entry that
/// was not present; for permission faults it is the level of the leaf, because permissions are
/// the AND of every level and checked once the leaf is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{kind:?} fault at level {level} for address {va:#x}")]
pub struct WalkFault {
    /// What went wrong.
    pub kind: FaultKind,
    /// Level at which the walk stopped.
    pub level: u8,
    /// The address that was being translated.
    pub va: u64,
}

impl WalkFault {
    /// True for faults that a page request (PRI) can resolve by mapping the page: not-present.
    #[inline]
    pub const fn is_not_present(&self) -> bool {
        matches!(self.kind, FaultKind::NotPresent)
    }
}

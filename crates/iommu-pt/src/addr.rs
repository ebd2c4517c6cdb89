//! Address newtypes, page sizes, permissions and access kinds.

use core::fmt;

use crate::spec::{PAGE_SHIFT, PHYS_ADDR_BITS};

/// A physical frame number: a physical address shifted right by 12.
///
/// Page-table pages are named by their frame so a [`TableMem`](crate::TableMem) can keep them in
/// whatever backing store it likes (a heap arena, an emulator's simulated physical memory).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The physical address of the first byte of this frame.
    #[inline]
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

/// A physical (output) address: what a translation produces and what a mapping points at.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

impl PhysAddr {
    /// One past the highest physical address an entry can hold (2^52).
    pub const LIMIT: u64 = 1 << PHYS_ADDR_BITS;

    /// The frame containing this address.
    #[inline]
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

/// The size of a leaf: 4 KiB (level 0), 2 MiB (level 1) or 1 GiB (level 2).
///
/// Ordered by size, so `PageSize::Size2M <= max` reads as "2 MiB leaves are allowed".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// A 4 KiB page, mapped by a level-0 (PT) entry.
    Size4K,
    /// A 2 MiB page, mapped by a level-1 (PD) entry with the page-size bit.
    Size2M,
    /// A 1 GiB page, mapped by a level-2 (PDPT) entry with the page-size bit.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        crate::format::level_size(self.level())
    }

    /// The table level whose entries map pages of this size (0 for 4 KiB).
    #[inline]
    pub const fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        }
    }

    /// The page size mapped by a leaf at `level`, or `None` above level 2.
    #[inline]
    pub const fn from_level(level: u8) -> Option<PageSize> {
        match level {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size2M),
            2 => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

/// What a mapping allows: the permissions stored in (and, for walks, ANDed across) entries.
///
/// Not every format can express every combination: the first stage cannot express a present
/// page without read, the second stage has no user/supervisor bit. [`PageTable::map`]
/// rejects what its format cannot express rather than silently widening it.
///
/// [`PageTable::map`]: crate::PageTable::map
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    /// Reads are allowed.
    pub read: bool,
    /// Writes are allowed.
    pub write: bool,
    /// Instruction fetches (requests with the execute attribute) are allowed.
    pub exec: bool,
    /// User-mode (unprivileged) accesses are allowed (first stage only).
    pub user: bool,
}

impl Perms {
    /// Read only, supervisor, no execute.
    pub const READ: Perms = Perms {
        read: true,
        write: false,
        exec: false,
        user: false,
    };
    /// Read and write, supervisor, no execute: the usual DMA mapping.
    pub const READ_WRITE: Perms = Perms {
        read: true,
        write: true,
        exec: false,
        user: false,
    };
    /// Everything, supervisor.
    pub const ALL: Perms = Perms {
        read: true,
        write: true,
        exec: true,
        user: false,
    };

    /// These permissions with user-mode access allowed too.
    #[inline]
    pub const fn with_user(self) -> Perms {
        Perms { user: true, ..self }
    }

    /// These permissions with execute allowed too.
    #[inline]
    pub const fn with_exec(self) -> Perms {
        Perms { exec: true, ..self }
    }

    /// Only what both allow: how permissions combine down a walk.
    #[inline]
    pub const fn intersect(self, other: Perms) -> Perms {
        Perms {
            read: self.read & other.read,
            write: self.write & other.write,
            exec: self.exec & other.exec,
            user: self.user & other.user,
        }
    }
}

/// The kind of a DMA (or CPU) access that a walk checks against the permissions it finds.
///
/// Several flags may be set at once (an atomic read-modify-write is `read` and `write`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Access {
    /// The access reads.
    pub read: bool,
    /// The access writes: needs write permission and sets the leaf's dirty bit.
    pub write: bool,
    /// The access is an instruction fetch: faults on no-execute pages.
    pub exec: bool,
    /// The access is unprivileged: faults on supervisor-only pages (first stage).
    pub user: bool,
}

impl Access {
    /// A supervisor read.
    pub const READ: Access = Access {
        read: true,
        write: false,
        exec: false,
        user: false,
    };
    /// A supervisor write.
    pub const WRITE: Access = Access {
        read: false,
        write: true,
        exec: false,
        user: false,
    };
    /// A supervisor instruction fetch.
    pub const EXEC: Access = Access {
        read: false,
        write: false,
        exec: true,
        user: false,
    };

    /// The same access made from user mode.
    #[inline]
    pub const fn user(self) -> Access {
        Access { user: true, ..self }
    }
}

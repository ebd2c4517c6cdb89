//! `iommu-pt`: multi-level page-table formats walked by the software IOMMU.
//!
//! The crate owns the page-table entry formats ([`spec`]: an x86-64-compatible first stage with
//! 4 and 5 levels, and a second stage for paging domains), range map/unmap/query with 4 KiB,
//! 2 MiB and 1 GiB leaves chosen automatically ([`PageTable`]), and the hardware walker
//! ([`walk`]) that sets accessed/dirty bits atomically. Table pages come from a [`TableMem`]
//! (the emulator's physical memory, or the in-crate [`ArenaTableMem`]). It knows nothing of
//! devices or PASIDs.
//!
//! # Concurrency
//! One thread mutates a [`PageTable`] (`&mut self`); any number of threads walk it at the same
//! time through [`walk`] with the table's [`root`](PageTable::root) and a shared reference to
//! its memory. Entries are single atomic words, so a walker sees each entry before or after an
//! update; a walk yields a translation that was valid during the call, or a fault. Unmap returns
//! the table pages it unlinked instead of freeing them, so the caller frees them only after the
//! IOTLBs are invalidated and no walk can still be reading them.
//!
//! # Example
//! ```
//! use iommu_pt::{walk, Access, ArenaTableMem, FirstStage4, PageSize, PageTable, Perms, PhysAddr};
//!
//! let mem = ArenaTableMem::new(64)?;
//! let mut pt = PageTable::<FirstStage4, _>::new(&mem)?;
//!
//! // 4 MiB at a 2 MiB-aligned IOVA and PA: two 2 MiB leaves, no 4 KiB table.
//! pt.map(0x4000_0000, PhysAddr(0x8000_0000), 4 << 20, Perms::READ_WRITE)?;
//! assert_eq!(pt.query(0x4020_0000).unwrap().size, PageSize::Size2M);
//!
//! // The IOMMU walks from the root, on any thread, without locks; writes set the dirty bit.
//! let t = walk::<FirstStage4, _>(&mem, pt.root(), 0x4020_1234, Access::WRITE).unwrap();
//! assert_eq!(t.pa, PhysAddr(0x8020_1234));
//! assert!(pt.query(0x4020_0000).unwrap().dirty);
//!
//! // Unmapping 4 KiB inside a 2 MiB leaf splits it; the rest stays mapped.
//! let removed = pt.unmap(0x4020_1000, 0x1000)?;
//! assert_eq!(removed.bytes, 0x1000);
//! assert!(pt.walk(0x4020_1000, Access::READ).unwrap_err().is_not_present());
//! assert_eq!(pt.walk(0x4020_2000, Access::READ).unwrap().pa, PhysAddr(0x8020_2000));
//! pt.free_tables(removed.freed_tables); // after IOTLB invalidation
//! # Ok::<(), iommu_pt::PtError>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod addr;
mod error;
mod format;
mod mem;
pub mod spec;
mod table;
mod walk;

pub use addr::{Access, PageSize, Perms, Pfn, PhysAddr};
pub use error::{errno, FaultKind, PtError, WalkFault};
pub use format::{level_size, FirstStage4, FirstStage5, Format, SecondStage};
pub use mem::{ArenaTableMem, TableMem, TableRef};
pub use table::{Mapping, Mappings, PageTable, Unmapped};
pub use walk::{walk, walk_caching, walk_leaf_table, LeafTable, Translation};

#[cfg(test)]
mod tests;

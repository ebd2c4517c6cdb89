//! Page-table map/unmap/walk: `iommu-pt` and the `x86_64` crate's `OffsetPageTable` (through
//! `pt-peer`, which holds all the unsafe code the comparison needs) behind one [`PtSide`]
//! trait, so both sides run the very same workload.
//!
//! Addresses: everything lives under one 1 GiB-aligned window at [`BASE`] (so under one level-2
//! table), 4 KiB pages in its first 2 MiB, 2 MiB leaves from 16 MiB; the walk's pages are
//! scattered over [`WALK_TABLES`] leaf tables elsewhere. Data frames are never touched.

use std::hint::black_box;

use iommu_pt::{Access, PageTable, Perms, PhysAddr, TableMem};
use pt_peer::X86Peer;

/// 4 KiB.
pub const K4: u64 = 4096;
/// 2 MiB.
pub const M2: u64 = 2 << 20;
/// Start of the mapped window: a 1 GiB-aligned address in the lower half.
pub const BASE: u64 = 0x40_0000_0000;
/// Data frames are never touched; any 2 MiB-aligned address below 2^52 will do.
pub const DATA: u64 = 0x1_0000_0000;
/// Leaf tables populated for the cold walk: 64 MiB of tables, twice the L3 cache.
pub const WALK_TABLES: u64 = 16384;
/// 4 KiB pages per batch: one full leaf table.
pub const PAGE_BATCH: u64 = 512;
/// 2 MiB leaves per batch, in one level-2 table.
pub const LEAF_BATCH: u64 = 64;
/// A 2 MiB range of 4 KiB pages starting half-way into a leaf table, so it spans two leaf
/// tables and covers neither whole: unmapping it leaves both linked (an aligned 2 MiB unmap makes
/// `iommu-pt` unlink and free the leaf table, which the `x86_64` crate never does; that would
/// time table churn on one side only).
pub const SPANNING_RANGE_VA: u64 = BASE + M2 + M2 / 2;
/// Not 2 MiB aligned, so `iommu-pt` could not use a 2 MiB leaf even at an aligned IOVA.
pub const RANGE_PA: u64 = DATA + K4;

/// Address of the `j`-th 4 KiB page.
pub fn page_va(j: u64) -> u64 {
    BASE + j * K4
}

/// Address of the `j`-th 256-page range (two per leaf table).
pub fn range_va(j: u64) -> u64 {
    BASE + j * 256 * K4
}

/// Address of the `j`-th free 2 MiB slot (after the 4 KiB pages' leaf tables).
pub fn leaf_va(j: u64) -> u64 {
    BASE + (8 + j) * M2
}

/// A well-mixed index for address `i` of a random walk.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// One 4 KiB page in each of [`WALK_TABLES`] leaf tables, at a scattered index.
pub fn walk_va(i: u64) -> u64 {
    (1 << 39) + (i % WALK_TABLES) * M2 + (mix(i) % 512) * K4
}

/// The `i`-th address of a random walk over the populated pages.
pub fn random_walk_va(i: u64) -> u64 {
    walk_va(mix(i.wrapping_mul(0x9e37_79b9)) % WALK_TABLES)
}

/// One side of the page-table comparison: map/unmap a 4 KiB page or a 2 MiB leaf, ranges of
/// 4 KiB pages, and a read translation. Every call succeeds by construction of the workload.
pub trait PtSide {
    /// Maps `len` (4 KiB or 2 MiB) at `va` to `pa`, read/write.
    fn map(&mut self, va: u64, pa: u64, len: u64);
    /// Unmaps `len` (4 KiB or 2 MiB) at `va`.
    fn unmap(&mut self, va: u64, len: u64);
    /// `pages` 4 KiB pages from `va` to `pa`; one call per page unless the side has a range API.
    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        (0..pages).for_each(|p| self.map(va + p * K4, pa + p * K4, K4));
    }
    /// Unmaps `pages` 4 KiB pages from `va`; one call per page unless the side has a range API.
    fn unmap_range(&mut self, va: u64, pages: u64) {
        (0..pages).for_each(|p| self.unmap(va + p * K4, K4));
    }
    /// The physical address `va` translates to for a read.
    fn translate(&self, va: u64) -> u64;
}

impl<F: iommu_pt::Format, M: TableMem> PtSide for PageTable<F, M> {
    #[inline]
    fn map(&mut self, va: u64, pa: u64, len: u64) {
        PageTable::map(self, va, PhysAddr(pa), len, Perms::READ_WRITE).expect("iommu-pt map");
    }
    #[inline]
    fn unmap(&mut self, va: u64, len: u64) {
        let gone = PageTable::unmap(self, va, len).expect("iommu-pt unmap");
        self.free_tables(black_box(gone).freed_tables);
    }
    /// One call: `iommu-pt` maps a range as such.
    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        PtSide::map(self, va, pa, pages * K4);
    }
    fn unmap_range(&mut self, va: u64, pages: u64) {
        PtSide::unmap(self, va, pages * K4);
    }
    #[inline]
    fn translate(&self, va: u64) -> u64 {
        self.walk(va, Access::READ).expect("iommu-pt walk").pa.0
    }
}

/// The `x86_64` crate's mapper. It has no range call: a range is one `map_to` (or `unmap`) per
/// page, as its callers do.
impl PtSide for X86Peer {
    #[inline]
    fn map(&mut self, va: u64, pa: u64, len: u64) {
        match len {
            K4 => self.map_4k(va, pa),
            _ => self.map_2m(va, pa),
        }
        .expect("x86_64 crate map_to");
    }
    #[inline]
    fn unmap(&mut self, va: u64, len: u64) {
        black_box(match len {
            K4 => self.unmap_4k(va),
            _ => self.unmap_2m(va),
        })
        .expect("x86_64 crate unmap");
    }
    #[inline]
    fn translate(&self, va: u64) -> u64 {
        X86Peer::translate(self, va).expect("x86_64 crate translate")
    }
}

/// Builds the tables the map/unmap figures work in and leaves them empty: the leaf tables of the
/// first four 2 MiB slots and the level-2 table of the 2 MiB leaves, on either side, so every
/// timed call works on existing tables.
pub fn prepare<S: PtSide>(side: &mut S) {
    for slot in 0..4 {
        side.map(BASE + slot * M2, DATA, K4);
        side.unmap(BASE + slot * M2, K4);
    }
    side.map(leaf_va(0), DATA, M2);
    side.unmap(leaf_va(0), M2);
}

/// Maps one page into each of [`WALK_TABLES`] leaf tables (and translates it once, so accessed
/// bits are set and the timed walks only read).
pub fn populate_walk<S: PtSide>(side: &mut S) {
    for i in 0..WALK_TABLES {
        side.map(walk_va(i), DATA + i * K4, K4);
        black_box(side.translate(walk_va(i)));
    }
}

/// The map/unmap operations of one figure, as `(timed, untimed)` pairs for [`crate::batched`]
/// with the batch size they are timed in.
pub struct MapOps<S> {
    /// Batch size: how many distinct places the operation cycles through.
    pub batch: u64,
    /// Maps the `j`-th place.
    pub map: fn(&mut S, u64),
    /// Unmaps the `j`-th place.
    pub unmap: fn(&mut S, u64),
}

impl<S: PtSide> MapOps<S> {
    /// 4 KiB pages, one leaf table's worth.
    pub fn page_4k() -> Self {
        Self {
            batch: PAGE_BATCH,
            map: |s, j| s.map(page_va(j), DATA + j * K4, K4),
            unmap: |s, j| s.unmap(page_va(j), K4),
        }
    }

    /// 2 MiB leaves.
    pub fn leaf_2m(batch: u64) -> Self {
        Self {
            batch,
            map: |s, j| s.map(leaf_va(j), DATA, M2),
            unmap: |s, j| s.unmap(leaf_va(j), M2),
        }
    }

    /// Ranges of 256 × 4 KiB pages, eight of them (two per leaf table), one call each where the
    /// side has a range API.
    pub fn range_256x4k() -> Self {
        Self {
            batch: 8,
            map: |s, j| s.map_range(range_va(j), DATA + K4, 256),
            unmap: |s, j| s.unmap_range(range_va(j), 256),
        }
    }

    /// Maps every place of the batch (before timing unmaps).
    pub fn fill(&self, side: &mut S) {
        (0..self.batch).for_each(|j| (self.map)(side, j));
    }

    /// Unmaps every place of the batch (after timing unmaps).
    pub fn clear(&self, side: &mut S) {
        (0..self.batch).for_each(|j| (self.unmap)(side, j));
    }
}

/// One map+unmap of the 2 MiB range of 512 × 4 KiB pages that spans two leaf tables.
pub fn spanning_range_round_trip<S: PtSide>(side: &mut S) {
    side.map_range(SPANNING_RANGE_VA, RANGE_PA, 512);
    side.unmap_range(SPANNING_RANGE_VA, 512);
}

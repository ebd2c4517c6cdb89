//! Where page-table pages live: the [`TableMem`] trait and the [`ArenaTableMem`] heap arena.
//!
//! Tables are named by [`Pfn`] and their entries are read and written atomically, so a walker on
//! a DMA thread can share the memory with the thread that maps and unmaps: it sees every entry
//! either before or after an update, never torn.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::addr::Pfn;
use crate::error::PtError;
use zerocopy::FromZeros;

use crate::spec::{ENTRIES, TABLE_BYTES};

/// A resolved page-table page: atomic access to its [`ENTRIES`] entries.
///
/// Obtained once per table from [`TableMem::table`], so walking or filling many entries of one
/// table costs one lookup. Loads are `Acquire` and stores `Release`: a table's contents written
/// before the entry that links it are visible to whoever follows the link.
pub trait TableRef: Copy {
    /// Reads entry `idx` (`idx < ENTRIES`).
    fn load(self, idx: usize) -> u64;
    /// Writes entry `idx`.
    fn store(self, idx: usize, value: u64);
    /// Replaces entry `idx` with `new` if it still holds `current`; returns the value found.
    fn compare_exchange(self, idx: usize, current: u64, new: u64) -> Result<u64, u64>;
}

impl TableRef for &[AtomicU64; ENTRIES] {
    #[inline]
    fn load(self, idx: usize) -> u64 {
        self[idx].load(Ordering::Acquire)
    }

    #[inline]
    fn store(self, idx: usize, value: u64) {
        self[idx].store(value, Ordering::Release);
    }

    #[inline]
    fn compare_exchange(self, idx: usize, current: u64, new: u64) -> Result<u64, u64> {
        self[idx].compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

/// Memory that holds page-table pages.
///
/// Every method takes `&self`: the mapper allocates and writes while walkers on other threads
/// read and set accessed/dirty bits. Implementations must hand out zeroed tables from
/// [`alloc_table`](TableMem::alloc_table) and must not reuse a frame until it is passed to
/// [`free_table`](TableMem::free_table). Table lookups on the walk path should not lock.
pub trait TableMem {
    /// The resolved table handle.
    type Table<'a>: TableRef
    where
        Self: 'a;

    /// Resolves `pfn` to its table, or `None` when this memory holds no table there (a walker
    /// following a corrupt entry gets a [`FaultKind::BadTable`](crate::FaultKind::BadTable)
    /// fault instead of a panic).
    fn table(&self, pfn: Pfn) -> Option<Self::Table<'_>>;

    /// Allocates a zeroed table page.
    ///
    /// # Errors
    /// [`PtError::NoMemory`] when the memory is exhausted.
    fn alloc_table(&self) -> Result<Pfn, PtError>;

    /// Returns a table page for reuse. The caller guarantees no walker can still reach it
    /// (it was unlinked and the IOTLBs that might cache it were invalidated).
    fn free_table(&self, pfn: Pfn);
}

impl<M: TableMem + ?Sized> TableMem for &M {
    type Table<'a>
        = M::Table<'a>
    where
        Self: 'a;

    #[inline]
    fn table(&self, pfn: Pfn) -> Option<Self::Table<'_>> {
        (**self).table(pfn)
    }

    #[inline]
    fn alloc_table(&self) -> Result<Pfn, PtError> {
        (**self).alloc_table()
    }

    #[inline]
    fn free_table(&self, pfn: Pfn) {
        (**self).free_table(pfn);
    }
}

impl<M: TableMem + ?Sized> TableMem for Arc<M> {
    type Table<'a>
        = M::Table<'a>
    where
        Self: 'a;

    #[inline]
    fn table(&self, pfn: Pfn) -> Option<Self::Table<'_>> {
        (**self).table(pfn)
    }

    #[inline]
    fn alloc_table(&self) -> Result<Pfn, PtError> {
        (**self).alloc_table()
    }

    #[inline]
    fn free_table(&self, pfn: Pfn) {
        (**self).free_table(pfn);
    }
}

struct AllocState {
    /// Tables `0..next` have been handed out at least once.
    next: usize,
    /// Freed table indices, reused last-in first-out (the most recently freed is cache-hot).
    free: Vec<usize>,
    /// One bit per table handed out so far (`0..next`): set while allocated (catches double
    /// frees). Grows with `next`.
    live: Vec<u64>,
}

/// A thread-safe heap arena of page-table pages with a fixed capacity.
///
/// Tables are numbered from a base frame (`base`, `base + 1`, ...) and live in one zeroed
/// allocation of `capacity` × 4 KiB, so resolving a frame is a subtraction, a bounds check and
/// an offset: no lock and no pointer chase, which keeps a walk at one dependent load per level.
/// The allocation is requested zeroed (`calloc`-style), so on an OS with lazy zero pages only
/// the tables actually used cost physical memory. Only [`alloc_table`](TableMem::alloc_table)
/// and [`free_table`](TableMem::free_table) take a (spin) lock, for the free list; freed tables
/// are zeroed when they are handed out again.
pub struct ArenaTableMem {
    base: u64,
    capacity: usize,
    tables: Box<[[AtomicU64; ENTRIES]]>,
    state: spin::Mutex<AllocState>,
    in_use: AtomicUsize,
}

impl ArenaTableMem {
    /// The frame of the first table when none is given: 64 GiB, far above the small frame
    /// numbers tests like to map, so table frames and data frames are easy to tell apart.
    pub const DEFAULT_BASE: Pfn = Pfn(0x100_0000);

    /// An arena of at most `capacity` tables at [`DEFAULT_BASE`](Self::DEFAULT_BASE), as
    /// [`with_base`](Self::with_base).
    pub fn new(capacity: usize) -> Result<Self, PtError> {
        Self::with_base(Self::DEFAULT_BASE, capacity)
    }

    /// An arena of at most `capacity` tables whose first table is frame `base`.
    ///
    /// [`PhysOutOfRange`](PtError::PhysOutOfRange) if the frames `base..base + capacity` leave
    /// the 52-bit physical-address space; [`NoMemory`](PtError::NoMemory) if `capacity` × 4 KiB
    /// cannot be allocated.
    pub fn with_base(base: Pfn, capacity: usize) -> Result<Self, PtError> {
        let limit = crate::PhysAddr::LIMIT >> crate::spec::PAGE_SHIFT;
        if base
            .0
            .checked_add(capacity as u64)
            .is_none_or(|e| e > limit)
        {
            return Err(PtError::PhysOutOfRange {
                pa: base.0.saturating_mul(TABLE_BYTES),
                len: (capacity as u64).saturating_mul(TABLE_BYTES),
            });
        }
        let tables = <[[AtomicU64; ENTRIES]]>::new_box_zeroed_with_elems(capacity)
            .map_err(|_| PtError::NoMemory { tables: capacity })?;
        Ok(ArenaTableMem {
            base: base.0,
            capacity,
            tables,
            state: spin::Mutex::new(AllocState {
                next: 0,
                free: Vec::new(),
                live: Vec::new(),
            }),
            in_use: AtomicUsize::new(0),
        })
    }

    /// The most tables this arena can hold at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tables currently allocated (not freed): what a leak check compares.
    pub fn tables_in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

impl core::fmt::Debug for ArenaTableMem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArenaTableMem")
            .field("base", &Pfn(self.base))
            .field("capacity", &self.capacity)
            .field("tables_in_use", &self.tables_in_use())
            .finish()
    }
}

impl TableMem for ArenaTableMem {
    type Table<'a> = &'a [AtomicU64; ENTRIES];

    #[inline]
    fn table(&self, pfn: Pfn) -> Option<Self::Table<'_>> {
        self.tables
            .get(usize::try_from(pfn.0.wrapping_sub(self.base)).ok()?)
    }

    fn alloc_table(&self) -> Result<Pfn, PtError> {
        let (index, recycled) = {
            let mut state = self.state.lock();
            let (index, recycled) = match state.free.pop() {
                Some(index) => (index, true),
                None if state.next < self.capacity => {
                    state.next += 1;
                    if state.live.len() < state.next.div_ceil(64) {
                        state.live.push(0);
                    }
                    (state.next - 1, false)
                }
                None => return Err(PtError::NoMemory { tables: 1 }),
            };
            state.live[index / 64] |= 1 << (index % 64);
            (index, recycled)
        };
        let page = &self.tables[index];
        if recycled {
            for entry in page {
                entry.store(0, Ordering::Relaxed);
            }
        }
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Ok(Pfn(self.base + index as u64))
    }

    /// A frame that is not an allocated table of this arena (foreign, or freed twice) is
    /// refused and nothing changes: handing it out again would give one table two owners.
    fn free_table(&self, pfn: Pfn) {
        let Some(index) = pfn
            .0
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.capacity)
        else {
            return;
        };
        let mut state = self.state.lock();
        let bit = 1 << (index % 64);
        match state.live.get_mut(index / 64) {
            Some(w) if *w & bit != 0 => *w &= !bit,
            _ => return,
        }
        state.free.push(index);
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_returns_zeroed_tables_even_when_recycled() {
        let mem = ArenaTableMem::new(2).unwrap();
        let pfn = mem.alloc_table().unwrap();
        mem.table(pfn).unwrap().store(7, 0xdead_b000);
        mem.free_table(pfn);

        let again = mem.alloc_table().unwrap();

        assert_eq!(again, pfn);
        assert!((0..ENTRIES).all(|i| mem.table(again).unwrap().load(i) == 0));
    }

    #[test]
    fn exhausted_arena_returns_no_memory() {
        let mem = ArenaTableMem::new(1).unwrap();
        mem.alloc_table().unwrap();

        assert_eq!(mem.alloc_table(), Err(PtError::NoMemory { tables: 1 }));
        assert_eq!(mem.tables_in_use(), 1);
    }

    #[test]
    fn frames_outside_the_arena_resolve_to_none() {
        let mem = ArenaTableMem::new(100).unwrap();
        mem.alloc_table().unwrap();

        assert!(mem.table(Pfn(0)).is_none());
        assert!(mem
            .table(Pfn(ArenaTableMem::DEFAULT_BASE.0 + 100))
            .is_none());
        assert!(mem.table(ArenaTableMem::DEFAULT_BASE).is_some());
    }

    #[test]
    fn double_and_foreign_frees_change_nothing() {
        let mem = ArenaTableMem::new(2).unwrap();
        let pfn = mem.alloc_table().unwrap();
        mem.free_table(pfn);
        mem.free_table(pfn);
        mem.free_table(Pfn(3));

        assert_eq!(mem.tables_in_use(), 0);
        // Freed once, so handed out once: the next two tables differ.
        assert_ne!(mem.alloc_table().unwrap(), mem.alloc_table().unwrap());
    }
}

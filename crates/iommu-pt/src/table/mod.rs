//! [`PageTable`]: map, unmap and query ranges in one address space.
//!
//! This file holds the table itself, range validation, the descent both mutations start with
//! and teardown; [`map`] and [`unmap`] are the two mutations (each a validate-and-count pass,
//! then a write pass that cannot fail), [`query`] reads the table back, and [`reserve`] holds
//! the table pages a mutation allocates before it writes anything.

mod map;
mod query;
mod reserve;
mod unmap;

use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::addr::{Access, PageSize, Perms, Pfn, PhysAddr};
use crate::error::{PtError, WalkFault};
use crate::format::{index, level_size, Format};
use crate::mem::{TableMem, TableRef};
use crate::spec::{ENTRIES, PAGE_SHIFT, TABLE_BYTES};
use crate::walk::{walk, Translation};

pub use query::Mappings;

const PAGE_MASK: u64 = TABLE_BYTES - 1;

/// One leaf mapping, as [`PageTable::query`] and [`PageTable::iter`] report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// First address of the leaf (canonical form for first-stage formats).
    pub iova: u64,
    /// First physical address of the leaf.
    pub pa: PhysAddr,
    /// The leaf's size.
    pub size: PageSize,
    /// The permissions stored in the leaf.
    pub perms: Perms,
    /// The walker has used this leaf since it was mapped.
    pub accessed: bool,
    /// The walker has written through this leaf since it was mapped.
    pub dirty: bool,
}

impl Mapping {
    /// The physical address `iova` translates to through this leaf, if the leaf covers it.
    pub fn translate(&self, iova: u64) -> Option<PhysAddr> {
        let offset = iova.wrapping_sub(self.iova);
        (offset < self.size.bytes()).then_some(PhysAddr(self.pa.0 + offset))
    }
}

/// What an unmap removed.
///
/// The table pages in `freed_tables` have been unlinked but not freed: a walker that started
/// before the unmap (or an IOTLB / paging-structure cache) may still read them. Free them with
/// [`PageTable::free_tables`] (or [`TableMem::free_table`]) once the IOTLBs are invalidated and
/// no walk can be in flight; dropping this without freeing leaks them in the table memory.
#[derive(Debug, PartialEq, Eq, Default)]
#[must_use = "unlinked table pages must be freed after IOTLB invalidation"]
pub struct Unmapped {
    /// Bytes of mappings removed (holes in the range are skipped and not counted).
    pub bytes: u64,
    /// Table pages that became unreachable and are waiting to be freed.
    pub freed_tables: Vec<Pfn>,
}

/// A multi-level page table of format `F` whose pages live in `M`.
///
/// The table owns its pages: dropping it frees every page back to `M` (walkers must be stopped
/// first). Mutation takes `&mut self`, so one thread maps and unmaps at a time; walkers use the
/// free function [`walk`] with [`root`](Self::root) and a shared reference to the memory, from
/// any number of threads, concurrently with that mutation.
///
/// Every mutating call validates the whole request (alignment, length, range, permissions,
/// overlap) and allocates every table page it will need before it writes the first entry, so an
/// error leaves the table exactly as it was.
pub struct PageTable<F: Format, M: TableMem> {
    mem: M,
    root: Pfn,
    max_page: PageSize,
    /// The last-level table the last 4 KiB map went into, and its 2 MiB span: the next map in
    /// that span starts there instead of descending from the root. Only `unmap` unlinks tables,
    /// and it clears this.
    leaf_hint: Option<(u64, Pfn)>,
    format: PhantomData<fn() -> F>,
}

impl<F: Format, M: TableMem> core::fmt::Debug for PageTable<F, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageTable")
            .field("format", &F::NAME)
            .field("root", &self.root)
            .field("max_page", &self.max_page)
            .finish_non_exhaustive()
    }
}

/// Calls `body(idx, va, chunk_last, pa)` for each entry of a table at `level` that the linear
/// range `[start, last]` touches, `[va, chunk_last]` being the part inside that entry.
#[inline(always)]
fn for_each_chunk(
    level: u8,
    start: u64,
    last: u64,
    pa: u64,
    mut body: impl FnMut(usize, u64, u64, u64),
) {
    let size = level_size(level);
    let mut va = start;
    loop {
        let chunk_last = (va | (size - 1)).min(last);
        body(
            index(va, level),
            va,
            chunk_last,
            pa.wrapping_add(va - start),
        );
        if chunk_last == last {
            break;
        }
        va = chunk_last + 1;
    }
}

impl<F: Format, M: TableMem> PageTable<F, M> {
    /// An empty table (one zeroed root page) that may use every leaf size up to 1 GiB.
    ///
    /// # Errors
    /// [`PtError::NoMemory`] when `mem` cannot provide the root.
    pub fn new(mem: M) -> Result<Self, PtError> {
        Self::with_max_page_size(mem, PageSize::Size1G)
    }

    /// An empty table whose map never creates leaves larger than `max` (e.g. for an IOMMU
    /// without 1 GiB page support). Splitting on unmap only ever creates smaller leaves.
    ///
    /// # Errors
    /// [`PtError::NoMemory`] when `mem` cannot provide the root.
    pub fn with_max_page_size(mem: M, max: PageSize) -> Result<Self, PtError> {
        let root = mem.alloc_table()?;
        Ok(PageTable {
            mem,
            root,
            max_page: max,
            leaf_hint: None,
            format: PhantomData,
        })
    }

    /// The root table's frame: what a PASID-table or context entry points at.
    pub fn root(&self) -> Pfn {
        self.root
    }

    /// The table memory, for walkers ([`walk`]) and for freeing [`Unmapped::freed_tables`].
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The largest leaf [`map`](Self::map) will create.
    pub fn max_page_size(&self) -> PageSize {
        self.max_page
    }

    #[inline]
    fn table(&self, pfn: Pfn) -> M::Table<'_> {
        self.mem
            .table(pfn)
            .expect("page table links a frame its memory does not hold")
    }

    /// Validates `[iova, iova + len)` and returns its first and last linear addresses.
    #[inline]
    fn check_range(iova: u64, len: u64) -> Result<(u64, u64), PtError> {
        if iova & PAGE_MASK != 0 {
            return Err(PtError::MisalignedIova { iova });
        }
        if len == 0 {
            return Err(PtError::ZeroLength { iova });
        }
        if len & PAGE_MASK != 0 {
            return Err(PtError::MisalignedLength { len });
        }
        iova.checked_add(len - 1)
            .ok_or(PtError::RangeOverflow { start: iova, len })?;
        let va_bits = F::VA_BITS;
        let out_of_range = PtError::OutOfRange { iova, len, va_bits };
        let lin = F::to_linear(iova).ok_or(if F::SIGN_EXTENDED {
            PtError::NonCanonical { iova, va_bits }
        } else {
            out_of_range
        })?;
        let last = lin.checked_add(len - 1).ok_or(out_of_range)?;
        // The range must stay inside the address space and, for canonical addresses, inside one
        // half: the halves are not contiguous in the virtual address space.
        let half = if F::SIGN_EXTENDED {
            va_bits - 1
        } else {
            va_bits
        };
        if last >> half != lin >> half || last >> va_bits != 0 {
            return Err(out_of_range);
        }
        Ok((lin, last))
    }

    /// The deepest existing table whose span holds all of `[lin, last]`, and its level: where
    /// map and unmap start, so neither pass re-walks the upper levels (a 4 KiB map or unmap
    /// into existing tables is one descent plus one entry).
    #[inline]
    fn descend(&self, lin: u64, last: u64) -> (Pfn, u8) {
        let mut pfn = self.root;
        let mut level = F::LEVELS - 1;
        // Stop at a table where the range spans several entries or covers one entirely (unmap
        // unlinks a fully covered table from its parent).
        while level > 0
            && lin >> entry_shift(level) == last >> entry_shift(level)
            && last - lin != level_size(level) - 1
        {
            let pte = self.table(pfn).load(index(lin, level));
            if !F::is_present(pte) || F::is_leaf(pte, level) {
                break;
            }
            pfn = F::table_pfn(pte);
            level -= 1;
        }
        (pfn, level)
    }

    /// Translates `iova` as the hardware would (see [`walk`]), setting accessed/dirty bits.
    ///
    /// # Errors
    /// The [`WalkFault`] the hardware would report.
    #[inline]
    pub fn walk(&self, iova: u64, access: Access) -> Result<Translation, WalkFault> {
        walk::<F, M>(&self.mem, self.root, iova, access)
    }

    /// Number of table pages in use, root included.
    pub fn table_count(&self) -> usize {
        let mut count = 0;
        self.for_each_table(self.root, F::LEVELS - 1, &mut |_, _| count += 1);
        count
    }

    /// Calls `f(pfn, level)` for every table below and including `pfn`, children first.
    ///
    /// Skips links to frames the memory does not hold (only a corrupted table has them), so
    /// teardown never panics and never frees a frame that is not a table.
    pub(crate) fn for_each_table(&self, pfn: Pfn, level: u8, f: &mut impl FnMut(Pfn, u8)) {
        let Some(table) = self.mem.table(pfn) else {
            return;
        };
        if level > 0 {
            for i in 0..ENTRIES {
                let pte = table.load(i);
                if F::is_present(pte) && !F::is_leaf(pte, level) {
                    self.for_each_table(F::table_pfn(pte), level - 1, f);
                }
            }
        }
        f(pfn, level);
    }

    /// Frees every table page back to the memory. Equivalent to dropping the table; spelled
    /// out for call sites where teardown order matters (walkers stopped, IOTLBs flushed).
    pub fn destroy(self) {
        drop(self);
    }
}

impl<F: Format, M: TableMem> Drop for PageTable<F, M> {
    fn drop(&mut self) {
        let mut tables = Vec::new();
        self.for_each_table(self.root, F::LEVELS - 1, &mut |pfn, _| tables.push(pfn));
        for pfn in tables {
            self.mem.free_table(pfn);
        }
    }
}

/// Shift of the span of one entry at `level` (12 for a 4 KiB entry).
#[inline(always)]
const fn entry_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * level as u32
}

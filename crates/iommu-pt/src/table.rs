//! [`PageTable`]: map, unmap and query ranges in one address space.

use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::addr::{Access, PageSize, Perms, Pfn, PhysAddr};
use crate::error::{PtError, WalkFault};
use crate::format::{index, level_size, Format};
use crate::mem::{TableMem, TableRef};
use crate::spec::{ENTRIES, PAGE_SHIFT, TABLE_BYTES};
use crate::walk::{walk, Translation};

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

/// Page-table pages reserved before a mutation starts, so the mutation itself cannot fail.
struct Reserved<'m, M: TableMem> {
    mem: &'m M,
    tables: Vec<Pfn>,
}

impl<'m, M: TableMem> Reserved<'m, M> {
    fn new(mem: &'m M, count: usize) -> Result<Self, PtError> {
        let mut reserved = Reserved {
            mem,
            tables: Vec::new(),
        };
        if count > 0 {
            reserved.tables.reserve_exact(count);
            for _ in 0..count {
                // On failure `reserved` is dropped and gives back what it got.
                let pfn = mem
                    .alloc_table()
                    .map_err(|_| PtError::NoMemory { tables: count })?;
                reserved.tables.push(pfn);
            }
        }
        Ok(reserved)
    }

    fn take(&mut self) -> Pfn {
        self.tables.pop().expect("table reservation undercounted")
    }
}

impl<M: TableMem> Drop for Reserved<'_, M> {
    fn drop(&mut self) {
        if self.tables.is_empty() {
            return;
        }
        for pfn in self.tables.drain(..) {
            self.mem.free_table(pfn);
        }
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

    /// True when the chunk `[va, last]` of one entry at `level` can be mapped by a single leaf.
    #[inline(always)]
    fn fits_leaf(&self, level: u8, va: u64, last: u64, pa: u64) -> bool {
        let size = level_size(level);
        level == 0
            || (level <= self.max_page.level()
                && (va | pa) & (size - 1) == 0
                && last - va == size - 1)
    }

    /// Maps `[iova, iova + len)` to `[pa, pa + len)` with `perms`.
    ///
    /// Chooses the largest leaves (up to [`max_page_size`](Self::max_page_size)) that `iova`,
    /// `pa` and the remaining length allow, and fills consecutive entries of each table in one
    /// pass. Entries become visible to walkers one by one, each atomically. Where an earlier
    /// partial unmap left an empty table, that table is reused, so the leaves there are smaller
    /// than the alignment would allow (unmap whole 2 MiB / 1 GiB spans to get large leaves back).
    ///
    /// # Errors
    /// Nothing is changed when any of these is returned:
    /// [`MisalignedIova`](PtError::MisalignedIova), [`MisalignedPhys`](PtError::MisalignedPhys),
    /// [`MisalignedLength`](PtError::MisalignedLength), [`ZeroLength`](PtError::ZeroLength),
    /// [`RangeOverflow`](PtError::RangeOverflow), [`NonCanonical`](PtError::NonCanonical),
    /// [`OutOfRange`](PtError::OutOfRange), [`PhysOutOfRange`](PtError::PhysOutOfRange),
    /// [`UnsupportedPerms`](PtError::UnsupportedPerms) (EINVAL);
    /// [`AlreadyMapped`](PtError::AlreadyMapped) (EEXIST) if any page of the range is mapped;
    /// [`NoMemory`](PtError::NoMemory) (ENOMEM).
    pub fn map(&mut self, iova: u64, pa: PhysAddr, len: u64, perms: Perms) -> Result<(), PtError> {
        if pa.0 & PAGE_MASK != 0 {
            return Err(PtError::MisalignedPhys { pa: pa.0 });
        }
        let (lin, last) = Self::check_range(iova, len)?;
        let pa_last =
            pa.0.checked_add(len - 1)
                .ok_or(PtError::RangeOverflow { start: pa.0, len })?;
        if pa_last >= PhysAddr::LIMIT {
            return Err(PtError::PhysOutOfRange { pa: pa.0, len });
        }
        if !F::supports(perms) {
            return Err(PtError::UnsupportedPerms { perms });
        }
        let (top, level) = self.descend(lin, last);
        // Leaves of `top`'s entry size that cover the range exactly (always so for a range inside
        // one leaf table) need no table and no recursion. Level 0 gets its own constant-folded
        // copy: it is the 4 KiB and range-map hot path.
        let fast = if level == 0 {
            self.map_leaves(top, 0, lin, last, pa.0, perms)
        } else if level <= self.max_page.level()
            && (lin | pa.0 | (last + 1)) & (level_size(level) - 1) == 0
        {
            self.map_leaves(top, level, lin, last, pa.0, perms)
        } else {
            None
        };
        if let Some(result) = fast {
            return result;
        }
        let needed = self
            .plan_map(top, level, lin, last, pa.0)
            .map_err(|taken| PtError::AlreadyMapped {
                iova: F::from_linear(taken),
            })?;
        let mut reserved = Reserved::new(&self.mem, needed)?;
        self.fill(top, level, lin, last, pa.0, perms, &mut reserved);
        debug_assert!(reserved.tables.is_empty(), "table reservation overcounted");
        Ok(())
    }

    /// Maps `[lin, last]` (aligned to `level`'s entry size) with leaves of that size into the
    /// table `pfn` if none of its entries there is present; `None` when an existing table is
    /// in the way and the general path must look into it.
    #[inline(always)]
    fn map_leaves(
        &self,
        pfn: Pfn,
        level: u8,
        lin: u64,
        last: u64,
        pa: u64,
        perms: Perms,
    ) -> Option<Result<(), PtError>> {
        let table = self.table(pfn);
        match first_present::<F, _>(table, level, lin, last) {
            None => {
                fill_leaves::<F, _>(table, level, lin, last, pa, perms);
                Some(Ok(()))
            }
            Some((taken, pte)) if F::is_leaf(pte, level) => Some(Err(PtError::AlreadyMapped {
                iova: F::from_linear(taken),
            })),
            Some(_) => None,
        }
    }

    /// First pass of [`map`](Self::map): fails with the first mapped linear address on
    /// overlap (a small error keeps the result in registers), else counts the tables to allocate.
    fn plan_map(&self, pfn: Pfn, level: u8, start: u64, last: u64, pa: u64) -> Result<usize, u64> {
        let table = self.table(pfn);
        if level == 0 {
            return match first_present::<F, _>(table, 0, start, last) {
                Some((taken, _)) => Err(taken),
                None => Ok(0),
            };
        }
        let mut needed = 0;
        let mut result = Ok(());
        for_each_chunk(level, start, last, pa, |idx, va, chunk_last, pa| {
            if result.is_err() {
                return;
            }
            let pte = table.load(idx);
            if !F::is_present(pte) {
                if !self.fits_leaf(level, va, chunk_last, pa) {
                    needed += 1 + self.tables_below(level - 1, va, chunk_last, pa);
                }
            } else if F::is_leaf(pte, level) {
                result = Err(va);
            } else {
                match self.plan_map(F::table_pfn(pte), level - 1, va, chunk_last, pa) {
                    Ok(n) => needed += n,
                    Err(e) => result = Err(e),
                }
            }
        });
        result.map(|()| needed)
    }

    /// Tables a fresh (empty) table at `level` needs below it to map `[start, last]` to `pa`.
    fn tables_below(&self, level: u8, start: u64, last: u64, pa: u64) -> usize {
        if level == 0 {
            return 0;
        }
        let mut needed = 0;
        for_each_chunk(level, start, last, pa, |_, va, chunk_last, pa| {
            if !self.fits_leaf(level, va, chunk_last, pa) {
                needed += 1 + self.tables_below(level - 1, va, chunk_last, pa);
            }
        });
        needed
    }

    /// Second pass of [`map`](Self::map): writes the entries; cannot fail.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        pfn: Pfn,
        level: u8,
        start: u64,
        last: u64,
        pa: u64,
        perms: Perms,
        reserved: &mut Reserved<'_, M>,
    ) {
        let table = self.table(pfn);
        if level == 0 {
            fill_leaves::<F, _>(table, 0, start, last, pa, perms);
            return;
        }
        for_each_chunk(level, start, last, pa, |idx, va, chunk_last, pa| {
            let pte = table.load(idx);
            // An existing (empty, per the plan) table is reused rather than replaced by a leaf:
            // replacing it would need a deferred free that map has no way to hand back.
            let child = if F::is_present(pte) {
                F::table_pfn(pte)
            } else if self.fits_leaf(level, va, chunk_last, pa) {
                table.store(idx, F::leaf_entry(pa, level, perms));
                return;
            } else {
                let child = reserved.take();
                table.store(idx, F::table_entry(child));
                child
            };
            self.fill(child, level - 1, va, chunk_last, pa, perms, reserved);
        });
    }

    /// Unmaps every leaf in `[iova, iova + len)`; holes inside the range are skipped.
    ///
    /// A large leaf that straddles either end of the range is first split (replaced atomically
    /// by a table of smaller leaves with the same permissions and accessed/dirty bits, so a
    /// concurrent walker translates identically through either), then the part inside the range
    /// is removed. Tables whose whole span lies inside the range are unlinked with one store and
    /// returned in [`Unmapped::freed_tables`]; tables only partly covered stay linked even if they
    /// end up empty (they are reused by the next map there and freed by drop), which keeps the
    /// single-page unmap free of scans and the next map free of allocations.
    ///
    /// # Errors
    /// Nothing is changed when any of these is returned:
    /// [`MisalignedIova`](PtError::MisalignedIova), [`MisalignedLength`](PtError::MisalignedLength),
    /// [`ZeroLength`](PtError::ZeroLength), [`RangeOverflow`](PtError::RangeOverflow),
    /// [`NonCanonical`](PtError::NonCanonical), [`OutOfRange`](PtError::OutOfRange) (EINVAL);
    /// [`NotMapped`](PtError::NotMapped) (ENOENT) when nothing in the range is mapped;
    /// [`NoMemory`](PtError::NoMemory) (ENOMEM) when a split needs tables that cannot be had.
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<Unmapped, PtError> {
        let (lin, last) = Self::check_range(iova, len)?;
        let end = last + 1;
        // No leaf above `level` can contain the range or either end (the descent went through
        // tables there), so every split and every cleared entry is below `top`.
        let (top, level) = self.descend(lin, last);
        let fast = if level == 0 {
            // Inside one leaf table: 4 KiB leaves only, nothing to split or unlink.
            Some(clear_leaves::<F, _>(self.table(top), 0, lin, last))
        } else if (lin | end) & (level_size(level) - 1) == 0 {
            // Aligned to `top`'s entries: if they are all leaves (or empty), clear them in place.
            let table = self.table(top);
            let first = index(lin, level);
            let count = ((last - lin) >> entry_shift(level)) as usize + 1;
            (first..first + count)
                .all(|i| {
                    let pte = table.load(i);
                    !F::is_present(pte) || F::is_leaf(pte, level)
                })
                .then(|| clear_leaves::<F, _>(table, level, lin, last))
        } else {
            None
        };
        if let Some(bytes) = fast {
            if bytes == 0 {
                return Err(PtError::NotMapped { iova, len });
            }
            return Ok(Unmapped {
                bytes,
                freed_tables: Vec::new(),
            });
        }
        let at_start = self.straddling_leaf(top, level, lin);
        let at_end = if same_span(lin, end, level) {
            self.straddling_leaf(top, level, end)
        } else {
            None // `end` starts the next entry of a higher level: aligned to any leaf below.
        };
        let needed = match (at_start, at_end) {
            (Some(s), Some(e)) if s == e => split_cost(s.0, Some(lin), Some(end)),
            _ => {
                at_start.map_or(0, |(level, _)| split_cost(level, Some(lin), None))
                    + at_end.map_or(0, |(level, _)| split_cost(level, Some(end), None))
            }
        };
        let mut reserved = Reserved::new(&self.mem, needed)?;
        if at_start.is_some() {
            self.split_at(top, level, lin, &mut reserved);
        }
        if at_end.is_some() {
            self.split_at(top, level, end, &mut reserved);
        }
        debug_assert!(reserved.tables.is_empty(), "split reservation overcounted");
        drop(reserved);
        let mut out = Unmapped::default();
        let mut empty_subtrees = Vec::new();
        self.clear(top, level, lin, last, &mut out, &mut empty_subtrees);
        if out.bytes == 0 {
            // Nothing was written: a split implies a mapping in range, and empty subtrees were
            // only noted. Leaving them linked keeps the error free of side effects.
            return Err(PtError::NotMapped { iova, len });
        }
        for (parent, idx, child, level) in empty_subtrees {
            self.table(parent).store(idx, 0);
            self.collect(child, level, &mut out);
        }
        Ok(out)
    }

    /// The large leaf (level, base) that contains `lin` without starting at it, if any.
    fn straddling_leaf(&self, mut pfn: Pfn, mut level: u8, lin: u64) -> Option<(u8, u64)> {
        loop {
            let pte = self.table(pfn).load(index(lin, level));
            if !F::is_present(pte) {
                return None;
            }
            if F::is_leaf(pte, level) {
                let mask = level_size(level) - 1;
                return (lin & mask != 0).then_some((level, lin & !mask));
            }
            pfn = F::table_pfn(pte);
            level -= 1;
        }
    }

    /// Splits leaves until none straddles `lin` (uses exactly the tables `split_cost` counted).
    fn split_at(&self, mut pfn: Pfn, mut level: u8, lin: u64, reserved: &mut Reserved<'_, M>) {
        while level > 0 {
            let table = self.table(pfn);
            let idx = index(lin, level);
            let mut pte = table.load(idx);
            if !F::is_present(pte) {
                return;
            }
            if F::is_leaf(pte, level) {
                let size = level_size(level);
                if lin & (size - 1) == 0 {
                    return;
                }
                let child = reserved.take();
                let child_table = self.table(child);
                let child_size = level_size(level - 1);
                // The walker may set accessed/dirty on the old leaf while we copy it: install
                // the table only if the leaf is unchanged, else copy the new bits and retry.
                loop {
                    let base = F::leaf_addr(pte, level);
                    for i in 0..ENTRIES {
                        let child_pa = base + i as u64 * child_size;
                        child_table.store(i, F::split_child(pte, level, child_pa));
                    }
                    match table.compare_exchange(idx, pte, F::table_entry(child)) {
                        Ok(_) => break,
                        Err(current) => pte = current,
                    }
                }
                pfn = child;
            } else {
                pfn = F::table_pfn(pte);
            }
            level -= 1;
        }
    }

    /// Clears every leaf in `[start, last]` under the table `pfn` at `level`.
    ///
    /// Fully covered subtrees that hold no mapping are not unlinked here but noted in
    /// `empty_subtrees` as (parent, index, child, child level), so that an unmap which finds
    /// nothing to remove can fail without having changed anything.
    fn clear(
        &self,
        pfn: Pfn,
        level: u8,
        start: u64,
        last: u64,
        out: &mut Unmapped,
        empty_subtrees: &mut Vec<(Pfn, usize, Pfn, u8)>,
    ) {
        let table = self.table(pfn);
        if level == 0 {
            out.bytes += clear_leaves::<F, _>(table, 0, start, last);
            return;
        }
        let size = level_size(level);
        for_each_chunk(level, start, last, 0, |idx, va, chunk_last, _| {
            let pte = table.load(idx);
            if !F::is_present(pte) {
                return;
            }
            if F::is_leaf(pte, level) {
                // Splitting guaranteed no leaf straddles the range ends.
                debug_assert_eq!(chunk_last - va, size - 1);
                table.store(idx, 0);
                out.bytes += size;
            } else if chunk_last - va == size - 1 {
                let child = F::table_pfn(pte);
                let (bytes, tables) = (out.bytes, out.freed_tables.len());
                self.collect(child, level - 1, out);
                if out.bytes == bytes {
                    out.freed_tables.truncate(tables);
                    empty_subtrees.push((pfn, idx, child, level - 1));
                } else {
                    // One store makes the whole subtree unreachable for new walks; the scan
                    // above only read it, so unlinking after it is the same as before it.
                    table.store(idx, 0);
                }
            } else {
                self.clear(
                    F::table_pfn(pte),
                    level - 1,
                    va,
                    chunk_last,
                    out,
                    empty_subtrees,
                );
            }
        });
    }

    /// Accounts a subtree about to be unlinked: its mapped bytes and all its tables.
    fn collect(&self, pfn: Pfn, level: u8, out: &mut Unmapped) {
        out.freed_tables.push(pfn);
        let table = self.table(pfn);
        for i in 0..ENTRIES {
            let pte = table.load(i);
            if !F::is_present(pte) {
                continue;
            }
            if F::is_leaf(pte, level) {
                out.bytes += level_size(level);
            } else {
                self.collect(F::table_pfn(pte), level - 1, out);
            }
        }
    }

    /// Frees table pages returned by [`unmap`](Self::unmap) once no walker can reach them.
    pub fn free_tables(&self, tables: impl IntoIterator<Item = Pfn>) {
        for pfn in tables {
            self.mem.free_table(pfn);
        }
    }

    /// The leaf mapping `iova`, without touching accessed/dirty bits; `None` if unmapped or
    /// outside the address space.
    pub fn query(&self, iova: u64) -> Option<Mapping> {
        let lin = F::to_linear(iova)?;
        let mut pfn = self.root;
        let mut level = F::LEVELS - 1;
        loop {
            let pte = self.table(pfn).load(index(lin, level));
            if !F::is_present(pte) {
                return None;
            }
            if F::is_leaf(pte, level) {
                let base = lin & !(level_size(level) - 1);
                return Some(Self::mapping(base, pte, level));
            }
            pfn = F::table_pfn(pte);
            level -= 1;
        }
    }

    fn mapping(lin: u64, pte: u64, level: u8) -> Mapping {
        Mapping {
            iova: F::from_linear(lin),
            pa: PhysAddr(F::leaf_addr(pte, level)),
            size: PageSize::from_level(level).expect("leaves exist only at levels 0..=2"),
            perms: F::entry_perms(pte),
            accessed: pte & F::ACCESSED != 0,
            dirty: pte & F::DIRTY != 0,
        }
    }

    /// Translates `iova` as the hardware would (see [`walk`]), setting accessed/dirty bits.
    ///
    /// # Errors
    /// The [`WalkFault`] the hardware would report.
    #[inline]
    pub fn walk(&self, iova: u64, access: Access) -> Result<Translation, WalkFault> {
        walk::<F, M>(&self.mem, self.root, iova, access)
    }

    /// Every leaf mapping in ascending address order.
    pub fn iter(&self) -> Mappings<'_, F, M> {
        let mut stack = [Frame {
            pfn: self.root,
            level: 0,
            next: 0,
            base: 0,
        }; MAX_LEVELS];
        stack[0].level = F::LEVELS - 1;
        Mappings {
            pt: self,
            stack,
            depth: 1,
        }
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.iter().map(|m| m.size.bytes()).sum()
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

/// The first present entry in `[start, last]` of a table at `level`: its linear address and
/// value.
#[inline(always)]
fn first_present<F: Format, T: TableRef>(
    table: T,
    level: u8,
    start: u64,
    last: u64,
) -> Option<(u64, u64)> {
    let first = index(start, level);
    let count = ((last - start) >> entry_shift(level)) as usize + 1;
    for i in first..first + count {
        let pte = table.load(i);
        if F::is_present(pte) {
            return Some((start + (((i - first) as u64) << entry_shift(level)), pte));
        }
    }
    None
}

/// Writes leaves of `level`'s size for `[start, last]` (aligned to that size) of a table,
/// mapping to `pa` onwards: the range-map hot loop, consecutive entries with no re-walk.
#[inline(always)]
fn fill_leaves<F: Format, T: TableRef>(
    table: T,
    level: u8,
    start: u64,
    last: u64,
    pa: u64,
    perms: Perms,
) {
    let first = index(start, level);
    let count = ((last - start) >> entry_shift(level)) as usize + 1;
    let mut pte = F::leaf_entry(pa, level, perms);
    for i in first..first + count {
        table.store(i, pte);
        pte += level_size(level);
    }
}

/// Clears the entries in `[start, last]` (aligned to `level`'s size, leaves or empty) of a
/// table; returns the bytes removed.
#[inline(always)]
fn clear_leaves<F: Format, T: TableRef>(table: T, level: u8, start: u64, last: u64) -> u64 {
    let first = index(start, level);
    let count = ((last - start) >> entry_shift(level)) as usize + 1;
    let mut bytes = 0;
    for i in first..first + count {
        if F::is_present(table.load(i)) {
            table.store(i, 0);
            bytes += level_size(level);
        }
    }
    bytes
}

/// Shift of the span of one entry at `level` (12 for a 4 KiB entry).
#[inline(always)]
const fn entry_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * level as u32
}

/// True when linear addresses `a` and `b` fall in the span of the same table at `level`
/// (for the root: when both are inside the address space).
#[inline(always)]
const fn same_span(a: u64, b: u64, level: u8) -> bool {
    (a ^ b) >> entry_shift(level + 1) == 0
}

/// Tables needed to split a leaf at `level` so that none of `points` (misaligned to the
/// leaf's size, at most two, in the same leaf) falls inside a leaf any more.
fn split_cost(level: u8, a: Option<u64>, b: Option<u64>) -> usize {
    let child = level - 1;
    if child == 0 {
        return 1;
    }
    let child_size = level_size(child);
    let misaligned = |p: Option<u64>| p.filter(|p| p & (child_size - 1) != 0);
    let (a, b) = (misaligned(a), misaligned(b));
    1 + match (a, b) {
        (Some(x), Some(y)) if x / child_size == y / child_size => split_cost(child, a, b),
        _ => {
            a.map_or(0, |_| split_cost(child, a, None))
                + b.map_or(0, |_| split_cost(child, b, None))
        }
    }
}

const MAX_LEVELS: usize = 5;

#[derive(Clone, Copy)]
struct Frame {
    pfn: Pfn,
    level: u8,
    next: usize,
    base: u64,
}

/// Iterator over the leaf mappings of a [`PageTable`], in ascending address order.
pub struct Mappings<'a, F: Format, M: TableMem> {
    pt: &'a PageTable<F, M>,
    stack: [Frame; MAX_LEVELS],
    depth: usize,
}

impl<F: Format, M: TableMem> Iterator for Mappings<'_, F, M> {
    type Item = Mapping;

    fn next(&mut self) -> Option<Mapping> {
        while self.depth > 0 {
            let frame = &mut self.stack[self.depth - 1];
            if frame.next == ENTRIES {
                self.depth -= 1;
                continue;
            }
            let Frame {
                pfn,
                level,
                next,
                base,
            } = *frame;
            frame.next += 1;
            let pte = self.pt.table(pfn).load(next);
            if !F::is_present(pte) {
                continue;
            }
            let va = base + next as u64 * level_size(level);
            if F::is_leaf(pte, level) {
                return Some(PageTable::<F, M>::mapping(va, pte, level));
            }
            self.stack[self.depth] = Frame {
                pfn: F::table_pfn(pte),
                level: level - 1,
                next: 0,
                base: va,
            };
            self.depth += 1;
        }
        None
    }
}

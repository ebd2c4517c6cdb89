//! Unmapping a range: splitting large leaves that straddle its ends, clearing the leaves
//! inside, and unlinking fully covered tables for a deferred free.

use alloc::vec::Vec;

use crate::addr::Pfn;
use crate::error::PtError;
use crate::format::{index, level_size, Format};
use crate::mem::{TableMem, TableRef};
use crate::spec::ENTRIES;

use super::reserve::Reserved;
use super::{entry_shift, for_each_chunk, PageTable, Unmapped};

impl<F: Format, M: TableMem> PageTable<F, M> {
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
        // It may unlink the hinted table (see `leaf_hint`).
        self.leaf_hint = None;
        // No leaf above `level` can contain the range or either end (the descent went through
        // tables there), so every split and every cleared entry is below `top`.
        let (top, level) = self.descend(lin, last);
        let not_mapped = PtError::NotMapped { iova, len };
        if let Some(bytes) = self.clear_in_place(top, level, lin, last) {
            if bytes == 0 {
                return Err(not_mapped);
            }
            return Ok(Unmapped {
                bytes,
                freed_tables: Vec::new(),
            });
        }
        self.split_range_ends(top, level, lin, last)?;
        self.clear_and_unlink(top, level, lin, last)
            .ok_or(not_mapped)
    }

    /// The fast path: clears `[lin, last]` in the table `top` at `level` when that needs no
    /// split and no unlink, returning the bytes removed; `None` when it does.
    #[inline(always)]
    fn clear_in_place(&self, top: Pfn, level: u8, lin: u64, last: u64) -> Option<u64> {
        if level == 0 {
            // Inside one leaf table: 4 KiB leaves only, nothing to split or unlink.
            return Some(clear_leaves::<F, _>(self.table(top), 0, lin, last));
        }
        if (lin | (last + 1)) & (level_size(level) - 1) != 0 {
            return None;
        }
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
    }

    /// Splits the large leaves that straddle either end of `[lin, last]` (below `top`), after
    /// reserving every table the splits need: on `NoMemory` nothing has changed.
    fn split_range_ends(&self, top: Pfn, level: u8, lin: u64, last: u64) -> Result<(), PtError> {
        let end = last + 1;
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
        Ok(())
    }

    /// Clears every leaf in `[lin, last]` below `top`, then unlinks the fully covered tables
    /// that held no mapping; `None`, with nothing changed, when nothing was mapped there.
    fn clear_and_unlink(&self, top: Pfn, level: u8, lin: u64, last: u64) -> Option<Unmapped> {
        let mut out = Unmapped::default();
        let mut empty_subtrees = Vec::new();
        self.clear(top, level, lin, last, &mut out, &mut empty_subtrees);
        if out.bytes == 0 {
            // Nothing was written: a split implies a mapping in range, and empty subtrees were
            // only noted. Leaving them linked keeps the error free of side effects.
            return None;
        }
        for (parent, idx, child, level) in empty_subtrees {
            self.table(parent).store(idx, 0);
            self.collect(child, level, &mut out);
        }
        Some(out)
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

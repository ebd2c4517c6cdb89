//! Mapping a range: the largest leaves alignment allows, counted and checked for overlap in a
//! first pass, written in a second that cannot fail.

use crate::addr::{Perms, Pfn, PhysAddr};
use crate::error::PtError;
use crate::format::{index, level_size, Format};
use crate::mem::{TableMem, TableRef};

use super::reserve::Reserved;
use super::{entry_shift, for_each_chunk, PageTable, PAGE_MASK};

impl<F: Format, M: TableMem> PageTable<F, M> {
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
        let span = lin >> entry_shift(1);
        let inside_one_table = span == last >> entry_shift(1) && last - lin != level_size(1) - 1;
        let (top, level) = match self.leaf_hint {
            Some((s, table)) if inside_one_table && s == span => (table, 0),
            _ => self.descend(lin, last),
        };
        if level == 0 {
            self.leaf_hint = Some((span, top));
        }
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
        let mut with = Fill {
            perms,
            reserved: &mut reserved,
        };
        self.fill(top, level, lin, last, pa.0, &mut with);
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
    fn fill(
        &self,
        pfn: Pfn,
        level: u8,
        start: u64,
        last: u64,
        pa: u64,
        with: &mut Fill<'_, '_, M>,
    ) {
        let table = self.table(pfn);
        let perms = with.perms;
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
                let child = with.reserved.take();
                table.store(idx, F::table_entry(child));
                child
            };
            self.fill(child, level - 1, va, chunk_last, pa, with);
        });
    }
}

/// What the write pass of a map gives every level it recurses into: the permissions of the
/// leaves it writes and the tables reserved for it. (The range and `pa` change per level; these
/// two do not, so they travel together instead of as two more arguments.)
struct Fill<'r, 'm, M: TableMem> {
    perms: Perms,
    reserved: &'r mut Reserved<'m, M>,
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

//! The hardware walker: translate one address the way the IOMMU (or the CPU) would.

use crate::addr::{Access, PageSize, Perms, Pfn, PhysAddr};
use crate::error::{FaultKind, WalkFault};
use crate::format::{index, level_size, Format};
use crate::mem::{TableMem, TableRef};

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The physical address the input address translates to (page offset included).
    pub pa: PhysAddr,
    /// The size of the leaf that mapped it (what an IOTLB entry may cache).
    pub size: PageSize,
    /// The permissions of the whole walk: the AND of every level's permissions.
    pub perms: Perms,
}

/// Walks the tables of format `F` rooted at `root` in `mem` to translate `va` for `access`.
///
/// Like hardware, the walk sets the accessed bit of every entry it uses and, for a write, the
/// dirty bit of the leaf; each update is a compare-exchange on the entry it read, so a
/// concurrent map/unmap either happens before (the walk re-reads the new entry) or after (the
/// update lands on the entry the walk translated through). A walk therefore returns either a
/// translation that was valid at some point during the call or a fault, never a mix of two
/// mappings. Accessed/dirty bits of the leaf are set only when the access is permitted.
///
/// The walk takes no lock and allocates nothing.
///
/// # Errors
/// A [`WalkFault`] saying whether the address was non-canonical, not present (and at which
/// level) or not permitted (write to read-only, user to supervisor, fetch from no-execute,
/// read without read permission).
#[inline]
pub fn walk<F: Format, M: TableMem + ?Sized>(
    mem: &M,
    root: Pfn,
    va: u64,
    access: Access,
) -> Result<Translation, WalkFault> {
    walk_caching::<F, M>(mem, root, va, access, |_| {})
}

/// A last-level table a walk reached through present upper-level entries, with what those
/// entries grant: what a paging-structure cache keeps so that the next walk through the same
/// last-level table reads one entry instead of [`Format::LEVELS`] ([`walk_leaf_table`]).
///
/// It stays valid only as long as none of the upper-level entries it was reached through
/// changes: its keeper must drop it on every invalidation of the translations below it, as
/// hardware's paging-structure caches are flushed with the IOTLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeafTable {
    /// The last-level (level 0) table.
    pub table: Pfn,
    /// AND of the raw upper-level entries walked.
    pub all: u64,
    /// OR of the raw upper-level entries walked.
    pub any: u64,
}

/// [`walk`], telling `cache` the last-level table it reached (if it reached one: not for a
/// fault above it, nor a large leaf), whether or not the walk then succeeds — a page not
/// present is usually faulted in and walked again.
///
/// # Errors
/// As [`walk`].
#[inline]
pub fn walk_caching<F: Format, M: TableMem + ?Sized>(
    mem: &M,
    root: Pfn,
    va: u64,
    access: Access,
    cache: impl FnOnce(LeafTable),
) -> Result<Translation, WalkFault> {
    let lin = linear::<F>(va)?;
    walk_from::<F, M>(
        mem,
        root,
        F::LEVELS - 1,
        (u64::MAX, 0),
        lin,
        va,
        access,
        cache,
    )
}

/// Resumes a walk of `va` at the last-level table `at` (from [`walk_caching`] of an address
/// in the same last-level span), reading only the leaf entry. The caller vouches that `at` is
/// still what the full walk would reach (see [`LeafTable`]).
///
/// # Errors
/// As [`walk`]; a non-canonical `va` is refused as there.
#[inline]
pub fn walk_leaf_table<F: Format, M: TableMem + ?Sized>(
    mem: &M,
    at: LeafTable,
    va: u64,
    access: Access,
) -> Result<Translation, WalkFault> {
    let lin = linear::<F>(va)?;
    walk_from::<F, M>(mem, at.table, 0, (at.all, at.any), lin, va, access, |_| {})
}

/// `va` as the format's linear address; a non-canonical one faults at the top level.
#[inline(always)]
fn linear<F: Format>(va: u64) -> Result<u64, WalkFault> {
    F::to_linear(va).ok_or(WalkFault {
        kind: FaultKind::NonCanonical,
        level: F::LEVELS - 1,
        va,
    })
}

/// The walk from table `pfn` at `level`, the entries above having combined to `(all, any)`:
/// the AND and the OR of the raw entries walked so far (permissions are combined once, at the
/// leaf).
#[allow(
    clippy::too_many_arguments,
    reason = "the walker's loop state, passed once to its only body"
)]
#[inline(always)]
fn walk_from<F: Format, M: TableMem + ?Sized>(
    mem: &M,
    mut pfn: Pfn,
    mut level: u8,
    (mut all, mut any): (u64, u64),
    lin: u64,
    va: u64,
    access: Access,
    cache: impl FnOnce(LeafTable),
) -> Result<Translation, WalkFault> {
    let fault = |kind, level| WalkFault { kind, level, va };
    let mut cache = Some(cache);
    loop {
        if level == 0 {
            if let Some(cache) = cache.take() {
                cache(LeafTable {
                    table: pfn,
                    all,
                    any,
                });
            }
        }
        let table = mem.table(pfn).ok_or(fault(FaultKind::BadTable, level))?;
        let idx = index(lin, level);
        let mut pte = table.load(idx);
        // Re-entered when a compare-exchange finds the entry changed under us.
        loop {
            if !F::is_present(pte) {
                return Err(fault(FaultKind::NotPresent, level));
            }
            if F::is_leaf(pte, level) {
                let granted = F::entry_perms(F::combine(all & pte, any | pte));
                F::check(granted, access).map_err(|kind| fault(kind, level))?;
                let dirty = if access.write { F::DIRTY } else { 0 };
                let updated = pte | F::ACCESSED | dirty;
                if updated != pte {
                    if let Err(current) = table.compare_exchange(idx, pte, updated) {
                        pte = current;
                        continue;
                    }
                }
                let size = PageSize::from_level(level).expect("leaves exist only at levels 0..=2");
                let offset = lin & (level_size(level) - 1);
                return Ok(Translation {
                    pa: PhysAddr(F::leaf_addr(pte, level) | offset),
                    size,
                    perms: granted,
                });
            }
            if pte & F::ACCESSED == 0 {
                if let Err(current) = table.compare_exchange(idx, pte, pte | F::ACCESSED) {
                    pte = current;
                    continue;
                }
            }
            break;
        }
        all &= pte;
        any |= pte;
        pfn = F::table_pfn(pte);
        level -= 1;
    }
}

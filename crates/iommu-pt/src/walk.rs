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
    let fault = |kind, level| WalkFault { kind, level, va };
    let Some(lin) = F::to_linear(va) else {
        return Err(fault(FaultKind::NonCanonical, F::LEVELS - 1));
    };
    let mut pfn = root;
    let mut level = F::LEVELS - 1;
    // AND and OR of the raw entries walked so far: permissions are combined once, at the leaf.
    let (mut all, mut any) = (u64::MAX, 0u64);
    loop {
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

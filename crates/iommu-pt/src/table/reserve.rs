//! Table pages allocated before a mutation writes anything, so that running out of memory
//! leaves the table unchanged.

use smallvec::SmallVec;

use crate::addr::Pfn;
use crate::error::PtError;
use crate::mem::TableMem;

/// Page-table pages reserved before a mutation starts, so the mutation itself cannot fail.
pub(super) struct Reserved<'m, M: TableMem> {
    mem: &'m M,
    /// Inline for the few tables one page needs: a fault's map allocates nothing on the heap.
    pub(super) tables: SmallVec<[Pfn; 4]>,
}

impl<'m, M: TableMem> Reserved<'m, M> {
    pub(super) fn new(mem: &'m M, count: usize) -> Result<Self, PtError> {
        let mut reserved = Reserved {
            mem,
            tables: SmallVec::new(),
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

    pub(super) fn take(&mut self) -> Pfn {
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

//! Reading a table back without touching accessed/dirty bits: one address ([`PageTable::query`])
//! or every leaf in order ([`PageTable::iter`]).

use crate::addr::{PageSize, Pfn, PhysAddr};
use crate::format::{index, level_size, Format};
use crate::mem::{TableMem, TableRef};
use crate::spec::ENTRIES;

use super::{Mapping, PageTable};

impl<F: Format, M: TableMem> PageTable<F, M> {
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

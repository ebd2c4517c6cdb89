//! The paging-structure cache (VT-d's PDE cache, in spirit): for a table root and a 2 MiB span
//! of addresses, the last-level table a walk reached and what the entries above it grant
//! ([`iommu_pt::LeafTable`]). A walk that finds it reads one entry instead of four: the retry
//! after a page fault, and every other page of the span the IOTLB does not hold.
//!
//! Stale entries: every entry records the IOTLB's invalidation count when it was filled and is
//! used only while that count has not moved. Every change a cached entry could depend on comes
//! with an IOTLB invalidation — a context entry set or cleared (`flush_sid_pasid`), a range
//! unmapped or an mm's pages dropped (the table pages are freed only after it), a domain freed —
//! and the cache is filled only inside a DMA window (the read side of the hardware lock) while
//! invalidations hold the write side, so no fill can land after the invalidation that should
//! have removed it. Like hardware, it is flushed whole rather than by range.
//!
//! Direct-mapped, 256 entries, each one cache line of atomic words under a per-slot sequence
//! counter (the seqlock of [`crate::tlb`]); a fill that finds its slot being written skips it.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use iommu_pt::{LeafTable, Pfn};

/// Entries (a power of two).
const ENTRIES: usize = 256;

/// Bits of the address below one last-level table's span (2 MiB).
pub(crate) const SPAN_SHIFT: u32 = iommu_pt::level_size(1).trailing_zeros();

#[derive(Default)]
#[repr(align(64))]
struct Slot {
    seq: AtomicU64,
    /// Root table frame + 1; 0 = empty.
    root: AtomicU64,
    /// The address's span (`iova >> SPAN_SHIFT`).
    span: AtomicU64,
    /// The IOTLB invalidation count when filled.
    generation: AtomicU64,
    table: AtomicU64,
    all: AtomicU64,
    any: AtomicU64,
}

/// A paging-structure cache (see the module documentation).
pub(crate) struct Psc {
    slots: Box<[Slot]>,
}

impl Psc {
    pub fn new() -> Psc {
        Psc {
            slots: (0..ENTRIES).map(|_| Slot::default()).collect(),
        }
    }

    #[inline]
    fn slot(&self, root: Pfn, span: u64) -> &Slot {
        let h = (span ^ root.0.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.slots[(h >> 32) as usize & (ENTRIES - 1)]
    }

    /// The last-level table cached for `span` under `root`, if filled at `generation`.
    #[inline]
    pub fn lookup(&self, root: Pfn, span: u64, generation: u64) -> Option<LeafTable> {
        let s = self.slot(root, span);
        let seq = s.seq.load(Ordering::Acquire);
        if seq & 1 != 0 {
            return None;
        }
        let found = (
            s.root.load(Ordering::Relaxed),
            s.span.load(Ordering::Relaxed),
            s.generation.load(Ordering::Relaxed),
        );
        let at = LeafTable {
            table: Pfn(s.table.load(Ordering::Relaxed)),
            all: s.all.load(Ordering::Relaxed),
            any: s.any.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        let consistent = s.seq.load(Ordering::Relaxed) == seq;
        (consistent && found == (root.0 + 1, span, generation)).then_some(at)
    }

    /// Caches `at` for `span` under `root`, filled at `generation`, evicting whatever shared
    /// its slot; skipped if another thread is writing the slot.
    #[inline]
    pub fn insert(&self, root: Pfn, span: u64, generation: u64, at: LeafTable) {
        let s = self.slot(root, span);
        let seq = s.seq.load(Ordering::Relaxed);
        if seq & 1 != 0
            || s.seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        s.root.store(root.0 + 1, Ordering::Relaxed);
        s.span.store(span, Ordering::Relaxed);
        s.generation.store(generation, Ordering::Relaxed);
        s.table.store(at.table.0, Ordering::Relaxed);
        s.all.store(at.all, Ordering::Relaxed);
        s.any.store(at.any, Ordering::Relaxed);
        s.seq.store(seq + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(table: u64) -> LeafTable {
        LeafTable {
            table: Pfn(table),
            all: !table,
            any: table,
        }
    }

    #[test]
    fn an_entry_is_found_only_for_its_root_span_and_generation() {
        let psc = Psc::new();
        assert_eq!(psc.lookup(Pfn(7), 3, 0), None);
        psc.insert(Pfn(7), 3, 5, at(100));
        assert_eq!(psc.lookup(Pfn(7), 3, 5), Some(at(100)));
        assert_eq!(psc.lookup(Pfn(8), 3, 5), None, "another root");
        assert_eq!(psc.lookup(Pfn(7), 4, 5), None, "another span");
        assert_eq!(psc.lookup(Pfn(7), 3, 6), None, "an invalidation since");
        // Root frame 0 is a root like any other (the empty marker is not a frame number).
        psc.insert(Pfn(0), 0, 5, at(1));
        assert_eq!(psc.lookup(Pfn(0), 0, 5), Some(at(1)));
        // A refill replaces the entry.
        psc.insert(Pfn(7), 3, 6, at(200));
        assert_eq!(psc.lookup(Pfn(7), 3, 6), Some(at(200)));
        assert_eq!(psc.lookup(Pfn(7), 3, 5), None);
    }

    #[test]
    fn concurrent_fills_never_yield_a_torn_entry() {
        // Each entry's fields are functions of its span; a torn read would mix two fills.
        let psc = Psc::new();
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let psc = &psc;
                s.spawn(move || {
                    for i in 0..50_000u64 {
                        let span = (i * 7 + w) % 1024;
                        psc.insert(Pfn(1), span, 0, at(span * 3 + 1));
                    }
                });
            }
            let psc = &psc;
            s.spawn(move || {
                for i in 0..100_000u64 {
                    let span = i % 1024;
                    if let Some(a) = psc.lookup(Pfn(1), span, 0) {
                        assert_eq!(a, at(span * 3 + 1));
                    }
                }
            });
        });
    }
}

//! The page map: vpn → frame of every resident page (Linux's `struct page` mapping), as a
//! two-level radix: a leaf of 512 slots per 2 MiB of address space (one last-level page
//! table's worth), found by its index in a hash map.
//!
//! A fault looks up and inserts one slot: two hash probes and an array store, where a
//! `BTreeMap` walked and split nodes. Leaves emptied by `munmap` are kept in a small pool and
//! the hash map keeps its capacity, so faulting a range in again after unmapping another
//! allocates nothing (the fault path's steady state); range walks (`munmap`, `mprotect`,
//! `swap_out`) visit only the leaves that exist.

use std::collections::HashMap;

use iommu_pt::Pfn;

/// Slots per leaf.
const LEAF: u64 = 512;
/// Empty leaves kept for reuse.
const SPARE_LEAVES: usize = 64;

/// One leaf: `slots[i]` is the frame number of page `leaf * 512 + i` plus one, 0 when absent.
struct Leaf {
    slots: [u64; LEAF as usize],
    used: u32,
}

impl Leaf {
    fn new() -> Box<Leaf> {
        Box::new(Leaf {
            slots: [0; LEAF as usize],
            used: 0,
        })
    }
}

#[derive(Default)]
pub(super) struct PageMap {
    leaves: HashMap<u64, Box<Leaf>, crate::hash::FastHash>,
    spare: Vec<Box<Leaf>>,
    len: usize,
}

impl PageMap {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, vpn: u64) -> Option<Pfn> {
        let slot = self.leaves.get(&(vpn / LEAF))?.slots[(vpn % LEAF) as usize];
        (slot != 0).then(|| Pfn(slot - 1))
    }

    /// Maps `vpn` to `pfn`; returns the frame it replaced.
    pub fn insert(&mut self, vpn: u64, pfn: Pfn) -> Option<Pfn> {
        let spare = &mut self.spare;
        let leaf = self
            .leaves
            .entry(vpn / LEAF)
            .or_insert_with(|| spare.pop().unwrap_or_else(Leaf::new));
        let slot = &mut leaf.slots[(vpn % LEAF) as usize];
        let old = std::mem::replace(slot, pfn.0 + 1);
        if old == 0 {
            leaf.used += 1;
            self.len += 1;
            None
        } else {
            Some(Pfn(old - 1))
        }
    }

    pub fn remove(&mut self, vpn: u64) -> Option<Pfn> {
        let key = vpn / LEAF;
        let leaf = self.leaves.get_mut(&key)?;
        let old = std::mem::take(&mut leaf.slots[(vpn % LEAF) as usize]);
        if old == 0 {
            return None;
        }
        leaf.used -= 1;
        self.len -= 1;
        if leaf.used == 0 {
            if let Some(leaf) = self.leaves.remove(&key) {
                if self.spare.len() < SPARE_LEAVES {
                    self.spare.push(leaf);
                }
            }
        }
        Some(Pfn(old - 1))
    }

    /// Every resident page in `[lo, hi)` (vpns), in address order.
    pub fn range(&self, lo: u64, hi: u64) -> Vec<(u64, Pfn)> {
        if lo >= hi {
            return Vec::new();
        }
        let (first, last) = (lo / LEAF, (hi - 1) / LEAF);
        let mut keys: Vec<u64> = if last - first < self.leaves.len() as u64 {
            (first..=last)
                .filter(|k| self.leaves.contains_key(k))
                .collect()
        } else {
            self.leaves
                .keys()
                .copied()
                .filter(|k| (first..=last).contains(k))
                .collect()
        };
        keys.sort_unstable();
        let mut out = Vec::new();
        for k in keys {
            let leaf = &self.leaves[&k];
            for (i, &slot) in leaf.slots.iter().enumerate() {
                let vpn = k * LEAF + i as u64;
                if slot != 0 && (lo..hi).contains(&vpn) {
                    out.push((vpn, Pfn(slot - 1)));
                }
            }
        }
        out
    }

    /// Whether any page of `[lo, hi)` is resident.
    pub fn any_in(&self, lo: u64, hi: u64) -> bool {
        // Rare (mprotect); the range walk is exact and simple.
        !self.range(lo, hi).is_empty()
    }

    /// Empties the map, returning every frame.
    pub fn take_all(&mut self) -> Vec<Pfn> {
        let frames = self
            .leaves
            .drain()
            .flat_map(|(_, leaf)| leaf.slots.into_iter().filter(|&s| s != 0))
            .map(|s| Pfn(s - 1))
            .collect();
        self.len = 0;
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_removes_and_walks_ranges_in_order() {
        let mut m = PageMap::default();
        for vpn in [5, 511, 512, 1 << 30, 3] {
            assert_eq!(m.insert(vpn, Pfn(vpn + 100)), None);
        }
        assert_eq!(m.insert(5, Pfn(7)), Some(Pfn(105)));
        assert_eq!(m.len(), 5);
        assert_eq!(m.get(5), Some(Pfn(7)));
        assert_eq!(m.get(6), None);
        let r: Vec<u64> = m.range(4, 1 << 31).into_iter().map(|(v, _)| v).collect();
        assert_eq!(r, vec![5, 511, 512, 1 << 30]);
        assert_eq!(m.range(0, u64::MAX).len(), 5);
        assert!(m.any_in(500, 513));
        assert!(!m.any_in(6, 511));
        assert_eq!(m.remove(512), Some(Pfn(612)));
        assert_eq!(m.remove(512), None);
        assert_eq!(m.len(), 4);
        let mut all = m.take_all();
        all.sort();
        assert_eq!(all, vec![Pfn(7), Pfn(103), Pfn(611), Pfn((1 << 30) + 100)]);
        assert!(m.is_empty());
    }
}

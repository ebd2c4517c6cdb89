//! A two-level radix table keyed by PASID: the storage behind a group's `pasid_array`.
//!
//! PASIDs are 20 bits, so a 1,024-entry directory of lazily allocated 1,024-entry leaves gives
//! O(1) lookups with two dependent loads (the anchor measured 2.0 ns for this shape against
//! 11.6 ns for a SipHash map), and an idle group pays only for the directory.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::pasid::PASID_LIMIT;

const LEAF_BITS: u32 = 10;
const LEAF_LEN: usize = 1 << LEAF_BITS;
const DIR_LEN: usize = (PASID_LIMIT as usize) >> LEAF_BITS;

type Leaf<T> = Box<[Option<T>]>;

/// A map from PASID (`0 .. 1 << 20`) to `T`.
pub(crate) struct PasidTable<T> {
    dir: Vec<Option<Leaf<T>>>,
    len: usize,
}

impl<T> PasidTable<T> {
    pub(crate) fn new() -> Self {
        Self {
            dir: Vec::new(),
            len: 0,
        }
    }

    #[inline]
    fn split(pasid: u32) -> Option<(usize, usize)> {
        (pasid < PASID_LIMIT).then_some((
            (pasid >> LEAF_BITS) as usize,
            pasid as usize & (LEAF_LEN - 1),
        ))
    }

    #[inline]
    pub(crate) fn get(&self, pasid: u32) -> Option<&T> {
        let (d, l) = Self::split(pasid)?;
        self.dir.get(d)?.as_ref()?[l].as_ref()
    }

    /// Inserts or overwrites; returns the previous value. `pasid` must be below `PASID_LIMIT`
    /// (callers validate it first and this is checked again here).
    pub(crate) fn insert(&mut self, pasid: u32, value: T) -> Option<T> {
        let (d, l) = Self::split(pasid).expect("caller validated the PASID range");
        if self.dir.len() <= d {
            self.dir.resize_with((d + 1).min(DIR_LEN), || None);
        }
        let leaf = self.dir[d].get_or_insert_with(|| (0..LEAF_LEN).map(|_| None).collect());
        let old = leaf[l].replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, pasid: u32) -> Option<T> {
        let (d, l) = Self::split(pasid)?;
        let old = self.dir.get_mut(d)?.as_mut()?[l].take();
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries in PASID order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.dir.iter().enumerate().flat_map(|(d, leaf)| {
            leaf.iter().flat_map(move |leaf| {
                leaf.iter().enumerate().filter_map(move |(l, v)| {
                    v.as_ref()
                        .map(|v| (((d as u32) << LEAF_BITS) | l as u32, v))
                })
            })
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    proptest::proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((proptest::bool::ANY, 0u32..PASID_LIMIT + 8, proptest::num::u16::ANY), 1..300)) {
            let mut t = PasidTable::new();
            let mut r = BTreeMap::new();
            for (ins, pasid, v) in ops {
                if ins && pasid < PASID_LIMIT {
                    proptest::prop_assert_eq!(t.insert(pasid, v), r.insert(pasid, v));
                } else {
                    proptest::prop_assert_eq!(t.remove(pasid), r.remove(&pasid));
                }
                proptest::prop_assert_eq!(t.get(pasid), r.get(&pasid));
                proptest::prop_assert_eq!(t.len(), r.len());
            }
            let listed: Vec<_> = t.iter().map(|(k, v)| (k, *v)).collect();
            let want: Vec<_> = r.into_iter().collect();
            proptest::prop_assert_eq!(listed, want);
        }
    }

    #[test]
    fn out_of_range_lookups_are_empty() {
        let mut t = PasidTable::new();
        t.insert(PASID_LIMIT - 1, 7u8);
        assert_eq!(t.get(PASID_LIMIT - 1), Some(&7));
        assert_eq!(t.get(PASID_LIMIT), None);
        assert_eq!(t.get(u32::MAX), None);
        assert_eq!(t.remove(u32::MAX), None);
    }
}

//! A translation cache shared by the IOMMU's IOTLB and an endpoint's ATS device TLB: [`Tlb`].
//!
//! Direct-mapped, fixed capacity, lock-free for readers. Each slot is four atomic words under a
//! per-slot sequence counter (a seqlock made of atomics only, so no `unsafe`): a reader loads the
//! counter, the three words, then the counter again, and uses the slot only if the counter was
//! even and unchanged. Writers (fills and invalidations) take the slot by moving the counter
//! from even to odd with a compare-exchange, so concurrent fills of one slot from two DMA
//! threads serialise on that slot alone.
//!
//! Only 4 KiB translations are cached (a 2 MiB or 1 GiB leaf is cached per 4 KiB page it is used
//! for): invalidation by range then never has to reason about entry sizes.
//!
//! Correctness against stale entries does not rest on this structure alone: the emulator fills
//! caches only while holding its DMA window (the read side of the IOMMU's hardware lock) and
//! invalidates while holding the write side, so a fill can never land after the invalidation
//! that should have removed it (see `iommu/mod.rs`).

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Bits of a cached entry's permission field (low bits of the value word).
pub(crate) const P_READ: u64 = 1;
pub(crate) const P_WRITE: u64 = 2;
pub(crate) const P_EXEC: u64 = 4;
pub(crate) const P_USER: u64 = 8;

/// What a cache entry is tagged with: source (device), PASID key and domain ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    /// Source ID (the IOMMU's per-device index); 0 in a device TLB.
    pub sid: u32,
    /// `0` for DMA without PASID, `pasid + 1` otherwise.
    pub pkey: u32,
    /// Domain ID (IOTLB); 0 in a device TLB.
    pub did: u16,
}

impl Tag {
    const PKEY_BITS: u32 = 21;
    const DID_SHIFT: u32 = Self::PKEY_BITS;
    const SID_SHIFT: u32 = Self::DID_SHIFT + 16;
    const DID_MASK: u64 = 0xffff << Self::DID_SHIFT;

    #[inline]
    fn pack(self) -> u64 {
        u64::from(self.pkey)
            | u64::from(self.did) << Self::DID_SHIFT
            | u64::from(self.sid) << Self::SID_SHIFT
    }

    #[inline]
    fn unpack(w: u64) -> Tag {
        Tag {
            pkey: (w & ((1 << Self::PKEY_BITS) - 1)) as u32,
            did: ((w & Self::DID_MASK) >> Self::DID_SHIFT) as u16,
            sid: (w >> Self::SID_SHIFT) as u32,
        }
    }
}

/// The PASID key of a tag: 0 for no PASID.
#[inline]
pub(crate) fn pkey(pasid: Option<u32>) -> u32 {
    pasid.map_or(0, |p| p + 1)
}

#[derive(Default)]
struct Slot {
    seq: AtomicU64,
    /// `vpn + 1`; 0 = empty.
    key: AtomicU64,
    tag: AtomicU64,
    /// Page-aligned physical address | permission bits.
    val: AtomicU64,
}

/// A cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub vpn: u64,
    pub tag: Tag,
    /// Page-aligned physical address.
    pub pa: u64,
    /// `P_*` bits.
    pub perms: u64,
}

/// A direct-mapped, lock-free-read translation cache.
pub(crate) struct Tlb {
    slots: Box<[Slot]>,
    mask: usize,
    /// Bumped by every [`Tlb::invalidate`], before any slot is cleared: a cache layered above
    /// this one (a rust-vmm IOTLB over a device TLB) compares it to know that something it
    /// copied may have gone stale.
    generation: AtomicU64,
}

impl Tlb {
    /// A cache of `entries` slots (rounded up to a power of two, at least 1).
    /// Most entries one cache may have: its slots are allocated up front.
    pub const MAX_ENTRIES: usize = 1 << 20;

    /// A cache of `entries` (at most [`Tlb::MAX_ENTRIES`], clamped) rounded up to a power of two.
    pub fn new(entries: usize) -> Tlb {
        let entries = entries.min(Self::MAX_ENTRIES);
        let n = entries.max(1).next_power_of_two();
        Tlb {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            generation: AtomicU64::new(0),
        }
    }

    /// How many invalidations this cache has seen (see the field's doc).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn index(&self, sid: u32, pkey: u32, vpn: u64) -> usize {
        let h = (vpn ^ (u64::from(pkey) << 24) ^ (u64::from(sid) << 44))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & self.mask
    }

    /// Reads slot `i` consistently; `None` if empty or being written.
    #[inline]
    fn read(&self, i: usize) -> Option<Entry> {
        let s = &self.slots[i];
        let s1 = s.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        let key = s.key.load(Ordering::Relaxed);
        let tag = s.tag.load(Ordering::Relaxed);
        let val = s.val.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != s1 || key == 0 {
            return None;
        }
        Some(Entry {
            vpn: key - 1,
            tag: Tag::unpack(tag),
            pa: val & !0xfff,
            perms: val & 0xfff,
        })
    }

    /// Looks up the translation of page `vpn` for (`sid`, `pkey`), whatever its domain ID.
    #[inline]
    pub fn lookup(&self, sid: u32, pkey: u32, vpn: u64) -> Option<Entry> {
        let e = self.read(self.index(sid, pkey, vpn))?;
        (e.vpn == vpn && e.tag.sid == sid && e.tag.pkey == pkey).then_some(e)
    }

    /// Runs `f` with slot `i` held for writing.
    #[inline]
    fn with_slot(&self, i: usize, f: impl FnOnce(&Slot)) {
        let s = &self.slots[i];
        let mut cur = s.seq.load(Ordering::Relaxed);
        loop {
            if cur & 1 != 0 {
                std::hint::spin_loop();
                cur = s.seq.load(Ordering::Relaxed);
                continue;
            }
            match s
                .seq
                .compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        fence(Ordering::Release);
        f(s);
        s.seq.store(cur + 2, Ordering::Release);
    }

    /// Caches a translation, evicting whatever shared its slot.
    #[inline]
    pub fn insert(&self, e: Entry) {
        let i = self.index(e.tag.sid, e.tag.pkey, e.vpn);
        self.with_slot(i, |s| {
            s.key.store(e.vpn + 1, Ordering::Relaxed);
            s.tag.store(e.tag.pack(), Ordering::Relaxed);
            s.val.store(e.pa | e.perms, Ordering::Relaxed);
        });
    }

    /// Removes every entry `pred` selects; returns how many.
    pub fn invalidate(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        // Every call counts, whether or not it removes an entry: a cache above copies entries
        // without telling this one, so only "maybe stale" can be known here. SeqCst: the bump
        // is ordered before the slots are cleared and before the caller returns.
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut n = 0;
        for i in 0..self.slots.len() {
            // Cheap optimistic check first; a slot being written is re-checked under the lock.
            let s = &self.slots[i];
            let busy = s.seq.load(Ordering::Relaxed) & 1 != 0;
            if !busy && s.key.load(Ordering::Relaxed) == 0 {
                continue;
            }
            match self.read(i) {
                Some(e) if !pred(&e) => continue,
                None if !busy => continue,
                _ => {}
            }
            self.with_slot(i, |s| {
                let key = s.key.load(Ordering::Relaxed);
                if key == 0 {
                    return;
                }
                let val = s.val.load(Ordering::Relaxed);
                let e = Entry {
                    vpn: key - 1,
                    tag: Tag::unpack(s.tag.load(Ordering::Relaxed)),
                    pa: val & !0xfff,
                    perms: val & 0xfff,
                };
                if pred(&e) {
                    s.key.store(0, Ordering::Relaxed);
                    n += 1;
                }
            });
        }
        n
    }

    /// Number of valid entries (a snapshot; for tests and reports).
    pub fn len(&self) -> usize {
        (0..self.slots.len())
            .filter(|&i| self.read(i).is_some())
            .count()
    }
}

/// Whether cached permission bits allow an access.
#[inline]
pub(crate) fn perms_allow(perms: u64, access: iommu_pt::Access) -> bool {
    (!access.read || perms & P_READ != 0)
        && (!access.write || perms & P_WRITE != 0)
        && (!access.exec || perms & P_EXEC != 0)
        && (!access.user || perms & P_USER != 0)
}

/// Permission bits of a walk's result.
#[inline]
pub(crate) fn perm_bits(p: iommu_pt::Perms) -> u64 {
    (if p.read { P_READ } else { 0 })
        | (if p.write { P_WRITE } else { 0 })
        | (if p.exec { P_EXEC } else { 0 })
        | (if p.user { P_USER } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(sid: u32, pasid: Option<u32>, did: u16, vpn: u64) -> Entry {
        Entry {
            vpn,
            tag: Tag {
                sid,
                pkey: pkey(pasid),
                did,
            },
            pa: (vpn + 100) << 12,
            perms: P_READ | P_WRITE,
        }
    }

    #[test]
    fn lookup_matches_source_pasid_and_page() {
        let t = Tlb::new(64);
        t.insert(e(1, Some(5), 3, 10));
        assert_eq!(t.lookup(1, pkey(Some(5)), 10), Some(e(1, Some(5), 3, 10)));
        assert_eq!(t.lookup(2, pkey(Some(5)), 10), None);
        assert_eq!(t.lookup(1, pkey(None), 10), None);
        assert_eq!(t.lookup(1, pkey(Some(5)), 11), None);
    }

    #[test]
    fn concurrent_fills_and_invalidations_never_yield_a_torn_entry() {
        // Every entry's physical address is a function of its page; a torn read (key of one
        // fill, value of another) would break that.
        let t = Tlb::new(8);
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let t = &t;
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        let vpn = (i * 7 + w) % 64;
                        t.insert(e(1, Some(2), 3, vpn));
                        if i % 97 == 0 {
                            t.invalidate(|x| x.vpn % 2 == w);
                        }
                    }
                });
            }
            let t = &t;
            s.spawn(move || {
                for i in 0..40_000u64 {
                    if let Some(x) = t.lookup(1, pkey(Some(2)), i % 64) {
                        assert_eq!(x, e(1, Some(2), 3, i % 64));
                    }
                }
            });
        });
    }

    #[test]
    fn invalidation_by_domain_pasid_and_range() {
        let t = Tlb::new(1024);
        for vpn in 0..8 {
            t.insert(e(1, Some(5), 3, vpn));
            t.insert(e(1, None, 4, vpn + 100));
        }
        assert_eq!(t.invalidate(|x| x.tag.did == 4 && x.vpn >= 104), 4);
        assert_eq!(
            t.invalidate(|x| x.tag.pkey == pkey(Some(5)) && x.vpn < 2),
            2
        );
        assert_eq!(t.len(), 10);
        assert!(t.lookup(1, 0, 103).is_some());
        assert!(t.lookup(1, 0, 104).is_none());
    }
}

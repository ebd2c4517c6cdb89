//! A slot of `N` atomic words under a sequence counter: the seqlock both translation caches
//! (the IOTLB and device TLBs in [`crate::tlb`], the paging-structure cache in [`crate::psc`])
//! are made of, from atomics only, so no `unsafe`.
//!
//! A reader loads the counter, the words, then the counter again, and uses the words only if
//! the counter was even and unchanged. A writer takes the slot by moving the counter from even
//! to odd with a compare-exchange, so concurrent writers of one slot serialise on it alone.

use std::sync::atomic::{fence, AtomicU64, Ordering};

pub(crate) struct SeqSlot<const N: usize> {
    seq: AtomicU64,
    words: [AtomicU64; N],
}

impl<const N: usize> Default for SeqSlot<N> {
    fn default() -> Self {
        SeqSlot {
            seq: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl<const N: usize> SeqSlot<N> {
    /// The words, consistent with each other; `None` while the slot is being written (or was
    /// written during the read).
    #[inline(always)]
    pub fn read(&self) -> Option<[u64; N]> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        let words = self.words.each_ref().map(|a| a.load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 {
            return None;
        }
        Some(words)
    }

    /// Whether a writer holds the slot right now (a hint).
    #[inline]
    pub fn busy(&self) -> bool {
        self.seq.load(Ordering::Relaxed) & 1 != 0
    }

    /// Word `i` without consistency (a hint for a cheap check before a [`SeqSlot::read`]).
    #[inline]
    pub fn peek(&self, i: usize) -> u64 {
        self.words[i].load(Ordering::Relaxed)
    }

    /// Runs `f` on the words with the slot held for writing, waiting for another writer.
    #[inline]
    pub fn write(&self, f: impl FnOnce(&[AtomicU64; N])) {
        let mut cur = self.seq.load(Ordering::Relaxed);
        loop {
            if cur & 1 != 0 {
                std::hint::spin_loop();
                cur = self.seq.load(Ordering::Relaxed);
                continue;
            }
            match self
                .seq
                .compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.publish(cur, f);
    }

    /// Stores `words` unless another writer holds the slot (then nothing happens: for a cache
    /// whose fill may be skipped).
    #[inline]
    pub fn try_store(&self, words: [u64; N]) {
        let cur = self.seq.load(Ordering::Relaxed);
        if cur & 1 != 0
            || self
                .seq
                .compare_exchange(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.publish(cur, |w| {
            for (slot, v) in w.iter().zip(words) {
                slot.store(v, Ordering::Relaxed);
            }
        });
    }

    /// With the slot held (counter `cur + 1`, odd): runs `f`, then releases it.
    #[inline]
    fn publish(&self, cur: u64, f: impl FnOnce(&[AtomicU64; N])) {
        fence(Ordering::Release);
        f(&self.words);
        self.seq.store(cur + 2, Ordering::Release);
    }
}

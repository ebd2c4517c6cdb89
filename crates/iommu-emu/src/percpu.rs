//! Per-CPU state without asking which CPU: a few copies of a value, each on a cache line of its
//! own, and each thread using the one it was given when it first asked. What Linux keeps per
//! CPU (page lists, statistics) so that CPUs do not pass one cache line back and forth for
//! every event; a thread picks its copy once (threads are numbered round robin as they first
//! ask) instead of calling `getcpu` every time. Two threads sharing a copy is correct, only
//! slower, so every copy's contents must be safe to share (a lock, atomics).

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The number the calling thread was given (threads are numbered as they first ask).
#[inline]
pub(crate) fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Relaxed);
    }
    SLOT.with(|s| *s)
}

/// Copies for two threads per CPU of this host (at least 2, at most 64): enough that the
/// threads doing a machine's work rarely share one.
pub(crate) fn default_copies() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus).clamp(2, 64)
}

/// `T` once per thread slot, each copy on a cache line of its own.
pub(crate) struct PerCpu<T> {
    copies: Box<[CachePadded<T>]>,
}

impl<T> PerCpu<T> {
    /// `n` copies (at least one), each made by `make`.
    pub fn with_copies(n: usize, mut make: impl FnMut() -> T) -> Self {
        PerCpu {
            copies: (0..n.max(1)).map(|_| CachePadded::new(make())).collect(),
        }
    }

    /// The calling thread's copy.
    #[inline]
    pub fn mine(&self) -> &T {
        &self.copies[thread_slot() % self.copies.len()]
    }

    /// Every copy, to sum them or drain them.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.copies.iter().map(|c| &**c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_thread_keeps_its_copy_and_threads_get_distinct_numbers() {
        let p: PerCpu<AtomicU64> = PerCpu::with_copies(4, Default::default);
        let mine = p.mine() as *const AtomicU64;
        assert_eq!(
            p.mine() as *const AtomicU64,
            mine,
            "a thread's copy does not move"
        );
        let slots: Vec<usize> = (0..4)
            .map(|_| std::thread::scope(|s| s.spawn(thread_slot).join().unwrap()))
            .collect();
        // Other tests' threads take numbers too, so only order and distinctness are certain.
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "{slots:?}");
        assert!(!slots.contains(&thread_slot()));
    }

    #[test]
    fn copies_are_on_separate_cache_lines() {
        let p: PerCpu<u8> = PerCpu::with_copies(3, || 0);
        let addrs: Vec<usize> = p.iter().map(|c| c as *const u8 as usize).collect();
        for w in addrs.windows(2) {
            assert!(w[1] - w[0] >= 64, "{addrs:?}");
        }
        assert_eq!(PerCpu::with_copies(0, || 0u8).iter().count(), 1);
    }
}

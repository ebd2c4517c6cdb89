//! The frame allocator: which of [`PhysMem`](crate::PhysMem)'s frames are in use.
//!
//! It only does bookkeeping — frame *indices* `0..capacity`, no memory — so it can be read and
//! tested on its own; `PhysMem` turns an index into a frame number and zeroes the frame's
//! contents. The rules it enforces are the ones the rest of the emulator relies on:
//!
//! * a frame is never handed out twice while allocated (the caller frees it only after
//!   unmapping it and invalidating every cached translation: `Mm::munmap` and friends);
//! * freeing a frame that is not allocated (a double free, a foreign frame) is caught — it is a
//!   bug in the caller, and continuing would let two owners share one frame;
//! * exhaustion is an error value, never a panic.
//!
//! Freed frames are reused last-in first-out: a frame freed on its own is the one most likely
//! still in the host's caches. `PhysMem` frees the frames of one release (an unmapped range)
//! highest first, so they come back lowest first, in ascending order: for a range, the order
//! the host's prefetcher streams matters more than which frame is warm.
//!
//! # Per-thread frame lists
//! Every thread that allocates or frees takes one of a few *frame lists* (what Linux's per-CPU
//! page lists are for): a short stack of free frames behind a lock of its own, on a cache line
//! of its own. A thread allocates from and frees to its list; only when the list runs dry does
//! it take a batch of frames from the shared stack, and only when it grows past a bound does it
//! give its oldest batch back. So two threads faulting pages of two devices at once do not pass
//! one lock and one stack top between their CPUs for every frame, and a frame one thread frees
//! is, while it is still in that thread's caches, the one that thread gets next. For one thread
//! the shared stack and its list together behave exactly as one last-in-first-out stack (the
//! batches keep their order), so the order above holds. A thread picks its list once, round
//! robin over the lists (there are twice as many as CPUs), not by asking which CPU it is on for
//! every frame; two threads that share a list are correct, only slower. Frames are never lost
//! in the lists: when the shared stack and the never-used frames are both exhausted, an
//! allocation drains every list back before it answers `None` (one drain at a time, so two
//! threads running out together do not each find the other's drained frames gone). A thread
//! whose list and the shared stack are empty takes a never-used frame before it takes frames
//! other threads' lists hold: at most 96 a list, so the host may back that many frames per list
//! more than the old single stack needed.
//!
//! Which frames are allocated is one bit per frame, set and cleared with one atomic operation
//! outside any lock: of two frees of one frame, exactly one clears the bit, and only that one
//! returns the frame to a list.

use crate::percpu::PerCpu;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

/// Why [`FrameAllocator::free`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreeError {
    /// The index is not below the capacity.
    OutOfRange,
    /// The frame is not allocated (freed twice, or never handed out).
    NotAllocated,
}

/// Frames moved between a thread's list and the shared stack at once.
const BATCH: usize = 32;
/// The most frames a list keeps; one more free gives its oldest [`BATCH`] back.
const HIGH: usize = 3 * BATCH;
/// Frames per block of the allocated-bits map (a block is 4 KiB of bits).
const BLOCK_FRAMES: usize = 1 << 15;

/// The frames every thread shares.
struct Shared {
    /// Frames `0..next` have been handed out at least once; the rest were never touched.
    next: usize,
    /// Freed frames no thread's list holds, reused last-in first-out.
    free: Vec<usize>,
}

/// A thread's list: freed frames it reuses first, oldest at the front.
struct FrameList {
    frames: Mutex<Vec<usize>>,
    /// Frames allocated minus frames freed through this list (negative when its thread frees
    /// frames other threads allocated). Written under `frames`' lock only.
    net: AtomicIsize,
}

/// A fixed-capacity allocator of frame indices. Thread-safe; an allocation or a free takes
/// the caller's frame list's lock, uncontended unless threads share the list, and the shared
/// lock once per [`BATCH`] frames (the fault path allocates at most one frame per page it
/// faults in).
pub(crate) struct FrameAllocator {
    capacity: usize,
    shared: Mutex<Shared>,
    /// Frames handed out from `next` (never used before), written under `shared`'s lock.
    fresh: AtomicUsize,
    lists: PerCpu<FrameList>,
    /// Held while the lists are drained back on exhaustion (taken with no other lock held).
    draining: Mutex<()>,
    /// One bit per frame, set while it is allocated; a block of bits is made when the first
    /// frame in it is handed out, so a large budget costs nothing until used.
    live: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl FrameAllocator {
    /// An allocator of `capacity` frames, all free, with two lists per CPU of this host.
    pub fn new(capacity: usize) -> Self {
        Self::with_lists(capacity, crate::percpu::default_copies())
    }

    /// An allocator of `capacity` frames with `lists` frame lists (at least one).
    fn with_lists(capacity: usize, lists: usize) -> Self {
        FrameAllocator {
            capacity,
            shared: Mutex::new(Shared {
                next: 0,
                free: Vec::new(),
            }),
            fresh: AtomicUsize::new(0),
            lists: PerCpu::with_copies(lists, || FrameList {
                frames: Mutex::new(Vec::new()),
                net: AtomicIsize::new(0),
            }),
            draining: Mutex::new(()),
            live: (0..capacity.div_ceil(BLOCK_FRAMES))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The number of frames.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames currently allocated. Exact when no allocation or free is running at the same
    /// time; a count taken during them may be off by the frames in motion (never below 0 nor
    /// above the capacity).
    pub fn in_use(&self) -> usize {
        let listed: isize = self.lists.iter().map(|l| l.net.load(Relaxed)).sum();
        let n = (self.fresh.load(Relaxed) as isize + listed).max(0) as usize;
        n.min(self.capacity)
    }

    /// The word and bit of frame `index` in the allocated-bits map, if its block exists.
    fn live_bit(&self, index: usize) -> Option<(&AtomicU64, u64)> {
        let block = self.live.get(index / BLOCK_FRAMES)?.get()?;
        let word = &block[(index % BLOCK_FRAMES) / 64];
        Some((word, 1 << (index % 64)))
    }

    /// Marks frame `index` allocated.
    fn set_live(&self, index: usize) {
        let block = self.live[index / BLOCK_FRAMES]
            .get_or_init(|| (0..BLOCK_FRAMES / 64).map(|_| AtomicU64::new(0)).collect());
        let bit = 1 << (index % 64);
        let was = block[(index % BLOCK_FRAMES) / 64].fetch_or(bit, Relaxed);
        debug_assert!(was & bit == 0, "frame {index} handed out twice");
    }

    /// Allocates a frame: `Some((index, recycled))`, where `recycled` says the frame was used
    /// before (so its contents must be zeroed; a never-used frame of a fresh anonymous mapping
    /// is already zero). `None` when every frame is allocated.
    pub fn alloc(&self) -> Option<(usize, bool)> {
        let list = self.lists.mine();
        let mut frames = list.frames.lock();
        if frames.is_empty() {
            let mut shared = self.shared.lock();
            let take = shared.free.len().min(BATCH);
            let from = shared.free.len() - take;
            // The shared stack's top batch, in its order: its last frame is popped first.
            frames.extend(shared.free.drain(from..));
            if frames.is_empty() {
                drop(frames);
                return self.alloc_unlisted(shared);
            }
        }
        let index = frames.pop()?;
        // Written under the list's lock only: no locked RMW needed (see `counter.rs`).
        list.net.store(list.net.load(Relaxed) + 1, Relaxed);
        drop(frames);
        self.set_live(index);
        Some((index, true))
    }

    /// An allocation when neither the caller's list nor the shared stack holds a frame: a
    /// never-used frame, else a frame drained back from every thread's list, else `None`.
    fn alloc_unlisted(
        &self,
        mut shared: parking_lot::MutexGuard<'_, Shared>,
    ) -> Option<(usize, bool)> {
        if shared.next < self.capacity {
            let index = shared.next;
            shared.next += 1;
            self.fresh.store(self.fresh.load(Relaxed) + 1, Relaxed);
            drop(shared);
            self.set_live(index);
            return Some((index, false));
        }
        drop(shared);
        // One drain at a time; it takes the lists and the shared stack one after another,
        // never two at once, and nobody holding either takes `draining`: no lock-order cycle.
        let _draining = self.draining.lock();
        let mut shared = self.shared.lock();
        // A drain just before this one may have left frames on the shared stack.
        if shared.free.is_empty() {
            drop(shared);
            let mut drained = Vec::new();
            for l in self.lists.iter() {
                drained.append(&mut l.frames.lock());
            }
            shared = self.shared.lock();
            shared.free.append(&mut drained);
        }
        let index = shared.free.pop()?;
        drop(shared);
        let list = self.lists.mine();
        let held = list.frames.lock();
        list.net.store(list.net.load(Relaxed) + 1, Relaxed);
        drop(held);
        self.set_live(index);
        Some((index, true))
    }

    /// Whether frame `index` is handed out.
    pub fn is_allocated(&self, index: usize) -> bool {
        self.live_bit(index)
            .is_some_and(|(word, bit)| word.load(Relaxed) & bit != 0)
    }

    /// Returns frame `index`. A refused free changes nothing.
    pub fn free(&self, index: usize) -> Result<(), FreeError> {
        if index >= self.capacity {
            return Err(FreeError::OutOfRange);
        }
        let Some((word, bit)) = self.live_bit(index) else {
            return Err(FreeError::NotAllocated);
        };
        // Of two frees of one frame, one clears the bit; the other sees it clear.
        if word.fetch_and(!bit, Relaxed) & bit == 0 {
            return Err(FreeError::NotAllocated);
        }
        let list = self.lists.mine();
        let mut frames = list.frames.lock();
        frames.push(index);
        list.net.store(list.net.load(Relaxed) - 1, Relaxed);
        if frames.len() > HIGH {
            // The oldest batch goes on top of the shared stack: the shared stack followed by
            // the list is still one last-in-first-out order.
            self.shared.lock().free.extend(frames.drain(..BATCH));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_not_reused_while_allocated_and_exhaustion_is_none() {
        let a = FrameAllocator::new(2);

        let x = a.alloc().unwrap();
        let y = a.alloc().unwrap();

        assert_eq!((x, y), ((0, false), (1, false)));
        assert_eq!(a.alloc(), None);
        assert_eq!(a.in_use(), 2);
    }

    #[test]
    fn a_freed_frame_comes_back_recycled() {
        let a = FrameAllocator::new(2);
        let (x, _) = a.alloc().unwrap();

        a.free(x).unwrap();

        assert_eq!(a.alloc(), Some((x, true)));
    }

    #[test]
    fn double_and_foreign_frees_are_refused() {
        let a = FrameAllocator::new(2);
        let (x, _) = a.alloc().unwrap();
        a.free(x).unwrap();

        assert_eq!(a.free(x), Err(FreeError::NotAllocated));
        assert_eq!(a.free(1), Err(FreeError::NotAllocated));
        assert_eq!(a.free(2), Err(FreeError::OutOfRange));
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn one_thread_sees_one_last_in_first_out_stack_across_batches() {
        // Enough frames that the thread's list gives batches back and takes them again.
        let n = 5 * HIGH;
        let a = FrameAllocator::with_lists(n, 2);
        let got: Vec<usize> = (0..n).map(|_| a.alloc().unwrap().0).collect();
        // Freed in a scrambled order; a stack hands them back in the reverse of that order.
        let mut order = got.clone();
        order.sort_unstable_by_key(|i| (i * 7919) % n);
        for &i in &order {
            a.free(i).unwrap();
        }
        let again: Vec<usize> = (0..n).map(|_| a.alloc().unwrap().0).collect();
        let expected: Vec<usize> = order.iter().rev().copied().collect();
        assert_eq!(again, expected);
        assert_eq!(a.in_use(), n);
    }

    #[test]
    fn frames_left_in_another_threads_list_are_not_lost() {
        let n = HIGH / 2;
        let a = FrameAllocator::with_lists(n, 4);
        let got: Vec<usize> = (0..n).map(|_| a.alloc().unwrap().0).collect();
        // Freed by a thread with a list other than ours (slot numbers are handed out round
        // robin, and other tests take some: try threads until one lands elsewhere).
        let mine = crate::percpu::thread_slot() % 4;
        let freed = (0..64).any(|_| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    if crate::percpu::thread_slot() % 4 == mine {
                        return false;
                    }
                    for &i in &got {
                        a.free(i).unwrap();
                    }
                    true
                })
                .join()
                .unwrap()
            })
        });
        assert!(freed, "no thread landed on another list");
        assert_eq!(a.in_use(), 0);
        // Every frame sits in the other thread's list: ours and the shared stack are empty.
        let back: Vec<usize> = (0..n).map(|_| a.alloc().unwrap().0).collect();
        let (mut sorted, mut want) = (back.clone(), got.clone());
        sorted.sort_unstable();
        want.sort_unstable();
        assert_eq!(
            sorted, want,
            "every frame comes back, whichever list held it"
        );
        assert_eq!(a.alloc(), None);
        assert_eq!(a.in_use(), n);
    }

    #[test]
    fn threads_running_out_together_all_find_the_frames_other_lists_hold() {
        // Two threads' lists hold every frame; two other threads then allocate them all at
        // once. Each allocation that finds its list and the shared stack empty drains the
        // lists; one drain must not leave the other thread answering None.
        for _ in 0..300 {
            let n = 40;
            let a = FrameAllocator::with_lists(n, 64);
            let got: Vec<usize> = (0..n).map(|_| a.alloc().unwrap().0).collect();
            std::thread::scope(|s| {
                for half in got.chunks(n / 2) {
                    let a = &a;
                    s.spawn(move || half.iter().for_each(|&i| a.free(i).unwrap()));
                }
            });
            let taken: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            let mut k = 0;
                            while k < n / 2 && a.alloc().is_some() {
                                k += 1;
                            }
                            k
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(taken, n, "an allocation failed while frames were free");
        }
    }

    #[test]
    fn threads_allocating_and_freeing_at_once_never_share_a_frame() {
        use std::sync::atomic::AtomicBool;
        const N: usize = 600;
        let a = FrameAllocator::with_lists(N, 3);
        let owned: Vec<AtomicBool> = (0..N).map(|_| AtomicBool::new(false)).collect();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (a, owned) = (&a, &owned);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x % 3 != 0 || mine.is_empty() {
                            if let Some((i, _)) = a.alloc() {
                                assert!(
                                    !owned[i].swap(true, Relaxed),
                                    "frame {i} handed out twice"
                                );
                                mine.push(i);
                            }
                        } else {
                            let i = mine.swap_remove((x as usize >> 8) % mine.len());
                            owned[i].store(false, Relaxed);
                            a.free(i).unwrap();
                        }
                    }
                    for i in mine {
                        owned[i].store(false, Relaxed);
                        a.free(i).unwrap();
                    }
                });
            }
        });
        assert_eq!(a.in_use(), 0);
        // Every frame is still there: all N can be allocated again, and no more.
        let all: std::collections::HashSet<usize> = (0..N).map(|_| a.alloc().unwrap().0).collect();
        assert_eq!(all.len(), N);
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn of_two_racing_frees_of_one_frame_exactly_one_succeeds() {
        let a = FrameAllocator::with_lists(64, 2);
        for _ in 0..200 {
            let (i, _) = a.alloc().unwrap();
            let barrier = std::sync::Barrier::new(2);
            let oks: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            a.free(i).is_ok() as usize
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(oks, 1);
            assert_eq!(a.in_use(), 0);
        }
    }
}

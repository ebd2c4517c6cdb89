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

use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Why [`FrameAllocator::free`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreeError {
    /// The index is not below the capacity.
    OutOfRange,
    /// The frame is not allocated (freed twice, or never handed out).
    NotAllocated,
}

struct State {
    /// Frames `0..next` have been handed out at least once; the rest were never touched.
    next: usize,
    /// Freed frames, reused last-in first-out.
    free: Vec<usize>,
    /// One bit per frame handed out so far (`0..next`), set while it is allocated. It grows
    /// with `next`, so a large budget costs nothing until used.
    live: Vec<u64>,
}

/// A fixed-capacity allocator of frame indices. Thread-safe; allocation and free take one
/// short lock (the fault path allocates at most one frame per page it faults in).
pub(crate) struct FrameAllocator {
    capacity: usize,
    state: Mutex<State>,
    in_use: AtomicUsize,
}

impl FrameAllocator {
    /// An allocator of `capacity` frames, all free.
    pub fn new(capacity: usize) -> Self {
        FrameAllocator {
            capacity,
            state: Mutex::new(State {
                next: 0,
                free: Vec::new(),
                live: Vec::new(),
            }),
            in_use: AtomicUsize::new(0),
        }
    }

    /// The number of frames.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Relaxed)
    }

    /// Allocates a frame: `Some((index, recycled))`, where `recycled` says the frame was used
    /// before (so its contents must be zeroed; a never-used frame of a fresh anonymous mapping
    /// is already zero). `None` when every frame is allocated.
    pub fn alloc(&self) -> Option<(usize, bool)> {
        let mut st = self.state.lock();
        let (index, recycled) = match st.free.pop() {
            Some(i) => (i, true),
            None if st.next < self.capacity => {
                st.next += 1;
                if st.live.len() < st.next.div_ceil(64) {
                    st.live.push(0);
                }
                (st.next - 1, false)
            }
            None => return None,
        };
        st.live[index / 64] |= 1 << (index % 64);
        // Written under the state lock only: no locked RMW needed (see `counter.rs`).
        self.in_use.store(self.in_use.load(Relaxed) + 1, Relaxed);
        Some((index, recycled))
    }

    /// Whether frame `index` is handed out.
    pub fn is_allocated(&self, index: usize) -> bool {
        let st = self.state.lock();
        st.live
            .get(index / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Returns frame `index`. A refused free changes nothing.
    pub fn free(&self, index: usize) -> Result<(), FreeError> {
        if index >= self.capacity {
            return Err(FreeError::OutOfRange);
        }
        let mut st = self.state.lock();
        let bit = 1u64 << (index % 64);
        if st.live.get(index / 64).is_none_or(|w| w & bit == 0) {
            return Err(FreeError::NotAllocated);
        }
        st.live[index / 64] &= !bit;
        st.free.push(index);
        self.in_use.store(self.in_use.load(Relaxed) - 1, Relaxed);
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
}

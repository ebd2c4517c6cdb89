//! A DMA job's list of page numbers (the pages to retry, the faulted pages of the next group).
//!
//! A job's groups are usually a page or a few: the first [`INLINE`] pages live in the list
//! itself, so a job allocates nothing for them, and a longer list moves to the heap (whose
//! storage the list keeps). Unlike a general small vector, the length is a plain field and
//! "inline or not" is a comparison with it, so the engine's few operations a group — length,
//! indexing, a push, a clear — compile to a handful of instructions each.

/// Pages held in the list itself.
pub(super) const INLINE: usize = 8;

/// A list of page numbers, contiguous: the first `len` of `inline` while `len <= INLINE`,
/// else all of `heap`.
pub(super) struct Pages {
    len: usize,
    inline: [u64; INLINE],
    heap: Vec<u64>,
}

impl Pages {
    /// An empty list (allocates nothing).
    pub(super) const fn new() -> Pages {
        Pages {
            len: 0,
            inline: [0; INLINE],
            heap: Vec::new(),
        }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pages, in order.
    #[inline]
    pub(super) fn as_slice(&self) -> &[u64] {
        if self.len <= INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    #[inline]
    pub(super) fn push(&mut self, page: u64) {
        if self.len < INLINE {
            self.inline[self.len] = page;
        } else {
            if self.len == INLINE {
                self.heap.clear();
                self.heap.extend_from_slice(&self.inline);
            }
            self.heap.push(page);
        }
        self.len += 1;
    }

    /// Empties the list (the heap storage is kept).
    #[inline]
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    /// Removes the first `n` pages (`n <= len`).
    pub(super) fn remove_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let rest = self.len - n;
        if self.len <= INLINE {
            self.inline.copy_within(n..self.len, 0);
        } else if rest <= INLINE {
            self.inline[..rest].copy_from_slice(&self.heap[n..]);
        } else {
            self.heap.drain(..n);
        }
        self.len = rest;
    }

    /// Moves every page of `other` to the end of this list, leaving `other` empty.
    #[inline]
    pub(super) fn append(&mut self, other: &mut Pages) {
        if self.is_empty() && other.len <= INLINE {
            // The common case (an answered group becomes the retry list): a short copy.
            self.inline[..other.len].copy_from_slice(&other.inline[..other.len]);
            self.len = other.len;
        } else if self.is_empty() {
            std::mem::swap(&mut self.heap, &mut other.heap);
            self.len = other.len;
        } else {
            for &p in other.as_slice() {
                self.push(p);
            }
        }
        other.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list against a `Vec` model over pushes, front removals, appends and clears that
    /// cross the inline boundary in both directions.
    #[test]
    fn behaves_as_a_vec_across_the_inline_boundary() {
        let mut list = Pages::new();
        let mut model: Vec<u64> = Vec::new();
        let mut other = Pages::new();
        let mut other_model: Vec<u64> = Vec::new();
        let mut next = 0u64;
        // A fixed pseudo-random walk: pushes dominate so lengths reach well past INLINE.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match seed % 10 {
                0..=4 => {
                    list.push(next);
                    model.push(next);
                    next += 1;
                }
                5 => {
                    let n = (seed >> 8) as usize % (model.len() + 1);
                    list.remove_front(n);
                    model.drain(..n);
                }
                6 => {
                    for _ in 0..(seed >> 8) % 12 {
                        other.push(next);
                        other_model.push(next);
                        next += 1;
                    }
                    list.append(&mut other);
                    model.append(&mut other_model);
                }
                7 if seed.is_multiple_of(3) => {
                    list.clear();
                    model.clear();
                }
                _ => {}
            }
            assert_eq!(list.as_slice(), &model[..]);
            assert_eq!(list.len(), model.len());
            assert_eq!(list.is_empty(), model.is_empty());
            assert!(other.is_empty());
        }
    }

    #[test]
    fn short_lists_allocate_nothing() {
        let mut list = Pages::new();
        for p in 0..INLINE as u64 {
            list.push(p);
        }
        let mut retry = Pages::new();
        retry.append(&mut list);
        retry.remove_front(3);

        assert_eq!(retry.as_slice(), &[3, 4, 5, 6, 7]);
        assert_eq!(retry.heap.capacity() + list.heap.capacity(), 0);
    }
}

//! Counters bumped under a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Adds `n` to a counter whose every writer holds one same lock: a plain load and store,
/// not a locked read-modify-write (2-3 ns each uncontended here, `atomics_probe`; the fault path
/// runs about 45 of those a group: `scripts/fault-path-instructions --atomics`). Readers need no
/// lock: they see the value before or after an update, never a torn one.
#[inline]
pub(crate) fn add_locked(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

//! Counters bumped under a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Adds `n` to a counter whose every writer holds one same lock: a plain load and store,
/// not a locked read-modify-write (an atomic RMW costs ~10 ns on this machine class, and the
/// fault path bumps a dozen counters per group). Readers need no lock: they see the value
/// before or after an update, never a torn one.
#[inline]
pub(crate) fn add_locked(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

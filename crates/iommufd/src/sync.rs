//! Lock and atomic backends, chosen once (after `iommu-core`'s `sync` module).
//!
//! * default: `parking_lot` locks (no poisoning; the short "spinlock" of the fault object is a
//!   `parking_lot::Mutex` too: it is never held across anything that can wait on user space,
//!   SPEC H17, so a parking mutex there behaves like Linux's spinlock without burning a core);
//! * `--cfg loom`: loom's model-checked primitives, so `crate::fault`'s read/write/auto-response
//!   protocol is explored under every interleaving (see `crate::fault::loom_models`).

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::AtomicU64;

    /// Mutual exclusion (loom backend).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

#[cfg(not(loom))]
mod imp {
    pub(crate) use core::sync::atomic::AtomicU64;
    pub(crate) use parking_lot::{Mutex, MutexGuard};
}

pub(crate) use imp::*;

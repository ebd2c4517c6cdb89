//! Lock and atomic backends, chosen once so the rest of the crate is written against one API.
//!
//! * `std` (default): `parking_lot`, whose locks do not poison and park instead of spinning.
//! * no `std`: `spin`, the usual choice for `alloc`-only kernels.
//! * `--cfg loom`: loom's model-checked primitives, so the attach/lookup protocols are explored
//!   under every interleaving (see `crate::loom_models`).
//!
//! `Arc` is always `alloc`'s: reference counts are not the protocol under test, and keeping the
//! real `Arc` lets handles be type-erased and downcast.

#[cfg(loom)]
mod imp {
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

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    /// Reader-writer lock (loom backend).
    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(loom::sync::RwLock::new(v))
        }
        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }
        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }
}

#[cfg(all(not(loom), feature = "std"))]
mod imp {
    pub(crate) use parking_lot::{Mutex, MutexGuard, RwLock};
}

#[cfg(all(not(loom), not(feature = "std")))]
mod imp {
    pub(crate) use spin::{Mutex, MutexGuard, RwLock};
}

pub(crate) use imp::*;

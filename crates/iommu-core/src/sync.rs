//! Lock and atomic backends, chosen once so the rest of the crate is written against one API.
//!
//! * `std` (default): `parking_lot`, whose locks do not poison and park instead of spinning.
//! * no `std`: `spin`, the usual choice for `alloc`-only kernels.
//! * `--cfg loom`: loom's model-checked primitives, so the attach/lookup protocols are explored
//!   under every interleaving (see `crate::loom_models`).
//!
//! `Arc` is always `alloc`'s: reference counts are not the protocol under test, and keeping the
//! real `Arc` lets handles be type-erased and downcast.
//!
//! The crates above the core (`iommufd`) take their locks from here too, so one `--cfg loom`
//! switches every layer's protocol to model-checked primitives. Hidden from the docs: it is a
//! build seam, not API.

#[cfg(loom)]
mod imp {
    pub use loom::sync::atomic::{AtomicBool, AtomicU64};
    pub use loom::thread;

    /// A condition variable (loom backend), with the guard-by-value API of `std`.
    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        /// A new condition variable.
        pub fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        /// Releases the guard's lock, waits for a notification, locks again.
        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
        }
        /// Wakes one waiter.
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// Mutual exclusion (loom backend).
    #[derive(Debug)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);
    /// The guard of [`Mutex`].
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        /// A new unlocked mutex.
        pub fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }
        /// Locks, ignoring poisoning (as `parking_lot` has none).
        pub fn lock(&self) -> MutexGuard<'_, T> {
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
    pub struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        /// A new unlocked reader-writer lock.
        pub fn new(v: T) -> Self {
            Self(loom::sync::RwLock::new(v))
        }
        /// Shared access, ignoring poisoning.
        pub fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }
        /// Exclusive access, ignoring poisoning.
        pub fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }
}

#[cfg(all(not(loom), feature = "std"))]
mod imp {
    pub use core::sync::atomic::{AtomicBool, AtomicU64};
    pub use parking_lot::{Mutex, MutexGuard, RwLock};
    pub use std::thread;

    /// A condition variable (`parking_lot` backend), with the guard-by-value API of `std`.
    #[derive(Debug, Default)]
    pub struct Condvar(parking_lot::Condvar);

    impl Condvar {
        /// A new condition variable.
        pub const fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }
        /// Releases the guard's lock, waits for a notification, locks again.
        pub fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }
        /// Wakes one waiter.
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

#[cfg(all(not(loom), not(feature = "std")))]
mod imp {
    pub use core::sync::atomic::{AtomicBool, AtomicU64};
    pub use spin::{Mutex, MutexGuard, RwLock};
}

pub use imp::*;

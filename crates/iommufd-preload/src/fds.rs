//! The fd table: which fds are ours and the context or fault queue each stands for.

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use iommufd::{FaultFd, Ictx};

/// What one of our fds stands for.
#[derive(Clone)]
pub(crate) enum Entry {
    /// An open `/dev/iommu`.
    Ctx(Arc<Ictx>),
    /// A fault queue's fd.
    Fault(Arc<FaultFd>),
}

/// Our fds. Critical sections only clone or move entries: nothing that may call back into
/// `close` (dropping a context closes eventfds) runs under the lock.
static FDS: Mutex<BTreeMap<c_int, Entry>> = Mutex::new(BTreeMap::new());
/// Whether any fd was ever ours: until then every call passes through without the lock.
static ANY: AtomicBool = AtomicBool::new(false);

pub(crate) fn lookup(fd: c_int) -> Option<Entry> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    FDS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&fd)
        .cloned()
}

pub(crate) fn register(fd: c_int, e: Entry) -> Option<Entry> {
    ANY.store(true, Ordering::Release);
    FDS.lock().unwrap_or_else(|e| e.into_inner()).insert(fd, e)
}

pub(crate) fn unregister(fd: c_int) -> Option<Entry> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    FDS.lock().unwrap_or_else(|e| e.into_inner()).remove(&fd)
}

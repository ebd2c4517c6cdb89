//! The fd table: which fds are ours and the context or fault queue each stands for.

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Fds below this are marked in [`MAYBE_OURS`]; above it every call takes the lock.
const MARKED_FDS: usize = 1 << 16;
/// One bit per fd below [`MARKED_FDS`], set while the fd is ours (changed under the table's
/// lock, with the table): a `read`, `write` or `close` of any other fd costs one atomic load,
/// not the lock.
static MAYBE_OURS: [AtomicU64; MARKED_FDS / 64] = [const { AtomicU64::new(0) }; MARKED_FDS / 64];

/// The word and bit of `fd` in [`MAYBE_OURS`], if it has one.
fn mark(fd: c_int) -> Option<(&'static AtomicU64, u64)> {
    let i = usize::try_from(fd).ok().filter(|&i| i < MARKED_FDS)?;
    Some((&MAYBE_OURS[i / 64], 1 << (i % 64)))
}

/// False when `fd` is surely not ours (its bit is clear); true when it may be (its bit is set,
/// or it is past the marked range), and only the table can tell.
fn maybe_ours(fd: c_int) -> bool {
    mark(fd).is_none_or(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
}

pub(crate) fn lookup(fd: c_int) -> Option<Entry> {
    if !ANY.load(Ordering::Acquire) || !maybe_ours(fd) {
        return None;
    }
    FDS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&fd)
        .cloned()
}

pub(crate) fn register(fd: c_int, e: Entry) -> Option<Entry> {
    ANY.store(true, Ordering::Release);
    let mut fds = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let old = fds.insert(fd, e);
    if let Some((word, bit)) = mark(fd) {
        word.fetch_or(bit, Ordering::Release);
    }
    old
}

pub(crate) fn unregister(fd: c_int) -> Option<Entry> {
    if !ANY.load(Ordering::Acquire) || !maybe_ours(fd) {
        return None;
    }
    let mut fds = FDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((word, bit)) = mark(fd) {
        word.fetch_and(!bit, Ordering::Release);
    }
    fds.remove(&fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registered_fds_are_ours_marked_or_not() {
        // This test binary interposes `read`, `write` and `close` too, so the fds are far from
        // any the process uses: two marked ones in different words, one past the marked range.
        let ctx = || Entry::Ctx(Arc::new(Ictx::new()));
        for fd in [40_001, 64_000, MARKED_FDS as c_int + 3] {
            assert!(lookup(fd).is_none());
            assert!(register(fd, ctx()).is_none());
            assert!(matches!(lookup(fd), Some(Entry::Ctx(_))), "{fd}");
            assert!(
                maybe_ours(fd),
                "a registered fd is marked (or past the bitmap)"
            );
            assert!(lookup(fd + 1).is_none(), "a neighbour is not ours");
            assert!(unregister(fd).is_some());
            assert!(lookup(fd).is_none());
            if mark(fd).is_some() {
                // The fast path skips the table for these: the mark must be gone.
                assert!(!maybe_ours(fd), "{fd} still marked after unregister");
                assert!(!maybe_ours(fd + 1), "{} marked", fd + 1);
            }
            assert!(unregister(fd).is_none());
        }
        assert!(lookup(-1).is_none());
    }
}

//! The IOPF work queue (Linux `iopf_queue`): worker threads that run fault handlers which may
//! sleep (SVA resolving faults against an mm), off the driver's reporting thread.
//!
//! One queue per IOMMU, shared by its devices. Groups may run in any order and in parallel
//! (Linux's workqueue is unordered); only the requests inside one group are ordered. Each
//! device's queued work is counted so [`iopf_queue_flush_dev`] can wait for it: unbind flushes
//! before it returns, so no SVA handler runs for a PASID after its unbind returned.
//!
//! A *manual* queue ([`IopfQueue::new_manual`]) has no threads: work waits until someone calls
//! [`IopfQueue::run_one`], and a flush runs the queued work on the flushing thread. A
//! deterministic scheduler uses it to decide itself when each handler runs.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::collections::VecDeque;

use core::cell::{Cell, RefCell};
use core::sync::atomic::Ordering;

use crate::sync::thread::{self, JoinHandle};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex};

use crate::device::Device;
use crate::error::{einval, enodev, Condition, Result};
use crate::iopf::FaultParam;
use crate::iopf::IopfGroup;

/// A queued group and the handler work to run on it.
type Work = (IopfGroup, fn(IopfGroup));

/// The work waiting to run, and who waits for it.
struct Pending {
    work: VecDeque<Work>,
    /// Workers asleep on `Shared::more`.
    sleeping: usize,
}

struct Shared {
    pending: Mutex<Pending>,
    more: Condvar,
    /// Still accepts work. Cleared by shutdown under the `pending` lock (so a worker that
    /// checks it there before sleeping cannot miss it), read without the lock by a helper.
    open: AtomicBool,
}

// The queue (its `Shared` address) the current thread promised to help with, see
// [`IopfQueue::help`], 0 when none; and the work it queued there, which it runs itself: the
// work stays on this thread, with no lock (a workqueue's per-CPU list, in Linux terms).
#[cfg(not(loom))]
std::thread_local! {
    static HELPING: Cell<usize> = const { Cell::new(0) };
    static LOCAL: RefCell<VecDeque<Work>> = const { RefCell::new(VecDeque::new()) };
}
#[cfg(loom)]
loom::thread_local! {
    static HELPING: Cell<usize> = Cell::new(0);
    static LOCAL: RefCell<VecDeque<Work>> = RefCell::new(VecDeque::new());
}

/// Takes the oldest work item the current thread queued for the queue it helps.
fn pop_local() -> Option<Work> {
    LOCAL.with(|l| l.borrow_mut().pop_front())
}

impl Shared {
    fn id(&self) -> usize {
        self as *const Shared as usize
    }

    /// Takes the oldest queued work item.
    fn pop(&self) -> Option<Work> {
        self.pending.lock().work.pop_front()
    }

    /// Wakes one sleeping worker if work is waiting.
    fn wake_for_leftovers(&self) {
        let p = self.pending.lock();
        if !p.work.is_empty() && p.sleeping > 0 {
            self.more.notify_one();
        }
    }
}

/// A pool of worker threads running page-fault handlers, named `iopf_queue/<name>`, or a
/// manual queue whose work runs when its owner says so.
///
/// # Waking (run-to-completion)
/// A worker asleep costs a futex wake-up to start (several µs of system CPU on this machine
/// class), which is more than the work of a group. So a thread that is about to wait for the
/// result of this queue's work anyway (a device waiting for its page response) may *help*
/// ([`IopfQueue::help`]): while it helps, work it queues itself does not wake a worker and
/// stays on a thread-local list, which it runs on its own thread instead of sleeping. When it stops helping, a worker is
/// woken for whatever it left queued, so no work waits for a helper that went away.
pub struct IopfQueue {
    name: String,
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// No worker threads: work runs only when the owner says so.
    manual: bool,
}

/// A thread's promise to run [`IopfQueue`] work it queued itself (see [`IopfQueue::help`]).
/// Dropping it wakes a worker for work left queued.
pub struct IopfHelper<'a> {
    queue: &'a IopfQueue,
    /// Tied to the thread whose thread-local state it set: not `Send`.
    _thread: core::marker::PhantomData<*const ()>,
}

impl IopfHelper<'_> {
    /// Runs the oldest work item this thread queued itself; `false` if none is left. Work
    /// others queued is not taken: whoever queued it woke a worker for it. So helping takes
    /// no lock.
    pub fn run_one(&self) -> bool {
        match pop_local() {
            Some(work) => {
                run_work(work);
                true
            }
            None => false,
        }
    }
}

impl Drop for IopfHelper<'_> {
    fn drop(&mut self) {
        // Helpers do not nest: the thread helped nothing before.
        HELPING.with(|h| h.set(0));
        // Work this thread queued and did not run goes to the workers (or runs here if they
        // have left: a shut-down queue still runs what it accepted).
        let shared = &self.queue.shared;
        let mut left = false;
        while let Some(work) = pop_local() {
            let mut p = shared.pending.lock();
            if shared.open.load(Ordering::Acquire) {
                p.work.push_back(work);
                left = true;
            } else {
                drop(p);
                run_work(work);
            }
        }
        // Work others queued woke a worker when it was queued; only this thread's needs one.
        if left {
            shared.wake_for_leftovers();
        }
    }
}

/// Runs one work item and counts it done for its device's flush.
fn run_work((group, run): Work) {
    let param = group.param().clone();
    run(group);
    param.work.finish();
}

/// Per-device count of queued or running work, for flushing.
///
/// One atomic word holds the count (low bits) and the number of flushers waiting (high bits):
/// queueing and finishing work cost one atomic each, and the lock is taken only by a flusher
/// and by a finisher that brings the count to zero while a flusher waits. No lost wake-up:
/// both sides change the same word, so one of them comes first in its modification order — a
/// flusher that came first is seen by the finisher, which takes the lock before it notifies
/// (so after the flusher sleeps, or before it read the count under the lock); a finisher that
/// came first left a zero count for the flusher to read.
#[derive(Default)]
pub(crate) struct DeviceWork {
    state: AtomicU64,
    lock: Mutex<()>,
    idle: Condvar,
}

impl DeviceWork {
    const WAITER: u64 = 1 << 40;
    const COUNT: u64 = Self::WAITER - 1;

    fn start(&self) {
        self.state.fetch_add(1, Ordering::AcqRel);
    }

    fn finish(&self) {
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        if prev & Self::COUNT == 1 && prev >= Self::WAITER {
            let _g = self.lock.lock();
            self.idle.notify_all();
        }
    }

    fn pending(&self) -> u64 {
        self.state.load(Ordering::Acquire) & Self::COUNT
    }

    fn wait_idle(&self) {
        let mut g = self.lock.lock();
        self.state.fetch_add(Self::WAITER, Ordering::AcqRel);
        while self.pending() != 0 {
            g = self.idle.wait(g);
        }
        self.state.fetch_sub(Self::WAITER, Ordering::AcqRel);
    }
}

impl IopfQueue {
    fn with_shared(name: &str, manual: bool) -> IopfQueue {
        IopfQueue {
            name: name.into(),
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending {
                    work: VecDeque::new(),
                    sleeping: 0,
                }),
                more: Condvar::new(),
                open: AtomicBool::new(true),
            }),
            workers: Mutex::new(Vec::new()),
            manual,
        }
    }

    /// A queue with `workers` threads (at least one).
    pub fn new(name: &str, workers: usize) -> Result<Arc<IopfQueue>> {
        if workers == 0 {
            return Err(einval("an IOPF queue needs at least one worker"));
        }
        let queue = Self::with_shared(name, false);
        // Workers report their trace events where their creator does.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        for i in 0..workers {
            let shared = queue.shared.clone();
            let dispatch = dispatch.clone();
            let spawned = thread::Builder::new()
                .name(format!("iopf_queue/{name}.{i}"))
                .spawn(move || tracing::dispatcher::with_default(&dispatch, || worker(&shared)));
            match spawned {
                Ok(h) => queue.workers.lock().push(h),
                Err(_) => {
                    queue.shutdown();
                    return Err(crate::error::enomem("cannot spawn an IOPF worker"));
                }
            }
        }
        Ok(Arc::new(queue))
    }

    /// A queue without threads: work runs only in [`IopfQueue::run_one`], in a flush of its
    /// device, or at [`IopfQueue::shutdown`], always on the calling thread.
    pub fn new_manual(name: &str) -> Arc<IopfQueue> {
        Arc::new(Self::with_shared(name, true))
    }

    /// Whether this is a manual queue.
    pub fn is_manual(&self) -> bool {
        self.manual
    }

    /// Work items queued and not yet started.
    pub fn pending(&self) -> usize {
        self.shared.pending.lock().work.len()
    }

    /// Manual queue: runs the oldest queued work item on the calling thread; `false` if there
    /// was none (or the queue has threads, which run their own work: see
    /// [`IopfQueue::help`]).
    pub fn run_one(&self) -> bool {
        if !self.manual {
            return false;
        }
        match self.shared.pop() {
            Some(work) => {
                run_work(work);
                true
            }
            None => false,
        }
    }

    /// The calling thread promises to run the work it queues on this (threaded) queue until
    /// the returned helper is dropped, so that work wakes no worker (see "Waking"). `None` for
    /// a manual queue, whose work runs only when its owner says so, and when the thread
    /// already helps a queue (helpers do not nest).
    ///
    /// The helper must only be held by a thread that runs [`IopfHelper::run_one`] before it
    /// blocks; dropping it hands leftovers to the workers.
    pub fn help(&self) -> Option<IopfHelper<'_>> {
        if self.manual || HELPING.with(|h| h.get()) != 0 {
            return None;
        }
        HELPING.with(|h| h.set(self.shared.id()));
        Some(IopfHelper {
            queue: self,
            _thread: core::marker::PhantomData,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the calling thread helps this (open, threaded) queue: then work it queues stays
    /// on its thread-local list.
    fn helped_here(&self) -> bool {
        !self.manual
            && HELPING.with(|h| h.get()) == self.shared.id()
            && self.shared.open.load(Ordering::Acquire)
    }

    /// Keeps `run(group)` on the calling (helping) thread's list, counted for flushing.
    fn keep_local(group: IopfGroup, run: fn(IopfGroup)) {
        group.param().work.start();
        LOCAL.with(|l| l.borrow_mut().push_back((group, run)));
    }

    /// Queues `run(group)` for the workers, counted against the group's device for flushing,
    /// waking a sleeping worker; gives the group back when the queue is shut down.
    fn push_shared(&self, group: IopfGroup, run: fn(IopfGroup)) -> Result<(), IopfGroup> {
        let mut p = self.shared.pending.lock();
        if !self.shared.open.load(Ordering::Acquire) {
            return Err(group);
        }
        group.param().work.start();
        p.work.push_back((group, run));
        if !self.manual && p.sleeping > 0 {
            self.shared.more.notify_one();
        }
        Ok(())
    }

    /// Queues `run(group)` on the queue of the group's device; gives the group back when the
    /// device has no queue or it is shut down. A thread helping that queue keeps the work on its
    /// own list (no worker woken, no reference count touched); any other wakes a worker.
    pub(crate) fn submit_to_device_queue(
        group: IopfGroup,
        run: fn(IopfGroup),
    ) -> Result<(), IopfGroup> {
        match group.param().queue.as_deref().map(IopfQueue::helped_here) {
            None => Err(group),
            Some(true) => {
                Self::keep_local(group, run);
                Ok(())
            }
            // Not helped here: the queue's reference is taken, as the group moves.
            Some(false) => match group.param().queue.clone() {
                Some(q) => q.push_shared(group, run),
                None => Err(group),
            },
        }
    }

    /// Whether [`IopfQueue::shutdown`] ran: the queue takes no more work.
    pub fn is_shut_down(&self) -> bool {
        !self.shared.open.load(Ordering::Acquire)
    }

    /// Stops accepting work, lets the workers finish what is queued (a manual queue runs it
    /// here), and joins them (Linux `iopf_queue_free`). Idempotent; also done on drop.
    pub fn shutdown(&self) {
        {
            let _p = self.shared.pending.lock();
            self.shared.open.store(false, Ordering::Release);
            self.shared.more.notify_all();
        }
        if self.manual {
            while self.run_one() {}
        }
        let current = thread::current().id();
        for h in self.workers.lock().drain(..) {
            // A handler dropping the last reference to its own queue must not join itself.
            if h.thread().id() != current {
                let _ = h.join();
            }
        }
    }
}

/// A worker's loop: run queued work, sleep when there is none, leave once shut down and
/// drained.
fn worker(shared: &Shared) {
    let mut p = shared.pending.lock();
    loop {
        if let Some(work) = p.work.pop_front() {
            drop(p);
            run_work(work);
            p = shared.pending.lock();
            continue;
        }
        if !shared.open.load(Ordering::Acquire) {
            return;
        }
        p.sleeping += 1;
        p = shared.more.wait(p);
        p.sleeping -= 1;
    }
}

impl Drop for IopfQueue {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl core::fmt::Debug for IopfQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IopfQueue")
            .field("name", &self.name)
            .finish()
    }
}

/// Enables fault reporting for `dev` with its handlers' work run on `queue` (Linux
/// `iopf_queue_add_device`). Errors as [`crate::iopf_enable`], and `EINVAL` for a queue that
/// was shut down (in Linux that queue is freed memory; here it would take no work, so every
/// group would be handled inline behind the caller's back).
pub fn iopf_queue_add_device(queue: &Arc<IopfQueue>, dev: &Device) -> Result<()> {
    if queue.is_shut_down() {
        return Err(einval("IOPF queue is shut down"));
    }
    crate::iopf::publish_fault_param(dev, FaultParam::new(Some(queue.clone())))
}

/// Waits until every handler work item queued for `dev` has run (Linux `iopf_queue_flush_dev`).
/// Drivers call it after they stopped new reports for a PASID and before the PASID is reused.
/// `ENODEV` if fault reporting is not enabled.
pub fn iopf_queue_flush_dev(dev: &Device) -> Result<()> {
    let param = dev.fault_param().ok_or(
        enodev("fault reporting is not enabled").because(Condition::FaultReportingDisabled),
    )?;
    flush_param(&param);
    Ok(())
}

/// Waits until every work item queued under `param` has run; a manual queue has nobody else to
/// run it, so it runs here, oldest first.
pub(crate) fn flush_param(param: &FaultParam) {
    if let Some(q) = &param.queue {
        if q.is_manual() {
            while param.work.pending() != 0 && q.run_one() {}
        } else {
            // A helper flushing (an SVA handler unbinding) runs its own queued work first: no
            // one else can.
            if HELPING.with(|h| h.get()) == q.shared.id() {
                while let Some(work) = pop_local() {
                    run_work(work);
                }
            }
            // Work another thread queued while helping is run by that thread, or handed to the
            // workers (with a wake) when it stops helping; work in the shared queue woke a
            // worker when it was queued. Nothing is left to wake here.
        }
    }
    param.work.wait_idle();
}

/// The IOPF queue `dev`'s handler work runs on, while fault reporting is enabled with one.
pub fn iopf_queue_of(dev: &Device) -> Option<Arc<IopfQueue>> {
    dev.fault_param
        .read()
        .as_ref()
        .and_then(|p| p.queue.clone())
}

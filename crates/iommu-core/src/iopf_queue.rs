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
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::device::Device;
use crate::error::{einval, enodev, Condition, Result};
use crate::iopf::FaultParam;
use crate::iopf::IopfGroup;

/// A queued group and the handler work to run on it.
type Work = (IopfGroup, fn(IopfGroup));

/// A pool of worker threads running page-fault handlers, named `iopf_queue/<name>`, or a
/// manual queue whose work runs when its owner says so.
pub struct IopfQueue {
    name: String,
    tx: Mutex<Option<crossbeam_channel::Sender<Work>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// `Some` for a manual queue: the work in arrival order, and whether it still accepts work.
    manual: Option<Mutex<(VecDeque<Work>, bool)>>,
}

/// Runs one work item and counts it done for its device's flush.
fn run_work((group, run): Work) {
    let param = group.param().clone();
    run(group);
    param.work.finish();
}

/// Per-device count of queued or running work, for flushing.
#[derive(Default)]
pub(crate) struct DeviceWork {
    pending: Mutex<u64>,
    idle: Condvar,
}

impl DeviceWork {
    fn start(&self) {
        *self.pending.lock() += 1;
    }

    fn finish(&self) {
        let mut p = self.pending.lock();
        *p -= 1;
        if *p == 0 {
            self.idle.notify_all();
        }
    }

    fn pending(&self) -> u64 {
        *self.pending.lock()
    }

    fn wait_idle(&self) {
        let mut p = self.pending.lock();
        while *p != 0 {
            self.idle.wait(&mut p);
        }
    }
}

impl IopfQueue {
    /// A queue with `workers` threads (at least one).
    pub fn new(name: &str, workers: usize) -> Result<Arc<IopfQueue>> {
        if workers == 0 {
            return Err(einval("an IOPF queue needs at least one worker"));
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        // Workers report their trace events where their creator does.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let handles = (0..workers)
            .map(|i| {
                let rx = rx.clone();
                let dispatch = dispatch.clone();
                std::thread::Builder::new()
                    .name(format!("iopf_queue/{name}.{i}"))
                    .spawn(move || {
                        tracing::dispatcher::with_default(&dispatch, || {
                            rx.into_iter().for_each(run_work)
                        })
                    })
                    .map_err(|_| crate::error::enomem("cannot spawn an IOPF worker"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(IopfQueue {
            name: name.into(),
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
            manual: None,
        }))
    }

    /// A queue without threads: work runs only in [`IopfQueue::run_one`], in a flush of its
    /// device, or at [`IopfQueue::shutdown`], always on the calling thread.
    pub fn new_manual(name: &str) -> Arc<IopfQueue> {
        Arc::new(IopfQueue {
            name: name.into(),
            tx: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            manual: Some(Mutex::new((VecDeque::new(), true))),
        })
    }

    /// Whether this is a manual queue.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Work items queued and not yet started (always 0 on a threaded queue, whose workers take
    /// work at once).
    pub fn pending(&self) -> usize {
        self.manual.as_ref().map_or(0, |m| m.lock().0.len())
    }

    /// Runs the oldest queued work item on the calling thread; `false` if there was none (or
    /// the queue has threads, which run their own work).
    pub fn run_one(&self) -> bool {
        let Some(m) = &self.manual else {
            return false;
        };
        let next = m.lock().0.pop_front();
        match next {
            Some(work) => {
                run_work(work);
                true
            }
            None => false,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `run(group)` on the workers, counted against the group's device for flushing;
    /// gives the group back when the queue is shut down.
    pub(crate) fn submit(&self, group: IopfGroup, run: fn(IopfGroup)) -> Result<(), IopfGroup> {
        if let Some(m) = &self.manual {
            let mut q = m.lock();
            if !q.1 {
                return Err(group);
            }
            group.param().work.start();
            q.0.push_back((group, run));
            return Ok(());
        }
        // An unbounded send never blocks: it may happen under the lock, saving a clone of the
        // sender per fault.
        let tx = self.tx.lock();
        let Some(tx) = tx.as_ref() else {
            return Err(group);
        };
        group.param().work.start();
        tx.send((group, run)).map_err(|back| {
            let group = back.into_inner().0;
            group.param().work.finish();
            group
        })
    }

    /// Whether [`IopfQueue::shutdown`] ran: the queue takes no more work.
    pub fn is_shut_down(&self) -> bool {
        match &self.manual {
            Some(m) => !m.lock().1,
            None => self.tx.lock().is_none(),
        }
    }

    /// Stops accepting work, lets the workers finish what is queued, and joins them (Linux
    /// `iopf_queue_free`). Idempotent; also done on drop.
    pub fn shutdown(&self) {
        if let Some(m) = &self.manual {
            m.lock().1 = false;
            while self.run_one() {}
        }
        self.tx.lock().take();
        let current = std::thread::current().id();
        for h in self.workers.lock().drain(..) {
            // A handler dropping the last reference to its own queue must not join itself.
            if h.thread().id() != current {
                let _ = h.join();
            }
        }
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
    if let Some(q) = param.queue.as_ref().filter(|q| q.is_manual()) {
        while param.work.pending() != 0 && q.run_one() {}
    }
    param.work.wait_idle();
}

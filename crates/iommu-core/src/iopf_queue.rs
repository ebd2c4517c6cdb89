//! The IOPF work queue (Linux `iopf_queue`): worker threads that run fault handlers which may
//! sleep (SVA resolving faults against an mm), off the driver's reporting thread.
//!
//! One queue per IOMMU, shared by its devices. Groups may run in any order and in parallel
//! (Linux's workqueue is unordered); only the requests inside one group are ordered. Each
//! device's queued work is counted so [`iopf_queue_flush_dev`] can wait for it: unbind flushes
//! before it returns, so no SVA handler runs for a PASID after its unbind returned.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::device::Device;
use crate::error::{einval, enodev, Result};
use crate::iopf::FaultParam;
use crate::iopf::IopfGroup;

/// A queued group and the handler work to run on it.
type Work = (IopfGroup, fn(IopfGroup));

/// A pool of worker threads running page-fault handlers, named `iopf_queue/<name>`.
pub struct IopfQueue {
    name: String,
    tx: Mutex<Option<crossbeam_channel::Sender<Work>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
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
        let handles = (0..workers)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("iopf_queue/{name}.{i}"))
                    .spawn(move || {
                        for (group, run) in rx {
                            let param = group.param().clone();
                            run(group);
                            param.work.finish();
                        }
                    })
                    .map_err(|_| crate::error::enomem("cannot spawn an IOPF worker"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(IopfQueue {
            name: name.into(),
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
        }))
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `run(group)` on the workers, counted against the group's device for flushing;
    /// gives the group back when the queue is shut down.
    pub(crate) fn submit(&self, group: IopfGroup, run: fn(IopfGroup)) -> Result<(), IopfGroup> {
        let Some(tx) = self.tx.lock().clone() else {
            return Err(group);
        };
        let param = group.param().clone();
        param.work.start();
        tx.send((group, run)).map_err(|back| {
            param.work.finish();
            back.into_inner().0
        })
    }

    /// Stops accepting work, lets the workers finish what is queued, and joins them (Linux
    /// `iopf_queue_free`). Idempotent; also done on drop.
    pub fn shutdown(&self) {
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
/// `iopf_queue_add_device`). Errors as [`crate::iopf_enable`].
pub fn iopf_queue_add_device(queue: &Arc<IopfQueue>, dev: &Device) -> Result<()> {
    crate::iopf::publish_fault_param(dev, FaultParam::new(Some(queue.clone())))
}

/// Waits until every handler work item queued for `dev` has run (Linux `iopf_queue_flush_dev`).
/// Drivers call it after they stopped new reports for a PASID and before the PASID is reused.
/// `ENODEV` if fault reporting is not enabled.
pub fn iopf_queue_flush_dev(dev: &Device) -> Result<()> {
    let param = dev
        .fault_param()
        .ok_or(enodev("fault reporting is not enabled"))?;
    param.work.wait_idle();
    Ok(())
}

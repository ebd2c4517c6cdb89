//! The page request queue (VT-d PRQ, AMD PPR log) and its queue thread.
//!
//! Endpoints write page requests into a bounded ring; one thread per IOMMU (`prq/<name>`, the
//! driver's threaded IRQ handler) drains it and reports each request with
//! [`iommu_core::report_device_fault`].
//!
//! # Overflow (VT-d "Page Request Overflow", PRO)
//! When a request finds the ring full, the hardware sets the overflow flag. While the flag is
//! set no request is written to the ring: a request that needs a response (LAST_PAGE) is
//! answered Success by the hardware itself, so the device retries and no group is silently lost
//! (H9); a partial request is dropped (H10: partials are never answered). The queue thread,
//! once it has reported everything queued before the overflow, calls
//! [`iommu_core::iopf_discard_partial`] for every device of the IOMMU (their partial groups may
//! have lost their last request) and clears the flag.
//!
//! # Drain (SPEC H2)
//! Every request has a sequence number. [`Prq::drain`] waits until the queue thread has
//! *finished reporting* every request enqueued before the call; `remove_dev_pasid` uses it so no
//! request for the PASID is still on its way into the core when the PASID is detached.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use iommu_core::{iopf_discard_partial, report_device_fault, Device, PageRequest};
use parking_lot::{Condvar, Mutex};

struct Entry {
    dev: Arc<Device>,
    req: PageRequest,
}

struct State {
    ring: VecDeque<Entry>,
    overflow: bool,
    /// Requests written to the ring so far.
    enqueued: u64,
    /// Requests the queue thread has finished reporting.
    consumed: u64,
    sleeping: bool,
    shutdown: bool,
}

/// Counters of one page request queue.
#[derive(Debug, Default)]
pub(crate) struct PrqCounters {
    pub requests: AtomicU64,
    pub overflows: AtomicU64,
    pub auto_responses: AtomicU64,
    pub dropped_partials: AtomicU64,
    pub discards: AtomicU64,
}

/// What became of a group the device sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Its last request is in the ring; the response will come from software.
    Queued,
    /// The ring overflowed and the hardware answered the group Success itself.
    AutoSuccess,
}

/// A bounded page request queue.
pub(crate) struct Prq {
    depth: usize,
    state: Mutex<State>,
    work: Condvar,
    drained: Condvar,
    devices: Mutex<Vec<Weak<Device>>>,
    thread: Mutex<Option<ThreadId>>,
    /// Bumped on every write (and on overflow), so the idle queue thread can poll lock-free.
    written: AtomicU64,
    pub counters: PrqCounters,
}

const YIELD_WAIT: Duration = Duration::from_micros(200);

impl Prq {
    pub fn new(depth: usize) -> Arc<Prq> {
        Arc::new(Prq {
            depth: depth.max(1),
            state: Mutex::new(State {
                ring: VecDeque::with_capacity(depth.clamp(1, 4096)),
                overflow: false,
                enqueued: 0,
                consumed: 0,
                sleeping: false,
                shutdown: false,
            }),
            work: Condvar::new(),
            drained: Condvar::new(),
            devices: Mutex::new(Vec::new()),
            thread: Mutex::new(None),
            written: AtomicU64::new(0),
            counters: PrqCounters::default(),
        })
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Requests currently in the ring.
    pub fn len(&self) -> usize {
        self.state.lock().ring.len()
    }

    /// Whether the overflow flag is set.
    pub fn overflowed(&self) -> bool {
        self.state.lock().overflow
    }

    /// A device whose partial requests must be discarded after an overflow.
    pub fn add_device(&self, dev: &Arc<Device>) {
        let mut d = self.devices.lock();
        d.retain(|w| w.strong_count() > 0);
        d.push(Arc::downgrade(dev));
    }

    /// Writes one page request group (its requests in order, the last flagged LAST_PAGE).
    pub fn push_group(&self, dev: &Arc<Device>, reqs: &[PageRequest]) -> Pushed {
        let mut st = self.state.lock();
        let mut outcome = Pushed::Queued;
        let mut wrote = false;
        for req in reqs {
            if !st.overflow && st.ring.len() >= self.depth {
                st.overflow = true;
                self.counters.overflows.fetch_add(1, Relaxed);
            }
            if st.overflow {
                if req.is_last() {
                    self.counters.auto_responses.fetch_add(1, Relaxed);
                    outcome = Pushed::AutoSuccess;
                } else {
                    self.counters.dropped_partials.fetch_add(1, Relaxed);
                }
                continue;
            }
            st.ring.push_back(Entry {
                dev: dev.clone(),
                req: *req,
            });
            st.enqueued += 1;
            wrote = true;
            self.counters.requests.fetch_add(1, Relaxed);
        }
        if wrote || st.overflow {
            self.written.fetch_add(1, Relaxed);
        }
        if (wrote || st.overflow) && st.sleeping {
            self.work.notify_one();
        }
        outcome
    }

    /// Waits until every request written before the call has been reported (SPEC H2). Returns
    /// at once on the queue thread itself (it cannot wait for itself) and after shutdown.
    pub fn drain(&self) {
        if *self.thread.lock() == Some(std::thread::current().id()) {
            return;
        }
        let mut st = self.state.lock();
        let target = st.enqueued;
        while st.consumed < target && !st.shutdown {
            self.drained.wait(&mut st);
        }
    }

    /// Stops the queue thread; requests still in the ring are dropped unreported.
    pub fn shutdown(&self) {
        let mut st = self.state.lock();
        st.shutdown = true;
        self.work.notify_all();
        self.drained.notify_all();
    }

    /// The queue thread's body.
    pub fn run(self: Arc<Self>) {
        *self.thread.lock() = Some(std::thread::current().id());
        const BATCH: usize = 256;
        let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
        loop {
            let overflow = {
                let mut st = self.state.lock();
                let idle_since = Instant::now();
                while st.ring.is_empty() && !st.overflow && !st.shutdown {
                    // Yield-poll the lock-free counter before sleeping: a blocked thread's
                    // wake-up costs ~25 µs here (ANCHORS); spinning starves the other threads
                    // on two shared cores (measured).
                    if idle_since.elapsed() < YIELD_WAIT {
                        // Read under the lock: any later write bumps it.
                        let seen = self.written.load(Relaxed);
                        drop(st);
                        while self.written.load(Relaxed) == seen
                            && idle_since.elapsed() < YIELD_WAIT
                        {
                            std::thread::yield_now();
                        }
                        st = self.state.lock();
                        continue;
                    }
                    st.sleeping = true;
                    self.work.wait(&mut st);
                    st.sleeping = false;
                }
                if st.shutdown {
                    return;
                }
                let n = st.ring.len().min(BATCH);
                batch.extend(st.ring.drain(..n));
                st.overflow && st.ring.is_empty()
            };
            let n = batch.len() as u64;
            for e in batch.drain(..) {
                // An error means the core already answered the request (SPEC §4.2 "bad").
                let _ = report_device_fault(&e.dev, e.req);
            }
            if overflow {
                // Everything queued before the overflow has been reported: drop the partial
                // groups whose last request the hardware may have answered itself.
                let devs: Vec<Arc<Device>> = self
                    .devices
                    .lock()
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect();
                for d in devs {
                    let _ = iopf_discard_partial(&d);
                }
                self.counters.discards.fetch_add(1, Relaxed);
            }
            let mut st = self.state.lock();
            if overflow {
                st.overflow = false;
            }
            st.consumed += n;
            self.drained.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_core::IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST;

    fn group(grpid: u32, n: usize) -> Vec<PageRequest> {
        (0..n)
            .map(|i| PageRequest {
                flags: if i + 1 == n { LAST } else { 0 },
                grpid,
                addr: (i as u64) << 12,
                ..PageRequest::default()
            })
            .collect()
    }

    #[test]
    fn overflow_auto_answers_last_drops_partials_and_stays_set_until_cleared() {
        let prq = Prq::new(3);
        let dev = Device::new_unmanaged("d", 0).unwrap();
        assert_eq!(prq.push_group(&dev, &group(1, 2)), Pushed::Queued);
        // One slot left: the partial fits, the LAST overflows and is answered by hardware.
        assert_eq!(prq.push_group(&dev, &group(2, 2)), Pushed::AutoSuccess);
        assert!(prq.overflowed());
        // While the flag is set nothing is written, even a group that would fit.
        assert_eq!(prq.push_group(&dev, &group(3, 1)), Pushed::AutoSuccess);
        let c = &prq.counters;
        assert_eq!(c.requests.load(Relaxed), 3);
        assert_eq!(c.overflows.load(Relaxed), 1);
        assert_eq!(c.auto_responses.load(Relaxed), 2);
        assert_eq!(prq.len(), 3);
        // The queue thread reports the ring (the unmanaged device gets the core's "bad" path),
        // discards partials, clears the flag, and drain() returns.
        let t = std::thread::spawn({
            let prq = prq.clone();
            move || prq.run()
        });
        prq.drain();
        assert_eq!(prq.len(), 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while prq.overflowed() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!prq.overflowed());
        assert_eq!(c.discards.load(Relaxed), 1);
        assert_eq!(prq.push_group(&dev, &group(4, 1)), Pushed::Queued);
        prq.shutdown();
        t.join().unwrap();
    }
}

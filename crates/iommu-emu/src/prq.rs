//! The page request queue (VT-d PRQ, AMD PPR log) and its queue thread.
//!
//! Endpoints write page requests into a bounded ring of VT-d page request descriptors
//! ([`PageRequestDesc`]: encoded on the way in, decoded for the report); one thread per IOMMU (`prq/<name>`, the
//! driver's threaded IRQ handler) drains it and reports each request with
//! [`iommu_core::report_device_fault`].
//!
//! # Manual mode
//! With `EmuIommuConfig::prq_thread` false there is no queue thread: requests stay in the ring
//! until someone calls `EmuIommu::prq_step` (a deterministic scheduler, a test), which reports
//! up to a given number of them on the calling thread. The queue thread's loop and the step
//! share one function ("report a batch"), so both report, handle overflow and count exactly
//! the same way. [`Prq::drain`] then has no thread to wait for and reports inline instead.
//!
//! # Overflow (VT-d "Page Request Overflow", PRO)
//! When a request finds the ring full, the hardware sets the overflow flag. While the flag is
//! set no request is written to the ring: a request that needs a response (LAST_PAGE) is
//! answered Success by the hardware itself, so the device retries and no group is silently lost
//! (H9); a partial request is dropped (H10: partials are never answered). The reporter (queue
//! thread or step), once it has reported everything queued before the overflow, calls
//! [`iommu_core::iopf_discard_partial`] for every device of the IOMMU (their partial groups may
//! have lost their last request) and clears the flag.
//!
//! # Waking
//! Waking the sleeping queue thread costs a futex wake-up (several µs of system CPU on this
//! machine class), more than reporting a request. So a thread that writes a group and then
//! waits for its response anyway (a device's DMA engine) says so (`helper`) and reports the
//! ring itself ([`Prq::help`]) instead of waking the queue thread; requests are reported in ring
//! order by one reporter at a time (whoever holds the `reporter` token), and the queue thread
//! sleeps until a non-helper writes or a reporter leaves requests behind. Nobody polls.
//!
//! # Drain (SPEC H2)
//! Every request has a sequence number. [`Prq::drain`] waits until the queue thread has
//! *finished reporting* every request enqueued before the call; `remove_dev_pasid` uses it so no
//! request for the PASID is still on its way into the core when the PASID is detached. In
//! manual mode the calling thread reports those requests itself (`remove_dev_pasid` calls it
//! with the hardware lock released, so that is safe even though reporting may run handlers).
//!
//! # Tracing
//! `push_group` emits the `group_sent` event (target `iommu_emu::pri`) under the queue lock,
//! so it precedes the report of the group and therefore any response to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::ThreadId;

use iommu_core::{iopf_discard_partial, report_device_fault, Device, PageRequest};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::counter::add_locked;
use crate::spec::prq::PageRequestDesc;

/// One slot of the ring: the requester and the descriptor the hardware wrote for it.
struct Entry {
    dev: Arc<Device>,
    desc: PageRequestDesc,
}

struct State {
    ring: VecDeque<Entry>,
    overflow: bool,
    /// Requests written to the ring so far.
    enqueued: u64,
    /// Requests taken out of the ring for reporting so far.
    taken: u64,
    /// Requests whose reporting has finished.
    consumed: u64,
    /// The one thread reporting a batch right now (requests are reported in ring order, so
    /// one reporter at a time; a nested drain must not wait for itself).
    reporter: Option<ThreadId>,
    /// The batch buffer between batches (kept for its capacity: no allocation per batch). A
    /// batch that takes the whole ring trades buffers with it, so it is as large as the ring.
    spare: VecDeque<Entry>,
    /// Nobody reports ([`Prq::set_stalled`]): the requests pile up as behind a starved IRQ
    /// thread.
    stalled: bool,
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

/// The calling thread's ID, without `thread::current()`'s reference-count round trip (the
/// reporter token is taken once per batch on the fault path).
fn this_thread() -> ThreadId {
    std::thread_local! {
        static ME: ThreadId = std::thread::current().id();
    }
    ME.with(|id| *id)
}

/// A bounded page request queue.
pub(crate) struct Prq {
    depth: usize,
    /// No queue thread: requests are reported by [`Prq::step`] and inline by [`Prq::drain`].
    manual: bool,
    state: Mutex<State>,
    work: Condvar,
    drained: Condvar,
    devices: Mutex<Vec<Weak<Device>>>,
    pub counters: PrqCounters,
}

/// Most requests the queue thread takes out of the ring at once.
const BATCH: usize = 256;

impl Prq {
    /// A queue of `depth` entries; `manual`: no queue thread will run (see the module docs).
    pub fn new(depth: usize, manual: bool) -> Arc<Prq> {
        Arc::new(Prq {
            depth: depth.max(1),
            manual,
            state: Mutex::new(State {
                ring: VecDeque::with_capacity(depth.clamp(1, 4096)),
                spare: VecDeque::with_capacity(depth.clamp(1, 4096)),
                overflow: false,
                enqueued: 0,
                taken: 0,
                consumed: 0,
                reporter: None,
                stalled: false,
                sleeping: false,
                shutdown: false,
            }),
            work: Condvar::new(),
            drained: Condvar::new(),
            devices: Mutex::new(Vec::new()),
            counters: PrqCounters::default(),
        })
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Whether the queue is driven by [`Prq::step`] rather than a queue thread.
    pub fn manual(&self) -> bool {
        self.manual
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

    /// Writes one page request group (its requests in order, the last flagged LAST_PAGE) of
    /// requester `rid` (its source ID), each as a VT-d page request descriptor.
    ///
    /// Emits the `group_sent` trace event under the queue lock when the group was written or
    /// answered by the hardware, so it precedes any response to the group; it carries `epoch`,
    /// the sender's reset epoch when it allocated the group (trace only).
    ///
    /// `helper`: the calling thread will report the ring itself ([`Prq::help`]) before it
    /// waits, so the sleeping queue thread is not woken for it (see "Waking").
    pub fn push_group(
        &self,
        rid: u32,
        dev: &Arc<Device>,
        reqs: impl ExactSizeIterator<Item = PageRequest>,
        epoch: u64,
        helper: bool,
    ) -> Pushed {
        let mut st = self.state.lock();
        let mut outcome = Pushed::Queued;
        let pages = reqs.len();
        let mut last = None;
        for req in reqs {
            last = Some(req);
            if !st.overflow && st.ring.len() >= self.depth {
                st.overflow = true;
                add_locked(&self.counters.overflows, 1);
            }
            if st.overflow {
                if req.is_last() {
                    add_locked(&self.counters.auto_responses, 1);
                    outcome = Pushed::AutoSuccess;
                } else {
                    add_locked(&self.counters.dropped_partials, 1);
                }
                continue;
            }
            let desc = PageRequestDesc::encode(rid as u16, &req);
            // The descriptor carries every field of a request the endpoint can make.
            debug_assert_eq!(desc.decode(), req);
            st.ring.push_back(Entry {
                dev: dev.clone(),
                desc,
            });
            st.enqueued += 1;
            add_locked(&self.counters.requests, 1);
        }
        if let Some(last) = last {
            let pasid = if last.pasid_valid() {
                i64::from(last.pasid)
            } else {
                -1
            };
            tracing::trace!(
                target: crate::trace::TARGET,
                kind = crate::trace::kind::GROUP_SENT,
                dev = dev.id().0,
                pasid,
                grpid = u64::from(last.grpid),
                pages = pages as u64,
                epoch,
            );
        }
        if !helper {
            self.wake_reporter(&st);
        }
        outcome
    }

    /// Waits until every request written before the call has been reported (SPEC H2).
    ///
    /// With a queue thread: returns at once on a thread that is itself reporting (it cannot
    /// wait for itself) and after shutdown. In manual mode there is no thread to wait for:
    /// the calling thread reports those requests itself (it only waits for batches other
    /// threads are reporting in [`Prq::step`], unless it is reporting one itself).
    pub fn drain(&self) {
        let me = this_thread();
        let mut st = self.state.lock();
        let target = st.enqueued;
        let nested = st.reporter == Some(me);
        if nested && !self.manual {
            return;
        }
        while st.consumed < target && !st.shutdown {
            if self.manual && st.taken < target && st.reporter.is_none() && !st.stalled {
                let max = (target - st.taken) as usize;
                st = self.report_batch(st, max).0;
            } else if nested {
                // What is left is being reported by this very thread, further up the stack.
                return;
            } else {
                // Requests a helper left for the queue thread: it must be awake to report them.
                self.wake_reporter(&st);
                self.drained.wait(&mut st);
            }
        }
    }

    /// Stops the queue thread; requests still in the ring are dropped unreported.
    pub fn shutdown(&self) {
        let mut st = self.state.lock();
        st.shutdown = true;
        self.work.notify_all();
        self.drained.notify_all();
    }

    /// Manual mode: reports up to `max` queued requests on the calling thread, exactly as the
    /// queue thread would (overflow handling included). Returns how many it reported.
    pub fn step(&self, max: usize) -> usize {
        self.report_up_to(max)
    }

    /// With a queue thread: reports everything in the ring on the calling thread, unless
    /// another thread is reporting (it reports what was queued before it finishes). A thread
    /// about to wait for a response calls it instead of waking the queue thread (see
    /// "Waking"). Returns how many requests it reported; 0 in manual mode, whose requests are
    /// reported only by [`Prq::step`].
    pub fn help(&self) -> usize {
        if self.manual {
            return 0;
        }
        self.report_up_to(usize::MAX)
    }

    /// Wakes the queue thread if requests wait in the ring and nobody reports them: what a
    /// thread that promised to help ([`Prq::push_group`]'s `helper`) does when it stops
    /// helping with requests possibly left behind.
    pub fn kick(&self) {
        self.wake_reporter(&self.state.lock());
    }

    /// Wakes the sleeping queue thread when there is something to report and nobody reports
    /// it (the one wake condition; every wake goes through here).
    fn wake_reporter(&self, st: &State) {
        let work = !st.ring.is_empty() || st.overflow;
        if work && st.sleeping && st.reporter.is_none() && !st.stalled {
            self.work.notify_one();
        }
    }

    /// Stops (or resumes) all reporting — queue thread, helpers and steps — as if the driver's
    /// IRQ thread were starved: requests pile up in the ring until it overflows. A simulation
    /// knob (an `overflow` event uses it so the flood overflows however fast the reporters
    /// are); a drain waits until reporting resumes.
    pub fn set_stalled(&self, stalled: bool) {
        let mut st = self.state.lock();
        st.stalled = stalled;
        if !stalled {
            self.work.notify_all();
            self.drained.notify_all();
        }
    }

    /// Reports up to `max` requests on the calling thread while no other thread reports.
    fn report_up_to(&self, max: usize) -> usize {
        let mut reported = 0;
        let mut st = self.state.lock();
        while reported < max
            && !st.shutdown
            && !st.stalled
            && st.reporter.is_none()
            && (!st.ring.is_empty() || st.overflow)
        {
            let (g, n) = self.report_batch(st, (max - reported).min(BATCH));
            st = g;
            reported += n;
        }
        reported
    }

    /// Takes up to `max` requests out of the ring, reports them with the lock released, then
    /// — if the ring held nothing more and the overflow flag is set — discards every device's
    /// partial groups and clears the flag, and counts the requests consumed. Shared by the
    /// queue thread, [`Prq::step`] and the manual [`Prq::drain`]. Returns the lock again and
    /// how many requests it reported.
    ///
    /// The caller checked that no other thread reports (`reporter` is `None`).
    fn report_batch<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        max: usize,
    ) -> (MutexGuard<'a, State>, usize) {
        debug_assert!(st.reporter.is_none());
        let n = st.ring.len().min(max);
        let mut batch = std::mem::take(&mut st.spare);
        if n == st.ring.len() {
            // The whole ring: it and the empty spare trade places instead of moving entries.
            std::mem::swap(&mut st.ring, &mut batch);
        } else {
            batch.extend(st.ring.drain(..n));
        }
        st.taken += n as u64;
        let overflow = st.overflow && st.ring.is_empty();
        st.reporter = Some(this_thread());
        drop(st);
        while let Some(e) = batch.pop_front() {
            // An error means the core already answered the request (SPEC §4.2 "bad").
            let _ = report_device_fault(&e.dev, e.desc.decode());
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
        st.consumed += n as u64;
        st.reporter = None;
        st.spare = batch;
        // A request pushed while this thread reported found a reporter and woke nobody: with a
        // queue thread, every reporter (`help`, the thread itself) loops until the ring is
        // empty, so this thread reports it next; in manual mode it waits for the next step.
        self.drained.notify_all();
        (st, n)
    }

    /// The queue thread's body.
    pub fn run(self: Arc<Self>) {
        let mut st = self.state.lock();
        loop {
            // Sleep until there is something to report and nobody else reports it; no polling
            // (see "Waking").
            while (st.ring.is_empty() && !st.overflow || st.reporter.is_some() || st.stalled)
                && !st.shutdown
            {
                st.sleeping = true;
                self.work.wait(&mut st);
                st.sleeping = false;
            }
            if st.shutdown {
                return;
            }
            st = self.report_batch(st, BATCH).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_core::IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST;
    use std::time::{Duration, Instant};

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
        let prq = Prq::new(3, false);
        let dev = Device::new_unmanaged("d", 0).unwrap();
        assert_eq!(
            prq.push_group(0, &dev, group(1, 2).into_iter(), 0, false),
            Pushed::Queued
        );
        // One slot left: the partial fits, the LAST overflows and is answered by hardware.
        assert_eq!(
            prq.push_group(0, &dev, group(2, 2).into_iter(), 0, false),
            Pushed::AutoSuccess
        );
        assert!(prq.overflowed());
        // While the flag is set nothing is written, even a group that would fit.
        assert_eq!(
            prq.push_group(0, &dev, group(3, 1).into_iter(), 0, false),
            Pushed::AutoSuccess
        );
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
        assert_eq!(
            prq.push_group(0, &dev, group(4, 1).into_iter(), 0, false),
            Pushed::Queued
        );
        prq.shutdown();
        t.join().unwrap();
    }
}

//! What a run sees: the core's and the emulator's `tracing` trace points (see
//! `iommu_core::trace` and `iommu_emu`'s PRI events), plus the engine's own observations, turned
//! into checker [`Event`]s with run-local identities, checked as they happen, and hashed into the
//! event log.
//!
//! Identities are made run-local so a log is comparable across runs: a device becomes its
//! index in the scenario, an attach handle (an address) the order in which it was first seen.
//!
//! Each run installs its own [`Observer`] as the scoped `tracing` dispatcher on every thread it
//! runs (the emulator and the IOPF queue carry their creator's dispatcher into their threads).
//! A process-wide default that accepts the same events is installed first, so a call site
//! reached for the first time by another thread can never be cached as "not interesting" while
//! a run's dispatcher is registered.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Once};
use std::thread::ThreadId;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};

use std::time::Instant;

use iommu_core::trace::kind as core_ev;
use iommu_emu::trace::cause as emu_ev_cause;
use iommu_emu::trace::kind as emu_ev;

use crate::invariants::{CheckReport, Checker, Event};
use crate::report::{GroupLedger, StageLatency};

/// The FNV-1a 64-bit hash of the event log, updated line by line.
#[derive(Debug, Clone, Copy)]
pub struct LogHash(u64);

impl Default for LogHash {
    fn default() -> Self {
        LogHash(0xcbf2_9ce4_8422_2325)
    }
}

impl LogHash {
    /// Adds one log line.
    pub fn add(&mut self, line: &str) {
        for b in line.bytes().chain([b'\n']) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn value(self) -> u64 {
        self.0
    }
}

/// Per-stage latencies measured between trace points: a page request group from the device
/// sending it to its response arriving (`page_request_group`), and a group from its delivery
/// to a handler to the core sending its response (`fault_handler`).
#[derive(Default)]
struct Stages {
    sent: HashMap<(u64, u32), u64>,
    delivered: HashMap<(u64, u32), u64>,
    group: StageLatency,
    handler: StageLatency,
}

/// Follows every page request group from its sending to its first conclusion at the device,
/// and who concluded it: a core response is traced on the responding thread just before the
/// device takes it (synchronously, on that thread), so the thread's last core response names
/// the responder of the device's next software response.
#[derive(Default)]
struct Groups {
    ledger: GroupLedger,
    /// Groups sent and not yet concluded, by (device, PRG index).
    open: HashSet<(u64, u32)>,
    /// Per thread: the last core response (device, PRG index, path).
    responder: HashMap<ThreadId, (u64, u32, &'static str)>,
    /// Per device: the reset epoch of its last traced reset.
    reset_epoch: HashMap<u64, u64>,
}

impl Groups {
    fn sent(&mut self, key: (u64, u32), epoch: u64) {
        self.ledger.sent += 1;
        if self.reset_epoch.get(&key.0).is_some_and(|&e| epoch < e) {
            // Allocated before a reset that already gave its slot up: the device sent a group
            // it no longer waits for (its answer, if any, is a stray).
            self.ledger.abandoned_reset += 1;
            return;
        }
        if !self.open.insert(key) {
            // The index was reused while its group was open: that group is lost to the ledger.
            self.ledger.unattributed += 1;
        }
    }

    fn core_responded(&mut self, key: (u64, u32), path: &'static str) {
        self.responder
            .insert(std::thread::current().id(), (key.0, key.1, path));
    }

    fn device_response(&mut self, key: (u64, u32), f: &Fields) {
        let l = &mut self.ledger;
        let responder = self.responder.remove(&std::thread::current().id());
        if !f.applied {
            if f.auto {
                l.stray_iommu_responses += 1;
            } else {
                l.stray_responses += 1;
            }
            return;
        }
        self.open.remove(&key);
        use iommu_core::trace::path;
        let code = (f.code as usize).min(2);
        match responder.filter(|r| (r.0, r.1) == key).map(|r| r.2) {
            _ if f.auto => l.iommu_overflow += 1,
            Some(path::GROUP) => l.handler[code] += 1,
            Some(path::AUTO) => l.auto_iommufd += 1,
            Some(path::DROPPED) => l.auto_dropped += 1,
            Some(path::BAD) => l.no_handler += 1,
            _ => l.unattributed += 1,
        }
    }

    fn abandoned(&mut self, key: (u64, u32), cause: &str, epoch: u64) {
        if cause == emu_ev_cause::RESET {
            let e = self.reset_epoch.entry(key.0).or_default();
            *e = (*e).max(epoch);
        }
        // An answered group whose job went away before taking its answer is concluded already.
        if self.open.remove(&key) {
            if cause == emu_ev_cause::RESET {
                self.ledger.abandoned_reset += 1;
            } else {
                self.ledger.abandoned_dma += 1;
            }
        }
    }
}

#[derive(Default)]
struct State {
    checker: Checker,
    groups: Groups,
    stages: Stages,
    /// Virtual time in ns (deterministic mode); `None`: wall time since the observer started.
    virtual_ns: Option<u64>,
    start: Option<Instant>,
    devices: HashMap<u64, u64>,
    handles: HashMap<u64, u64>,
    hash: LogHash,
    lines: u64,
    /// Trace events from devices that are not this run's (none expected; counted).
    foreign: u64,
    line: String,
    /// Whether events are hashed into the log (deterministic mode; formatting every event
    /// costs, and a threads-mode log is not reproducible anyway).
    hashing: bool,
}

/// One run's observer: checker, identity maps and event-log hash.
#[derive(Default)]
pub struct Observer {
    state: Mutex<State>,
}

impl Observer {
    /// A fresh observer.
    pub fn new() -> Arc<Observer> {
        Self::with_log(true)
    }

    /// An observer that checks events, and hashes them into the event log only if `hashing`.
    pub fn with_log(hashing: bool) -> Arc<Observer> {
        let obs = Observer::default();
        obs.lock().hashing = hashing;
        Arc::new(obs)
    }

    /// Names the run's devices: `ids[i]` (a core device id) becomes device `i`.
    pub fn set_devices(&self, ids: impl IntoIterator<Item = u64>) {
        let mut st = self.lock();
        st.devices = ids.into_iter().zip(0..).collect();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `e` (whose identities are already run-local) and logs it.
    pub fn observe(&self, e: Event) {
        let mut st = self.lock();
        st.observe(e);
    }

    /// Deterministic mode: latencies are measured in this virtual time (ns) from now on.
    pub fn set_virtual_ns(&self, ns: u64) {
        self.lock().virtual_ns = Some(ns);
    }

    /// The stage latencies measured between trace points, by stage name.
    pub fn stage_latencies(&self) -> Vec<(&'static str, StageLatency)> {
        let st = self.lock();
        vec![
            ("page_request_group", st.stages.group.clone()),
            ("fault_handler", st.stages.handler.clone()),
        ]
    }

    /// Where every page request group went so far; groups still open count as outstanding.
    pub fn ledger(&self) -> GroupLedger {
        let st = self.lock();
        let mut l = st.groups.ledger.clone();
        l.outstanding = st.groups.open.len() as u64;
        l
    }

    /// Logs a line that is not a checked event (a scheduler decision, an event fired).
    pub fn log(&self, line: &str) {
        let mut st = self.lock();
        if st.hashing {
            st.hash.add(line);
        }
        st.lines += 1;
    }

    /// A `tracing` dispatcher feeding this observer.
    pub fn dispatch(self: &Arc<Self>) -> tracing::Dispatch {
        install_process_default();
        tracing::Dispatch::new(Sink(Some(self.clone())))
    }

    /// Ends the run: the checker's report, the event-log hash, and the lines logged.
    pub fn finish(&self) -> (CheckReport, u64, u64) {
        let mut st = self.lock();
        let st = std::mem::take(&mut *st);
        (st.checker.finish(), st.hash.value(), st.lines)
    }

    /// Trace events seen from devices that do not belong to this run.
    pub fn foreign_events(&self) -> u64 {
        self.lock().foreign
    }
}

impl State {
    fn observe(&mut self, e: Event) {
        if self.hashing {
            self.line.clear();
            let _ = write!(self.line, "{e:?}");
            self.hash.add(&self.line);
        }
        self.lines += 1;
        self.checker.observe(&e);
    }

    fn now_ns(&mut self) -> u64 {
        match self.virtual_ns {
            Some(ns) => ns,
            None => self
                .start
                .get_or_insert_with(Instant::now)
                .elapsed()
                .as_nanos() as u64,
        }
    }

    /// The duration of a stage that started at `t0`: in virtual time, a stage that ends in the
    /// step it started in costs that one step (as a DMA chunk does).
    fn since(&mut self, t0: u64) -> u64 {
        let t = self.now_ns();
        match self.virtual_ns {
            Some(_) => t.saturating_sub(t0) + crate::engine::VIRTUAL_STEP_NS,
            None => t.saturating_sub(t0).max(1),
        }
    }

    /// Times the stages from the trace points that open and close them.
    fn time(&mut self, kind: &str, dev: u64, grpid: u32, bad_path: bool) {
        let key = (dev, grpid);
        match kind {
            emu_ev::GROUP_SENT => {
                let t = self.now_ns();
                self.stages.sent.insert(key, t);
            }
            core_ev::DELIVERED => {
                let t = self.now_ns();
                self.stages.delivered.insert(key, t);
            }
            emu_ev::RESPONSE => {
                if let Some(t0) = self.stages.sent.remove(&key) {
                    let d = self.since(t0);
                    self.stages.group.record(d);
                }
            }
            emu_ev::ABANDONED => {
                self.stages.sent.remove(&key);
            }
            core_ev::RESPONDED if !bad_path => {
                if let Some(t0) = self.stages.delivered.remove(&key) {
                    let d = self.since(t0);
                    self.stages.handler.record(d);
                }
            }
            _ => {}
        }
    }

    fn handle(&mut self, h: u64) -> usize {
        let next = self.handles.len() as u64;
        *self.handles.entry(h).or_insert(next) as usize
    }

    /// Turns one trace event into checker events.
    fn trace(&mut self, f: &Fields) {
        let dev = match f.dev {
            Some(d) => match self.devices.get(&d) {
                Some(&i) => Some(i),
                None => {
                    self.foreign += 1;
                    return;
                }
            },
            None => None,
        };
        let grpid = f.grpid as u32;
        let pasid = u32::try_from(f.pasid).ok();
        if let Some(d) = dev {
            self.time(f.kind, d, grpid, f.bad_path);
            let key = (d, grpid);
            match f.kind {
                emu_ev::GROUP_SENT => self.groups.sent(key, f.epoch),
                core_ev::RESPONDED => self.groups.core_responded(key, f.path),
                emu_ev::RESPONSE => self.groups.device_response(key, f),
                emu_ev::ABANDONED => self.groups.abandoned(key, f.cause, f.epoch),
                _ => {}
            }
        }
        let e = match (f.kind, dev) {
            (core_ev::ATTACHED, _) => Event::Attached {
                attachment: self.handle(f.handle),
            },
            (core_ev::DETACHED, _) => Event::DetachReturned {
                attachment: self.handle(f.handle),
            },
            (core_ev::DELIVERED, Some(dev)) => Event::Delivered {
                attachment: self.handle(f.handle),
                dev,
                grpid,
            },
            (core_ev::RESPONDED, Some(dev)) if f.bad_path => Event::BadPathResponse { dev, grpid },
            (core_ev::PASID_ALLOC, _) => Event::PasidAllocated {
                pasid: f.pasid as u32,
            },
            (core_ev::PASID_FREE, _) => Event::PasidFreed {
                pasid: f.pasid as u32,
            },
            (emu_ev::GROUP_SENT, Some(dev)) => Event::GroupRequested { dev, pasid, grpid },
            (emu_ev::RESPONSE, Some(dev)) => Event::Responded {
                dev,
                grpid,
                code: f.code as u32,
            },
            (emu_ev::ABANDONED, Some(dev)) => Event::Abandoned { dev, grpid },
            _ => return,
        };
        self.observe(e);
    }
}

/// The `kind`s of trace event the observer reads (see `iommu_core::trace` and `iommu_emu`).
const KINDS: [&str; 9] = [
    core_ev::ATTACHED,
    core_ev::DETACHED,
    core_ev::DELIVERED,
    core_ev::RESPONDED,
    core_ev::PASID_ALLOC,
    core_ev::PASID_FREE,
    emu_ev::GROUP_SENT,
    emu_ev::RESPONSE,
    emu_ev::ABANDONED,
];

/// The fields of one trace event that the observer reads.
#[derive(Default)]
struct Fields {
    kind: &'static str,
    /// The response came from the core's "bad" path.
    bad_path: bool,
    /// A core response's `path` (`iommu_core::trace::path`).
    path: &'static str,
    /// A device response matched an outstanding group.
    applied: bool,
    /// The IOMMU answered the group itself (queue full).
    auto: bool,
    /// Why a group was abandoned (`iommu_emu::trace::cause`).
    cause: &'static str,
    /// A device's reset epoch (of a group sent, or after a reset).
    epoch: u64,
    dev: Option<u64>,
    pasid: i64,
    grpid: u64,
    handle: u64,
    code: u64,
}

impl Visit for Fields {
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}

    fn record_str(&mut self, f: &Field, v: &str) {
        match f.name() {
            "kind" => self.kind = KINDS.iter().find(|k| **k == v).copied().unwrap_or(""),
            "path" => {
                use iommu_core::trace::path;
                self.bad_path = v == path::BAD;
                self.path = [path::GROUP, path::AUTO, path::DROPPED, path::BAD]
                    .into_iter()
                    .find(|p| *p == v)
                    .unwrap_or("");
            }
            "cause" => {
                self.cause = [
                    emu_ev_cause::RESET,
                    emu_ev_cause::TIMEOUT,
                    emu_ev_cause::DROPPED,
                ]
                .into_iter()
                .find(|c| *c == v)
                .unwrap_or("");
            }
            _ => {}
        }
    }

    fn record_bool(&mut self, f: &Field, v: bool) {
        match f.name() {
            "applied" => self.applied = v,
            "auto" => self.auto = v,
            _ => {}
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        match f.name() {
            "dev" => self.dev = Some(v),
            "grpid" => self.grpid = v,
            "handle" => self.handle = v,
            "code" => self.code = v,
            "epoch" => self.epoch = v,
            "pasid" => self.pasid = v as i64,
            _ => {}
        }
    }

    fn record_i64(&mut self, f: &Field, v: i64) {
        if f.name() == "pasid" {
            self.pasid = v;
        }
    }
}

fn ours(m: &Metadata<'_>) -> bool {
    let t = m.target();
    [
        iommu_core::trace::target::ATTACH,
        iommu_core::trace::target::IOPF,
        iommu_core::trace::target::PASID,
        iommu_emu::trace::TARGET,
    ]
    .contains(&t)
}

/// The run's subscriber (events only, no spans); without an observer, the process-wide
/// default, interested in the same events (so call sites stay enabled) but dropping them: they
/// come from threads that belong to no run.
struct Sink(Option<Arc<Observer>>);

impl Subscriber for Sink {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        ours(m)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        if let Some(obs) = &self.0 {
            let mut f = Fields::default();
            e.record(&mut f);
            obs.lock().trace(&f);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn install_process_default() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if someone else installed one first; theirs then decides interest.
        let _ = tracing::dispatcher::set_global_default(tracing::Dispatch::new(Sink(None)));
    });
}

//! The step-driven mode for a deterministic scheduler: the manual page request queue
//! (`prq_thread: false`, `EmuIommu::prq_step`), polled DMA jobs (`Endpoint::start_dma` /
//! `poll_dma`), and the `iommu_emu::pri` trace events.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ep_cfg, manual, manual_with, Fx, GUARD};
use crossbeam_channel::Receiver;
use iommu_core::{
    attach_device_pasid, detach_device_pasid, iopf_stats, Domain, DomainRequest, IopfGroup,
    IopfHandler, PageResponseCode,
};
use iommu_emu::{
    DmaError, DmaJob, DmaKind, DmaPoll, EmuIommu, Endpoint, EndpointConfig, FaultReason, Prot,
};
use iommu_pt::Perms;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const PASID: u32 = 5;
const VA: u64 = 0x4000_0000;

/// Maps every page a group asks for with a fresh frame, then answers `code`.
fn answer(iommu: &EmuIommu, domain: &Domain, g: IopfGroup, code: PageResponseCode) {
    if code == PageResponseCode::Success {
        for f in g.faults() {
            let frame = iommu.phys().alloc_frame().unwrap();
            if iommu
                .map(domain, f.addr, frame.addr(), 4096, Perms::READ_WRITE)
                .is_err()
            {
                iommu.phys().free_frame(frame).unwrap();
            }
        }
    }
    g.respond(code);
}

// ---- a minimal trace collector ----

#[derive(Debug, Clone, PartialEq)]
enum V {
    U(u64),
    I(i64),
    B(bool),
    S(String),
}

type Ev = BTreeMap<String, V>;
type Results = Vec<Result<(), DmaError>>;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Ev>>>);

/// Subscribes every test of this binary to the `iommu_emu::pri` events, through a global
/// default that discards them, before any event is emitted. Without it, `tracing`'s callsite
/// interest cache races: a callsite first hit on a thread with no subscriber while another
/// test creates its scoped collector can stay cached as "never", and that test misses events.
fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let discard = Collector(Arc::new(Mutex::new(Vec::new())));
        tracing::dispatcher::set_global_default(tracing::Dispatch::new(Discarding(discard)))
            .expect("no other global subscriber in this test binary");
    });
}

/// The global default: interested in the same events, keeps none.
struct Discarding(Collector);

impl Subscriber for Discarding {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

struct Fields(Ev);

impl Visit for Fields {
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), V::U(v));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), V::I(v));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), V::B(v));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), V::S(v.into()));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().into(), V::S(format!("{v:?}")));
    }
}

impl Subscriber for Collector {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target() == "iommu_emu::pri"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        if e.metadata().target() != "iommu_emu::pri" {
            return;
        }
        let mut f = Fields(Ev::new());
        e.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with a fresh collector subscribed to this thread's events (see [`init`]).
fn traced<R>(f: impl FnOnce(&Collector) -> R) -> R {
    init();
    let collector = Collector::default();
    let dispatch = tracing::Dispatch::new(collector.clone());
    tracing::dispatcher::with_default(&dispatch, || f(&collector))
}

impl Collector {
    fn events(&self) -> Vec<Ev> {
        self.0.lock().unwrap().clone()
    }

    /// `kind` of every event, with the device id left out (it differs between runs).
    fn kinds(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| match &e["kind"] {
                V::S(s) => s.clone(),
                v => panic!("kind is {v:?}"),
            })
            .collect()
    }
}

fn kind(e: &Ev) -> &str {
    match &e["kind"] {
        V::S(s) => s,
        v => panic!("kind is {v:?}"),
    }
}

/// The events without the device id (it differs between runs).
fn anonymous(events: &[Ev]) -> Vec<Ev> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            assert!(matches!(e.remove("dev"), Some(V::U(_))), "{e:?}");
            e
        })
        .collect()
}

// ---- a single-threaded scheduler ----

/// Polls every unfinished job, steps the queue (`step` requests), answers the groups that came
/// out, until every job is ready. Returns the results and a log of everything that happened.
fn drive(
    fx: &Fx,
    ep: &Endpoint,
    domain: &Domain,
    rx: &Receiver<IopfGroup>,
    jobs: &mut [DmaJob],
    step: usize,
) -> (Results, Vec<String>) {
    let mut log = Vec::new();
    let mut results: Vec<Option<Result<(), DmaError>>> = vec![None; jobs.len()];
    for _ in 0..100_000 {
        for (i, job) in jobs.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let p = ep.poll_dma(job);
            log.push(format!("poll {i}: {p:?} waiting={}", job.is_waiting()));
            if let DmaPoll::Ready(r) = p {
                results[i] = Some(r);
            }
        }
        if results.iter().all(Option::is_some) {
            return (results.into_iter().map(Option::unwrap).collect(), log);
        }
        let n = fx.iommu.prq_step(step);
        log.push(format!("prq_step: {n}"));
        while let Ok(g) = rx.try_recv() {
            let f = g.faults();
            log.push(format!(
                "group {} x{} @{:#x}",
                f[0].grpid,
                f.len(),
                f[0].addr
            ));
            answer(&fx.iommu, domain, g, PageResponseCode::Success);
        }
    }
    panic!("jobs did not finish: {log:?}");
}

fn poll_until_waiting(ep: &Endpoint, job: &mut DmaJob) {
    for _ in 0..16 {
        if job.is_waiting() {
            return;
        }
        assert_eq!(ep.poll_dma(job), DmaPoll::Pending);
    }
    panic!("job never waits");
}

// ---- manual page request queue ----

#[test]
fn manual_prq_keeps_requests_queued_until_prq_step() {
    init();
    let fx = Fx::with(1024, manual());
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    let mut job = ep.start_dma(Some(PASID), VA, 3 * 4096, DmaKind::Fill(0x5a));
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending, "one pass");
    assert!(!job.is_waiting());
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending, "sends the group");
    assert!(job.is_waiting());
    assert_eq!(fx.iommu.prq_len(), 3);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(fx.iommu.prq_len(), 3, "no queue thread");
    assert!(rx.try_recv().is_err());
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending);
    // Two partials are reported: no group is complete yet.
    assert_eq!(fx.iommu.prq_step(2), 2);
    assert!(rx.try_recv().is_err());
    assert_eq!(fx.iommu.prq_step(10), 1);
    assert_eq!(fx.iommu.prq_step(10), 0);
    let g = rx.try_recv().unwrap();
    assert_eq!(g.faults().len(), 3);
    answer(&fx.iommu, &domain, g, PageResponseCode::Success);
    // Take the response, then one pass that completes.
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending);
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Ready(Ok(())));
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Ready(Ok(())), "sticky");
    let st = ep.stats();
    assert_eq!(
        (st.dma_ok, st.dma_failed, st.groups_sent, st.page_requests),
        (1, 0, 1, 3)
    );
    assert_eq!((st.groups_answered, st.success), (1, 1));
    let pa = fx.iommu.iova_to_phys(&domain, VA + 0x2000).unwrap();
    let mut b = [0u8; 4096];
    fx.phys.read(pa, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0x5a));

    // A threaded IOMMU has nothing to step.
    let threaded = Fx::new();
    assert_eq!(threaded.iommu.prq_step(100), 0);
}

#[test]
fn manual_prq_blocking_sva_dma_completes_when_the_queue_is_stepped() {
    init();
    let fx = Fx::with(1024, manual());
    let (ep, mm, buf, bond) = fx.sva_endpoint(16 * 4096, Prot::READ_WRITE);
    let p = Some(bond.pasid());
    std::thread::scope(|s| {
        let dma = s.spawn(|| ep.dma_write(p, buf, &[0x11; 8 * 4096]));
        let deadline = std::time::Instant::now() + GUARD;
        while !dma.is_finished() {
            assert!(std::time::Instant::now() < deadline, "DMA never finished");
            fx.iommu.prq_step(64);
            std::thread::yield_now();
        }
        dma.join().unwrap().unwrap();
    });
    // A polled job on the same bond: poll / step the queue / let the SVA handler run.
    let mut job = ep.start_dma(
        p,
        buf + 8 * 4096,
        8 * 4096,
        DmaKind::Write(vec![0x22; 8 * 4096]),
    );
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        match ep.poll_dma(&mut job) {
            DmaPoll::Ready(r) => break r.unwrap(),
            DmaPoll::Pending => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "polled DMA never finished"
        );
        fx.iommu.prq_step(64);
        std::thread::yield_now();
    }
    let mut back = vec![0u8; 16 * 4096];
    mm.read(buf, &mut back).unwrap();
    assert!(back[..8 * 4096].iter().all(|&b| b == 0x11));
    assert!(back[8 * 4096..].iter().all(|&b| b == 0x22));
    assert_eq!(ep.stats().dma_ok, 2);
}

#[test]
fn manual_prq_overflow_is_handled_by_prq_step() {
    init();
    let fx = Fx::with(1024, manual_with(|c| c.prq_depth = 4));
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, ep_cfg(|c| c.max_group_pages = 3));
    let mut a = ep.start_dma(Some(PASID), VA, 3 * 4096, DmaKind::Fill(1));
    let mut b = ep.start_dma(Some(PASID), VA + (1 << 20), 3 * 4096, DmaKind::Fill(2));
    poll_until_waiting(&ep, &mut a);
    assert_eq!(fx.iommu.prq_len(), 3);
    // B: one partial fits, the next overflows (dropped), the last is answered by the IOMMU.
    assert_eq!(ep.poll_dma(&mut b), DmaPoll::Pending);
    assert_eq!(ep.poll_dma(&mut b), DmaPoll::Pending);
    assert!(!b.is_waiting(), "auto-answered: B retries");
    assert!(fx.iommu.prq_overflowed());
    assert_eq!(fx.iommu.prq_len(), 4);
    let st = ep.stats();
    assert_eq!(
        (st.groups_sent, st.auto_success, st.groups_answered),
        (2, 1, 1)
    );
    // Everything queued before the overflow first; the flag stays until the ring is empty.
    assert_eq!(fx.iommu.prq_step(1), 1);
    assert!(fx.iommu.prq_overflowed());
    assert_eq!(fx.iommu.prq_step(100), 3);
    assert!(!fx.iommu.prq_overflowed());
    let core = iopf_stats(ep.device()).unwrap();
    assert_eq!(core.partials_discarded, 1, "B's partial is discarded");
    assert_eq!(fx.iommu.stats().prq_auto_responses, 1);
    let g = rx.try_recv().unwrap();
    assert_eq!(g.faults().len(), 3);
    assert!(
        rx.try_recv().is_err(),
        "B's group never completed in the core"
    );
    answer(&fx.iommu, &domain, g, PageResponseCode::Success);
    let (results, _) = drive(&fx, &ep, &domain, &rx, &mut [a, b], 8);
    assert_eq!(results, [Ok(()), Ok(())]);
    let st = ep.stats();
    assert_eq!((st.dma_ok, st.auto_success, st.stray_responses), (2, 1, 0));
    assert_eq!(st.groups_answered, st.groups_sent);
}

#[test]
fn manual_prq_drain_reports_inline_on_detach() {
    init();
    let fx = Fx::with(1024, manual());
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    let mut job = ep.start_dma(Some(PASID), VA, 2 * 4096, DmaKind::Read);
    poll_until_waiting(&ep, &mut job);
    assert_eq!(fx.iommu.prq_len(), 2);
    // The drain in remove_dev_pasid has no thread to wait for: it reports on this thread.
    detach_device_pasid(&domain, ep.device(), PASID).unwrap();
    assert_eq!(fx.iommu.prq_len(), 0);
    let g = rx.try_recv().expect("reported before the detach returned");
    assert_eq!(g.faults().len(), 2);
    answer(&fx.iommu, &domain, g, PageResponseCode::Success);
    // The retry finds no context any more: an unrecoverable fault.
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending);
    match ep.poll_dma(&mut job) {
        DmaPoll::Ready(Err(DmaError::Fault(f))) => assert_eq!(f.reason, FaultReason::NoContext),
        p => panic!("unexpected {p:?}"),
    }
    assert_eq!(ep.stats().dma_failed, 1);
}

// ---- polled DMA ----

/// One deterministic scenario: two jobs on one endpoint, credits and group size small
/// enough that they compete, the queue stepped a few requests at a time.
fn scenario() -> (Results, Vec<String>, Vec<Ev>, Vec<u8>) {
    traced(|collector| {
        let fx = Fx::with(1024, manual_with(|c| c.prq_depth = 6));
        let (ep, domain, _h, rx) = fx.pri_endpoint(
            PASID,
            ep_cfg(|c| {
                c.max_group_pages = 4;
                c.pri_credits = 6;
            }),
        );
        let data: Vec<u8> = (0..5 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        let mut jobs = [
            ep.start_dma(Some(PASID), VA + 10, 10 * 4096, DmaKind::Fill(7)),
            ep.start_dma(
                Some(PASID),
                VA + (1 << 20) + 50,
                data.len() as u64,
                DmaKind::Write(data.clone()),
            ),
        ];
        let (results, log) = drive(&fx, &ep, &domain, &rx, &mut jobs, 3);
        let mut read = ep.start_dma(
            Some(PASID),
            VA + (1 << 20) + 50,
            data.len() as u64,
            DmaKind::Read,
        );
        let (r, _) = drive(&fx, &ep, &domain, &rx, std::slice::from_mut(&mut read), 3);
        assert_eq!(r, [Ok(())]);
        assert_eq!(read.data(), &data[..]);
        let st = ep.stats();
        assert_eq!(st.groups_answered, st.groups_sent);
        assert_eq!(st.dma_ok, 3);
        (results, log, collector.events(), read.into_data())
    })
}

#[test]
fn polled_jobs_complete_and_replay_identically() {
    init();
    let (r1, log1, ev1, d1) = scenario();
    assert_eq!(r1, [Ok(()), Ok(())]);
    let (r2, log2, ev2, d2) = scenario();
    assert_eq!(r1, r2);
    assert_eq!(log1, log2, "same inputs, same sequence of poll results");
    assert_eq!(anonymous(&ev1), anonymous(&ev2));
    assert_eq!(d1, d2);
    assert!(log1.iter().any(|l| l.contains("waiting=true")));
    // Every group sent was answered and applied; the fields have the documented types.
    let sent: Vec<&Ev> = ev1.iter().filter(|e| kind(e) == "group_sent").collect();
    let resp: Vec<&Ev> = ev1.iter().filter(|e| kind(e) == "response").collect();
    assert!(!sent.is_empty());
    assert_eq!(sent.len(), resp.len());
    for e in &sent {
        assert_eq!(e["pasid"], V::I(PASID.into()));
        assert!(matches!(e["grpid"], V::U(_)) && matches!(e["pages"], V::U(1..=4)));
    }
    for e in &resp {
        assert_eq!(
            (&e["code"], &e["applied"], &e["auto"]),
            (&V::U(0), &V::B(true), &V::B(false))
        );
    }
}

#[test]
fn reset_while_a_polled_job_waits_fails_it_and_the_late_answer_is_stray() {
    traced(|collector| {
        let fx = Fx::with(1024, manual());
        let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
        let mut job = ep.start_dma(Some(PASID), VA, 4096, DmaKind::Write(vec![3; 4096]));
        poll_until_waiting(&ep, &mut job);
        ep.reset();
        assert_eq!(ep.poll_dma(&mut job), DmaPoll::Ready(Err(DmaError::Reset)));
        assert!(!job.is_waiting());
        assert_eq!(ep.outstanding_groups(), 0);
        assert_eq!(fx.iommu.prq_step(10), 1);
        answer(
            &fx.iommu,
            &domain,
            rx.try_recv().unwrap(),
            PageResponseCode::Success,
        );
        let st = ep.stats();
        assert_eq!(
            (
                st.abandoned,
                st.stray_responses,
                st.groups_answered,
                st.dma_failed
            ),
            (1, 1, 0, 1)
        );
        let ev = collector.events();
        assert_eq!(collector.kinds(), ["group_sent", "abandoned", "response"]);
        assert_eq!(ev[0]["grpid"], ev[1]["grpid"]);
        assert_eq!(ev[2]["applied"], V::B(false));
        assert_eq!(ev[2]["auto"], V::B(false));
    });
}

#[test]
fn polled_job_answered_invalid_fails_with_page_request_invalid() {
    init();
    let fx = Fx::with(1024, manual());
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    let mut job = ep.start_dma(Some(PASID), VA + 0x1008, 8, DmaKind::Read);
    poll_until_waiting(&ep, &mut job);
    fx.iommu.prq_step(10);
    answer(
        &fx.iommu,
        &domain,
        rx.try_recv().unwrap(),
        PageResponseCode::Invalid,
    );
    assert_eq!(
        ep.poll_dma(&mut job),
        DmaPoll::Ready(Err(DmaError::PageRequestInvalid { iova: VA + 0x1000 }))
    );
    assert!(ep.pri_enabled());
    let st = ep.stats();
    assert_eq!((st.invalid, st.dma_failed, st.dma_ok), (1, 1, 0));
}

#[test]
fn polled_validation_errors_surface_on_first_poll() {
    init();
    let fx = Fx::with(64, manual());
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let mut wrap = ep.start_dma(None, u64::MAX - 10, 100, DmaKind::Read);
    let bad = DmaError::InvalidRange {
        iova: u64::MAX - 10,
        len: 100,
    };
    assert_eq!(ep.poll_dma(&mut wrap), DmaPoll::Ready(Err(bad)));
    let mut short = ep.start_dma(None, 0, 10, DmaKind::Write(vec![0; 3]));
    assert!(matches!(
        ep.poll_dma(&mut short),
        DmaPoll::Ready(Err(DmaError::InvalidRange { .. }))
    ));
    let mut empty = ep.start_dma(None, 0, 0, DmaKind::Fill(0));
    assert_eq!(ep.poll_dma(&mut empty), DmaPoll::Ready(Ok(())));
    let mut stopped = ep.start_dma(Some(PASID), VA, 1, DmaKind::Read);
    ep.stop_pasid(PASID).unwrap();
    assert_eq!(
        ep.poll_dma(&mut stopped),
        DmaPoll::Ready(Err(DmaError::PasidStopped { pasid: PASID }))
    );
    let st = ep.stats();
    assert_eq!((st.dma_ok, st.dma_failed), (1, 3));
}

#[test]
fn dropped_polled_job_abandons_its_group_and_the_answer_is_stray() {
    traced(|collector| {
        let fx = Fx::with(1024, manual());
        let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, ep_cfg(|c| c.pri_credits = 2));
        let mut job = ep.start_dma(Some(PASID), VA, 2 * 4096, DmaKind::Fill(9));
        poll_until_waiting(&ep, &mut job);
        drop(job);
        assert_eq!(ep.stats().abandoned, 1);
        // The slot (and its credits) stay taken until the answer: a new job waits for credits.
        assert_eq!(ep.outstanding_groups(), 1);
        let mut next = ep.start_dma(Some(PASID), VA + (1 << 20), 4096, DmaKind::Fill(8));
        assert_eq!(ep.poll_dma(&mut next), DmaPoll::Pending);
        assert_eq!(ep.poll_dma(&mut next), DmaPoll::Pending);
        assert!(next.is_waiting());
        assert_eq!(ep.stats().groups_sent, 1);
        // The late answer frees the slot without being applied.
        fx.iommu.prq_step(10);
        answer(
            &fx.iommu,
            &domain,
            rx.try_recv().unwrap(),
            PageResponseCode::Success,
        );
        assert_eq!(ep.outstanding_groups(), 0);
        let (r, _) = drive(&fx, &ep, &domain, &rx, std::slice::from_mut(&mut next), 10);
        assert_eq!(r, [Ok(())]);
        let st = ep.stats();
        assert_eq!(
            (st.abandoned, st.stray_responses, st.groups_answered),
            (1, 1, 1)
        );
        assert_eq!(st.groups_sent, 2);
        // Stop does not wait for an abandoned group.
        let mut third = ep.start_dma(Some(PASID), VA + (2 << 20), 4096, DmaKind::Fill(8));
        poll_until_waiting(&ep, &mut third);
        drop(third);
        ep.stop_pasid(PASID).unwrap();
        assert_eq!(
            collector.kinds(),
            [
                "group_sent",
                "abandoned",
                "response",
                "group_sent",
                "response",
                "group_sent",
                "abandoned"
            ]
        );
        let ev = collector.events();
        assert_eq!(ev[2]["applied"], V::B(false));
        assert_eq!(ev[4]["applied"], V::B(true));
    });
}

#[test]
fn overflow_auto_answer_is_traced_after_its_group() {
    traced(|collector| {
        let fx = Fx::with(1024, manual_with(|c| c.prq_depth = 1));
        let (ep, _domain, _h, _rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
        let mut job = ep.start_dma(None, VA, 2 * 4096, DmaKind::Read);
        // No RID context: an unrecoverable fault, no event.
        assert!(matches!(
            ep.poll_dma(&mut job),
            DmaPoll::Ready(Err(DmaError::Fault(_)))
        ));
        let mut job = ep.start_dma(Some(PASID), VA, 2 * 4096, DmaKind::Read);
        assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending);
        assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending);
        assert!(!job.is_waiting());
        let ev = collector.events();
        assert_eq!(collector.kinds(), ["group_sent", "response"]);
        assert_eq!(ev[0]["pages"], V::U(2));
        assert_eq!(ev[0]["pasid"], V::I(PASID.into()));
        assert_eq!(ev[0]["grpid"], ev[1]["grpid"]);
        assert_eq!(ev[0]["dev"], ev[1]["dev"]);
        assert_eq!(ev[0]["dev"], V::U(ep.device().id().0));
        assert_eq!(
            (&ev[1]["code"], &ev[1]["applied"], &ev[1]["auto"]),
            (&V::U(0), &V::B(true), &V::B(true))
        );
        let st = ep.stats();
        assert_eq!((st.auto_success, st.groups_answered), (1, 1));
    });
}

/// Answers every group Success from inside the report (on the queue thread).
struct Inline {
    iommu: Arc<EmuIommu>,
    domain: Mutex<Option<Arc<Domain>>>,
}

impl IopfHandler for Inline {
    fn name(&self) -> &str {
        "inline"
    }
    fn handle_iopf(&self, g: IopfGroup) -> Result<(), IopfGroup> {
        let d = self.domain.lock().unwrap().clone().unwrap();
        answer(&self.iommu, &d, g, PageResponseCode::Success);
        Ok(())
    }
}

#[test]
fn queue_thread_runs_under_the_creators_dispatcher() {
    traced(|collector| {
        let fx = Fx::new();
        let ep = fx.endpoint("dev0", EndpointConfig::default());
        let h = Arc::new(Inline {
            iommu: fx.iommu.clone(),
            domain: Mutex::new(None),
        });
        let domain = Domain::alloc(
            ep.device(),
            DomainRequest::Paging { dma_api: false },
            Some(h.clone()),
        )
        .unwrap();
        *h.domain.lock().unwrap() = Some(domain.clone());
        let _a = attach_device_pasid(&domain, ep.device(), PASID, ()).unwrap();
        ep.dma_write(Some(PASID), VA, &[1; 3 * 4096]).unwrap();
        // The response was emitted on the prq thread, under this dispatcher.
        let ev = collector.events();
        assert_eq!(collector.kinds(), ["group_sent", "response"]);
        assert_eq!(ev[1]["applied"], V::B(true));
        assert_eq!(ev[1]["auto"], V::B(false));
        *h.domain.lock().unwrap() = None;
    });
}

#[test]
fn a_finished_job_restarts_in_place_and_a_running_one_refuses() {
    init();
    let fx = Fx::with(1024, manual());
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    let mut job = ep.start_dma(Some(PASID), VA, 4096, DmaKind::Fill(1));
    assert_eq!(ep.poll_dma(&mut job), DmaPoll::Pending);
    // Running (faulted, group not sent yet): refused, the kind handed back, nothing changed.
    assert_eq!(
        job.restart(Some(PASID), VA + 4096, 4096, DmaKind::Fill(2)),
        Err(DmaKind::Fill(2))
    );
    let (r, _) = drive(&fx, &ep, &domain, &rx, std::slice::from_mut(&mut job), 16);
    assert_eq!(r, vec![Ok(())]);
    // Done: the same job does the next transfer (a read of what the first one wrote).
    job.restart(Some(PASID), VA, 4096, DmaKind::Read).unwrap();
    assert_eq!(job.iova(), VA);
    let (r, _) = drive(&fx, &ep, &domain, &rx, std::slice::from_mut(&mut job), 16);
    assert_eq!(r, vec![Ok(())]);
    assert!(job.data().iter().all(|&b| b == 1));
    // Restarted with a bad range: the error surfaces on the next poll, as for a new job.
    job.restart(Some(PASID), u64::MAX, 2, DmaKind::Fill(3))
        .unwrap();
    assert!(matches!(
        ep.poll_dma(&mut job),
        DmaPoll::Ready(Err(DmaError::InvalidRange { .. }))
    ));
    let st = ep.stats();
    assert_eq!(
        (st.dma_ok, st.dma_failed),
        (2, 1),
        "each transfer counted once"
    );
}

/// Answers every group Success without making a page present: the device's retries fault
/// again, every round.
struct Liar;

impl IopfHandler for Liar {
    fn name(&self) -> &str {
        "liar"
    }
    fn handle_iopf(&self, g: IopfGroup) -> Result<(), IopfGroup> {
        g.respond(PageResponseCode::Success);
        Ok(())
    }
}

/// A handler that answers Success but never maps: the DMA gives up with `RetryLimit` after a
/// bounded number of rounds — blocking, and in a DMA engine's sweep, where a page that faults
/// again is still a round without progress. Run on a thread of its own with a deadline, so a
/// DMA that never gives up fails the test instead of hanging it.
#[test]
fn success_without_a_mapping_ends_in_retry_limit_blocking_and_swept() {
    init();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let fx = Fx::new();
        let ep = fx.endpoint("dev0", EndpointConfig::default());
        let domain = Domain::alloc(
            ep.device(),
            DomainRequest::Paging { dma_api: false },
            Some(Arc::new(Liar)),
        )
        .unwrap();
        let _a = attach_device_pasid(&domain, ep.device(), PASID, ()).unwrap();
        let blocking = ep.dma_write(Some(PASID), VA, &[1; 64]);
        let engine = ep.engine();
        let mut jobs = [ep.start_dma(Some(PASID), VA + 4096, 64, DmaKind::Fill(2))];
        loop {
            let seen = engine.responses();
            if engine.poll_all(&mut jobs) > 0 {
                break;
            }
            engine.wait(seen, Duration::from_millis(10));
        }
        let _ = tx.send((blocking, jobs[0].outcome()));
    });
    let (blocking, swept) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a DMA never gave up retrying");
    assert_eq!(blocking, Err(DmaError::RetryLimit { iova: VA }));
    assert_eq!(swept, Some(Err(DmaError::RetryLimit { iova: VA + 4096 })));
}

/// A pass the DMA window cut short is not a round without progress; a full one still is. In
/// a sweep a job gets what the jobs before it left of the window: here a transfer over 500
/// mapped pages, restarted before every sweep, leaves a never-mapped job 10 pages a sweep (512
/// less the 500 and one for each job visited), so each of its passes ends with pages it never
/// reached. It must outlive many times
/// `MAX_ROUNDS_WITHOUT_PROGRESS` such sweeps — counting them would fail it for the window's
/// sake — and, once the window is its own again, end in `RetryLimit` (no livelock).
#[test]
fn passes_the_window_cut_short_are_not_rounds_without_progress() {
    init();
    const PASID_K: u32 = PASID + 1;
    const K_PAGES: u64 = 500;
    const KVA: u64 = 0x8000_0000;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let fx = Fx::new();
        let ep = fx.endpoint("dev0", EndpointConfig::default());
        let dev = ep.device();
        let liar = Domain::alloc(
            dev,
            DomainRequest::Paging { dma_api: false },
            Some(Arc::new(Liar)),
        )
        .unwrap();
        let _j = attach_device_pasid(&liar, dev, PASID, ()).unwrap();
        let mapped = Domain::alloc(dev, DomainRequest::Paging { dma_api: false }, None).unwrap();
        let _k = attach_device_pasid(&mapped, dev, PASID_K, ()).unwrap();
        let frame = fx.phys.alloc_frame().unwrap();
        for p in 0..K_PAGES {
            fx.iommu
                .map(
                    &mapped,
                    KVA + p * 4096,
                    frame.addr(),
                    4096,
                    Perms::READ_WRITE,
                )
                .unwrap();
        }
        let k_len = K_PAGES * 4096;
        let engine = ep.engine();
        // The transfer first in the window, then the one that never gets mapped.
        let mut jobs = [
            ep.start_dma(Some(PASID_K), KVA, k_len, DmaKind::Fill(1)),
            ep.start_dma(Some(PASID), VA, 64 * 4096, DmaKind::Fill(2)),
        ];
        // A sweep, then the fault-path work it left (the mapped transfer finishes every sweep,
        // so `poll_all` alone would never wait, and nobody else reports the queue).
        let sweep = |jobs: &mut [DmaJob; 2]| {
            engine.poll_all(jobs);
            engine.help();
        };
        let mut cut_sweeps = 0u32;
        while cut_sweeps < 8 * iommu_emu::endpoint::MAX_ROUNDS_WITHOUT_PROGRESS {
            if let Some(r) = jobs[0].outcome() {
                r.expect("the mapped transfer");
                jobs[0]
                    .restart(Some(PASID_K), KVA, k_len, DmaKind::Fill(1))
                    .expect("a finished job restarts");
            }
            sweep(&mut jobs);
            if jobs[1].outcome().is_some() {
                break;
            }
            cut_sweeps += 1;
        }
        let while_cut = jobs[1].outcome();
        let sent_while_cut = ep.stats().groups_sent;
        // The window is the job's own from here: full passes, and rounds without progress.
        let mut full_sweeps = 0u32;
        while jobs[1].outcome().is_none() && full_sweeps < 100_000 {
            sweep(&mut jobs);
            full_sweeps += 1;
        }
        let _ = tx.send((while_cut, sent_while_cut, jobs[1].outcome(), full_sweeps));
    });
    let (while_cut, sent_while_cut, outcome, full_sweeps) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the DMA never ended");
    assert_eq!(
        while_cut, None,
        "the job failed while the window cut its passes short"
    );
    assert!(
        sent_while_cut > u64::from(4 * iommu_emu::endpoint::MAX_ROUNDS_WITHOUT_PROGRESS),
        "the cut passes sent a group each: {sent_while_cut}"
    );
    assert!(
        matches!(outcome, Some(Err(DmaError::RetryLimit { .. }))),
        "{outcome:?} after {full_sweeps} full sweeps"
    );
    // Each full sweep is one round without progress (an answer, a retry that faults, a group);
    // the limit is passed on the round after the last one allowed.
    let limit = iommu_emu::endpoint::MAX_ROUNDS_WITHOUT_PROGRESS;
    assert!(
        (limit + 1..=limit + 8).contains(&full_sweeps),
        "RetryLimit after {full_sweeps} full sweeps, the limit being {limit} rounds"
    );
}

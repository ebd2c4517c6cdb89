//! PRI, the page request queue and the endpoint state machine: group shape and credits,
//! response codes (SPEC §4.8), PRQ overflow (VT-d semantics), reset and PASID stop with
//! requests in flight, unrecoverable faults without PRI or ATS.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{ep_cfg, forwarding_pasid, iommu_cfg, wait_for, Fx, GUARD};
use iommu_core::{
    attach_device_pasid, Domain, DomainRequest, IopfGroup, IopfHandler, PageResponseCode,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
};
use iommu_emu::{DmaError, EmuIommu, EndpointConfig, FaultReason};
use iommu_pt::Perms;

const PASID: u32 = 5;
const VA: u64 = 0x4000_0000;

/// Maps every page a group asks for with a fresh frame, then answers Success.
fn resolve(iommu: &EmuIommu, domain: &Domain, g: IopfGroup) {
    for f in g.faults() {
        let frame = iommu.phys().alloc_frame().unwrap();
        if iommu
            .map(domain, f.addr, frame.addr(), 4096, Perms::READ_WRITE)
            .is_err()
        {
            iommu.phys().free_frame(frame).unwrap(); // another group mapped it first
        }
    }
    g.respond(PageResponseCode::Success);
}

#[test]
fn missing_pages_of_one_job_form_one_group_capped_by_credits() {
    let fx = Fx::new();
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, ep_cfg(|c| c.pri_credits = 3));
    std::thread::scope(|s| {
        let dma = s.spawn(|| ep.dma_fill(Some(PASID), VA, 5 * 4096, 0x33));
        let g = rx.recv_timeout(GUARD).unwrap();
        let faults = g.faults().to_vec();
        assert_eq!(faults.len(), 3, "credits cap the group");
        assert!(faults
            .iter()
            .all(|f| f.grpid == faults[0].grpid && f.pasid == PASID));
        assert_eq!(
            faults
                .iter()
                .map(|f| f.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE != 0)
                .collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(
            faults.iter().map(|f| f.addr).collect::<Vec<_>>(),
            [VA, VA + 0x1000, VA + 0x2000]
        );
        resolve(&fx.iommu, &domain, g);
        let g2 = rx.recv_timeout(GUARD).unwrap();
        assert_eq!(g2.faults().len(), 2, "the rest in the next group");
        assert_ne!(g2.last().grpid, faults[0].grpid, "PRG indices rotate");
        resolve(&fx.iommu, &domain, g2);
        dma.join().unwrap().unwrap();
    });
    let pa = fx.iommu.iova_to_phys(&domain, VA + 0x4000).unwrap();
    let mut b = [0u8; 4096];
    fx.phys.read(pa, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0x33));
    let st = ep.stats();
    assert_eq!((st.groups_sent, st.groups_answered, st.success), (2, 2, 2));
}

#[test]
fn response_failure_disables_pri_until_reset() {
    let fx = Fx::new();
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    std::thread::scope(|s| {
        let dma = s.spawn(|| ep.dma_write(Some(PASID), VA, b"x"));
        rx.recv_timeout(GUARD)
            .unwrap()
            .respond(PageResponseCode::Failure);
        assert_eq!(
            dma.join().unwrap(),
            Err(DmaError::ResponseFailure { iova: VA })
        );
    });
    assert!(!ep.pri_enabled());
    let err = ep.dma_write(Some(PASID), VA, b"x").unwrap_err();
    match err {
        DmaError::Fault(f) => assert_eq!(f.reason, FaultReason::PriUnavailable),
        e => panic!("unexpected {e}"),
    }
    assert!(rx.try_recv().is_err(), "no page request without PRI");
    assert!(fx
        .iommu
        .fault_log()
        .iter()
        .any(|r| r.reason == FaultReason::PriUnavailable && r.write));

    ep.reset();
    assert!(ep.pri_enabled());
    std::thread::scope(|s| {
        let dma = s.spawn(|| ep.dma_write(Some(PASID), VA, b"y"));
        resolve(&fx.iommu, &domain, rx.recv_timeout(GUARD).unwrap());
        dma.join().unwrap().unwrap();
    });
}

#[test]
fn reset_with_requests_in_flight_fails_waiting_dma_and_counts_late_answers_as_stray() {
    let fx = Fx::new();
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    let held = std::thread::scope(|s| {
        let dmas: Vec<_> = (0..3u64)
            .map(|i| {
                let ep = &ep;
                s.spawn(move || ep.dma_write(Some(PASID), VA + (i << 20), &[1; 3 * 4096]))
            })
            .collect();
        let held: Vec<IopfGroup> = (0..3).map(|_| rx.recv_timeout(GUARD).unwrap()).collect();
        assert_eq!(ep.outstanding_groups(), 3);
        ep.reset();
        for d in dmas {
            assert_eq!(d.join().unwrap(), Err(DmaError::Reset));
        }
        held
    });
    assert_eq!(ep.outstanding_groups(), 0);
    // The software answers after the reset: each lands on no group.
    for g in held {
        resolve(&fx.iommu, &domain, g);
    }
    let st = ep.stats();
    assert_eq!(
        (st.abandoned, st.stray_responses, st.groups_answered),
        (3, 3, 0)
    );
    // The function works again (the pages were mapped by the late resolution).
    ep.dma_write(Some(PASID), VA, &[2; 3 * 4096]).unwrap();
}

#[test]
fn pasid_stop_waits_for_outstanding_groups_and_refuses_new_dma() {
    let fx = Fx::new();
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    std::thread::scope(|s| {
        let dma = s.spawn(|| ep.dma_write(Some(PASID), VA, b"z"));
        let g = rx.recv_timeout(GUARD).unwrap();
        let stopper = s.spawn(|| ep.stop_pasid(PASID));
        resolve(&fx.iommu, &domain, g);
        stopper.join().unwrap().unwrap();
        // The DMA either finished before the stop took effect or saw the PASID stopped.
        match dma.join().unwrap() {
            Ok(()) | Err(DmaError::PasidStopped { pasid: PASID }) => {}
            r => panic!("unexpected {r:?}"),
        }
    });
    assert_eq!(
        ep.dma_write(Some(PASID), VA, b"z"),
        Err(DmaError::PasidStopped { pasid: PASID })
    );
    ep.start_pasid(PASID);
    ep.dma_write(Some(PASID), VA, b"z").unwrap();
}

#[test]
fn dma_without_pri_or_without_ats_is_an_unrecoverable_logged_fault() {
    let fx = Fx::new();
    let no_pri = fx.endpoint("nopri", ep_cfg(|c| c.pri = false));
    let no_ats = fx.endpoint("noats", ep_cfg(|c| c.ats = false));
    let (_d1, _h1, rx1) = forwarding_pasid(&no_pri, PASID);
    let (_d2, _h2, rx2) = forwarding_pasid(&no_ats, PASID);
    let e1 = no_pri.dma_read(Some(PASID), VA, &mut [0; 4]).unwrap_err();
    let e2 = no_ats.dma_read(Some(PASID), VA, &mut [0; 4]).unwrap_err();
    assert!(matches!(e1, DmaError::Fault(f) if f.reason == FaultReason::PriUnavailable));
    assert!(matches!(e2, DmaError::Fault(f) if f.reason == FaultReason::NotPresent));
    assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
    let log = fx.iommu.fault_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].device, no_pri.device().id());
    assert_eq!(log[1].device, no_ats.device().id());
    assert_eq!(fx.iommu.stats().unrecoverable_faults, 2);
    // Beyond the PASID range and with no attachment: refused before any translation.
    assert_eq!(
        no_pri.dma_read(Some(1 << 20), VA, &mut [0; 1]),
        Err(DmaError::PasidNotSupported { pasid: 1 << 20 })
    );
    no_pri.set_pasid_enabled(false).unwrap();
    assert_eq!(
        no_pri.dma_read(Some(PASID), VA, &mut [0; 1]),
        Err(DmaError::PasidNotSupported { pasid: PASID })
    );
    no_pri.set_pasid_enabled(true).unwrap();
    let e3 = no_pri.dma_read(Some(9), VA, &mut [0; 1]).unwrap_err();
    assert!(matches!(e3, DmaError::Fault(f) if f.reason == FaultReason::NoContext));
}

/// Holds the first group it sees until released, stalling the page request queue thread (a
/// slow interrupt thread), then hands every group to the resolver.
struct Gate {
    release: crossbeam_channel::Receiver<()>,
    out: crossbeam_channel::Sender<IopfGroup>,
    first: std::sync::Mutex<bool>,
}

impl IopfHandler for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup> {
        let first = std::mem::replace(&mut *self.first.lock().unwrap(), false);
        if first {
            let _ = self.release.recv_timeout(GUARD);
        }
        self.out.send(group).map_err(|e| e.0)
    }
}

/// A fault-capable paging domain allocated on `dev` whose handler is a fresh [`Gate`]: a send
/// on the returned sender releases the first group; every group arrives on the receiver.
fn gated_domain(
    dev: &Arc<iommu_core::Device>,
) -> (
    Arc<Domain>,
    crossbeam_channel::Sender<()>,
    crossbeam_channel::Receiver<IopfGroup>,
) {
    let (release_tx, release_rx) = crossbeam_channel::bounded(1);
    let (out_tx, out_rx) = crossbeam_channel::unbounded();
    let gate = Arc::new(Gate {
        release: release_rx,
        out: out_tx,
        first: std::sync::Mutex::new(true),
    });
    let domain = Domain::alloc(dev, DomainRequest::Paging { dma_api: false }, Some(gate)).unwrap();
    (domain, release_tx, out_rx)
}

#[test]
fn prq_overflow_answers_every_group_exactly_once_and_every_dma_completes() {
    let fx = Fx::with(8192, iommu_cfg(|c| c.prq_depth = 4));
    let cfg = ep_cfg(|c| c.max_group_pages = 3);
    let eps: Vec<_> = (0..4)
        .map(|i| fx.endpoint(&format!("d{i}"), cfg.clone()))
        .collect();
    // One fault-capable paging domain shared by every device's PASID.
    let (domain, release_tx, out_rx) = gated_domain(eps[0].device());
    let _handles: Vec<_> = eps
        .iter()
        .map(|e| attach_device_pasid(&domain, e.device(), PASID, ()).unwrap())
        .collect();

    let resolved = std::thread::scope(|s| {
        let resolver = s.spawn(|| {
            let mut n = 0u64;
            while let Ok(g) = out_rx.recv_timeout(Duration::from_millis(500)) {
                resolve(&fx.iommu, &domain, g);
                n += 1;
            }
            n
        });
        let dmas: Vec<_> = eps
            .iter()
            .enumerate()
            .flat_map(|(d, ep)| (0..2u64).map(move |t| (d as u64, t, ep)))
            .map(|(d, t, ep)| {
                s.spawn(move || {
                    let va = VA + ((d * 2 + t) << 24);
                    let data: Vec<u8> = (0..8 * 4096u64).map(|i| (i * 7 + d + t) as u8).collect();
                    ep.dma_write(Some(PASID), va, &data)?;
                    let mut back = vec![0; data.len()];
                    ep.dma_read(Some(PASID), va, &mut back)?;
                    assert_eq!(back, data);
                    Ok::<(), DmaError>(())
                })
            })
            .collect();
        assert!(
            wait_for(|| fx.iommu.stats().prq_overflows > 0),
            "queue never overflowed"
        );
        release_tx.send(()).unwrap();
        for d in dmas {
            d.join().unwrap().unwrap();
        }
        drop(release_tx);
        resolver.join().unwrap()
    });

    let io = fx.iommu.stats();
    assert!(io.prq_overflows > 0 && io.prq_auto_responses > 0, "{io:?}");
    let mut per_dev: HashMap<_, u64> = HashMap::new();
    let mut auto = 0;
    for ep in &eps {
        let st = ep.stats();
        assert_eq!(st.groups_sent, st.groups_answered, "{st:?}");
        assert_eq!(st.stray_responses, 0, "a group was answered twice: {st:?}");
        assert_eq!(st.success + st.auto_success, st.groups_sent, "{st:?}");
        assert_eq!(ep.outstanding_groups(), 0);
        *per_dev.entry(ep.device().id()).or_default() += st.success;
        auto += st.auto_success;
    }
    assert_eq!(auto, io.prq_auto_responses);
    assert_eq!(
        per_dev.values().sum::<u64>(),
        resolved,
        "software answered each group once"
    );
    assert!(
        !fx.iommu.prq_overflowed(),
        "queue thread cleared the overflow flag"
    );
}

#[test]
fn detach_returns_only_after_every_queued_request_reached_the_handler() {
    // SPEC H2: remove_dev_pasid drains the page request queue. The queue thread is stalled in
    // the handler on group 1 while group 2 waits in the ring; detach must not return before
    // group 2 was reported too.
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let (domain, release_tx, out_rx) = gated_domain(ep.device());
    let _h = attach_device_pasid(&domain, ep.device(), PASID, ()).unwrap();
    std::thread::scope(|s| {
        let d1 = s.spawn(|| ep.dma_write(Some(PASID), VA, b"1"));
        assert!(wait_for(
            || ep.stats().groups_sent == 1 && fx.iommu.prq_len() == 0
        ));
        let d2 = s.spawn(|| ep.dma_write(Some(PASID), VA + 0x10000, b"2"));
        assert!(
            wait_for(|| fx.iommu.prq_len() == 1),
            "group 2 waits in the ring"
        );
        let detach = s.spawn(|| iommu_core::detach_device_pasid(&domain, ep.device(), PASID));
        release_tx.send(()).unwrap();
        detach.join().unwrap().unwrap();
        // Both groups were handed over before detach returned.
        let groups: Vec<IopfGroup> = (0..2).map(|_| out_rx.try_recv().unwrap()).collect();
        assert_eq!(fx.iommu.prq_len(), 0);
        for g in groups {
            g.respond(PageResponseCode::Success);
        }
        // The retry finds no context: the DMAs fail cleanly.
        for d in [d1, d2] {
            let err = d.join().unwrap().unwrap_err();
            assert!(matches!(err, DmaError::Fault(f) if f.reason == FaultReason::NoContext));
        }
    });
    let st = ep.stats();
    assert_eq!(
        (st.groups_sent, st.groups_answered, st.stray_responses),
        (2, 2, 0)
    );
}

#[test]
fn an_iommu_without_ats_and_pri_gives_untranslated_dma_only() {
    let fx = Fx::with(
        256,
        iommu_cfg(|c| {
            c.ats = false;
            c.pri = false;
        }),
    );
    let group = iommu_core::Group::new(fx.iommu.driver(), "g");
    let ep = fx
        .iommu
        .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
        .unwrap();
    assert!(!ep.pri_enabled());
    let domain = ep.group().default_domain().unwrap();
    let f = fx.phys.alloc_frame().unwrap();
    fx.iommu
        .map(&domain, VA, f.addr(), 4096, Perms::READ_WRITE)
        .unwrap();
    ep.dma_write(None, VA, b"ok").unwrap();
    ep.dma_write(None, VA, b"ok").unwrap();
    assert_eq!(ep.atc_len(), 0, "no device TLB without ATS");
    assert!(fx.iommu.stats().iotlb_hits > 0);
    let err = ep.dma_write(None, VA + 4096, b"no").unwrap_err();
    assert!(matches!(err, DmaError::Fault(f) if f.reason == FaultReason::NotPresent));
    // Fault reporting cannot even be enabled on an IOMMU without PRI.
    assert_eq!(
        iommu_core::iopf_enable(ep.device())
            .unwrap_err()
            .errno_name(),
        "EOPNOTSUPP"
    );
}

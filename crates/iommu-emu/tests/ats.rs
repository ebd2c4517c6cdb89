//! ATS for callers above the device TLB: `Endpoint::ats_translate` (device TLB, walk, PRI on a
//! miss, the DMA's errors) and `Endpoint::atc_generation` (moves on every invalidation that
//! reaches the device TLB).

mod common;

use common::{ep_cfg, forwarding_pasid, Fx, GUARD};
use iommu_core::PageResponseCode;
use iommu_emu::{DmaError, EndpointConfig, FaultReason, Prot};
use iommu_pt::Perms;

const PASID: u32 = 5;
const VA: u64 = 0x4000_0000;

/// Translates `[iova, iova + len)` and returns every `(chunk_iova, chunk_pa, chunk_len)`.
fn chunks(
    ep: &iommu_emu::Endpoint,
    pasid: Option<u32>,
    iova: u64,
    len: u64,
    write: bool,
) -> Result<Vec<(u64, u64, u64)>, DmaError> {
    let mut out = Vec::new();
    ep.ats_translate(pasid, iova, len, write, |i, p, n| out.push((i, p, n)))?;
    Ok(out)
}

#[test]
fn ats_translate_of_resident_pages_reports_each_chunk_and_fills_the_device_tlb() {
    let fx = Fx::new();
    let (ep, domain, _h, _rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    let frames = [
        fx.phys.alloc_frame().unwrap(),
        fx.phys.alloc_frame().unwrap(),
    ];
    for (i, f) in frames.iter().enumerate() {
        let iova = VA + i as u64 * 4096;
        fx.iommu
            .map(&domain, iova, f.addr(), 4096, Perms::READ_WRITE)
            .unwrap();
    }

    let got = chunks(&ep, Some(PASID), VA + 100, 5000, true).unwrap();

    let (a, b) = (frames[0].addr().0, frames[1].addr().0);
    assert_eq!(got, [(VA + 100, a + 100, 3996), (VA + 4096, b, 1004)]);
    assert_eq!(ep.atc_len(), 2);
    assert_eq!(ep.stats().groups_sent, 0);
    assert_eq!(ep.stats().dma_ok, 0, "a translation is not a DMA");
}

#[test]
fn ats_translate_miss_is_resolved_through_pri() {
    let fx = Fx::new();
    let (ep, domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());

    let got = std::thread::scope(|s| {
        let t = s.spawn(|| chunks(&ep, Some(PASID), VA, 4096, false));
        let g = rx.recv_timeout(GUARD).unwrap();
        assert_eq!(g.faults().len(), 1);
        let frame = fx.phys.alloc_frame().unwrap();
        fx.iommu
            .map(&domain, VA, frame.addr(), 4096, Perms::READ_WRITE)
            .unwrap();
        g.respond(PageResponseCode::Success);
        (t.join().unwrap().unwrap(), frame)
    });

    let (translated, frame) = got;
    assert_eq!(translated, [(VA, frame.addr().0, 4096)]);
    let st = ep.stats();
    assert_eq!((st.groups_sent, st.success), (1, 1));
}

#[test]
fn ats_translate_answered_invalid_is_page_request_invalid() {
    let fx = Fx::new();
    let (ep, _domain, _h, rx) = fx.pri_endpoint(PASID, EndpointConfig::default());

    let r = std::thread::scope(|s| {
        let t = s.spawn(|| chunks(&ep, Some(PASID), VA, 8192, true));
        rx.recv_timeout(GUARD)
            .unwrap()
            .respond(PageResponseCode::Invalid);
        t.join().unwrap()
    });

    assert_eq!(r, Err(DmaError::PageRequestInvalid { iova: VA }));
    assert!(ep.pri_enabled(), "Invalid leaves PRI enabled");
}

#[test]
fn ats_translate_without_pri_or_ats_fails_at_once_with_a_logged_fault() {
    let fx = Fx::new();
    let no_pri = fx.endpoint("nopri", ep_cfg(|c| c.pri = false));
    let no_ats = fx.endpoint("noats", ep_cfg(|c| c.ats = false));
    let (_d1, _h1, rx1) = forwarding_pasid(&no_pri, PASID);
    let (_d2, _h2, rx2) = forwarding_pasid(&no_ats, PASID);

    let e1 = chunks(&no_pri, Some(PASID), VA, 4096, false).unwrap_err();
    let e2 = chunks(&no_ats, Some(PASID), VA, 4096, false).unwrap_err();

    assert!(matches!(e1, DmaError::Fault(f) if f.reason == FaultReason::PriUnavailable));
    assert!(matches!(e2, DmaError::Fault(f) if f.reason == FaultReason::NotPresent));
    assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
    assert_eq!(fx.iommu.fault_log().len(), 2);
}

#[test]
fn ats_translate_rejects_a_wrapping_range_and_ignores_an_empty_one() {
    let fx = Fx::new();
    let (ep, _domain, _h, _rx) = fx.pri_endpoint(PASID, EndpointConfig::default());

    assert_eq!(
        chunks(&ep, Some(PASID), u64::MAX - 10, 100, false),
        Err(DmaError::InvalidRange {
            iova: u64::MAX - 10,
            len: 100
        })
    );
    assert_eq!(chunks(&ep, Some(PASID), VA, 0, false), Ok(vec![]));
}

#[test]
fn atc_generation_moves_on_unmap_and_pasid_stop() {
    let fx = Fx::new();
    let (ep, domain, _h, _rx) = fx.pri_endpoint(PASID, EndpointConfig::default());
    let frame = fx.phys.alloc_frame().unwrap();
    fx.iommu
        .map(&domain, VA, frame.addr(), 4096, Perms::READ_WRITE)
        .unwrap();
    chunks(&ep, Some(PASID), VA, 4096, false).unwrap();
    let g0 = ep.atc_generation();

    fx.iommu.unmap(&domain, VA, 4096).unwrap();
    let g1 = ep.atc_generation();
    ep.stop_pasid(PASID).unwrap();
    let g2 = ep.atc_generation();

    assert!(g1 > g0, "unmap invalidated the device TLB");
    assert!(g2 > g1, "PASID stop dropped the PASID's device-TLB entries");
    assert_eq!(ep.atc_len(), 0);
    assert_eq!(
        chunks(&ep, Some(PASID), VA, 4096, false),
        Err(DmaError::PasidStopped { pasid: PASID })
    );
}

#[test]
fn atc_generation_moves_on_munmap_of_an_sva_mm() {
    let fx = Fx::new();
    let (ep, mm, buf, bond) = fx.sva_endpoint(8192, Prot::READ_WRITE);
    mm.write(buf, b"cpu").unwrap();
    chunks(&ep, Some(bond.pasid()), buf, 4096, false).unwrap();
    assert_eq!(ep.atc_len(), 1);
    let g0 = ep.atc_generation();

    mm.munmap(buf, 8192).unwrap();

    assert!(ep.atc_generation() > g0);
    assert_eq!(ep.atc_len(), 0);
    let g1 = ep.atc_generation();
    bond.unbind();
    assert!(
        ep.atc_generation() > g1,
        "unbind (detach) flushes the PASID"
    );
}

#[test]
fn atc_generation_moves_on_reset() {
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let g0 = ep.atc_generation();

    ep.reset();

    assert!(ep.atc_generation() > g0);
}

#[test]
fn atc_generation_moves_when_the_pasid_capability_is_turned_off() {
    let fx = Fx::new();
    let ep = fx.endpoint("dev0", EndpointConfig::default());
    let g0 = ep.atc_generation();

    ep.set_pasid_enabled(true).unwrap();
    assert_eq!(ep.atc_generation(), g0, "enabling invalidates nothing");
    ep.set_pasid_enabled(false).unwrap();

    assert!(
        ep.atc_generation() > g0,
        "PASID translations cached above the device TLB must not outlive the capability"
    );
}

//! The fault reporting pipeline: routing (SPEC §4.3), partial groups (§4.4), exactly one
//! response per group (H9, H11), the bad and abort paths (§4.2), and enable/disable.

mod common;

use std::sync::{Arc, Mutex};

use common::Fixture;
use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_group_handle, detach_device_pasid, iopf_disable,
    iopf_discard_partial, iopf_enable, iopf_stats, report_device_fault, Capabilities, Domain,
    DomainRequest, IopfGroup, IopfHandler, PageRequest, PageResponse, PageResponseCode,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE as LAST, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID as PV,
    IOMMU_FAULT_PERM_READ,
};

/// Keeps every group it is given, or refuses them all.
#[derive(Default)]
struct Keeper {
    groups: Mutex<Vec<IopfGroup>>,
    refuse: bool,
}

impl IopfHandler for Keeper {
    fn name(&self) -> &str {
        "keeper"
    }
    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup> {
        if self.refuse {
            return Err(group);
        }
        self.groups.lock().unwrap().push(group);
        Ok(())
    }
}

impl Keeper {
    fn take(&self) -> Vec<IopfGroup> {
        std::mem::take(&mut self.groups.lock().unwrap())
    }
}

fn req(flags: u32, pasid: u32, grpid: u32, addr: u64) -> PageRequest {
    PageRequest {
        flags,
        pasid,
        grpid,
        perm: IOMMU_FAULT_PERM_READ,
        addr,
    }
}

fn fault_domain(fx: &Fixture, keeper: &Arc<Keeper>) -> Arc<Domain> {
    let req = DomainRequest::Paging { dma_api: false };
    Domain::alloc(fx.dev(0), req, Some(keeper.clone() as Arc<dyn IopfHandler>)).unwrap()
}

fn resp(pasid: u32, grpid: u32, code: PageResponseCode) -> PageResponse {
    PageResponse { pasid, grpid, code }
}

#[test]
fn last_request_on_an_attached_pasid_reaches_its_handler_with_the_handle() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper::default());
    let dom = fault_domain(&fx, &keeper);
    let h = attach_device_pasid(&dom, fx.dev(0), 5, "owner").unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    report_device_fault(fx.dev(0), req(PV | LAST, 5, 1, 0x1000)).unwrap();
    let mut got = keeper.take();
    assert_eq!(got.len(), 1);
    let g = got.pop().unwrap();
    assert!(Arc::ptr_eq(&g.handle::<&str>().unwrap(), &h));
    assert!(g.handle::<u8>().is_none());
    assert_eq!(
        fx.iommu.responses(),
        vec![],
        "nothing answered before the handler answers"
    );
    g.respond(PageResponseCode::Success);
    let dev = fx.dev(0).id();
    assert_eq!(
        fx.iommu.responses(),
        vec![(dev, resp(5, 1, PageResponseCode::Success))]
    );
}

#[test]
fn partial_requests_join_their_group_in_arrival_order_and_one_response_goes_out() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper::default());
    let dom = fault_domain(&fx, &keeper);
    attach_device_pasid(&dom, fx.dev(0), 5, ()).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    report_device_fault(fx.dev(0), req(PV, 5, 3, 0x1000)).unwrap();
    report_device_fault(fx.dev(0), req(PV, 5, 4, 0x9000)).unwrap(); // another group
    report_device_fault(fx.dev(0), req(PV, 5, 3, 0x2000)).unwrap();
    assert!(keeper.take().is_empty(), "nothing dispatched before LAST");
    report_device_fault(fx.dev(0), req(PV | LAST, 5, 3, 0x3000)).unwrap();
    let g = keeper.take().pop().unwrap();
    let addrs: Vec<u64> = g.faults().iter().map(|f| f.addr).collect();
    assert_eq!(addrs, [0x1000, 0x2000, 0x3000]);
    assert_eq!(g.last().addr, 0x3000);
    g.respond(PageResponseCode::Invalid);
    assert_eq!(
        fx.iommu.responses().len(),
        1,
        "partials are never answered on their own"
    );
    // Group 4's partial is still waiting; discarding it sends nothing.
    assert_eq!(iopf_discard_partial(fx.dev(0)).unwrap(), 1);
    assert_eq!(fx.iommu.responses().len(), 1);
    let s = iopf_stats(fx.dev(0)).unwrap();
    assert_eq!(
        (s.reported, s.groups, s.invalid, s.partials_discarded),
        (4, 1, 1, 1)
    );
}

#[test]
fn dropping_an_unanswered_group_answers_invalid_once_and_counts_it() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper::default());
    let dom = fault_domain(&fx, &keeper);
    attach_device_pasid(&dom, fx.dev(0), 5, ()).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    report_device_fault(fx.dev(0), req(PV | LAST, 5, 9, 0)).unwrap();
    drop(keeper.take());
    let dev = fx.dev(0).id();
    assert_eq!(
        fx.iommu.responses(),
        vec![(dev, resp(5, 9, PageResponseCode::Invalid))]
    );
    assert_eq!(iopf_stats(fx.dev(0)).unwrap().dropped_unanswered, 1);
}

#[test]
fn handler_refusing_a_group_gets_it_answered_failure() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper {
        refuse: true,
        ..Keeper::default()
    });
    let dom = fault_domain(&fx, &keeper);
    attach_device_pasid(&dom, fx.dev(0), 5, ()).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    report_device_fault(fx.dev(0), req(PV | LAST, 5, 2, 0)).unwrap();
    let dev = fx.dev(0).id();
    assert_eq!(
        fx.iommu.responses(),
        vec![(dev, resp(5, 2, PageResponseCode::Failure))]
    );
}

#[test]
fn requests_no_fault_capable_attachment_takes_are_answered_invalid_with_einval() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper::default());
    let plain = fx.paging(); // no handler: not fault capable
    attach_device_pasid(&plain, fx.dev(0), 5, ()).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    let cases = [
        req(PV | LAST, 5, 1, 0), // attached, but the domain cannot take faults
        req(PV | LAST, 6, 2, 0), // nothing attached at PASID 6
        req(LAST, 0, 3, 0),      // no PASID and no RID handle
        req(PV, 7, 4, 0),        // even a partial request is answered when nobody takes it
    ];
    for r in cases {
        assert_eq!(
            report_device_fault(fx.dev(0), r).unwrap_err().errno_name(),
            "EINVAL"
        );
    }
    let codes: Vec<_> = fx
        .iommu
        .responses()
        .iter()
        .map(|(_, r)| (r.grpid, r.code))
        .collect();
    let inv = PageResponseCode::Invalid;
    assert_eq!(codes, [(1, inv), (2, inv), (3, inv), (4, inv)]);
    assert!(keeper.take().is_empty());
}

#[test]
fn requests_for_a_device_without_fault_reporting_are_answered_invalid() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper::default());
    let dom = fault_domain(&fx, &keeper);
    attach_device_pasid(&dom, fx.dev(0), 5, ()).unwrap();
    let err = report_device_fault(fx.dev(0), req(PV | LAST, 5, 1, 0)).unwrap_err();
    assert_eq!(err.errno_name(), "EINVAL");
    assert_eq!(fx.iommu.responses().len(), 1);
    assert!(keeper.take().is_empty());
}

#[test]
fn request_without_pasid_goes_to_the_rid_handle() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper::default());
    let dom = fault_domain(&fx, &keeper);
    let h = attach_group_handle(&dom, &fx.group, 17u32).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    report_device_fault(fx.dev(0), req(LAST, 0, 1, 0)).unwrap();
    let g = keeper.take().pop().unwrap();
    assert!(Arc::ptr_eq(&g.handle::<u32>().unwrap(), &h));
    g.respond(PageResponseCode::Success);
}

#[test]
fn user_pasid_table_sends_unattached_pasids_to_the_nested_rid_domain_only() {
    let caps = Capabilities {
        user_pasid_table: true,
        ..Capabilities::default()
    };
    let fx = Fixture::with_iommu(MockDriver::with_capabilities("m", caps), &[64]);
    let keeper = Arc::new(Keeper::default());
    let parent = fx.paging();
    let nreq = DomainRequest::Nested {
        parent: &parent,
        data_type: 1,
        data: &[],
    };
    let nested = Domain::alloc(
        fx.dev(0),
        nreq,
        Some(keeper.clone() as Arc<dyn IopfHandler>),
    )
    .unwrap();
    attach_group_handle(&nested, &fx.group, ()).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    report_device_fault(fx.dev(0), req(PV | LAST, 33, 1, 0)).unwrap();
    let g = keeper
        .take()
        .pop()
        .expect("routed to the nested RID domain");
    assert_eq!(g.last().pasid, 33);
    g.respond(PageResponseCode::Success);

    // A non-nested RID domain does not take unattached PASIDs.
    let fx = Fixture::with_iommu(MockDriver::with_capabilities("m", caps), &[64]);
    let dom = fault_domain(&fx, &keeper);
    attach_group_handle(&dom, &fx.group, ()).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    let err = report_device_fault(fx.dev(0), req(PV | LAST, 33, 1, 0)).unwrap_err();
    assert_eq!(err.errno_name(), "EINVAL");
}

#[test]
fn group_answered_after_disable_still_reaches_the_driver_once() {
    let fx = Fixture::new(&[64]);
    let keeper = Arc::new(Keeper::default());
    let dom = fault_domain(&fx, &keeper);
    attach_device_pasid(&dom, fx.dev(0), 5, ()).unwrap();
    iopf_enable(fx.dev(0)).unwrap();
    report_device_fault(fx.dev(0), req(PV, 5, 8, 0)).unwrap();
    report_device_fault(fx.dev(0), req(PV | LAST, 5, 1, 0)).unwrap();
    detach_device_pasid(&dom, fx.dev(0), 5).unwrap();
    iopf_disable(fx.dev(0)).unwrap();
    assert!(iopf_stats(fx.dev(0)).is_none());
    for g in keeper.take() {
        g.respond(PageResponseCode::Invalid);
    }
    assert_eq!(
        fx.iommu.responses().len(),
        1,
        "the discarded partial got no response"
    );
}

#[test]
fn enable_and_disable_errors() {
    let fx = Fixture::new(&[64]);
    iopf_enable(fx.dev(0)).unwrap();
    assert_eq!(iopf_enable(fx.dev(0)).unwrap_err().errno_name(), "EBUSY");
    iopf_disable(fx.dev(0)).unwrap();
    assert_eq!(iopf_disable(fx.dev(0)).unwrap_err().errno_name(), "ENODEV");
    assert_eq!(
        iopf_discard_partial(fx.dev(0)).unwrap_err().errno_name(),
        "ENODEV"
    );
    let loose = iommu_core::Device::new_unmanaged("loose", 8).unwrap();
    assert_eq!(iopf_enable(&loose).unwrap_err().errno_name(), "ENODEV");
    let no_pri = Capabilities {
        pri: false,
        ..Capabilities::default()
    };
    let fx = Fixture::with_iommu(MockDriver::with_capabilities("m", no_pri), &[64]);
    assert_eq!(
        iopf_enable(fx.dev(0)).unwrap_err().errno_name(),
        "EOPNOTSUPP"
    );
}

//! The user-space fault round trip through the iommufd fault fd, in process on the emulated
//! IOMMU: `report_device_fault` → iommufd handler → `read` of 40-byte records → `write` of
//! 8-byte responses → page response to the driver (the endpoint takes it), in batches of
//! one-fault groups. The eventfd is live, as a real consumer sees it: readiness is set when a
//! group finds the fd unreadable and cleared only when a read finds nothing (a consumer that
//! keeps reading makes no eventfd syscall). Records are read and written only as their uAPI
//! types.
//!
//! The floor, [`CoreFloor`]: the same reports answered Success by a handler that responds at
//! once (core + mock driver only, no iommufd), so the iommufd share can be read off.

use std::sync::Arc;

use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_group_handle, iopf_enable, report_device_fault, Device, Domain, DomainRequest, Group,
    IommuDriver, IopfGroup, IopfHandler, PageRequest, PageResponseCode,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PERM_READ,
};
use iommufd::uapi::{
    IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_SUCCESS, IOMMU_HWPT_FAULT_ID_VALID,
};
use iommufd::{FaultFd, Ictx, IOMMU_NO_PASID};
use zerocopy::IntoBytes;

/// A one-page read fault with the next 9-bit PRG index.
fn next_request(grpid: &mut u32) -> PageRequest {
    *grpid = (*grpid + 1) & 0x1ff;
    PageRequest {
        flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
        pasid: 0,
        grpid: *grpid,
        perm: IOMMU_FAULT_PERM_READ,
        addr: 0x1000,
    }
}

/// A device attached (RID) to a fault-capable HWPT whose fault queue is read through its fd.
pub struct FdRoundTrip {
    // Field order is drop order: the context detaches before the driver goes.
    ictx: Ictx,
    fd: FaultFd,
    dev: Arc<Device>,
    _ep: iommu_emu::Endpoint,
    _iommu: Arc<iommu_emu::EmuIommu>,
    records: Vec<IommuHwptPgfault>,
    responses: Vec<IommuHwptPageResponse>,
    grpid: u32,
}

impl FdRoundTrip {
    /// A device behind a fresh emulated IOMMU and buffers for `batch` records.
    pub fn new(batch: usize) -> Self {
        let phys = Arc::new(iommu_emu::PhysMem::new(64).expect("memory"));
        let iommu = iommu_emu::EmuIommu::new("fd", &phys, iommu_emu::EmuIommuConfig::default())
            .expect("iommu");
        let group = Group::new(iommu.driver(), "g");
        let ep = iommu
            .add_endpoint(&group, "d", 1 << 20, iommu_emu::EndpointConfig::default())
            .expect("endpoint");
        let dev = ep.device().clone();
        let ictx = Ictx::new();
        let dev_id = ictx.bind_device(dev.clone()).expect("bind");
        let ioas = ictx.ioas_alloc().expect("ioas");
        let (fault_id, fd) = ictx.fault_queue_alloc(0).expect("fault queue");
        let hwpt = ictx
            .hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])
            .expect("hwpt");
        ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)
            .expect("attach");
        Self {
            ictx,
            fd,
            dev,
            _ep: ep,
            _iommu: iommu,
            records: vec![IommuHwptPgfault::default(); batch],
            responses: vec![IommuHwptPageResponse::default(); batch],
            grpid: 0,
        }
    }

    /// One batch: report a group per record slot, read them all, answer each Success.
    pub fn round(&mut self) {
        for _ in 0..self.records.len() {
            report_device_fault(&self.dev, next_request(&mut self.grpid)).expect("report");
        }
        let n = self.fd.read(self.records.as_mut_bytes()).expect("read");
        assert_eq!(n, self.records.as_bytes().len(), "every record read");
        for (rec, resp) in self.records.iter().zip(&mut self.responses) {
            *resp = IommuHwptPageResponse {
                cookie: rec.cookie,
                code: IOMMUFD_PAGE_RESP_SUCCESS,
            };
        }
        let w = self.fd.write(self.responses.as_bytes()).expect("write");
        assert_eq!(w, self.responses.as_bytes().len(), "every response taken");
    }

    /// Tears the context down (detach answers anything pending) outside the timed region.
    pub fn finish(self) {
        drop(self.ictx);
    }
}

/// Answers every group Success at once.
struct AnswerAtOnce;

impl IopfHandler for AnswerAtOnce {
    fn name(&self) -> &str {
        "answer-at-once"
    }
    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup> {
        group.respond(PageResponseCode::Success);
        Ok(())
    }
}

/// The core alone: a RID attachment whose handler answers at once.
pub struct CoreFloor {
    dev: Arc<Device>,
    _domain: Arc<Domain>,
    _group: Arc<Group>,
    _mock: Arc<MockDriver>,
    grpid: u32,
}

impl CoreFloor {
    /// A fresh mock IOMMU with the answering handler attached.
    pub fn new() -> Self {
        let mock = MockDriver::new("floor");
        let group = Group::new(mock.clone() as Arc<dyn IommuDriver>, "g");
        let dev = group.add_device("d", 1 << 20).expect("probe");
        let handler: Arc<dyn IopfHandler> = Arc::new(AnswerAtOnce);
        let dom = Domain::alloc(
            &dev,
            DomainRequest::Paging { dma_api: false },
            Some(handler),
        )
        .expect("domain");
        attach_group_handle(&dom, &group, ()).expect("attach");
        iopf_enable(&dev).expect("iopf");
        Self {
            dev,
            _domain: dom,
            _group: group,
            _mock: mock,
            grpid: 0,
        }
    }

    /// Reports `n` one-page groups, each answered inside the report.
    pub fn round(&mut self, n: usize) {
        for _ in 0..n {
            report_device_fault(&self.dev, next_request(&mut self.grpid)).expect("report");
        }
    }
}

impl Default for CoreFloor {
    fn default() -> Self {
        Self::new()
    }
}

//! Shared fixtures: physical memory, one EmuIommu with an IOPF queue, endpoints in their own
//! groups, and fault handlers that hand groups to the test.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use iommu_core::{
    attach_device_pasid, iopf_queue_add_device, AttachHandle, Domain, DomainRequest, Group,
    IopfGroup, IopfHandler, IopfQueue,
};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, PhysMem};

pub const GUARD: Duration = Duration::from_secs(20);

pub struct Fx {
    pub phys: Arc<PhysMem>,
    pub iommu: Arc<EmuIommu>,
    pub queue: Arc<IopfQueue>,
}

impl Fx {
    pub fn new() -> Fx {
        Self::with(4096, EmuIommuConfig::default())
    }

    pub fn with(frames: usize, cfg: EmuIommuConfig) -> Fx {
        let phys = Arc::new(PhysMem::new(frames));
        let iommu = EmuIommu::new("dmar0", &phys, cfg).unwrap();
        let queue = IopfQueue::new("dmar0", 1).unwrap();
        Fx { phys, iommu, queue }
    }

    /// A PCIe function in its own group, with fault reporting enabled on the IOPF queue.
    pub fn endpoint(&self, name: &str, cfg: EndpointConfig) -> Endpoint {
        let group = Group::new(self.iommu.driver(), format!("grp-{name}"));
        let ep = self.iommu.add_endpoint(&group, name, 1 << 20, cfg).unwrap();
        iopf_queue_add_device(&self.queue, ep.device()).unwrap();
        ep
    }
}

/// A fault handler that hands every complete group to the test through a channel (an
/// iommufd-like owner that answers later).
pub struct Forward(pub Sender<IopfGroup>);

impl IopfHandler for Forward {
    fn name(&self) -> &str {
        "forward"
    }

    fn handle_iopf(&self, group: IopfGroup) -> Result<(), IopfGroup> {
        self.0.send(group).map_err(|e| e.0)
    }
}

/// A fault-capable paging domain attached to `pasid` of `ep`, whose groups arrive on the
/// returned channel.
pub fn forwarding_pasid(
    ep: &Endpoint,
    pasid: u32,
) -> (Arc<Domain>, Arc<AttachHandle<()>>, Receiver<IopfGroup>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let domain = Domain::alloc(
        ep.device(),
        DomainRequest::Paging { dma_api: false },
        Some(Arc::new(Forward(tx))),
    )
    .unwrap();
    let h = attach_device_pasid(&domain, ep.device(), pasid, ()).unwrap();
    (domain, h, rx)
}

/// Polls `cond` until it holds or `GUARD` passes (a failure guard, not synchronisation).
pub fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + GUARD;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    cond()
}

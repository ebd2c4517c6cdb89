//! Shared fixtures: physical memory, one EmuIommu with an IOPF queue, endpoints in their own
//! groups, and fault handlers that hand groups to the test.
#![expect(
    dead_code,
    reason = "each test binary uses its own subset of the fixtures"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use iommu_core::{
    attach_device_pasid, iopf_queue_add_device, sva_bind_device, AttachHandle, Domain,
    DomainRequest, Group, IopfGroup, IopfHandler, IopfQueue, SvaBond,
};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, PhysMem, Prot};

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
        let phys = Arc::new(PhysMem::new(frames).unwrap());
        let iommu = EmuIommu::new("dmar0", &phys, cfg).unwrap();
        let queue = IopfQueue::new("dmar0", 1).unwrap();
        Fx { phys, iommu, queue }
    }

    /// A PCIe function in its own group, with fault reporting enabled on the IOPF queue if it
    /// has PRI (a function without is refused it).
    pub fn endpoint(&self, name: &str, cfg: EndpointConfig) -> Endpoint {
        let group = Group::new(self.iommu.driver(), format!("grp-{name}"));
        let ep = self.iommu.add_endpoint(&group, name, 1 << 20, cfg).unwrap();
        if ep.pri_enabled() {
            iopf_queue_add_device(&self.queue, ep.device()).unwrap();
        }
        ep
    }

    /// Function `dev0` with `pasid` attached to a fault-capable paging domain whose groups
    /// arrive on the returned channel (see [`forwarding_pasid`]).
    pub fn pri_endpoint(&self, pasid: u32, cfg: EndpointConfig) -> PriEndpoint {
        let ep = self.endpoint("dev0", cfg);
        let (domain, h, rx) = forwarding_pasid(&ep, pasid);
        (ep, domain, h, rx)
    }

    /// Function `dev0` bound through SVA to a fresh mm holding one `len`-byte mapping with
    /// `prot` (never touched): the endpoint, the mm, the mapping's address and the bond.
    pub fn sva_endpoint(&self, len: u64, prot: Prot) -> (Endpoint, Arc<Mm>, u64, SvaBond) {
        let ep = self.endpoint("dev0", EndpointConfig::default());
        let mm = Mm::new(&self.phys).unwrap();
        let buf = mm.mmap(len, prot).unwrap();
        let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();
        (ep, mm, buf, bond)
    }
}

/// What [`Fx::pri_endpoint`] returns: the function, its domain, the attach handle (keep it
/// alive) and the channel its page request groups arrive on.
pub type PriEndpoint = (
    Endpoint,
    Arc<Domain>,
    Arc<AttachHandle<()>>,
    Receiver<IopfGroup>,
);

/// The default endpoint configuration, changed by `f`.
pub fn ep_cfg(f: impl FnOnce(&mut EndpointConfig)) -> EndpointConfig {
    let mut cfg = EndpointConfig::default();
    f(&mut cfg);
    cfg
}

/// An IOMMU without a queue thread (a deterministic scheduler steps its page request queue).
pub fn manual() -> EmuIommuConfig {
    manual_with(|_| {})
}

/// [`manual`], changed by `f`.
pub fn manual_with(f: impl FnOnce(&mut EmuIommuConfig)) -> EmuIommuConfig {
    let mut cfg = EmuIommuConfig {
        prq_thread: false,
        ..EmuIommuConfig::default()
    };
    f(&mut cfg);
    cfg
}

/// The default IOMMU configuration, changed by `f`.
pub fn iommu_cfg(f: impl FnOnce(&mut EmuIommuConfig)) -> EmuIommuConfig {
    let mut cfg = EmuIommuConfig::default();
    f(&mut cfg);
    cfg
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

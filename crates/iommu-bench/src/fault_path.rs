//! End-to-end SVA fault groups through the software IOMMU: a device writes untouched pages of an
//! SVA-bound process (page request → PRQ thread → `report_device_fault` → SVA handler, on an
//! IOPF queue or inline → `handle_mm_fault` (a zeroed 4 KiB frame) → page response → DMA
//! retry).

use std::sync::Arc;
use std::time::{Duration, Instant};

use iommu_core::{iopf_enable, iopf_queue_add_device, sva_bind_device, Group, IopfQueue, SvaBond};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, PhysMem, Prot};

/// Who runs the SVA handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// The `iopf_queue` workers (as Linux), this many of them.
    Queue(usize),
    /// The core, inline on the `prq/` thread: one thread hop less per group.
    Inline,
}

/// One PCIe function behind a fresh emulated IOMMU, bound by SVA to a fresh process: what
/// both end-to-end workloads ([`SvaFaultPath`], [`crate::e2e::E2e`]) fault through.
pub(crate) struct SvaStack {
    // Field order is drop order: unbind before the endpoint, the queue and memory go.
    pub bond: SvaBond,
    pub mm: Arc<Mm>,
    pub ep: Endpoint,
    queue: Arc<IopfQueue>,
    pub iommu: Arc<EmuIommu>,
}

impl SvaStack {
    /// Builds the stack over `phys`, the SVA work run as `handler` says.
    pub fn new(phys: &Arc<PhysMem>, handler: Handler, cfg: EndpointConfig) -> Self {
        let workers = match handler {
            Handler::Queue(n) => n,
            Handler::Inline => 1,
        };
        let iommu = EmuIommu::new("bench", phys, EmuIommuConfig::default()).expect("iommu");
        let queue = IopfQueue::new("bench", workers).expect("queue");
        Self::function(iommu, queue, "dev0", handler, cfg)
    }

    /// Another function behind the same IOMMU and IOPF queue, in its own group, bound by SVA
    /// to its own process in the same physical memory.
    pub fn sibling(&self, name: &str, cfg: EndpointConfig) -> Self {
        let (iommu, queue) = (self.iommu.clone(), self.queue.clone());
        Self::function(iommu, queue, name, Handler::Queue(1), cfg)
    }

    /// Function `name` in a group of its own behind `iommu`, its faults handled as `handler`
    /// says, bound by SVA to a fresh process.
    fn function(
        iommu: Arc<EmuIommu>,
        queue: Arc<IopfQueue>,
        name: &str,
        handler: Handler,
        cfg: EndpointConfig,
    ) -> Self {
        let group = Group::new(iommu.driver(), format!("g-{name}"));
        let ep = iommu
            .add_endpoint(&group, name, 1 << 20, cfg)
            .expect("endpoint");
        match handler {
            Handler::Queue(_) => iopf_queue_add_device(&queue, ep.device()).expect("iopf"),
            Handler::Inline => iopf_enable(ep.device()).expect("iopf"),
        }
        let mm = Mm::new(iommu.phys()).expect("mm");
        let bond = sva_bind_device(ep.device(), &mm.as_address_space()).expect("bind");
        Self {
            bond,
            mm,
            ep,
            queue,
            iommu,
        }
    }
}

/// A device bound to a process by SVA, with `chunk` pages' worth of frames to fault into.
pub struct SvaFaultPath {
    stack: SvaStack,
    chunk: u64,
}

impl SvaFaultPath {
    /// Builds the stack; at most `chunk` pages are faulted in before they are unmapped again.
    pub fn new(handler: Handler, chunk: u64) -> Self {
        let phys = Arc::new(PhysMem::new(2 * chunk as usize + 256).expect("physical memory"));
        let stack = SvaStack::new(&phys, handler, EndpointConfig::default());
        Self { stack, chunk }
    }

    /// Runs `groups` DMA writes of `pages` untouched pages each (one page request group per
    /// write) and returns the time spent in them. Memory is mapped before and unmapped after
    /// each chunk, untimed, so it stays bounded however many groups are asked for.
    pub fn run(&self, groups: u64, pages: u64) -> Duration {
        let SvaStack { bond, mm, ep, .. } = &self.stack;
        let data = vec![0x5au8; (pages * 4096) as usize];
        let pasid = Some(bond.pasid());
        let mut total = Duration::ZERO;
        let mut left = groups;
        while left > 0 {
            let jobs = left.min((self.chunk / pages).max(1));
            let len = jobs * pages * 4096;
            let va = mm.mmap(len, Prot::READ_WRITE).expect("mmap");
            let start = Instant::now();
            for j in 0..jobs {
                ep.dma_write(pasid, va + j * pages * 4096, &data)
                    .expect("dma");
            }
            total += start.elapsed();
            mm.munmap(va, len).expect("munmap");
            left -= jobs;
        }
        total
    }
}

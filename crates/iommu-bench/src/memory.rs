//! Memory: a 4 KiB write into `PhysMem` (a `vm-memory` `GuestMemoryMmap` region since issue 13;
//! before, frames of atomic words) beside a lock per frame, and the DMA engine over resident
//! pages.

use std::sync::Arc;

use iommu_core::Group;
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, PhysMem};
use iommu_pt::{Perms, PhysAddr};
use parking_lot::Mutex;

/// One frame of `PhysMem` and four mutex-guarded frames to write 4 KiB into.
pub struct FrameWrites {
    phys: PhysMem,
    frame: PhysAddr,
    locked: Vec<Mutex<Box<[u8; 4096]>>>,
}

impl FrameWrites {
    /// Allocates the frames.
    pub fn new() -> Self {
        let phys = PhysMem::new(4).expect("physical memory");
        let frame = phys.alloc_frame().expect("frame").addr();
        let locked = (0..4).map(|_| Mutex::new(Box::new([0u8; 4096]))).collect();
        Self {
            phys,
            frame,
            locked,
        }
    }

    /// 4 KiB into a `PhysMem` frame (`vm-memory`'s `write_slice`; the criterion id stays
    /// `phys/write_4k_atomic_words` so the line compares with runs before issue 13).
    #[inline]
    pub fn write_frame(&self, src: &[u8; 4096]) {
        self.phys.write(self.frame, src).expect("write");
    }

    /// 4 KiB into frame `i` of the mutex-per-frame alternative.
    #[inline]
    pub fn write_mutex_frame(&self, i: usize, src: &[u8; 4096]) {
        self.locked[i].lock().copy_from_slice(src);
    }
}

impl Default for FrameWrites {
    fn default() -> Self {
        Self::new()
    }
}

/// A device whose default domain maps 16 resident pages at [`ResidentDma::IOVA`].
pub struct ResidentDma {
    ep: Endpoint,
    _iommu: Arc<EmuIommu>,
}

impl ResidentDma {
    /// Where the 16 pages are mapped.
    pub const IOVA: u64 = 0x10_0000;

    /// Maps 16 fresh frames.
    pub fn new() -> Self {
        let phys = Arc::new(PhysMem::new(1024).expect("physical memory"));
        let iommu = EmuIommu::new("bench-dma", &phys, EmuIommuConfig::default()).expect("iommu");
        let group = Group::new(iommu.driver(), "g0");
        let ep = iommu
            .add_endpoint(&group, "dev0", 1 << 20, EndpointConfig::default())
            .expect("endpoint");
        let domain = group.default_domain().expect("default domain");
        for p in 0..16u64 {
            let fr = phys.alloc_frame().expect("frame");
            iommu
                .map(
                    &domain,
                    Self::IOVA + p * 4096,
                    fr.addr(),
                    4096,
                    Perms::READ_WRITE,
                )
                .expect("map");
        }
        Self { ep, _iommu: iommu }
    }

    /// One DMA write of `data` (at most 64 KiB) at [`Self::IOVA`], without PASID.
    #[inline]
    pub fn write(&self, data: &[u8]) {
        self.ep.dma_write(None, Self::IOVA, data).expect("dma");
    }
}

impl Default for ResidentDma {
    fn default() -> Self {
        Self::new()
    }
}

//! rust-vmm device DMA through the emulated IOMMU (`iommu-vmm`): vm-memory's `IommuMemory`
//! over an `AtsIommu`, each operation beside the same work on the bare `GuestMemoryMmap` (the
//! emulator's frames without an IOMMU), the floor a translation layer is measured against.
//!
//! The workload is an SVA-bound process with [`VmmDma::BYTES`] of resident memory (touched by
//! the CPU first: no page requests are timed). A *hit* is a translation answered by the
//! device's vm-memory IOTLB; a *miss* is the first translation after an invalidation of the
//! PASID ([`VmmDma::invalidate`], untimed by the benches): an ATS request that misses the
//! device TLB and the IOMMU's IOTLB and walks the process's page table.

use iommu_emu::{EndpointConfig, Prot};
use iommu_vmm::world::SvaWorld;
use iommu_vmm::EndpointMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, Iommu, Permissions};

/// The workload: the world, the device's `IommuMemory`, and where the bare side reads.
pub struct VmmDma {
    world: SvaWorld,
    mem: EndpointMemory,
    va: u64,
    bare: GuestAddress,
    buf: Vec<u8>,
}

impl VmmDma {
    /// Bytes of one DMA.
    pub const BYTES: usize = 64 << 10;

    /// Builds the world, makes the buffer resident and warms the IOTLB.
    pub fn new() -> Self {
        let world = SvaWorld::new(1024, EndpointConfig::default()).expect("SVA world");
        // Measure the emulator, not the host's first-touch faults.
        world
            .phys
            .prefault()
            .expect("host memory for the emulated RAM");
        let va = world
            .mm
            .mmap(Self::BYTES as u64, Prot::READ_WRITE)
            .expect("mmap");
        world
            .mm
            .write(va, &vec![0x5a; Self::BYTES])
            .expect("CPU touches the buffer");
        let mem = world.memory();
        let bare = world
            .phys
            .guest_memory()
            .iter()
            .next()
            .expect("one region")
            .start_addr();
        let w = VmmDma {
            world,
            mem,
            va,
            bare,
            buf: vec![0u8; Self::BYTES],
        };
        w.translate_read();
        w
    }

    /// One 8-byte device read at the buffer's start through the IOMMU (a translation).
    #[inline]
    pub fn translate_read(&self) -> u64 {
        self.mem
            .read_obj(GuestAddress(self.va))
            .expect("translated read")
    }

    /// The translation of that read alone (`Iommu::translate` and its iterator), without
    /// vm-memory's slice machinery and the copy: this crate's share of a hit.
    #[inline]
    pub fn translate_only(&self) -> usize {
        self.mem
            .iommu()
            .translate(GuestAddress(self.va), 8, Permissions::Read)
            .expect("translation")
            .count()
    }

    /// The same read on the bare memory.
    #[inline]
    pub fn bare_read(&self) -> u64 {
        self.world
            .phys
            .guest_memory()
            .read_obj(self.bare)
            .expect("bare read")
    }

    /// Invalidates the PASID's cached translations (IOTLB and device TLB): the next
    /// translation misses.
    pub fn invalidate(&self) {
        let ep = &self.world.ep;
        ep.iommu()
            .flush_pasid(ep.device(), Some(self.world.pasid()));
    }

    /// A [`VmmDma::BYTES`] device read through the IOMMU.
    #[inline]
    pub fn dma_read(&mut self) {
        self.mem
            .read_slice(&mut self.buf, GuestAddress(self.va))
            .expect("DMA read");
    }

    /// A [`VmmDma::BYTES`] device write through the IOMMU.
    #[inline]
    pub fn dma_write(&self) {
        self.mem
            .write_slice(&self.buf, GuestAddress(self.va))
            .expect("DMA write");
    }

    /// The same read on the bare memory.
    #[inline]
    pub fn bare_dma_read(&mut self) {
        self.world
            .phys
            .guest_memory()
            .read_slice(&mut self.buf, self.bare)
            .expect("bare read");
    }

    /// The same write on the bare memory.
    #[inline]
    pub fn bare_dma_write(&self) {
        self.world
            .phys
            .guest_memory()
            .write_slice(&self.buf, self.bare)
            .expect("bare write");
    }

    /// Translations answered by the IOTLB and ATS requests sent so far (to check that hits
    /// hit and misses miss).
    pub fn hits_and_requests(&self) -> (u64, u64) {
        let s = self.mem.iommu().stats();
        (s.hits, s.ats_requests)
    }
}

impl Default for VmmDma {
    fn default() -> Self {
        Self::new()
    }
}

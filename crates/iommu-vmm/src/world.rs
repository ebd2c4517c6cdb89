//! Ready-made platforms for a device behind the emulated IOMMU, shared by the demo, the tests
//! and the benchmarks: [`SvaWorld`] (an endpoint bound to a process [`Mm`] through SVA) and
//! [`HwptWorld`] (an endpoint attached by RID to an iommufd paging HWPT, fault capable or not,
//! over an IOAS the VMM maps), plus [`GuestRam`], the VMM's own frames of guest RAM.
//!
//! Setup failures come back as `Err(String)` naming the step; teardown happens on drop, in
//! Linux's order.

use std::collections::BTreeMap;
use std::sync::Arc;

use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue, SvaBond};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, Mm, Pfn, PhysMem};
use iommufd::uapi::IOMMU_HWPT_FAULT_ID_VALID;
use iommufd::{FaultFd, Ictx, IOAS_APERTURE_END, IOMMU_NO_PASID};
use vm_memory::{Bytes, GuestAddress};

use crate::driver::DriverMemory;
use crate::{iommu_memory, AtsIommu, EndpointMemory};

const PAGE: u64 = 4096;

fn step<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// An IOMMU over a budget of `frames` frames of fresh physical memory (backed by the host only
/// as frames are used: never prefaulted, so a large budget costs nothing), one group and one
/// endpoint configured by `cfg`.
fn platform(frames: usize, cfg: EndpointConfig) -> Result<(Arc<PhysMem>, Endpoint), String> {
    let phys = Arc::new(PhysMem::new(frames).map_err(step("physical memory"))?);
    let iommu = EmuIommu::new("dmar0", &phys, EmuIommuConfig::default()).map_err(step("iommu"))?;
    let group = Group::new(iommu.driver(), "group0");
    let ep = iommu
        .add_endpoint(&group, "0000:00:04.0", 1 << 20, cfg)
        .map_err(step("endpoint"))?;
    Ok((phys, ep))
}

/// An endpoint bound through SVA to a fresh process address space.
pub struct SvaWorld {
    /// Physical memory.
    pub phys: Arc<PhysMem>,
    /// The endpoint (its IOMMU is `ep.iommu()`).
    pub ep: Endpoint,
    /// The IOPF queue the SVA handler resolves faults on.
    pub queue: Arc<IopfQueue>,
    /// The process.
    pub mm: Arc<Mm>,
    pasid: u32,
    bond: Option<SvaBond>,
}

impl SvaWorld {
    /// The platform, an IOPF queue with one worker, the process, and the bond.
    pub fn new(frames: usize, cfg: EndpointConfig) -> Result<SvaWorld, String> {
        let queue = IopfQueue::new("dmar0", 1).map_err(step("iopf queue"))?;
        Self::with_queue(frames, cfg, queue)
    }

    /// [`SvaWorld::new`] with the caller's IOPF queue (a manual one lets a test decide when
    /// the SVA handler runs).
    pub fn with_queue(
        frames: usize,
        cfg: EndpointConfig,
        queue: Arc<IopfQueue>,
    ) -> Result<SvaWorld, String> {
        let (phys, ep) = platform(frames, cfg)?;
        iopf_queue_add_device(&queue, ep.device()).map_err(step("iopf_queue_add_device"))?;
        let mm = Mm::new(&phys).map_err(step("mm"))?;
        let bond =
            sva_bind_device(ep.device(), &mm.as_address_space()).map_err(step("sva_bind"))?;
        Ok(SvaWorld {
            phys,
            ep,
            queue,
            mm,
            pasid: bond.pasid(),
            bond: Some(bond),
        })
    }

    /// The mm's PASID (stays the same after [`SvaWorld::unbind`]: the mm owns it).
    pub fn pasid(&self) -> u32 {
        self.pasid
    }

    /// The device's IOVA-addressed view of the process (IOVA = virtual address).
    pub fn memory(&self) -> EndpointMemory {
        iommu_memory(&self.phys, AtsIommu::new(&self.ep, Some(self.pasid())))
    }

    /// Unbinds the device from the mm (detaches the PASID, flushes the IOPF queue). A second
    /// call does nothing.
    pub fn unbind(&mut self) {
        if let Some(b) = self.bond.take() {
            b.unbind();
        }
    }
}

impl Drop for SvaWorld {
    fn drop(&mut self) {
        self.unbind();
        self.queue.shutdown();
    }
}

/// An endpoint attached by RID to an iommufd paging HWPT over an IOAS, with a fault queue when
/// fault capable.
pub struct HwptWorld {
    /// Physical memory.
    pub phys: Arc<PhysMem>,
    /// The endpoint.
    pub ep: Endpoint,
    /// The iommufd context.
    pub ictx: Ictx,
    /// The bound device's ID.
    pub dev_id: u32,
    /// The IOAS.
    pub ioas: u32,
    /// The HWPT.
    pub hwpt: u32,
    /// The fault queue object and its fd (fault-capable HWPTs only).
    pub fault: Option<(u32, FaultFd)>,
    attached: bool,
}

impl HwptWorld {
    /// The platform, the device bound to a new iommufd context, an empty IOAS, a HWPT on it
    /// (with a fault queue, `IOMMU_HWPT_FAULT_ID_VALID`, when `fault_capable`), attached to the
    /// RID.
    pub fn new(frames: usize, cfg: EndpointConfig, fault_capable: bool) -> Result<Self, String> {
        let (phys, ep) = platform(frames, cfg)?;
        let ictx = Ictx::new();
        let dev_id = ictx
            .bind_device(ep.device().clone())
            .map_err(step("bind_device"))?;
        let ioas = ictx.ioas_alloc().map_err(step("ioas_alloc"))?;
        let fault = if fault_capable {
            Some(
                ictx.fault_queue_alloc(0)
                    .map_err(step("fault_queue_alloc"))?,
            )
        } else {
            None
        };
        let (flags, fault_id) = match &fault {
            Some((id, _)) => (IOMMU_HWPT_FAULT_ID_VALID, *id),
            None => (0, 0),
        };
        let hwpt = ictx
            .hwpt_alloc(dev_id, ioas, flags, fault_id, 0, &[])
            .map_err(step("hwpt_alloc"))?;
        ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)
            .map_err(step("device_attach"))?;
        Ok(HwptWorld {
            phys,
            ep,
            ictx,
            dev_id,
            ioas,
            hwpt,
            fault,
            attached: true,
        })
    }

    /// The device's IOVA-addressed view of the HWPT (requests without PASID).
    pub fn memory(&self) -> EndpointMemory {
        iommu_memory(&self.phys, AtsIommu::new(&self.ep, None))
    }

    /// The fault fd (fault-capable HWPTs only).
    pub fn fault_fd(&self) -> Option<&FaultFd> {
        self.fault.as_ref().map(|(_, fd)| fd)
    }

    /// Detaches the RID: iommufd answers whatever its fault queue still holds for it (Invalid).
    pub fn detach(&mut self) -> Result<(), String> {
        if self.attached {
            self.attached = false;
            self.ictx
                .device_detach(self.dev_id, IOMMU_NO_PASID)
                .map_err(step("device_detach"))?;
        }
        Ok(())
    }
}

impl Drop for HwptWorld {
    fn drop(&mut self) {
        // Teardown in Linux's order; errors are ignored: nothing can be done about them here.
        let _ = self.detach();
        let _ = self.ictx.destroy(self.hwpt);
        let _ = self.ictx.ioas_unmap(self.ioas, 0, IOAS_APERTURE_END);
        let _ = self.ictx.destroy(self.ioas);
        if let Some((id, fd)) = self.fault.take() {
            drop(fd);
            let _ = self.ictx.destroy(id);
        }
        let _ = self.ictx.unbind_device(self.dev_id);
    }
}

/// The VMM's guest RAM: frames it allocated and fills with the CPU, at consecutive guest
/// IOVAs from `base`. Mapping them for the device is someone else's business (an IOAS map).
pub struct GuestRam {
    phys: Arc<PhysMem>,
    base: u64,
    frames: BTreeMap<u64, Pfn>,
}

impl GuestRam {
    /// `len` bytes (whole pages) of guest RAM at `base` (page aligned), from `phys`.
    pub fn new(phys: &Arc<PhysMem>, base: u64, len: u64) -> Result<GuestRam, String> {
        if !base.is_multiple_of(PAGE) || base.checked_add(len).is_none() {
            return Err(format!("guest RAM {base:#x}+{len:#x}: misaligned or wraps"));
        }
        let mut ram = GuestRam {
            phys: phys.clone(),
            base,
            frames: BTreeMap::new(),
        };
        for i in 0..len.div_ceil(PAGE) {
            let pfn = phys.alloc_frame().map_err(step("guest RAM"))?;
            ram.frames.insert(base + i * PAGE, pfn);
        }
        Ok(ram)
    }

    /// First guest IOVA.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The physical address backing the page of `iova`, if it is guest RAM.
    pub fn frame_of(&self, iova: u64) -> Option<u64> {
        self.frames.get(&(iova & !(PAGE - 1))).map(|p| p.addr().0)
    }

    /// Visits `[addr, addr + len)` page by page as (physical address, offset into the range,
    /// length); `Err` outside guest RAM.
    fn chunks(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut done = 0usize;
        while done < len {
            let a = addr
                .checked_add(done as u64)
                .ok_or_else(|| format!("{addr:#x}+{len:#x} wraps"))?;
            let pa = self
                .frame_of(a)
                .ok_or_else(|| format!("{a:#x} is not guest RAM"))?;
            let off = a % PAGE;
            let n = ((PAGE - off) as usize).min(len - done);
            f(pa + off, done, n)?;
            done += n;
        }
        Ok(())
    }
}

impl DriverMemory for GuestRam {
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), String> {
        let gm = self.phys.guest_memory();
        self.chunks(addr, data.len(), |pa, at, n| {
            gm.write_slice(&data[at..at + n], GuestAddress(pa))
                .map_err(|e| e.to_string())
        })
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        let gm = self.phys.guest_memory();
        self.chunks(addr, buf.len(), |pa, at, n| {
            gm.read_slice(&mut buf[at..at + n], GuestAddress(pa))
                .map_err(|e| e.to_string())
        })
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // The owner unmaps (or detaches) before dropping: no translation may still point here.
        for (_, pfn) in std::mem::take(&mut self.frames) {
            let _ = self.phys.free_frame(pfn); // ours: cannot be refused
        }
    }
}

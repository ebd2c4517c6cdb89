//! `iommu-vmm`: rust-vmm devices DMA through iommu-rs.
//!
//! Rust VMMs reach guest memory through rust-vmm's `vm-memory`; since 0.18 it has an
//! [`Iommu`](vm_memory::Iommu) trait and [`IommuMemory`], which make any guest memory
//! IOVA-addressed through an IOTLB. This crate makes the emulated IOMMU of `iommu-emu` that
//! `Iommu`, so unmodified rust-vmm device code (here a `virtio-queue` device) DMAs through real
//! page tables, with ATS and PRI behind every miss.
//!
//! ```text
//!   device code (virtio-queue)   Bytes::read_slice / write_slice / load / store on IOVAs
//!        |
//!   vm-memory IommuMemory        Iotlb lookup; on a miss or access failure, Iommu::translate
//!        |                       over PhysMem::guest_memory() (GuestMemoryMmap: the frames)
//!   AtsIommu (this crate)        one (endpoint, PASID) address space: ATS translation request
//!        |                       per missing range; ATC generation keeps the Iotlb coherent
//!   Endpoint (iommu-emu)         device TLB, else the IOMMU's walk, else a PRI page request
//!        |                       group, waited for within the endpoint's response timeout
//!   EmuIommu + iommu-core        PRQ → report_device_fault → SVA handler (Mm fault-in) or
//!                                iommufd fault queue (a VMM thread maps the page) → response
//! ```
//!
//! * [`AtsIommu`] ([`ats`]): the `Iommu`. [`iommu_memory`] builds the `IommuMemory`.
//! * [`InvertDevice`] ([`device`]): a virtio device on virtio-queue's split `Queue`.
//! * [`driver`]: the driver's side of its queue (layout, publishing, byte-by-byte checks).
//! * [`world`]: ready-made platforms: SVA on a process `Mm`, and an iommufd fault-capable HWPT
//!   with a user-space fault handler ([`handler`]).
//! * [`demo`]: both variants end to end, as the `virtio_queue_sva` example runs them.
//!
//! # ATS and PRI
//! Translations come from the endpoint's ATS translation requests. Without ATS the endpoint
//! still gets answers for pages that are present (the IOMMU translates its untranslated
//! requests) and they are cached here all the same, kept coherent by the same generation
//! counter; but it has no PRI (PCIe PRI needs ATS). Demand paging needs PRI: a device without
//! it (or with PRI disabled after a Response Failure) gets `CannotResolve` at once for a page
//! that is not present, with the unrecoverable fault as the reason, and never waits.
//!
//! ```
//! use std::sync::Arc;
//! use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue};
//! use iommu_emu::{EmuIommu, EmuIommuConfig, EndpointConfig, Mm, PhysMem, Prot};
//! use iommu_vmm::{iommu_memory, AtsIommu};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! let phys = Arc::new(PhysMem::new(1024).unwrap());
//! let iommu = EmuIommu::new("dmar0", &phys, EmuIommuConfig::default()).unwrap();
//! let queue = IopfQueue::new("dmar0", 1).unwrap();
//! let group = Group::new(iommu.driver(), "grp0");
//! let ep = iommu.add_endpoint(&group, "0000:00:04.0", 1 << 20, EndpointConfig::default()).unwrap();
//! iopf_queue_add_device(&queue, ep.device()).unwrap();
//! let mm = Mm::new(&phys).unwrap();
//! let buf = mm.mmap(8192, Prot::READ_WRITE).unwrap(); // never touched
//! let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();
//!
//! // The device's view of the process: IOVA = the process's virtual address.
//! let mem = iommu_memory(&phys, AtsIommu::new(&ep, Some(bond.pasid())));
//! mem.write_slice(b"through vm-memory", GuestAddress(buf + 4090)).unwrap(); // two page requests
//! let mut back = [0u8; 17];
//! mm.read(buf + 4090, &mut back).unwrap();
//! assert_eq!(&back, b"through vm-memory");
//! assert_eq!(ep.stats().groups_sent, ep.stats().groups_answered);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ats;
pub mod demo;
pub mod device;
pub mod driver;
pub mod handler;
pub mod world;

use iommu_emu::PhysMem;
use vm_memory::{GuestMemoryMmap, IommuMemory};

pub use ats::{AtsIommu, AtsIommuStats};
pub use device::{DeviceError, InvertDevice, Processed};
pub use driver::{Driver, DriverMemory, RingLayout, Verified};

/// vm-memory's IOVA-addressed memory of one endpoint address space: the emulator's frames
/// (`PhysMem::guest_memory`) behind an [`AtsIommu`].
pub type EndpointMemory = IommuMemory<GuestMemoryMmap, AtsIommu>;

/// The [`EndpointMemory`] for `iommu` over `phys` (the memory its endpoint's IOMMU translates
/// into), with the IOMMU enabled and no dirty tracking. The IOMMU is reachable again through
/// [`IommuMemory::iommu`].
pub fn iommu_memory(phys: &PhysMem, iommu: AtsIommu) -> EndpointMemory {
    IommuMemory::new(phys.guest_memory().clone(), iommu, true, ())
}

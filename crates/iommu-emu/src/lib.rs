//! `iommu-emu`: the hardware iommu-rs runs on, simulated.
//!
//! * [`PhysMem`] — bounded physical memory of 4 KiB frames on rust-vmm's `vm-memory` (one
//!   anonymous `GuestMemoryMmap` region, [`PhysMem::guest_memory`]), shared lock-free by CPU
//!   threads, DMA and page tables ([`phys`]).
//! * [`Mm`] — a process address space implementing [`iommu_core::AddressSpace`]: VMAs,
//!   demand-zero paging through its own x86-64 first-stage table (the one SVA shares with the
//!   IOMMU), `munmap`/`mprotect`/`exit` that invalidate every IOMMU caching it before freeing
//!   ([`mm`]).
//! * [`EmuIommu`] — a software IOMMU implementing [`iommu_core::IommuDriver`]: per-device RID
//!   context and PASID table, domain IDs, an IOTLB, a bounded page request queue drained by one
//!   `prq/<name>` thread (or stepped by [`EmuIommu::prq_step`] when `prq_thread` is off) into
//!   [`iommu_core::report_device_fault`] with VT-d overflow semantics,
//!   page responses routed back to endpoints, and a fault log ([`iommu`]).
//! * [`Endpoint`] — a PCIe function: PASID, an ATS device TLB, PRI with credits and 9-bit PRG
//!   indices, PASID stop, reset, and a DMA engine that batches the pages of a job that miss
//!   into one page request group, blocking or polled step by step ([`DmaJob`]) ([`endpoint`]).
//! * [`spec`] — the hardware records the emulator keeps in their VT-d encodings: PASID-table
//!   entries, page request and page group response descriptors.
//! * [`demo`] — the end-to-end SVA demand-paging flow behind the `sva_demand_paging` example.
//!
//! The path of a page request (DESIGN §3): `Endpoint::dma_write` → `EmuIommu` translation
//! misses → one page request group into the PRQ → queue thread → `report_device_fault` → SVA
//! handler on the `IopfQueue` → `Mm::handle_mm_fault` → `IopfGroup::respond` →
//! `EmuIommu::page_response` → the endpoint retries.
//!
//! ```
//! use std::sync::Arc;
//! use iommu_core::{iopf_queue_add_device, sva_bind_device, Group, IopfQueue};
//! use iommu_emu::{EmuIommu, EmuIommuConfig, EndpointConfig, Mm, PhysMem, Prot};
//!
//! let phys = Arc::new(PhysMem::new(1024).unwrap());
//! let iommu = EmuIommu::new("dmar0", &phys, EmuIommuConfig::default()).unwrap();
//! let queue = IopfQueue::new("dmar0", 1).unwrap();
//! let group = Group::new(iommu.driver(), "grp0");
//! let ep = iommu.add_endpoint(&group, "0000:00:04.0", 1 << 20, EndpointConfig::default()).unwrap();
//! iopf_queue_add_device(&queue, ep.device()).unwrap();
//!
//! let mm = Mm::new(&phys).unwrap();
//! let buf = mm.mmap(8192, Prot::READ_WRITE).unwrap(); // never touched by the CPU
//! let bond = sva_bind_device(ep.device(), &mm.as_address_space()).unwrap();
//! ep.dma_write(Some(bond.pasid()), buf + 100, b"written by the device").unwrap();
//!
//! let mut back = [0u8; 21];
//! mm.read(buf + 100, &mut back).unwrap();
//! assert_eq!(&back, b"written by the device");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod counter;
pub mod demo;
pub mod endpoint;
mod frames;
mod hash;
pub mod iommu;
pub mod mm;
mod percpu;
pub mod phys;
mod prq;
mod psc;
pub mod spec;
mod tlb;
pub mod trace;

pub use endpoint::{
    DmaError, DmaJob, DmaKind, DmaPoll, Endpoint, EndpointConfig, EndpointStats, MAX_AUTO_ROUNDS,
};
pub use iommu::{
    DmaWindow, EmuIommu, EmuIommuConfig, FaultReason, FaultRecord, IommuStats, TranslationFault,
};
/// Page-table types that appear in this crate's API (frames, physical addresses, permissions).
pub use iommu_pt::{Perms, Pfn, PhysAddr};
pub use mm::{Mm, MmStats, Prot, SecondaryTlb};
pub use phys::{PhysMem, Zeroing};

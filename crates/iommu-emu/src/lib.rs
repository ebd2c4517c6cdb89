//! `iommu-emu`: the hardware iommu-rs runs on, simulated.
//!
//! This crate will own the software IOMMU (`EmuIommu`, implementing `iommu-core`'s driver trait:
//! per-device PASID tables, domain IDs, an IOTLB, the bounded page request queue and page
//! responses, the unrecoverable-fault log), PCIe endpoints with PASID, ATS and PRI and a DMA
//! engine, and simulated process memory (`PhysMem`, `Mm`) whose first-stage tables the IOMMU
//! walks for SVA. See `DESIGN.md` §2-§3 of the project; it is filled by the SVA/IOPF issue.
#![forbid(unsafe_code)]

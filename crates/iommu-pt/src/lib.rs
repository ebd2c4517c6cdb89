//! `iommu-pt`: multi-level page-table formats walked by the software IOMMU.
//!
//! This crate will own the page-table entry formats (an x86-64-compatible first stage with 4 and 5
//! levels, and a second stage for paging domains), map/unmap/query over ranges with 4 KiB, 2 MiB
//! and 1 GiB leaves, accessed/dirty bits set by the walker, and page-table pages obtained through
//! a small allocator trait. It knows nothing of devices or PASIDs.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

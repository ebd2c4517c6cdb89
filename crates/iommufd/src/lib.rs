//! `iommufd`: the user-space API object model of iommu-rs.
//!
//! This crate will own the `Ictx` object table (u32 IDs, destroy refusing with `EBUSY` while an
//! object is referenced), IOAS, device binding, paging and nested HWPTs with a fault queue, the
//! fault object's file-like endpoint (read/write/poll and a real fd for epoll), byte-exact uAPI
//! records, and auto-response of pending faults on detach, replace and destroy. See `DESIGN.md`
//! §2 and `SPEC.md` §5; it is filled by the iommufd issue.
#![forbid(unsafe_code)]

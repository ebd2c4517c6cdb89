//! Trace points: the core's equivalent of Linux's `iommu` and `io_page_fault` tracepoints, as
//! [`tracing`] events, so a simulator or a test can watch the protocol without hooks in the API.
//!
//! Every event is at `TRACE` level, has a `kind` field naming it, and uses these fields
//! (integers as `u64`, a fault's PASID as `i64` with `-1` meaning "no PASID"):
//!
//! | target | `kind` | fields | emitted |
//! |---|---|---|---|
//! | `iommu_core::attach` | `attached` | `group`, `pasid`, `handle` | after the handle is published |
//! | `iommu_core::attach` | `detached` | `group`, `pasid`, `handle` | after the handle is unpublished (the detach fence has passed: no report holds it) |
//! | `iommu_core::iopf` | `delivered` | `dev`, `pasid`, `grpid`, `handle` | inside the fence, just before the handler gets the group |
//! | `iommu_core::iopf` | `responded` | `dev`, `pasid`, `grpid`, `code`, `path` | before the driver's `page_response`; `path` is `group` (answered), `auto` (answered on user space's behalf), `dropped` (dropped unanswered) or `bad` (no handler took the request) |
//! | `iommu_core::pasid` | `alloc` / `free` | `pasid` | after taking / before returning a global PASID |
//!
//! `handle` is the attach handle's address ([`crate::Attachment::addr`]): an identity while the
//! handle lives. With no subscriber interested the cost is one relaxed load per event.

use crate::fault::{PageRequest, PageResponseCode};

/// The `target`s of the core's trace events.
pub mod target {
    /// Attach and detach of PASID slots.
    pub const ATTACH: &str = "iommu_core::attach";
    /// Page-request delivery and responses.
    pub const IOPF: &str = "iommu_core::iopf";
    /// Global PASID allocation.
    pub const PASID: &str = "iommu_core::pasid";
}

/// The values of the `kind` field: the contract a subscriber (the simulator's checker) matches on.
pub mod kind {
    /// A handle was published in a PASID slot.
    pub const ATTACHED: &str = "attached";
    /// A handle was unpublished (the detach fence has passed).
    pub const DETACHED: &str = "detached";
    /// A fault group is about to reach its handler.
    pub const DELIVERED: &str = "delivered";
    /// The core answered a group (see [`super::path`] for which way).
    pub const RESPONDED: &str = "responded";
    /// A global PASID was taken.
    pub const PASID_ALLOC: &str = "alloc";
    /// A global PASID was returned.
    pub const PASID_FREE: &str = "free";
}

/// The values of the `path` field of a [`kind::RESPONDED`] event.
pub mod path {
    /// The handler answered the group.
    pub const GROUP: &str = "group";
    /// The group was dropped unanswered and answered on its behalf.
    pub const DROPPED: &str = "dropped";
    /// No handler took the request (Linux's bad path).
    pub const BAD: &str = "bad";
    /// The group's owner answered it on user space's behalf (iommufd auto-response on
    /// detach, replace or close) instead of a handler.
    pub const AUTO: &str = "auto";
}

/// A fault's PASID as traced: `-1` when the request carried none.
fn fault_pasid(req: &PageRequest) -> i64 {
    if req.pasid_valid() {
        i64::from(req.pasid)
    } else {
        -1
    }
}

pub(crate) fn attached(group: u64, pasid: u32, handle: usize) {
    tracing::trace!(target: target::ATTACH, kind = kind::ATTACHED, group, pasid = u64::from(pasid), handle = handle as u64);
}

pub(crate) fn detached(group: u64, pasid: u32, handle: usize) {
    tracing::trace!(target: target::ATTACH, kind = kind::DETACHED, group, pasid = u64::from(pasid), handle = handle as u64);
}

pub(crate) fn delivered(dev: u64, req: &PageRequest, handle: usize) {
    tracing::trace!(target: target::IOPF, kind = kind::DELIVERED, dev, pasid = fault_pasid(req), grpid = u64::from(req.grpid), handle = handle as u64);
}

pub(crate) fn responded(dev: u64, req: &PageRequest, c: PageResponseCode, path: &'static str) {
    tracing::trace!(target: target::IOPF, kind = kind::RESPONDED, dev, pasid = fault_pasid(req), grpid = u64::from(req.grpid), code = c as u64, path);
}

pub(crate) fn pasid_alloc(pasid: u32) {
    tracing::trace!(target: target::PASID, kind = kind::PASID_ALLOC, pasid = u64::from(pasid));
}

pub(crate) fn pasid_free(pasid: u32) {
    tracing::trace!(target: target::PASID, kind = kind::PASID_FREE, pasid = u64::from(pasid));
}

//! Page responses on their way back to the device: the IOMMU's side of the PRI loop.
//!
//! The IOMMU does not know what an endpoint is. A device that sends page requests registers a
//! [`PageResponseSink`] (held weakly) together with its device TLB; the IOMMU encodes each
//! software response as a VT-d page group response descriptor ([`PageGroupResponse`]) and
//! hands it to the sink. Linux: `intel/prq.c` (`intel_iommu_page_response` writes the same
//! descriptor to the invalidation queue).

use std::sync::{Arc, Weak};

use iommu_core::{Device, DeviceId, PageRequest, PageResponse};

use super::EmuIommu;
use crate::spec::prq::PageGroupResponse;
use crate::tlb::Tlb;

/// Where the IOMMU delivers the page responses of one requester (a PCIe function's PRI).
///
/// Implemented by the endpoint's shared state; the IOMMU holds it weakly, so a gone device
/// simply stops receiving responses.
pub trait PageResponseSink: Send + Sync {
    /// A page group response for this requester arrived. Called without IOMMU locks held, on
    /// whatever thread answered the group (a fault handler, the queue thread, a test).
    fn page_response(&self, resp: PageGroupResponse);
}

/// A requester the IOMMU routes responses to: its source ID (the descriptor's requester ID)
/// and its sink.
pub(super) struct Requester {
    sid: u32,
    sink: Weak<dyn PageResponseSink>,
    /// The function has PRI (and the ATS it needs).
    pri: bool,
}

impl EmuIommu {
    /// Connects a probed device (source ID `sid`) to the function that drives it: its device
    /// TLB, invalidated with the IOTLB from now on, and the sink its page responses go to.
    pub(crate) fn connect_requester(
        &self,
        dev: &Arc<Device>,
        sid: u32,
        atc: Arc<Tlb>,
        sink: Weak<dyn PageResponseSink>,
        pri: bool,
    ) {
        if let Some(Some(ctx)) = self.hw.write().devices.get_mut(sid as usize) {
            ctx.atc = Some(atc);
        }
        self.requesters
            .write()
            .insert(dev.id(), Requester { sid, sink, pri });
        self.prq.add_device(dev);
    }

    /// Routes a page response to the requester `dev`, as the descriptor hardware would carry.
    pub(super) fn deliver_response(&self, dev: &Device, req: &PageRequest, resp: PageResponse) {
        let Some((sid, sink)) = self
            .requesters
            .read()
            .get(&dev.id())
            .and_then(|r| Some((r.sid, r.sink.upgrade()?)))
        else {
            return;
        };
        sink.page_response(PageGroupResponse::new(sid, req, resp));
    }

    /// Whether the function driving `id` has PRI. A device no function drives (core tests report
    /// its faults by hand) counts as having it.
    pub(super) fn requester_has_pri(&self, id: DeviceId) -> bool {
        self.requesters.read().get(&id).is_none_or(|r| r.pri)
    }

    /// Forgets the requester `id` (its device was released).
    pub(super) fn disconnect_requester(&self, id: DeviceId) {
        self.requesters.write().remove(&id);
    }
}

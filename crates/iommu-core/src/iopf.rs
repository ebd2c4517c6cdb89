//! The I/O page-fault reporting pipeline (Linux `io-pgfault.c`).
//!
//! A driver reports each page request with [`report_device_fault`]. The core routes it through
//! the attach handle of (group, PASID) to the domain's [`IopfHandler`], collecting the partial
//! requests of a page request group until its last one, and hands the handler an [`IopfGroup`].
//!
//! Exactly one response per group (DESIGN §4.1, SPEC H9, H11) holds by construction:
//! `IopfGroup` is move-only, [`IopfGroup::respond`] consumes it, and dropping it unanswered
//! answers Invalid (and counts it). The core keeps no second owning reference — no pending list
//! for a remover to free behind the handler's back (the CVE-2026-74520 shape cannot arise).
//!
//! No delivery after detach (H2) is the core's job here, not the drivers': a report holds the
//! group's PASID array read lock from the lookup until the handler has taken the group, and
//! detach/replace unpublish under the write lock, so when they return no report still holds the
//! old attachment and every group it produced is already with its owner.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use core::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use smallvec::SmallVec;

use crate::device::Device;
use crate::domain::DomainKind;
use crate::error::{ebusy, einval, enodev, eopnotsupp, Condition, Result};
use crate::fault::{PageRequest, PageResponse, PageResponseCode};
use crate::group::Slot;
use crate::handle::{AttachHandle, Attachment};
use crate::pasid::IOMMU_NO_PASID;
use crate::sync::Mutex;

/// Per-device fault state (Linux `iommu_fault_param`): partial requests and counters.
///
/// Published on the device while IOPF is enabled; each group holds a counted reference, so a
/// group answered after [`iopf_disable`] still finds what it needs.
pub struct FaultParam {
    partial: Mutex<Vec<PageRequest>>,
    /// `partial.len()`, written under its lock: a last request with no partial pending (a
    /// single-page group) skips the lock. Requests of one group are reported in order by one
    /// driver thread at a time, so a partial reported before its last request is seen.
    partials: AtomicUsize,
    stats: FaultStats,
    /// Where handlers that may sleep run their work (SVA); `None`: inline on the reporter.
    #[cfg(feature = "std")]
    pub(crate) queue: Option<Arc<crate::iopf_queue::IopfQueue>>,
    #[cfg(feature = "std")]
    pub(crate) work: crate::iopf_queue::DeviceWork,
}

/// Counters of one device's fault traffic.
#[derive(Debug, Default)]
pub struct FaultStats {
    reported: AtomicU64,
    groups: AtomicU64,
    success: AtomicU64,
    invalid: AtomicU64,
    failure: AtomicU64,
    dropped_unanswered: AtomicU64,
    partials_discarded: AtomicU64,
}

/// A copy of [`FaultStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStatsSnapshot {
    /// Page requests reported (partial and last).
    pub reported: u64,
    /// Complete groups handed to a handler.
    pub groups: u64,
    /// Groups answered Success.
    pub success: u64,
    /// Groups answered Invalid (handler verdict, no handler, or dropped unanswered).
    pub invalid: u64,
    /// Groups answered Failure (handler refused the group).
    pub failure: u64,
    /// Groups dropped without an answer (answered Invalid by the drop).
    pub dropped_unanswered: u64,
    /// Partial requests discarded (overflow, disable) — partials are never answered.
    pub partials_discarded: u64,
}

impl FaultStats {
    fn count_response(&self, code: PageResponseCode) {
        match code {
            PageResponseCode::Success => &self.success,
            PageResponseCode::Invalid => &self.invalid,
            PageResponseCode::Failure => &self.failure,
        }
        .fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> FaultStatsSnapshot {
        FaultStatsSnapshot {
            reported: self.reported.load(Relaxed),
            groups: self.groups.load(Relaxed),
            success: self.success.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
            failure: self.failure.load(Relaxed),
            dropped_unanswered: self.dropped_unanswered.load(Relaxed),
            partials_discarded: self.partials_discarded.load(Relaxed),
        }
    }
}

/// Enables fault reporting for `dev` (Linux `iopf_queue_add_device`).
///
/// `ENODEV` if the device is not behind an IOMMU or has no PRI itself; `EOPNOTSUPP` if its
/// IOMMU has no PRI; `EBUSY` if already enabled.
pub fn iopf_enable(dev: &Device) -> Result<()> {
    publish_fault_param(
        dev,
        FaultParam::new(
            #[cfg(feature = "std")]
            None,
        ),
    )
}

/// Checks that `dev` can report faults and publishes its fault state (shared by
/// [`iopf_enable`] and `iopf_queue_add_device`).
pub(crate) fn publish_fault_param(dev: &Device, param: FaultParam) -> Result<()> {
    let iommu = dev.iommu().ok_or(enodev("device is not behind an IOMMU"))?;
    if !iommu.capabilities().pri {
        return Err(eopnotsupp("IOMMU has no page request interface"));
    }
    if !iommu.dev_has_pri(dev) {
        return Err(enodev("device has no page request interface"));
    }
    let mut slot = dev.fault_param.write();
    if slot.is_some() {
        return Err(ebusy("fault reporting already enabled"));
    }
    *slot = Some(Arc::new(param));
    Ok(())
}

/// Disables fault reporting for `dev` (Linux `iopf_queue_remove_device`): discards its partial
/// requests (never answered, H10) and unpublishes its fault state. Groups already with a handler
/// stay owned by it and are answered by it; handler work queued on an IOPF queue runs before
/// this returns, because once the state is unpublished no flush (SVA unbind's) can find it and
/// it would run after the unbind returned (DESIGN §4.2). `ENODEV` if not enabled.
pub fn iopf_disable(dev: &Device) -> Result<()> {
    let param = dev.fault_param.write().take().ok_or(
        enodev("fault reporting is not enabled").because(Condition::FaultReportingDisabled),
    )?;
    param.discard_partial();
    #[cfg(feature = "std")]
    crate::iopf_queue::flush_param(&param);
    Ok(())
}

/// Discards `dev`'s partial requests, as a driver does after its page request queue overflowed
/// and last requests may have been lost (Linux `iopf_queue_discard_partial`). `ENODEV` if fault
/// reporting is not enabled.
pub fn iopf_discard_partial(dev: &Device) -> Result<usize> {
    let param = dev.fault_param().ok_or(
        enodev("fault reporting is not enabled").because(Condition::FaultReportingDisabled),
    )?;
    Ok(param.discard_partial())
}

/// `dev`'s fault counters; `None` while fault reporting is disabled.
pub fn iopf_stats(dev: &Device) -> Option<FaultStatsSnapshot> {
    dev.fault_param().map(|p| p.stats.snapshot())
}

impl FaultParam {
    pub(crate) fn new(
        #[cfg(feature = "std")] queue: Option<Arc<crate::iopf_queue::IopfQueue>>,
    ) -> Self {
        Self {
            partial: Mutex::new(Vec::new()),
            partials: AtomicUsize::new(0),
            stats: FaultStats::default(),
            #[cfg(feature = "std")]
            queue,
            #[cfg(feature = "std")]
            work: Default::default(),
        }
    }

    fn discard_partial(&self) -> usize {
        let mut partial = self.partial.lock();
        let n = core::mem::take(&mut *partial).len();
        self.partials.store(0, Release);
        drop(partial);
        self.stats.partials_discarded.fetch_add(n as u64, Relaxed);
        n
    }
}

/// One complete page request group, owned by whoever must answer it.
///
/// Move-only: [`IopfGroup::respond`] consumes it and sends the one page response; dropping it
/// unanswered answers Invalid and counts it. No path can answer twice.
#[must_use = "an IopfGroup must be answered; dropping it answers Invalid"]
pub struct IopfGroup {
    inner: Option<GroupInner>,
}

struct GroupInner {
    dev: Arc<Device>,
    /// Arrival order, the last request last; small groups inline (no allocation per group).
    faults: SmallVec<[PageRequest; 2]>,
    attachment: Attachment,
    param: Arc<FaultParam>,
}

impl GroupInner {
    fn send(self, code: PageResponseCode, path: &'static str) {
        let last = self.faults.last().expect("a group has its last request");
        send_response(&self.dev, last, code, path, Some(&self.param.stats));
    }
}

/// Sends the page response addressed by `req` (a group's last request, or a request answered on
/// the bad path): counted in `stats`, traced, then handed to the driver.
fn send_response(
    dev: &Device,
    req: &PageRequest,
    code: PageResponseCode,
    path: &'static str,
    stats: Option<&FaultStats>,
) {
    if let Some(stats) = stats {
        stats.count_response(code);
    }
    crate::trace::responded(dev.id().0, req, code, path);
    if let Some(iommu) = dev.iommu() {
        let resp = PageResponse {
            pasid: req.pasid,
            grpid: req.grpid,
            code,
        };
        iommu.page_response(dev, req, resp);
    }
}

impl IopfGroup {
    fn inner(&self) -> &GroupInner {
        self.inner
            .as_ref()
            .expect("only respond/drop take the group")
    }

    /// The group's requests in arrival order; the last request is last.
    pub fn faults(&self) -> &[PageRequest] {
        &self.inner().faults
    }

    /// The group's last request, which addresses the response.
    pub fn last(&self) -> &PageRequest {
        self.inner()
            .faults
            .last()
            .expect("a group has its last request")
    }

    /// The faulting device.
    pub fn device(&self) -> &Arc<Device> {
        &self.inner().dev
    }

    /// The attachment the group was routed to.
    pub fn attachment(&self) -> &Attachment {
        &self.inner().attachment
    }

    #[cfg(feature = "std")]
    pub(crate) fn param(&self) -> &Arc<FaultParam> {
        &self.inner().param
    }

    /// The attachment's handle, if its owner type is `T`.
    pub fn handle<T: Send + Sync + 'static>(&self) -> Option<Arc<AttachHandle<T>>> {
        self.attachment().clone().downcast().ok()
    }

    /// Sends the group's one page response.
    pub fn respond(mut self, code: PageResponseCode) {
        if let Some(inner) = self.inner.take() {
            inner.send(code, crate::trace::path::GROUP);
        }
    }

    /// Sends the group's one page response on behalf of a handler that will never answer it
    /// (iommufd's auto-response on detach, replace or close): the same response as
    /// [`IopfGroup::respond`], traced as `auto` so an observer can tell who answered.
    pub fn respond_auto(mut self, code: PageResponseCode) {
        if let Some(inner) = self.inner.take() {
            inner.send(code, crate::trace::path::AUTO);
        }
    }
}

impl Drop for IopfGroup {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.param.stats.dropped_unanswered.fetch_add(1, Relaxed);
            inner.send(PageResponseCode::Invalid, crate::trace::path::DROPPED);
        }
    }
}

impl fmt::Debug for IopfGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IopfGroup")
            .field("device", &self.device().name())
            .field("faults", &self.faults())
            .field("attachment", self.attachment())
            .finish()
    }
}

/// Finds the fault-capable attachment a request is routed to (SPEC §4.3).
fn find_fault_handler<'a>(
    array: &'a crate::pasid_table::PasidTable<Slot>,
    req: &PageRequest,
    user_pasid_table: impl FnOnce() -> bool,
) -> Option<&'a Slot> {
    let slot = if req.pasid_valid() {
        match array.get(req.pasid) {
            Some(s) => Some(s),
            // The guest owns the whole PASID table: its nested domain on the RID takes the fault.
            None if user_pasid_table() => array
                .get(IOMMU_NO_PASID)
                .filter(|s| s.domain().kind() == DomainKind::Nested),
            None => None,
        }
    } else {
        array.get(IOMMU_NO_PASID)
    };
    slot.filter(|s| s.domain().is_fault_capable())
}

/// Reports one page request of `dev` (Linux `iommu_report_device_fault`); called by drivers
/// from their page-request queue thread.
///
/// Partial requests are kept until their group's last request arrives; the complete group goes
/// to the handler of the attachment it is routed to. If it returns an error, the request has
/// already been answered: `EINVAL` when no fault-capable attachment takes it or fault reporting
/// is not enabled (answered Invalid, even a partial request, as Linux does). A handler that
/// refuses a group gets it answered Failure and the call returns `Ok`.
pub fn report_device_fault(dev: &Arc<Device>, req: PageRequest) -> Result<()> {
    let Ok(group) = dev.group() else {
        return bad_request(dev, &req);
    };
    // Asked only for an unattached PASID: the capabilities are a driver call.
    let user_pasid_table = || group.iommu().capabilities().user_pasid_table;
    // The fence: held until the handler owns the group, so detach waits for this report.
    let array = group.pasid_array.read();
    let Some(slot) = find_fault_handler(&array, &req, user_pasid_table) else {
        drop(array);
        return bad_request(dev, &req);
    };
    let Some(param) = dev.fault_param() else {
        drop(array);
        return bad_request(dev, &req);
    };
    param.stats.reported.fetch_add(1, Relaxed);
    if !req.is_last() {
        let mut partial = param.partial.lock();
        partial.push(req);
        param.partials.store(partial.len(), Release);
        return Ok(());
    }
    let mut faults = SmallVec::new();
    if param.partials.load(Acquire) != 0 {
        let mut partial = param.partial.lock();
        partial.retain(|p| {
            // The PRG index is per function: PASIDs are not compared (SPEC §4.2 step 4).
            let mine = p.grpid == req.grpid;
            if mine {
                faults.push(*p);
            }
            !mine
        });
        param.partials.store(partial.len(), Release);
    }
    faults.push(req);
    param.stats.groups.fetch_add(1, Relaxed);
    crate::trace::delivered(dev.id().0, &req, crate::group::slot_addr(slot));
    // Borrowed from the array, whose read lock is held until the handler has the group.
    let handler = slot
        .domain()
        .iopf_handler()
        .expect("routing keeps only fault-capable domains");
    let group = IopfGroup {
        inner: Some(GroupInner {
            dev: dev.clone(),
            faults,
            attachment: Attachment(slot.clone()),
            param,
        }),
    };
    if let Err(refused) = handler.handle_iopf(group) {
        refused.respond(PageResponseCode::Failure);
    }
    drop(array);
    Ok(())
}

/// The "bad" path: answer the request Invalid and tell the driver.
fn bad_request(dev: &Device, req: &PageRequest) -> Result<()> {
    let param = dev.fault_param();
    if let Some(p) = &param {
        p.stats.reported.fetch_add(1, Relaxed);
    }
    let stats = param.as_ref().map(|p| &p.stats);
    send_response(
        dev,
        req,
        PageResponseCode::Invalid,
        crate::trace::path::BAD,
        stats,
    );
    Err(
        einval("no fault-capable attachment takes this page request")
            .because(Condition::NoFaultHandler),
    )
}

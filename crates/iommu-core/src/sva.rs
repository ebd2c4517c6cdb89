//! Shared virtual addressing: binding a process address space to a device PASID (Linux
//! `iommu-sva.c`, SPEC §3).
//!
//! A bind gives the device the mm's PASID (one per mm, for every device), attached to an SVA
//! domain that shares the mm's page tables; devices behind one IOMMU share one SVA domain. The
//! bond is recorded in the PASID slot's attach handle, so a second bind of the same (group, mm)
//! finds it — by owner type, under the array lock (H1, H16) — and counts it.
//!
//! [`SvaBond`] is the user's token: binding twice gives two tokens of one bond; dropping (or
//! [`SvaBond::unbind`]) each gives one back, and the last one detaches. Unbind returns only when
//! no fault handler will run again for the bond: detach fences reports in flight, then the IOPF
//! queue of every device in the group is flushed.

use alloc::sync::Arc;
use core::fmt;

use crate::attach::{attach_device_pasid, attach_handle_get, detach_device_pasid_handle};
use crate::device::Device;
use crate::domain::Domain;
use crate::driver::DomainRequest;
use crate::error::{ebusy, eoverflow_v, Condition, Error, Result};
use crate::fault::{IopfHandler, PageResponseCode};
use crate::handle::AttachHandle;
use crate::iopf::IopfGroup;
use crate::mm::AddressSpace;
use crate::pasid::PasidAllocator;
use crate::sync::Mutex;

/// The owner data of an SVA attachment (Linux `struct iommu_sva` less the embedded handle).
pub struct SvaHandleData {
    dev: Arc<Device>,
    mm: Arc<dyn AddressSpace>,
    /// Bind calls sharing this bond; changed only under the mm's SVA lock.
    users: Mutex<u32>,
}

impl SvaHandleData {
    /// The device whose bind created the bond (for a group, its first binder).
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// The bound address space.
    pub fn mm(&self) -> &Arc<dyn AddressSpace> {
        &self.mm
    }

    /// Bind calls currently sharing the bond.
    pub fn users(&self) -> u32 {
        *self.users.lock()
    }
}

/// One bind of a device to an mm. Move-only; dropping it unbinds.
#[must_use = "dropping an SvaBond unbinds it at once"]
pub struct SvaBond {
    handle: Option<Arc<AttachHandle<SvaHandleData>>>,
}

impl SvaBond {
    fn handle(&self) -> &Arc<AttachHandle<SvaHandleData>> {
        self.handle.as_ref().expect("only unbind takes the handle")
    }

    /// The PASID the device uses for this mm.
    pub fn pasid(&self) -> u32 {
        self.handle().pasid()
    }

    /// The SVA domain the device is attached to.
    pub fn domain(&self) -> &Arc<Domain> {
        self.handle().domain()
    }

    /// The bond's shared state.
    pub fn data(&self) -> &SvaHandleData {
        self.handle()
    }

    /// Whether two tokens are binds of the same bond.
    pub fn same_bond(&self, other: &SvaBond) -> bool {
        Arc::ptr_eq(self.handle(), other.handle())
    }

    /// Gives this bind back (Linux `iommu_sva_unbind_device`); same as dropping the token.
    pub fn unbind(mut self) {
        if let Some(h) = self.handle.take() {
            unbind(h);
        }
    }
}

impl Drop for SvaBond {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            unbind(h);
        }
    }
}

impl fmt::Debug for SvaBond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvaBond")
            .field("pasid", &self.pasid())
            .field("device", &self.data().dev.name())
            .field("mm", &self.data().mm.mm_id())
            .finish()
    }
}

/// Binds `mm` to `dev` (Linux `iommu_sva_bind_device`, SPEC §3.2).
///
/// Errors: `ENODEV` without a group; `EOPNOTSUPP` if the IOMMU has no SVA; `EINVAL` if the mm
/// has exited ([`AddressSpace::has_exited`]); `EOVERFLOW` if the
/// mm's PASID is beyond `dev`'s range; `ENOSPC` if no PASID is left (or the device has none);
/// `EBUSY` if the PASID slot holds another owner's attachment or a bond of another mm; attach
/// and driver errors pass through. On failure nothing changes except that a PASID allocated for
/// the mm stays with it, as in Linux.
pub fn sva_bind_device(dev: &Arc<Device>, mm: &Arc<dyn AddressSpace>) -> Result<SvaBond> {
    let group = dev.group()?;
    if !group.iommu().capabilities().sva {
        return Err(crate::error::eopnotsupp("IOMMU does not support SVA"));
    }
    if mm.has_exited() {
        return Err(crate::error::einval_v(
            "mm has exited (no user reference)",
            mm.mm_id(),
        ));
    }
    let mut st = mm.iommu_mm().lock();
    let pasid = match &st.pasid {
        Some(p) if p.get() >= dev.max_pasids() => {
            return Err(eoverflow_v(
                "mm's PASID is beyond the device's PASID range",
                p.get().into(),
            )
            .because(Condition::PasidTooWide))
        }
        Some(p) => p.get(),
        None => {
            let p = PasidAllocator::global().alloc(dev.max_pasids())?;
            let v = p.get();
            st.pasid = Some(p);
            v
        }
    };

    match attach_handle_get::<SvaHandleData>(&group, pasid) {
        Ok(h) if h.mm.mm_id() != mm.mm_id() => {
            return Err(
                ebusy("PASID is bound to another mm").because(Condition::PasidBoundToOtherMm)
            );
        }
        Ok(h) => {
            *h.users.lock() += 1;
            return Ok(SvaBond { handle: Some(h) });
        }
        Err(Error::NoEntry(_)) => {}
        Err(e) => return Err(e),
    }

    let data = || SvaHandleData {
        dev: dev.clone(),
        mm: mm.clone(),
        users: Mutex::new(1),
    };
    // Share an SVA domain of this mm that the device's IOMMU accepts.
    for (domain, users) in st.domains.iter_mut() {
        if let Ok(h) = attach_device_pasid(domain, dev, pasid, data()) {
            *users += 1;
            return Ok(SvaBond { handle: Some(h) });
        }
    }
    let handler: Arc<dyn IopfHandler> = Arc::new(SvaFaultHandler);
    let domain = Domain::alloc(dev, DomainRequest::Sva(mm), Some(handler))?;
    let h = attach_device_pasid(&domain, dev, pasid, data())?;
    st.domains.insert(0, (domain, 1));
    Ok(SvaBond { handle: Some(h) })
}

fn unbind(h: Arc<AttachHandle<SvaHandleData>>) {
    let mm = h.mm.clone();
    let mut st = mm.iommu_mm().lock();
    {
        let mut users = h.users.lock();
        *users -= 1;
        if *users > 0 {
            return;
        }
    }
    let domain = h.domain().clone();
    // Detach fences reports in flight; then wait for SVA work already queued on the workers.
    // Only this bond's own attachment: its slot may have been replaced and re-bound since.
    let _ = detach_device_pasid_handle(&h, &h.dev);
    #[cfg(feature = "std")]
    if let Ok(group) = h.dev.group() {
        for d in group.devices() {
            let _ = crate::iopf_queue::iopf_queue_flush_dev(&d);
        }
    }
    if let Some(i) = st.domains.iter().position(|(d, _)| Arc::ptr_eq(d, &domain)) {
        st.domains[i].1 -= 1;
        if st.domains[i].1 == 0 {
            st.domains.remove(i);
        }
    }
}

/// The fault handler of every SVA domain: resolves each request of a group against the mm on
/// the device's IOPF queue (inline when it has none), the first error sticky for the group
/// (SPEC §3.5).
struct SvaFaultHandler;

impl IopfHandler for SvaFaultHandler {
    fn name(&self) -> &str {
        "sva"
    }

    fn handle_iopf(&self, group: IopfGroup) -> core::result::Result<(), IopfGroup> {
        // No queue, or one already shut down, gives the group back: it is resolved here.
        #[cfg(feature = "std")]
        let group =
            match crate::iopf_queue::IopfQueue::submit_to_device_queue(group, sva_handle_group) {
                Ok(()) => return Ok(()),
                Err(back) => back,
            };
        sva_handle_group(group);
        Ok(())
    }
}

fn sva_handle_group(group: IopfGroup) {
    // Borrowed from the group's attachment, which holds the domain and so the mm.
    let ok = match group.attachment().domain().mm() {
        Some(mm) => group
            .faults()
            .iter()
            .all(|f| f.pasid_valid() && mm.handle_mm_fault(f.addr, f.perm).is_ok()),
        None => false,
    };
    group.respond(if ok {
        PageResponseCode::Success
    } else {
        PageResponseCode::Invalid
    });
}

//! Attaching domains to PASIDs and to the RID with attach handles (Linux `iommu.c`).
//!
//! Rules every function here keeps (SPEC §2, hazards H3, H5, H6, H7, H27):
//!
//! * **Publish after success.** A handle enters the PASID array only after every driver call
//!   succeeded, under the group lock; a failed attach leaves nothing visible, even for an
//!   instant, to the lock-free-of-group-mutex lookups of the fault path.
//! * **All or nothing per group.** Every PASID-capable member is programmed; when the driver
//!   fails on one, the members already programmed are rolled back and the error is returned.
//! * **Fresh handle per attachment.** Handles are built here from the owner's data.
//! * **Rejected calls change nothing.** Arguments are validated before any driver call.

use alloc::sync::Arc;

use crate::device::Device;
use crate::domain::{Domain, DomainKind};
use crate::error::{
    ebusy, ebusy_v, einval, einval_v, enodev, enoent_v, eopnotsupp, Condition, Result,
};
use crate::group::{Group, GroupState};
use crate::handle::{AttachHandle, Attachment};
use crate::pasid::{IOMMU_NO_PASID, PASID_LIMIT};

/// The result of a replace: the handle now installed and the one it displaced.
#[derive(Debug)]
pub struct Replaced<T> {
    /// The new attachment.
    pub new: Arc<AttachHandle<T>>,
    /// The attachment it replaced (for the caller to auto-respond its faults, then drop). `None`
    /// for a group replace when the RID had no handle.
    pub old: Option<Attachment>,
}

/// Checks common to the PASID operations, in Linux's order: the domain's PASID support
/// (`EOPNOTSUPP`), the device's group (`ENODEV`), then compatibility and the PASID (`EINVAL`).
fn pasid_preflight(domain: &Domain, dev: &Device, pasid: u32) -> Result<Arc<Group>> {
    if !domain.supports_pasid() {
        return Err(eopnotsupp("domain cannot be attached to a PASID"));
    }
    let group = dev.group()?;
    if !dev.iommu().is_some_and(|i| domain.is_compatible_with(i)) {
        return Err(einval("domain belongs to another IOMMU than the device")
            .because(Condition::ForeignDomain));
    }
    if pasid == IOMMU_NO_PASID {
        return Err(einval("PASID 0 is the RID; use the group-handle APIs"));
    }
    if pasid >= PASID_LIMIT {
        return Err(
            einval_v("PASID beyond the 20-bit PASID space", pasid.into())
                .because(Condition::PasidOutOfRange),
        );
    }
    Ok(group)
}

/// Programs `pasid` of every PASID-capable member to `domain` (replacing `old` if given); on
/// the first failure, undoes the members already done and returns the error.
fn program_pasid(
    group: &Group,
    st: &GroupState,
    domain: &Domain,
    pasid: u32,
    old: Option<&Domain>,
) -> Result<()> {
    let iommu = group.iommu();
    let members = || st.devices.iter().filter(|d| d.supports_pasid());
    for (i, dev) in members().enumerate() {
        if let Err(e) = iommu.set_dev_pasid(domain, dev, pasid, old) {
            for done in members().take(i) {
                match old {
                    // Replace: return to the old domain. A driver that refuses a domain it
                    // accepted before is broken; block the PASID rather than leave it on `domain`.
                    Some(old) => {
                        if iommu.set_dev_pasid(old, done, pasid, Some(domain)).is_err() {
                            iommu.remove_dev_pasid(done, pasid, domain);
                        }
                    }
                    None => iommu.remove_dev_pasid(done, pasid, domain),
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Attaches `domain` to `pasid` of `dev`'s whole group, recording `handle` as the owner's data.
///
/// Returns the new handle; the PASID array holds another reference until detach or replace.
///
/// Errors, checked in this order and with no side effects: `EOPNOTSUPP` if the domain cannot be
/// attached to a PASID; `ENODEV` if `dev` has no group; `EINVAL` if the domain belongs to
/// another IOMMU, `pasid` is `IOMMU_NO_PASID` or beyond 2^20, or a PASID-capable member's
/// `max_pasids` does not cover it (members without PASID support are skipped, SPEC H7);
/// `EBUSY` if the slot is occupied; then the driver's error, after rolling back the members
/// already programmed.
pub fn attach_device_pasid<T: Send + Sync + 'static>(
    domain: &Arc<Domain>,
    dev: &Device,
    pasid: u32,
    handle: T,
) -> Result<Arc<AttachHandle<T>>> {
    let group = pasid_preflight(domain, dev, pasid)?;
    let st = group.lock();
    if let Some(d) = st
        .devices
        .iter()
        .find(|d| d.supports_pasid() && pasid >= d.max_pasids())
    {
        return Err(einval_v(
            "PASID not below a group member's max_pasids",
            d.max_pasids().into(),
        )
        .because(Condition::PasidOutOfRange));
    }
    if group.slot(pasid).is_some() {
        return Err(ebusy_v("PASID already attached", pasid.into()).because(Condition::PasidInUse));
    }
    program_pasid(&group, &st, domain, pasid, None)?;
    let h = Arc::new(AttachHandle::new(domain.clone(), pasid, handle));
    group.publish(pasid, h.clone());
    drop(st);
    Ok(h)
}

/// Detaches `domain` from `pasid` of `dev`'s group and returns the handle that recorded it.
///
/// The driver blocks the PASID on every PASID-capable member (and drains its page-request
/// queue for it) *before* the handle is unpublished (SPEC §2.3, H4). Linux leaves the
/// precondition "the attachment exists" to the caller; here it is checked: `ENODEV` without a
/// group, `EINVAL` for `IOMMU_NO_PASID` or a slot holding another domain, `ENOENT` for an
/// empty slot — all without side effects.
pub fn detach_device_pasid(domain: &Arc<Domain>, dev: &Device, pasid: u32) -> Result<Attachment> {
    detach_pasid_if(domain, dev, pasid, |_| true)
}

/// [`detach_device_pasid`] of exactly `handle`: `EINVAL` if the slot holds another handle, even
/// one on the same domain (SVA unbind of a bond whose slot was replaced must not tear down the
/// bond attached there since).
pub(crate) fn detach_device_pasid_handle<T: Send + Sync + 'static>(
    handle: &Arc<AttachHandle<T>>,
    dev: &Device,
) -> Result<Attachment> {
    detach_pasid_if(handle.domain(), dev, handle.pasid(), |a| {
        a.is_handle(handle)
    })
}

fn detach_pasid_if(
    domain: &Arc<Domain>,
    dev: &Device,
    pasid: u32,
    is_ours: impl FnOnce(&Attachment) -> bool,
) -> Result<Attachment> {
    let group = dev.group()?;
    if pasid == IOMMU_NO_PASID {
        return Err(einval("PASID 0 is the RID; use detach_group_handle"));
    }
    let st = group.lock();
    let current = group.slot(pasid).ok_or(
        enoent_v("nothing attached to PASID", pasid.into()).because(Condition::NoSuchPasid),
    )?;
    if !Arc::ptr_eq(current.domain(), domain) || !is_ours(&Attachment(current.clone())) {
        return Err(
            einval_v("another domain is attached to PASID", pasid.into())
                .because(Condition::NotAttached),
        );
    }
    for d in st.devices.iter().filter(|d| d.supports_pasid()) {
        group.iommu().remove_dev_pasid(d, pasid, domain);
    }
    group.unpublish(pasid);
    drop(st);
    Ok(Attachment(current))
}

/// Atomically switches an attached `pasid` of `dev`'s group to `domain`, with a fresh handle.
///
/// DMA never passes through "blocked": each member goes straight from the old domain to the
/// new one. Lookups see the old handle until the new one is published, never an empty slot.
/// Errors, without side effects: `EOPNOTSUPP`, `ENODEV` and `EINVAL` as for
/// [`attach_device_pasid`]; `EINVAL` when nothing is attached ("not a replace"). On a driver
/// failure the members already switched go back to the old domain, the old handle stays
/// published, and the error is returned (H27).
pub fn replace_device_pasid<T: Send + Sync + 'static>(
    domain: &Arc<Domain>,
    dev: &Device,
    pasid: u32,
    handle: T,
) -> Result<Replaced<T>> {
    let group = pasid_preflight(domain, dev, pasid)?;
    let st = group.lock();
    let old = group.slot(pasid).ok_or(
        einval_v("replace of a PASID with nothing attached", pasid.into())
            .because(Condition::NoSuchPasid),
    )?;
    if !Arc::ptr_eq(old.domain(), domain) {
        program_pasid(&group, &st, domain, pasid, Some(old.domain()))?;
    }
    let new = Arc::new(AttachHandle::new(domain.clone(), pasid, handle));
    group.publish(pasid, new.clone());
    drop(st);
    Ok(Replaced {
        new,
        old: Some(Attachment(old)),
    })
}

/// Checks common to the group-handle operations.
fn group_preflight(domain: &Domain, group: &Group, st: &GroupState) -> Result<()> {
    if st.devices.is_empty() {
        return Err(enodev("group has no devices"));
    }
    if !domain.is_compatible_with(group.iommu()) {
        return Err(einval("domain belongs to another IOMMU than the group")
            .because(Condition::ForeignDomain));
    }
    if domain.kind() == DomainKind::Sva {
        return Err(einval("an SVA domain can only be attached to a PASID"));
    }
    Ok(())
}

/// Attaches `domain` to the RID of every member of `group` without a handle (Linux
/// `iommu_attach_group`, for kernel users that take no faults; nothing enters the PASID array).
///
/// Errors, without side effects: `ENODEV` for an empty group; `EINVAL` for a domain of another
/// IOMMU or an SVA domain; `EBUSY` if the group is already on a domain the core does not manage;
/// the driver's error after rolling back.
pub fn attach_group(domain: &Arc<Domain>, group: &Group) -> Result<()> {
    let mut st = group.lock();
    group_preflight(domain, group, &st)?;
    if !st.on_core_domain() {
        return Err(ebusy(
            "group is attached to a domain the core does not manage",
        ));
    }
    st.set_domain(group.iommu(), domain)
}

/// Returns `group` from `domain` to its core domain (Linux `iommu_detach_group`).
///
/// `EINVAL` if the group is not on `domain`; `EBUSY` if the RID has an attach handle (detach
/// it with [`detach_group_handle`], which also unpublishes the handle).
pub fn detach_group(domain: &Arc<Domain>, group: &Group) -> Result<()> {
    let mut st = group.lock();
    if !st.domain.as_ref().is_some_and(|d| Arc::ptr_eq(d, domain)) {
        return Err(einval("group is not attached to this domain").because(Condition::NotAttached));
    }
    if group.slot(IOMMU_NO_PASID).is_some() {
        return Err(ebusy("RID has an attach handle; use detach_group_handle"));
    }
    st.set_core_domain(group.iommu());
    Ok(())
}

/// Attaches `domain` to the RID of every member of `group`, recording `handle` at
/// `IOMMU_NO_PASID` (used by iommufd, SPEC §2.5).
///
/// Errors, without side effects: `ENODEV` for an empty group; `EINVAL` for a domain of another
/// IOMMU or an SVA domain; `EBUSY` if the RID already has a handle or the group is on a
/// domain the core does not manage (someone else attached it); the driver's error after the
/// members already switched are returned to the previous domain.
pub fn attach_group_handle<T: Send + Sync + 'static>(
    domain: &Arc<Domain>,
    group: &Group,
    handle: T,
) -> Result<Arc<AttachHandle<T>>> {
    let mut st = group.lock();
    group_preflight(domain, group, &st)?;
    if group.slot(IOMMU_NO_PASID).is_some() {
        return Err(ebusy("RID already has an attach handle").because(Condition::PasidInUse));
    }
    if !st.on_core_domain() {
        return Err(ebusy(
            "group is attached to a domain the core does not manage",
        ));
    }
    st.set_domain(group.iommu(), domain)?;
    let h = Arc::new(AttachHandle::new(domain.clone(), IOMMU_NO_PASID, handle));
    group.publish(IOMMU_NO_PASID, h.clone());
    Ok(h)
}

/// Returns `group` to its core domain (blocking if it has an exclusive DMA owner, else default)
/// and unpublishes the RID handle, which is returned.
///
/// `ENOENT` if the RID has no handle; `EINVAL` if the handle records another domain. The driver
/// quiesces the RID before the handle disappears (H4).
pub fn detach_group_handle(domain: &Arc<Domain>, group: &Group) -> Result<Attachment> {
    let mut st = group.lock();
    let current = group.slot(IOMMU_NO_PASID).ok_or(
        enoent_v("RID has no attach handle", IOMMU_NO_PASID.into()).because(Condition::NoSuchPasid),
    )?;
    if !Arc::ptr_eq(current.domain(), domain) {
        return Err(einval("RID handle records another domain").because(Condition::NotAttached));
    }
    st.set_core_domain(group.iommu());
    group.unpublish(IOMMU_NO_PASID);
    Ok(Attachment(current))
}

/// Switches the RID of every member of `group` to `domain` with a fresh `handle`, displacing
/// the previous RID handle (returned, if there was one).
///
/// Errors, without side effects: `ENODEV` for an empty group; `EINVAL` for a domain of
/// another IOMMU or an SVA domain; the driver's error after rolling back, leaving the old domain
/// and old handle in place (H27).
pub fn replace_group_handle<T: Send + Sync + 'static>(
    domain: &Arc<Domain>,
    group: &Group,
    handle: T,
) -> Result<Replaced<T>> {
    let mut st = group.lock();
    group_preflight(domain, group, &st)?;
    st.set_domain(group.iommu(), domain)?;
    let new = Arc::new(AttachHandle::new(domain.clone(), IOMMU_NO_PASID, handle));
    let old = group.publish(IOMMU_NO_PASID, new.clone());
    Ok(Replaced {
        new,
        old: old.map(Attachment),
    })
}

/// Looks up the handle at (`group`, `pasid`) and returns it if its owner type is `T`.
///
/// Takes only the PASID array's read lock, never the group lock, so it does not wait for a
/// configuration change in progress. The owner type is compared *under* that lock and a
/// counted reference is returned (SPEC H1): a detach racing with the caller can unpublish the
/// handle but cannot free it, and nothing of another owner's type is ever handed out.
/// `ENOENT` when the slot is empty; `EBUSY` when it belongs to another owner type.
pub fn attach_handle_get<T: Send + Sync + 'static>(
    group: &Group,
    pasid: u32,
) -> Result<Arc<AttachHandle<T>>> {
    let array = group.pasid_array.read();
    let slot = array.get(pasid).ok_or(
        enoent_v("no attach handle at PASID", pasid.into()).because(Condition::NoSuchPasid),
    )?;
    // The one type check, under the lock (H1); the clone it yields is the counted reference.
    slot.clone()
        .into_any()
        .downcast::<AttachHandle<T>>()
        .map_err(|_| {
            ebusy_v("PASID is attached by another owner", pasid.into())
                .because(Condition::WrongOwner)
        })
}

/// Looks up the handle at (`group`, `pasid`) whatever its owner (Linux's type 0), as the fault
/// path does. `ENOENT` when the slot is empty.
pub fn attach_handle_get_any(group: &Group, pasid: u32) -> Result<Attachment> {
    group
        .slot(pasid)
        .map(Attachment)
        .ok_or(enoent_v("no attach handle at PASID", pasid.into()).because(Condition::NoSuchPasid))
}

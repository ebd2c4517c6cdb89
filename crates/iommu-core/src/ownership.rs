//! DMA ownership of a group (Linux `iommu_group_claim_dma_owner` and friends).
//!
//! A group is used either by kernel drivers on its default domain (counted users) or by one
//! exclusive owner such as iommufd/VFIO (identified by a cookie), which starts from the
//! blocking domain. Ownership cannot change while the PASID array holds anything (H8): a
//! PASID attachment made under one regime must not survive into the other.

use alloc::sync::Arc;

use crate::device::Device;
use crate::domain::Domain;
use crate::driver::DomainRequest;
use crate::error::{ebusy, ebusy_v, einval, enodev, eperm, Condition, Error, Result};
use crate::group::{Group, GroupState};

/// The cookie identifying an exclusive DMA owner (Linux passes an opaque pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DmaOwner(pub u64);

fn pasid_array_empty(group: &Group) -> Result<()> {
    match group.pasid_array.read().len() {
        0 => Ok(()),
        n => {
            Err(ebusy_v("group has PASID attachments", n as u64).because(Condition::GroupHasPasids))
        }
    }
}

/// Takes exclusive ownership: the group moves to its blocking domain (allocated on first use:
/// the driver's blocked domain, or an empty paging domain if it has none).
fn take_ownership(group: &Group, st: &mut GroupState, owner: DmaOwner) -> Result<()> {
    if !st.on_default_domain() {
        return Err(ebusy("group is not on its default domain"));
    }
    pasid_array_empty(group)?;
    let dev = st
        .devices
        .first()
        .cloned()
        .ok_or(enodev("group has no devices"))?;
    let blocking = match &st.blocking_domain {
        Some(b) => b.clone(),
        None => match Domain::alloc(&dev, DomainRequest::Blocked, None) {
            Ok(b) => b,
            Err(Error::NotSupported(_)) => {
                Domain::alloc(&dev, DomainRequest::Paging { dma_api: false }, None)?
            }
            Err(e) => return Err(e),
        },
    };
    st.set_domain(group.iommu(), &blocking)?;
    st.blocking_domain = Some(blocking);
    st.owner = Some(owner);
    st.owner_cnt = 1;
    Ok(())
}

fn release_ownership(group: &Group, st: &mut GroupState) -> Result<()> {
    if st.owner_cnt == 0 || st.owner.is_none() {
        return Err(einval("group has no exclusive DMA owner"));
    }
    pasid_array_empty(group)?;
    if let Some(default) = st.default_domain.clone() {
        st.set_domain(group.iommu(), &default)?;
    }
    st.owner = None;
    st.owner_cnt = 0;
    Ok(())
}

/// Claims exclusive DMA ownership of `group` for `owner`.
///
/// `EPERM` if the group already has any user; `EBUSY` if it is not on its default domain or
/// has PASID attachments; driver errors pass through. No side effects on failure.
pub fn group_claim_dma_owner(group: &Group, owner: DmaOwner) -> Result<()> {
    let mut st = group.lock();
    if st.owner_cnt != 0 {
        return Err(eperm("group already has a DMA owner or users").because(Condition::NotOwner));
    }
    take_ownership(group, &mut st, owner)
}

/// Releases exclusive ownership and returns the group to its default domain.
///
/// `EINVAL` if the group has no exclusive owner; `EBUSY` while PASID attachments (or the RID
/// handle) remain — Linux warns and refuses; here the caller learns why.
pub fn group_release_dma_owner(group: &Group) -> Result<()> {
    let mut st = group.lock();
    release_ownership(group, &mut st)
}

/// Claims DMA ownership of `dev`'s group for `owner`; an owner that already holds the group
/// just counts another claim (several devices of one group bound by one VMM).
///
/// `ENODEV` without a group; `EPERM` if someone else owns the group or kernel drivers use it;
/// otherwise as [`group_claim_dma_owner`].
pub fn device_claim_dma_owner(dev: &Device, owner: DmaOwner) -> Result<()> {
    let group = dev.group()?;
    let mut st = group.lock();
    if st.owner_cnt != 0 {
        if st.owner != Some(owner) {
            return Err(eperm("group is owned by someone else").because(Condition::NotOwner));
        }
        st.owner_cnt += 1;
        return Ok(());
    }
    take_ownership(&group, &mut st, owner)
}

/// Drops one claim of `dev`'s group's owner; the last one releases ownership.
///
/// `ENODEV` without a group; `EINVAL` without an exclusive owner; `EBUSY` if the last claim
/// would release a group that still has PASID attachments.
pub fn device_release_dma_owner(dev: &Device) -> Result<()> {
    let group = dev.group()?;
    let mut st = group.lock();
    if st.owner.is_none() {
        return Err(einval("group has no exclusive DMA owner"));
    }
    if st.owner_cnt > 1 {
        st.owner_cnt -= 1;
        return Ok(());
    }
    release_ownership(&group, &mut st)
}

/// A kernel driver starts using `dev`'s group through the default domain.
///
/// A device with no group is fine (nothing to account). `EBUSY` if the group is in use and has
/// an exclusive owner, is off its default domain, or has PASID attachments. (Linux's
/// `EPROBE_DEFER` for a group without a default domain cannot happen here: a device joins its
/// group only once the default domain exists.)
pub fn device_use_default_domain(dev: &Device) -> Result<()> {
    let Ok(group) = dev.group() else {
        return Ok(());
    };
    let mut st = group.lock();
    if st.owner_cnt != 0 {
        if st.owner.is_some() {
            return Err(ebusy("group has an exclusive DMA owner"));
        }
        if !st.on_default_domain() {
            return Err(ebusy("group is not on its default domain"));
        }
        pasid_array_empty(&group)?;
    }
    st.owner_cnt += 1;
    Ok(())
}

/// A kernel driver stops using `dev`'s group. `EINVAL` when there is no such user; `EBUSY`
/// while PASID attachments remain.
pub fn device_unuse_default_domain(dev: &Device) -> Result<()> {
    let Ok(group) = dev.group() else {
        return Ok(());
    };
    let mut st = group.lock();
    if st.owner_cnt == 0 || st.owner.is_some() {
        return Err(einval("no default-domain user to drop"));
    }
    pasid_array_empty(&group)?;
    st.owner_cnt -= 1;
    Ok(())
}

/// Whether `group`'s exclusive owner is `owner`.
pub fn group_dma_owned_by(group: &Arc<Group>, owner: DmaOwner) -> bool {
    group.lock().owner == Some(owner)
}

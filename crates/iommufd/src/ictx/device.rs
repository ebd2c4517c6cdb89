//! Bound devices and their attachments (Linux `device.c`): bind/unbind with DMA ownership,
//! group-level attach, replace and detach per PASID, and the fault-reporting reference count
//! of each device.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;

use iommu_core::error::{ebusy_v, einval, einval_v, Condition};
use iommu_core::{
    attach_device_pasid, attach_group_handle, detach_device_pasid, detach_group_handle,
    device_claim_dma_owner, device_release_dma_owner, iopf_disable, iopf_enable,
    replace_device_pasid, replace_group_handle, Attachment, Device, DmaOwner, Error, Group,
    GroupId, Result, IOMMU_NO_PASID,
};

use super::hw_pagetable::Hwpt;
use super::{Ictx, Object, Table};
use crate::fault::FdHandle;

pub(super) struct IdevObj {
    pub(super) dev: Arc<Device>,
    group: Arc<Group>,
    /// Attachments of this idev to fault-capable HWPTs (the 6.11-6.15 `iopf_enabled` count).
    iopf_refs: u32,
    /// Whether iommufd enabled fault reporting (and so must disable it, H22).
    iopf_ours: bool,
}

/// One (group, PASID) attachment (Linux `iommufd_attach` of `igroup->pasid_attach`).
pub(super) struct GroupAttach {
    hwpt: Arc<Hwpt>,
    /// The core handle installed by the attach/replace that made this attachment current.
    handle: Attachment,
    /// The idevs of the group attached through it (the first one attached the group).
    devices: BTreeSet<u32>,
}

#[derive(Default)]
pub(super) struct IGroup {
    /// PASID (`IOMMU_NO_PASID` for the RID) → attachment.
    attaches: BTreeMap<u32, GroupAttach>,
    bound: usize,
}

impl GroupAttach {
    /// Core detach of the whole group attachment, then auto-response on its HWPT's queue.
    fn detach_in_core(&self, group: &Arc<Group>, dev: &Device, pasid: u32) -> Result<()> {
        let domain = &self.hwpt.domain;
        if pasid == IOMMU_NO_PASID {
            detach_group_handle(domain, group)?;
        } else {
            detach_device_pasid(domain, dev, pasid)?;
        }
        // The core fenced in-flight reports: every group of this attachment is now queued or
        // read, and auto-response sees all of them (H2, H4, H9).
        if let Some(f) = &self.hwpt.fault {
            f.auto_response(&self.handle);
        }
        Ok(())
    }
}

/// How a handle gets into the core: a fresh attachment, or a replacement of the current one
/// (DMA moves straight to the new domain).
#[derive(Clone, Copy)]
enum Install {
    Attach,
    Replace,
}

/// Installs a core handle naming `dev_id` for `hwpt` at `pasid` (the RID covers the whole
/// group) and returns it.
fn install_in_core(
    how: Install,
    hwpt: &Hwpt,
    (dev, group): (&Device, &Arc<Group>),
    pasid: u32,
    dev_id: u32,
) -> Result<Attachment> {
    let data = FdHandle { dev_id };
    let domain = &hwpt.domain;
    match (how, pasid == IOMMU_NO_PASID) {
        (Install::Attach, true) => attach_group_handle(domain, group, data).map(Into::into),
        (Install::Attach, false) => attach_device_pasid(domain, dev, pasid, data).map(Into::into),
        (Install::Replace, true) => replace_group_handle(domain, group, data).map(|r| r.new.into()),
        (Install::Replace, false) => {
            replace_device_pasid(domain, dev, pasid, data).map(|r| r.new.into())
        }
    }
}

impl Table {
    /// The core device and group behind `dev_id`.
    fn idev_refs(&self, dev_id: u32) -> Result<(Arc<Device>, Arc<Group>)> {
        let idev = self.idev(dev_id)?;
        Ok((idev.dev.clone(), idev.group.clone()))
    }

    /// The attachment at `pasid` of group `gid` if `dev_id` is one of its devices.
    fn attachment_of(&self, gid: GroupId, dev_id: u32, pasid: u32) -> Option<&GroupAttach> {
        self.igroups
            .get(&gid)?
            .attaches
            .get(&pasid)
            .filter(|a| a.devices.contains(&dev_id))
    }

    fn attachment_mut(&mut self, gid: GroupId, pasid: u32) -> &mut GroupAttach {
        self.igroups
            .get_mut(&gid)
            .and_then(|ig| ig.attaches.get_mut(&pasid))
            .expect("looked up above")
    }

    /// Counts one more fault-capable attachment of `dev_id`, enabling IOPF on 0 → 1.
    fn iopf_get(&mut self, dev_id: u32) -> Result<()> {
        let idev = self.idev_mut(dev_id)?;
        if idev.iopf_refs == 0 {
            match iopf_enable(&idev.dev) {
                Ok(()) => idev.iopf_ours = true,
                // Enabled by someone else (the platform): use it, but leave it to them.
                Err(Error::Busy(_)) => idev.iopf_ours = false,
                Err(e) => return Err(e),
            }
        }
        idev.iopf_refs += 1;
        Ok(())
    }

    /// [`Table::iopf_get`] for each of `devices`; if one fails, the others are put back.
    fn iopf_get_all(&mut self, devices: &[u32]) -> Result<()> {
        for (i, &d) in devices.iter().enumerate() {
            if let Err(e) = self.iopf_get(d) {
                self.iopf_put_all(&devices[..i]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops one fault-capable attachment of `dev_id`; 1 → 0 disables IOPF if we enabled it.
    /// Always called after auto-response (H22).
    fn iopf_put(&mut self, dev_id: u32) {
        if let Ok(idev) = self.idev_mut(dev_id) {
            idev.iopf_refs = idev.iopf_refs.saturating_sub(1);
            if idev.iopf_refs == 0 && idev.iopf_ours {
                idev.iopf_ours = false;
                let _ = iopf_disable(&idev.dev);
            }
        }
    }

    fn iopf_put_all<'a>(&mut self, devices: impl IntoIterator<Item = &'a u32>) {
        for &d in devices {
            self.iopf_put(d);
        }
    }

    /// SPEC §5.3 \[6.15\]: a PASID only takes PASID-compatible HWPTs, and while any PASID is
    /// attached the RID's HWPT must be PASID compatible too (and vice versa).
    fn check_pasid_compat(&self, group: GroupId, pasid: u32, hwpt: &Hwpt) -> Result<()> {
        let ig = self.igroups.get(&group);
        if pasid != IOMMU_NO_PASID {
            if !hwpt.pasid_compat {
                return Err(einval("HWPT was not allocated with IOMMU_HWPT_ALLOC_PASID"));
            }
            if ig
                .and_then(|g| g.attaches.get(&IOMMU_NO_PASID))
                .is_some_and(|a| !a.hwpt.pasid_compat)
            {
                return Err(einval("the RID's HWPT is not PASID compatible"));
            }
        } else if !hwpt.pasid_compat
            && ig.is_some_and(|g| g.attaches.keys().any(|&p| p != IOMMU_NO_PASID))
        {
            return Err(einval(
                "PASIDs are attached: the RID needs a PASID-compatible HWPT",
            ));
        }
        Ok(())
    }

    /// Adds `dev_id` to the group's existing attachment at `pasid`, which must be on `hwpt`.
    fn join_attachment(
        &mut self,
        gid: GroupId,
        dev_id: u32,
        pasid: u32,
        hwpt: &Arc<Hwpt>,
    ) -> Result<()> {
        let ga = self.attachment_mut(gid, pasid);
        // Linux's order: the device being there already wins over another HWPT.
        if ga.devices.contains(&dev_id) {
            return Err(ebusy_v("device already attached at PASID", pasid.into())
                .because(Condition::PasidInUse));
        }
        if !Arc::ptr_eq(&ga.hwpt, hwpt) {
            return Err(einval("group is attached to another HWPT there"));
        }
        if hwpt.fault.is_some() {
            self.iopf_get(dev_id)?;
        }
        self.attachment_mut(gid, pasid).devices.insert(dev_id);
        Ok(())
    }

    /// Attaches the group of `dev_id` at `pasid` to `hwpt` in the core: the first device.
    fn attach_group(
        &mut self,
        dev_id: u32,
        (dev, group): (&Device, &Arc<Group>),
        pasid: u32,
        hwpt: Arc<Hwpt>,
    ) -> Result<()> {
        let fault_capable = hwpt.fault.is_some();
        if fault_capable {
            self.iopf_get(dev_id)?;
        }
        let handle = match install_in_core(Install::Attach, &hwpt, (dev, group), pasid, dev_id) {
            Ok(h) => h,
            Err(e) => {
                if fault_capable {
                    self.iopf_put(dev_id);
                }
                return Err(e);
            }
        };
        let ig = self.igroups.get_mut(&group.id()).expect("bound");
        ig.attaches.insert(
            pasid,
            GroupAttach {
                hwpt,
                handle,
                devices: BTreeSet::from([dev_id]),
            },
        );
        Ok(())
    }

    /// Installs `hwpt` and its `handle` in the attachment at `pasid`, then answers every group
    /// of the old attachment still on the *old* HWPT's queue (H21).
    fn swap_attachment(&mut self, gid: GroupId, pasid: u32, hwpt: Arc<Hwpt>, handle: Attachment) {
        let ga = self.attachment_mut(gid, pasid);
        let old_hwpt = core::mem::replace(&mut ga.hwpt, hwpt);
        let old_handle = core::mem::replace(&mut ga.handle, handle);
        if let Some(f) = &old_hwpt.fault {
            f.auto_response(&old_handle);
        }
    }

    /// Removes `dev_id` from the attachment at `pasid`; the last device detaches the group.
    pub(super) fn detach(&mut self, dev_id: u32, pasid: u32) -> Result<()> {
        let (dev, group) = self.idev_refs(dev_id)?;
        let ga = self.attachment_of(group.id(), dev_id, pasid).ok_or(
            einval_v("device is not attached at PASID", pasid.into())
                .because(Condition::NotAttached),
        )?;
        let fault_capable = ga.hwpt.fault.is_some();
        if ga.devices.len() == 1 {
            // The entry goes only once the core let go of it, so a failure leaves it as it was.
            ga.detach_in_core(&group, &dev, pasid)?;
            let ig = self.igroups.get_mut(&group.id()).expect("looked up above");
            ig.attaches.remove(&pasid);
        } else {
            self.attachment_mut(group.id(), pasid)
                .devices
                .remove(&dev_id);
        }
        if fault_capable {
            self.iopf_put(dev_id);
        }
        Ok(())
    }

    /// [`Ictx::bind_device`] under the table lock.
    pub(super) fn bind(&mut self, owner: DmaOwner, dev: Arc<Device>) -> Result<u32> {
        if self.bound.contains_key(&dev.id()) {
            return Err(ebusy_v("device already bound", dev.id().0));
        }
        let group = dev.group()?;
        let id = self.alloc_id()?;
        device_claim_dma_owner(&dev, owner)?;
        self.igroups.entry(group.id()).or_default().bound += 1;
        self.insert_object(
            id,
            Object::Device(IdevObj {
                dev,
                group,
                iopf_refs: 0,
                iopf_ours: false,
            }),
        );
        Ok(id)
    }

    /// [`Ictx::unbind_device`] under the table lock (automatic HWPTs left unused stay until
    /// [`Table::reap_auto_hwpts`]).
    pub(super) fn unbind(&mut self, dev_id: u32) -> Result<()> {
        let gid = self.idev(dev_id)?.group.id();
        let pasids: Vec<u32> = self.igroups[&gid]
            .attaches
            .iter()
            .rev()
            .filter(|(_, a)| a.devices.contains(&dev_id))
            .map(|(&p, _)| p)
            .collect();
        for p in pasids {
            self.detach(dev_id, p)?;
        }
        device_release_dma_owner(&self.idev(dev_id)?.dev)?;
        self.remove_vdevices_of(dev_id);
        self.remove_object(dev_id);
        let ig = self
            .igroups
            .get_mut(&gid)
            .expect("bound device has an igroup");
        ig.bound -= 1;
        if ig.bound == 0 {
            self.igroups.remove(&gid);
        }
        Ok(())
    }

    /// [`Ictx::device_attach`] under the table lock.
    pub(super) fn attach(&mut self, dev_id: u32, pasid: u32, pt_id: u32) -> Result<()> {
        let (dev, group) = self.idev_refs(dev_id)?;
        let hwpt = self.attach_target_for(&dev, pt_id)?;
        self.check_vdevice(dev_id, &hwpt)?;
        self.check_pasid_compat(group.id(), pasid, &hwpt)?;
        if self.igroups[&group.id()].attaches.contains_key(&pasid) {
            self.join_attachment(group.id(), dev_id, pasid, &hwpt)
        } else {
            self.attach_group(dev_id, (&dev, &group), pasid, hwpt)
        }
    }

    /// [`Ictx::device_replace`] under the table lock.
    pub(super) fn replace(&mut self, dev_id: u32, pasid: u32, pt_id: u32) -> Result<()> {
        let (dev, group) = self.idev_refs(dev_id)?;
        let hwpt = self.attach_target_for(&dev, pt_id)?;
        let ga = self.attachment_of(group.id(), dev_id, pasid).ok_or(
            einval_v("replace of a device not attached at PASID", pasid.into())
                .because(Condition::NotAttached),
        )?;
        if Arc::ptr_eq(&ga.hwpt, &hwpt) {
            return Ok(());
        }
        let devices: Vec<u32> = ga.devices.iter().copied().collect();
        let old_fault = ga.hwpt.fault.is_some();
        self.check_vdevice(dev_id, &hwpt)?;
        self.check_pasid_compat(group.id(), pasid, &hwpt)?;
        let new_fault = hwpt.fault.is_some();
        if new_fault {
            self.iopf_get_all(&devices)?;
        }
        let handle = match install_in_core(Install::Replace, &hwpt, (&dev, &group), pasid, dev_id) {
            Ok(h) => h,
            Err(e) => {
                if new_fault {
                    self.iopf_put_all(&devices);
                }
                return Err(e);
            }
        };
        self.swap_attachment(group.id(), pasid, hwpt, handle);
        if old_fault {
            self.iopf_put_all(&devices);
        }
        Ok(())
    }

    /// The ID of the HWPT `dev_id` is attached to at `pasid`, if any.
    pub(super) fn attached_hwpt_id(&self, dev_id: u32, pasid: u32) -> Result<Option<u32>> {
        let gid = self.idev(dev_id)?.group.id();
        let Some(ga) = self.attachment_of(gid, dev_id, pasid) else {
            return Ok(None);
        };
        Ok(self.objects.iter().find_map(|(&id, o)| match o {
            Object::Hwpt(h) if Arc::ptr_eq(h, &ga.hwpt) => Some(id),
            _ => None,
        }))
    }

    /// Detaches every attachment of group `gid`, PASIDs before the RID, ignoring the core's
    /// errors (closing the context).
    pub(super) fn detach_group(&mut self, gid: GroupId) {
        let attaches = core::mem::take(&mut self.igroups.get_mut(&gid).expect("key").attaches);
        for (pasid, ga) in attaches.into_iter().rev() {
            let first = *ga.devices.first().expect("attachments have devices");
            let (dev, group) = self.idev_refs(first).expect("attached devices are bound");
            let _ = ga.detach_in_core(&group, &dev, pasid);
            if ga.hwpt.fault.is_some() {
                self.iopf_put_all(&ga.devices);
            }
        }
    }
}

impl Ictx {
    /// Binds `dev` to this context (`iommufd_device_bind`): claims DMA ownership of its group
    /// with this context's cookie (the group moves to its blocking domain); returns the dev_id.
    ///
    /// `EBUSY` if the device is already bound here; the core's errors for the ownership claim
    /// (`ENODEV` without a group, `EPERM` if someone else owns or uses the group, ...).
    pub fn bind_device(&self, dev: Arc<Device>) -> Result<u32> {
        self.table.lock().bind(self.owner, dev)
    }

    /// Unbinds device `dev_id` (`iommufd_device_unbind`): detaches it from every PASID and the
    /// RID first (auto-responding the faults of attachments that go away), then releases DMA
    /// ownership. `ENOENT` for an unknown device.
    pub fn unbind_device(&self, dev_id: u32) -> Result<()> {
        let mut t = self.table.lock();
        let r = t.unbind(dev_id);
        t.reap_auto_hwpts();
        r
    }

    /// The core device behind `dev_id`.
    pub fn device(&self, dev_id: u32) -> Result<Arc<Device>> {
        Ok(self.table.lock().idev(dev_id)?.dev.clone())
    }

    /// Attaches device `dev_id` at `pasid` (`IOMMU_NO_PASID`: the RID) to HWPT `pt_id`
    /// (`iommufd_device_attach`).
    ///
    /// The first device of a group attaches the whole group with a fresh core handle naming
    /// it (owner data [`FdHandle`]); later devices of the group join that attachment. A
    /// fault-capable HWPT enables fault reporting on the device first. Errors, no side
    /// effects: `ENOENT` unknown device or `pt_id`; `EINVAL`
    /// `pt_id` not a HWPT, a PASID-incompatible HWPT (SPEC §5.3), or the group attached there
    /// to another HWPT; `EBUSY` the device is already attached there; then the core's errors.
    pub fn device_attach(&self, dev_id: u32, pasid: u32, pt_id: u32) -> Result<()> {
        let mut t = self.table.lock();
        let r = t.attach(dev_id, pasid, pt_id);
        t.reap_auto_hwpts();
        r
    }

    /// Replaces the HWPT of the attachment of `dev_id` at `pasid` with `pt_id`, for the whole
    /// group, with a fresh handle naming `dev_id` (`iommufd_device_replace`).
    ///
    /// DMA goes straight from the old domain to the new one. Then every group of the *old*
    /// attachment still queued or read-but-unanswered on the *old* HWPT's fault queue is
    /// answered Invalid (the 2026 fix, H21), and fault reporting is dropped for devices that no
    /// longer need it (after the auto-response, H22). Replacing with the current HWPT is a
    /// no-op. `pt_id` may be an IOAS (its automatic HWPT, as for [`Ictx::device_attach`]); an
    /// automatic HWPT replaced away from and left unused is destroyed. Errors, no side effects
    /// (H27): `ENOENT`/`EINVAL` for `pt_id` as
    /// [`Ictx::device_attach`]; `EINVAL` if the device is not attached at `pasid`; the core's.
    pub fn device_replace(&self, dev_id: u32, pasid: u32, pt_id: u32) -> Result<()> {
        let mut t = self.table.lock();
        let r = t.replace(dev_id, pasid, pt_id);
        t.reap_auto_hwpts();
        r
    }

    /// Detaches device `dev_id` from `pasid` (`iommufd_device_detach`). The last device of the
    /// group attachment detaches the group in the core (which fences in-flight reports), then
    /// every group of that attachment still queued or read-but-unanswered is answered Invalid
    /// (auto-response, H9), then fault reporting is dropped (H22). `ENOENT` for an unknown
    /// device; `EINVAL` if it is not attached at `pasid`.
    pub fn device_detach(&self, dev_id: u32, pasid: u32) -> Result<()> {
        let mut t = self.table.lock();
        let r = t.detach(dev_id, pasid);
        t.reap_auto_hwpts();
        r
    }

    /// The HWPT device `dev_id` is attached to at `pasid`, if any.
    pub fn attached_hwpt(&self, dev_id: u32, pasid: u32) -> Result<Option<u32>> {
        self.table.lock().attached_hwpt_id(dev_id, pasid)
    }
}

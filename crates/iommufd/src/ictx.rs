//! The iommufd context and its object table (Linux `iommufd_ctx`, `main.c`, `device.c`,
//! `hw_pagetable.c`, `io_pagetable.c` in outline).
//!
//! One lock (`table`) serialises configuration, as `igroup->lock` and the object xarray do in
//! Linux; it is never taken on the fault path (reporting thread → handler → the fault object's
//! short lock) nor by the endpoint's read/write, so configuration cannot stall fault delivery
//! (SPEC H17). Lock order: `table` → core group lock → PASID array; `table` → fault `mutex` →
//! fault short lock (auto-response, Appendix A).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering::Relaxed};
use std::os::fd::{AsFd, AsRawFd};

use iommu_core::error::{
    ebusy_v, eexist_v, einval, einval_v, enoent_v, enospc, eopnotsupp, eopnotsupp_v,
};
use iommu_core::{
    attach_device_pasid, attach_group_handle, detach_device_pasid, detach_group_handle,
    device_claim_dma_owner, device_release_dma_owner, iopf_disable, iopf_enable,
    replace_device_pasid, replace_group_handle, Attachment, Device, DmaOwner, Domain,
    DomainRequest, Error, Group, GroupId, Result, IOMMU_NO_PASID, IOMMU_READ, IOMMU_WRITE,
};

use crate::fault::{Fault, FaultFd, FdHandle};
use crate::uapi::{
    copy_struct_from_user, copy_struct_to_user, IommuFaultAlloc, IommuHwptAlloc,
    IOMMU_FAULT_ALLOC_MIN_SIZE, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_MIN_SIZE,
    IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_PASID, IOMMU_HWPT_DATA_NONE,
    IOMMU_HWPT_FAULT_ID_VALID,
};
use iommu_core::sync::Mutex;

/// The IOVA aperture every IOAS reports as allowed: `[0, IOAS_APERTURE_END)` (48-bit).
pub const IOAS_APERTURE_END: u64 = 1 << 48;
const PAGE_SIZE: u64 = 4096;

/// An allowed IOVA range of an IOAS, inclusive (Linux `struct iommu_iova_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// First allowed IOVA.
    pub start: u64,
    /// Last allowed IOVA (inclusive).
    pub last: u64,
}

/// The kind of object an ID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `IOMMUFD_OBJ_IOAS`.
    Ioas,
    /// `IOMMUFD_OBJ_DEVICE`.
    Device,
    /// `IOMMUFD_OBJ_HWPT_PAGING`.
    HwptPaging,
    /// `IOMMUFD_OBJ_HWPT_NESTED`.
    HwptNested,
    /// `IOMMUFD_OBJ_FAULT`.
    Fault,
}

#[derive(Debug, Clone, Copy)]
struct IoasMap {
    len: u64,
    pa: u64,
    prot: u32,
}

#[derive(Default)]
struct IoasObj {
    /// IOVA → mapping; mappings never overlap.
    maps: BTreeMap<u64, IoasMap>,
    /// The paging HWPTs on this IOAS (id → domain): every mapping is pushed into each.
    hwpts: BTreeMap<u32, Arc<Domain>>,
}

struct IdevObj {
    dev: Arc<Device>,
    group: Arc<Group>,
    /// Attachments of this idev to fault-capable HWPTs (the 6.11-6.15 `iopf_enabled` count).
    iopf_refs: u32,
    /// Whether iommufd enabled fault reporting (and so must disable it, H22).
    iopf_ours: bool,
}

enum HwptKind {
    Paging { ioas_id: u32, nest_parent: bool },
    Nested { _parent: Arc<Hwpt> },
}

/// A HWPT (`iommufd_hw_pagetable`): one domain, its fault queue, and what it hangs on.
///
/// Shared by the table, every group attachment using it and nested children: destroy refuses
/// (`EBUSY`) while the table's is not the only reference.
struct Hwpt {
    domain: Arc<Domain>,
    kind: HwptKind,
    fault: Option<Arc<Fault>>,
    pasid_compat: bool,
}

enum Object {
    Ioas(IoasObj),
    Device(IdevObj),
    Hwpt(Arc<Hwpt>),
    Fault(Arc<Fault>),
}

/// One (group, PASID) attachment (Linux `iommufd_attach` of `igroup->pasid_attach`).
struct GroupAttach {
    hwpt: Arc<Hwpt>,
    /// The core handle installed by the attach/replace that made this attachment current.
    handle: Attachment,
    /// The idevs of the group attached through it (the first one attached the group).
    devices: BTreeSet<u32>,
}

#[derive(Default)]
struct IGroup {
    /// PASID (`IOMMU_NO_PASID` for the RID) → attachment.
    attaches: BTreeMap<u32, GroupAttach>,
    bound: usize,
}

#[derive(Default)]
struct Table {
    objects: BTreeMap<u32, Object>,
    igroups: BTreeMap<GroupId, IGroup>,
}

static NEXT_ICTX: StdAtomicU64 = StdAtomicU64::new(1);

/// An iommufd context (one open `/dev/iommu`): the object table and every object in it.
///
/// Object IDs are `u32`, start at 1, and the lowest free one is reused. Every call validates
/// fully before changing anything: a rejected call has no side effects. Dropping the context
/// detaches every device (answering their pending faults Invalid), releases DMA ownership and
/// answers every group any fault queue still holds (SPEC H23).
pub struct Ictx {
    owner: DmaOwner,
    table: Mutex<Table>,
}

impl Default for Ictx {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    fn alloc_id(&self) -> Result<u32> {
        let mut id = 1u32;
        for &k in self.objects.keys() {
            if k != id {
                break;
            }
            id = id.checked_add(1).ok_or(enospc("object IDs exhausted"))?;
        }
        Ok(id)
    }

    fn idev(&self, dev_id: u32) -> Result<&IdevObj> {
        match self.objects.get(&dev_id) {
            Some(Object::Device(d)) => Ok(d),
            _ => Err(enoent_v("no such device object", dev_id.into())),
        }
    }

    fn idev_mut(&mut self, dev_id: u32) -> Result<&mut IdevObj> {
        match self.objects.get_mut(&dev_id) {
            Some(Object::Device(d)) => Ok(d),
            _ => Err(enoent_v("no such device object", dev_id.into())),
        }
    }

    fn ioas_mut(&mut self, ioas_id: u32) -> Result<&mut IoasObj> {
        match self.objects.get_mut(&ioas_id) {
            Some(Object::Ioas(i)) => Ok(i),
            _ => Err(enoent_v("no such IOAS", ioas_id.into())),
        }
    }

    /// The HWPT a device is to be attached to: `ENOENT` for an unknown ID, `EOPNOTSUPP` for an
    /// IOAS (auto-created domains are not modelled), `EINVAL` for other objects.
    fn attach_target(&self, pt_id: u32) -> Result<Arc<Hwpt>> {
        match self.objects.get(&pt_id) {
            Some(Object::Hwpt(h)) => Ok(h.clone()),
            Some(Object::Ioas(_)) => Err(eopnotsupp_v(
                "attach by IOAS (auto domain) is not supported; allocate a HWPT",
                pt_id.into(),
            )),
            Some(_) => Err(einval_v("pt_id is not a HWPT", pt_id.into())),
            None => Err(enoent_v("no such object", pt_id.into())),
        }
    }

    fn fault(&self, fault_id: u32) -> Result<Arc<Fault>> {
        match self.objects.get(&fault_id) {
            Some(Object::Fault(f)) => Ok(f.clone()),
            _ => Err(enoent_v("no such fault object", fault_id.into())),
        }
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

    /// Core detach of a whole group attachment, then auto-response on its HWPT's queue.
    fn core_detach(
        &self,
        group: &Arc<Group>,
        dev: &Device,
        pasid: u32,
        ga: &GroupAttach,
    ) -> Result<()> {
        let domain = &ga.hwpt.domain;
        if pasid == IOMMU_NO_PASID {
            detach_group_handle(domain, group)?;
        } else {
            detach_device_pasid(domain, dev, pasid)?;
        }
        // The core fenced in-flight reports: every group of this attachment is now queued or
        // read, and auto-response sees all of them (H2, H4, H9).
        if let Some(f) = &ga.hwpt.fault {
            f.auto_response(&ga.handle);
        }
        Ok(())
    }

    /// Removes `dev_id` from the attachment at `pasid`; the last device detaches the group.
    fn detach(&mut self, dev_id: u32, pasid: u32) -> Result<()> {
        let (dev, group) = {
            let idev = self.idev(dev_id)?;
            (idev.dev.clone(), idev.group.clone())
        };
        let ig = self
            .igroups
            .get_mut(&group.id())
            .ok_or(einval("device's group has no attachments"))?;
        let ga = ig
            .attaches
            .get(&pasid)
            .filter(|a| a.devices.contains(&dev_id))
            .ok_or(einval_v("device is not attached at PASID", pasid.into()))?;
        let fault_capable = ga.hwpt.fault.is_some();
        if ga.devices.len() == 1 {
            let ga = ig.attaches.remove(&pasid).expect("looked up above");
            if let Err(e) = self.core_detach(&group, &dev, pasid, &ga) {
                self.igroups
                    .get_mut(&group.id())
                    .expect("present")
                    .attaches
                    .insert(pasid, ga);
                return Err(e);
            }
        } else if let Some(ga) = ig.attaches.get_mut(&pasid) {
            ga.devices.remove(&dev_id);
        }
        if fault_capable {
            self.iopf_put(dev_id);
        }
        Ok(())
    }
}

impl Ictx {
    /// A new, empty context with its own DMA-owner cookie.
    pub fn new() -> Self {
        Self {
            owner: DmaOwner(NEXT_ICTX.fetch_add(1, Relaxed)),
            table: Mutex::new(Table::default()),
        }
    }

    /// The cookie this context claims DMA ownership of bound devices' groups with.
    pub fn dma_owner(&self) -> DmaOwner {
        self.owner
    }

    /// The type of object `id`; `ENOENT` if there is none.
    pub fn object_type(&self, id: u32) -> Result<ObjectType> {
        let t = self.table.lock();
        match t.objects.get(&id) {
            Some(Object::Ioas(_)) => Ok(ObjectType::Ioas),
            Some(Object::Device(_)) => Ok(ObjectType::Device),
            Some(Object::Hwpt(h)) => Ok(match h.kind {
                HwptKind::Paging { .. } => ObjectType::HwptPaging,
                HwptKind::Nested { .. } => ObjectType::HwptNested,
            }),
            Some(Object::Fault(_)) => Ok(ObjectType::Fault),
            None => Err(enoent_v("no such object", id.into())),
        }
    }

    /// `IOMMU_DESTROY`: removes object `id`.
    ///
    /// `ENOENT` for an unknown ID; `EBUSY` while anything references the object: an IOAS with
    /// paging HWPTs, a HWPT with attached devices or nested children, a fault object with its
    /// endpoint open or HWPTs delivering to it, and a bound device (release it with
    /// [`Ictx::unbind_device`]).
    pub fn destroy(&self, id: u32) -> Result<()> {
        let mut t = self.table.lock();
        match t.objects.get(&id) {
            None => return Err(enoent_v("no such object", id.into())),
            Some(Object::Device(_)) => {
                return Err(ebusy_v("bound device: use unbind_device", id.into()))
            }
            Some(Object::Ioas(i)) if !i.hwpts.is_empty() => {
                return Err(ebusy_v("IOAS has paging HWPTs", i.hwpts.len() as u64))
            }
            // The table holds one reference; attachments and nested children hold the others.
            Some(Object::Hwpt(h)) if Arc::strong_count(h) > 1 => {
                return Err(ebusy_v(
                    "HWPT is attached or has nested children",
                    id.into(),
                ))
            }
            Some(Object::Fault(f)) if Arc::strong_count(f) > 1 => {
                return Err(ebusy_v("fault object has its fd open or HWPTs", id.into()))
            }
            Some(_) => {}
        }
        match t.objects.remove(&id) {
            Some(Object::Hwpt(h)) => {
                if let HwptKind::Paging { ioas_id, .. } = h.kind {
                    if let Ok(ioas) = t.ioas_mut(ioas_id) {
                        ioas.hwpts.remove(&id);
                        for (&iova, m) in &ioas.maps {
                            let _ = h.domain.unmap(iova, m.len);
                        }
                    }
                }
            }
            Some(Object::Fault(f)) => {
                f.shutdown();
            }
            _ => {}
        }
        Ok(())
    }

    // ---------------------------------------------------------------- IOAS

    /// `IOMMU_IOAS_ALLOC`: a new, empty IOVA space; returns its ID.
    pub fn ioas_alloc(&self) -> Result<u32> {
        let mut t = self.table.lock();
        let id = t.alloc_id()?;
        t.objects.insert(id, Object::Ioas(IoasObj::default()));
        Ok(id)
    }

    /// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges mappings may use.
    pub fn ioas_iova_ranges(&self, ioas_id: u32) -> Result<Vec<IovaRange>> {
        let mut t = self.table.lock();
        t.ioas_mut(ioas_id)?;
        Ok(alloc::vec![IovaRange {
            start: 0,
            last: IOAS_APERTURE_END - 1,
        }])
    }

    /// `IOMMU_IOAS_MAP`: maps `len` bytes of physical memory at `pa` into the IOAS at `iova`
    /// (or at the lowest free IOVA with `None`); returns the IOVA used.
    ///
    /// The mapping is pushed into every paging HWPT on the IOAS through `Domain::map`; if one
    /// refuses, the others are rolled back. `ENOENT` for an unknown IOAS; `EINVAL` for a zero
    /// or unaligned (4 KiB) range, a range outside the allowed IOVA ranges, or `prot` not a
    /// non-empty subset of `IOMMU_READ | IOMMU_WRITE`; `EEXIST` for an overlap; `ENOSPC` when
    /// no free IOVA range is large enough.
    pub fn ioas_map(
        &self,
        ioas_id: u32,
        iova: Option<u64>,
        pa: u64,
        len: u64,
        prot: u32,
    ) -> Result<u64> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        if len == 0 || len % PAGE_SIZE != 0 || pa % PAGE_SIZE != 0 {
            return Err(einval_v("length/address not 4 KiB aligned", len));
        }
        if prot == 0 || prot & !(IOMMU_READ | IOMMU_WRITE) != 0 {
            return Err(einval_v("bad prot", prot.into()));
        }
        let iova = match iova {
            Some(iova) => {
                if iova % PAGE_SIZE != 0
                    || iova.checked_add(len).is_none_or(|e| e > IOAS_APERTURE_END)
                {
                    return Err(einval_v("IOVA not aligned or outside the aperture", iova));
                }
                let end = iova + len;
                if let Some((&at, _)) = ioas
                    .maps
                    .range(..end)
                    .next_back()
                    .filter(|(&s, m)| s + m.len > iova)
                {
                    return Err(eexist_v("IOVA range already mapped", at));
                }
                iova
            }
            None => {
                let mut cursor = 0u64;
                for (&s, m) in &ioas.maps {
                    if s - cursor >= len {
                        break;
                    }
                    cursor = s + m.len;
                }
                if IOAS_APERTURE_END - cursor < len {
                    return Err(enospc("no free IOVA range large enough"));
                }
                cursor
            }
        };
        let domains: Vec<&Arc<Domain>> = ioas.hwpts.values().collect();
        for (i, d) in domains.iter().enumerate() {
            if let Err(e) = d.map(iova, pa, len, prot) {
                for d in &domains[..i] {
                    let _ = d.unmap(iova, len);
                }
                return Err(e);
            }
        }
        ioas.maps.insert(iova, IoasMap { len, pa, prot });
        Ok(iova)
    }

    /// `IOMMU_IOAS_UNMAP`: removes every mapping inside `[iova, iova + len)` from the IOAS and
    /// its paging HWPTs; returns the bytes unmapped. `ENOENT` for an unknown IOAS or when
    /// nothing is mapped there; `EINVAL` if a mapping straddles the range's edge (mappings are
    /// not split).
    pub fn ioas_unmap(&self, ioas_id: u32, iova: u64, len: u64) -> Result<u64> {
        let mut t = self.table.lock();
        let ioas = t.ioas_mut(ioas_id)?;
        let end = iova.saturating_add(len);
        let hit: Vec<(u64, u64)> = ioas
            .maps
            .iter()
            .filter(|(&s, m)| s < end && s + m.len > iova)
            .map(|(&s, m)| (s, m.len))
            .collect();
        if hit.iter().any(|&(s, l)| s < iova || s + l > end) {
            return Err(einval_v("unmap would split a mapping", iova));
        }
        if hit.is_empty() {
            return Err(enoent_v("nothing mapped in range", iova));
        }
        let mut total = 0;
        for (s, l) in hit {
            for d in ioas.hwpts.values() {
                let _ = d.unmap(s, l);
            }
            ioas.maps.remove(&s);
            total += l;
        }
        Ok(total)
    }

    // ---------------------------------------------------------------- devices

    /// Binds `dev` to this context (`iommufd_device_bind`): claims DMA ownership of its group
    /// with this context's cookie (the group moves to its blocking domain); returns the dev_id.
    ///
    /// `EBUSY` if the device is already bound here; the core's errors for the ownership claim
    /// (`ENODEV` without a group, `EPERM` if someone else owns or uses the group, ...).
    pub fn bind_device(&self, dev: Arc<Device>) -> Result<u32> {
        let mut t = self.table.lock();
        if t.objects
            .values()
            .any(|o| matches!(o, Object::Device(d) if d.dev.id() == dev.id()))
        {
            return Err(ebusy_v("device already bound", dev.id().0));
        }
        let group = dev.group()?;
        let id = t.alloc_id()?;
        device_claim_dma_owner(&dev, self.owner)?;
        t.igroups.entry(group.id()).or_default().bound += 1;
        t.objects.insert(
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

    /// Unbinds device `dev_id` (`iommufd_device_unbind`): detaches it from every PASID and the
    /// RID first (auto-responding the faults of attachments that go away), then releases DMA
    /// ownership. `ENOENT` for an unknown device.
    pub fn unbind_device(&self, dev_id: u32) -> Result<()> {
        let mut t = self.table.lock();
        let gid = t.idev(dev_id)?.group.id();
        let pasids: Vec<u32> = t.igroups[&gid]
            .attaches
            .iter()
            .rev()
            .filter(|(_, a)| a.devices.contains(&dev_id))
            .map(|(&p, _)| p)
            .collect();
        for p in pasids {
            t.detach(dev_id, p)?;
        }
        device_release_dma_owner(&t.idev(dev_id)?.dev)?;
        t.objects.remove(&dev_id);
        let ig = t.igroups.get_mut(&gid).expect("bound device has an igroup");
        ig.bound -= 1;
        if ig.bound == 0 {
            t.igroups.remove(&gid);
        }
        Ok(())
    }

    /// The core device behind `dev_id`.
    pub fn device(&self, dev_id: u32) -> Result<Arc<Device>> {
        Ok(self.table.lock().idev(dev_id)?.dev.clone())
    }

    // ---------------------------------------------------------------- fault queues

    /// `IOMMU_FAULT_QUEUE_ALLOC`: a new fault object; returns its ID and its endpoint (the
    /// fault fd). `EOPNOTSUPP` for non-zero `flags`.
    pub fn fault_queue_alloc(&self, flags: u32) -> Result<(u32, FaultFd)> {
        if flags != 0 {
            return Err(eopnotsupp_v("fault queue flags must be 0", flags.into()));
        }
        let mut t = self.table.lock();
        let id = t.alloc_id()?;
        let fault = Fault::new()?;
        t.objects.insert(id, Object::Fault(fault.clone()));
        Ok((id, FaultFd::new(fault)))
    }

    /// `IOMMU_FAULT_QUEUE_ALLOC` from its uAPI struct: `cmd` is the user's `iommu_fault_alloc`
    /// (its length is the declared size). Writes `out_fault_id`/`out_fault_fd` back.
    /// `EINVAL` below 16 bytes, `E2BIG` for non-zero bytes beyond the struct.
    pub fn ioctl_fault_queue_alloc(&self, cmd: &mut [u8]) -> Result<FaultFd> {
        let mut c: IommuFaultAlloc = copy_struct_from_user(cmd, IOMMU_FAULT_ALLOC_MIN_SIZE)?;
        let (id, fd) = self.fault_queue_alloc(c.flags)?;
        c.out_fault_id = id;
        c.out_fault_fd = fd.as_fd().as_raw_fd() as u32;
        copy_struct_to_user(cmd, &c);
        Ok(fd)
    }

    // ---------------------------------------------------------------- HWPTs

    /// `IOMMU_HWPT_ALLOC`: allocates a HWPT for device `dev_id`; returns its ID.
    ///
    /// * `pt_id` an IOAS: a paging HWPT (flags `NEST_PARENT`, `FAULT_ID_VALID`, `ALLOC_PASID`);
    ///   every current and future IOAS mapping is pushed into it. Paging HWPTs may be fault
    ///   capable \[6.13\].
    /// * `pt_id` a paging HWPT allocated with `NEST_PARENT`: a nested HWPT described by the
    ///   driver data (`data_type`, `data`), flags `FAULT_ID_VALID` and `ALLOC_PASID` only.
    /// * `FAULT_ID_VALID`: faults on the HWPT are delivered to fault object `fault_id`.
    ///
    /// Errors, in Linux's order: unknown flags ⇒ `EOPNOTSUPP`; `data_type` NONE with data, or a
    /// type without data ⇒ `EINVAL`; unknown `dev_id` ⇒ `ENOENT`; unknown `pt_id` or one that
    /// is neither an IOAS nor a paging HWPT ⇒ `EINVAL`; paging with `NEST_PARENT |
    /// FAULT_ID_VALID`, with `DIRTY_TRACKING`, or with driver data ⇒ `EOPNOTSUPP`; nested
    /// with other flags ⇒ `EOPNOTSUPP`, on a parent without `NEST_PARENT` ⇒ `EINVAL`; unknown
    /// `fault_id` ⇒ `ENOENT`; then the driver's errors. No side effects on error.
    pub fn hwpt_alloc(
        &self,
        dev_id: u32,
        pt_id: u32,
        flags: u32,
        fault_id: u32,
        data_type: u32,
        data: &[u8],
    ) -> Result<u32> {
        const VALID: u32 = IOMMU_HWPT_ALLOC_NEST_PARENT
            | IOMMU_HWPT_ALLOC_DIRTY_TRACKING
            | IOMMU_HWPT_FAULT_ID_VALID
            | IOMMU_HWPT_ALLOC_PASID;
        if flags & !VALID != 0 {
            return Err(eopnotsupp_v("unknown HWPT alloc flags", flags.into()));
        }
        if (data_type == IOMMU_HWPT_DATA_NONE) != data.is_empty() {
            return Err(einval_v(
                "data_type NONE needs no data; other types need data",
                data_type.into(),
            ));
        }
        let mut t = self.table.lock();
        let dev = t.idev(dev_id)?.dev.clone();
        let (kind, parent) = match t.objects.get(&pt_id) {
            Some(Object::Ioas(_)) => {
                if flags & IOMMU_HWPT_FAULT_ID_VALID != 0
                    && flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0
                {
                    // 6.15 "Disallow allocating nested parent domain with fault ID".
                    return Err(eopnotsupp("a nest parent HWPT cannot have a fault queue"));
                }
                if flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING != 0 {
                    return Err(eopnotsupp("dirty tracking is not supported"));
                }
                if data_type != IOMMU_HWPT_DATA_NONE {
                    return Err(eopnotsupp_v(
                        "driver data for paging HWPTs is not supported",
                        data_type.into(),
                    ));
                }
                (
                    HwptKind::Paging {
                        ioas_id: pt_id,
                        nest_parent: flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0,
                    },
                    None,
                )
            }
            Some(Object::Hwpt(p)) => {
                if flags & !(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID) != 0 {
                    return Err(eopnotsupp_v(
                        "nested HWPT flags: FAULT_ID_VALID, ALLOC_PASID only",
                        flags.into(),
                    ));
                }
                if !matches!(
                    p.kind,
                    HwptKind::Paging {
                        nest_parent: true,
                        ..
                    }
                ) {
                    return Err(einval_v(
                        "parent is not a NEST_PARENT paging HWPT",
                        pt_id.into(),
                    ));
                }
                (
                    HwptKind::Nested { _parent: p.clone() },
                    Some(p.domain.clone()),
                )
            }
            _ => {
                return Err(einval_v(
                    "pt_id is not an IOAS or paging HWPT",
                    pt_id.into(),
                ))
            }
        };
        // Linux looks the fault object up after allocating the domain; doing it first keeps
        // "rejected calls have no side effects" without changing which errno wins, except
        // against a failing driver.
        let fault = if flags & IOMMU_HWPT_FAULT_ID_VALID != 0 {
            Some(t.fault(fault_id)?)
        } else {
            None
        };
        let handler = fault.as_ref().map(Fault::handler);
        let req = match &parent {
            Some(parent) => DomainRequest::Nested {
                parent,
                data_type,
                data,
            },
            None => DomainRequest::Paging { dma_api: false },
        };
        let domain = Domain::alloc(&dev, req, handler)?;
        let id = t.alloc_id()?;
        if let HwptKind::Paging { ioas_id, .. } = kind {
            let ioas = t.ioas_mut(ioas_id)?;
            let mut done: Vec<(u64, u64)> = Vec::new();
            for (&iova, m) in &ioas.maps {
                if let Err(e) = domain.map(iova, m.pa, m.len, m.prot) {
                    for &(iova, len) in &done {
                        let _ = domain.unmap(iova, len);
                    }
                    return Err(e);
                }
                done.push((iova, m.len));
            }
            ioas.hwpts.insert(id, domain.clone());
        }
        let hwpt = Hwpt {
            domain,
            kind,
            fault,
            pasid_compat: flags & IOMMU_HWPT_ALLOC_PASID != 0,
        };
        t.objects.insert(id, Object::Hwpt(Arc::new(hwpt)));
        Ok(id)
    }

    /// `IOMMU_HWPT_ALLOC` from its uAPI struct: `cmd` is the user's `iommu_hwpt_alloc` (its
    /// length is the declared size, at least 24 so pre-fault-queue user space works), `data`
    /// the bytes at `data_uptr`. Writes `out_hwpt_id` back. `EINVAL` below 24 bytes or when
    /// `data_len` differs from `data.len()`; `E2BIG` for non-zero bytes beyond the struct;
    /// `EOPNOTSUPP` for a non-zero `__reserved`; then as [`Ictx::hwpt_alloc`].
    pub fn ioctl_hwpt_alloc(&self, cmd: &mut [u8], data: &[u8]) -> Result<u32> {
        let mut c: IommuHwptAlloc = copy_struct_from_user(cmd, IOMMU_HWPT_ALLOC_MIN_SIZE)?;
        if c.__reserved != 0 {
            return Err(eopnotsupp("__reserved must be 0"));
        }
        if c.data_len as usize != data.len() {
            return Err(einval_v(
                "data_len does not match the data",
                c.data_len.into(),
            ));
        }
        let id = self.hwpt_alloc(c.dev_id, c.pt_id, c.flags, c.fault_id, c.data_type, data)?;
        c.out_hwpt_id = id;
        copy_struct_to_user(cmd, &c);
        Ok(id)
    }

    /// The domain of HWPT `hwpt_id` (`ENOENT` if there is no such HWPT).
    pub fn hwpt_domain(&self, hwpt_id: u32) -> Result<Arc<Domain>> {
        match self.table.lock().objects.get(&hwpt_id) {
            Some(Object::Hwpt(h)) => Ok(h.domain.clone()),
            _ => Err(enoent_v("no such HWPT", hwpt_id.into())),
        }
    }

    // ---------------------------------------------------------------- attach

    /// Attaches device `dev_id` at `pasid` (`IOMMU_NO_PASID`: the RID) to HWPT `pt_id`
    /// (`iommufd_device_attach`).
    ///
    /// The first device of a group attaches the whole group with a fresh core handle naming
    /// it (owner data [`FdHandle`]); later devices of the group join that attachment. A
    /// fault-capable HWPT enables fault reporting on the device first. Errors, no side
    /// effects: `ENOENT` unknown device or `pt_id`; `EOPNOTSUPP` `pt_id` an IOAS; `EINVAL`
    /// `pt_id` not a HWPT, a PASID-incompatible HWPT (SPEC §5.3), or the group attached there
    /// to another HWPT; `EBUSY` the device is already attached there; then the core's errors.
    pub fn device_attach(&self, dev_id: u32, pasid: u32, pt_id: u32) -> Result<()> {
        let mut t = self.table.lock();
        let (dev, group) = {
            let i = t.idev(dev_id)?;
            (i.dev.clone(), i.group.clone())
        };
        let hwpt = t.attach_target(pt_id)?;
        t.check_pasid_compat(group.id(), pasid, &hwpt)?;
        if let Some(ga) = t.igroups[&group.id()].attaches.get(&pasid) {
            if !Arc::ptr_eq(&ga.hwpt, &hwpt) {
                return Err(einval("group is attached to another HWPT there"));
            }
            if ga.devices.contains(&dev_id) {
                return Err(ebusy_v("device already attached at PASID", pasid.into()));
            }
            if hwpt.fault.is_some() {
                t.iopf_get(dev_id)?;
            }
            let ig = t.igroups.get_mut(&group.id()).expect("bound");
            let ga = ig.attaches.get_mut(&pasid).expect("looked up above");
            ga.devices.insert(dev_id);
            return Ok(());
        }
        if hwpt.fault.is_some() {
            t.iopf_get(dev_id)?;
        }
        let data = FdHandle { dev_id };
        let handle: Result<Attachment> = if pasid == IOMMU_NO_PASID {
            attach_group_handle(&hwpt.domain, &group, data).map(Into::into)
        } else {
            attach_device_pasid(&hwpt.domain, &dev, pasid, data).map(Into::into)
        };
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                if hwpt.fault.is_some() {
                    t.iopf_put(dev_id);
                }
                return Err(e);
            }
        };
        let ig = t.igroups.get_mut(&group.id()).expect("bound");
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

    /// Replaces the HWPT of the attachment of `dev_id` at `pasid` with `pt_id`, for the whole
    /// group, with a fresh handle naming `dev_id` (`iommufd_device_replace`).
    ///
    /// DMA goes straight from the old domain to the new one. Then every group of the *old*
    /// attachment still queued or read-but-unanswered on the *old* HWPT's fault queue is
    /// answered Invalid (the 2026 fix, H21), and fault reporting is dropped for devices that no
    /// longer need it (after the auto-response, H22). Replacing with the current HWPT is a
    /// no-op. Errors, no side effects (H27): `ENOENT`/`EOPNOTSUPP`/`EINVAL` for `pt_id` as
    /// [`Ictx::device_attach`]; `EINVAL` if the device is not attached at `pasid`; the core's.
    pub fn device_replace(&self, dev_id: u32, pasid: u32, pt_id: u32) -> Result<()> {
        let mut t = self.table.lock();
        let (dev, group) = {
            let i = t.idev(dev_id)?;
            (i.dev.clone(), i.group.clone())
        };
        let hwpt = t.attach_target(pt_id)?;
        let ga = t.igroups[&group.id()]
            .attaches
            .get(&pasid)
            .filter(|a| a.devices.contains(&dev_id))
            .ok_or(einval_v(
                "replace of a device not attached at PASID",
                pasid.into(),
            ))?;
        if Arc::ptr_eq(&ga.hwpt, &hwpt) {
            return Ok(());
        }
        let devices: Vec<u32> = ga.devices.iter().copied().collect();
        let old_fault = ga.hwpt.fault.is_some();
        t.check_pasid_compat(group.id(), pasid, &hwpt)?;
        let new_fault = hwpt.fault.is_some();
        if new_fault {
            for (i, &d) in devices.iter().enumerate() {
                if let Err(e) = t.iopf_get(d) {
                    for &d in &devices[..i] {
                        t.iopf_put(d);
                    }
                    return Err(e);
                }
            }
        }
        let data = FdHandle { dev_id };
        let replaced = if pasid == IOMMU_NO_PASID {
            replace_group_handle(&hwpt.domain, &group, data).map(|r| r.new.into())
        } else {
            replace_device_pasid(&hwpt.domain, &dev, pasid, data).map(|r| r.new.into())
        };
        let new_handle: Attachment = match replaced {
            Ok(h) => h,
            Err(e) => {
                if new_fault {
                    for &d in &devices {
                        t.iopf_put(d);
                    }
                }
                return Err(e);
            }
        };
        let ig = t.igroups.get_mut(&group.id()).expect("bound");
        let ga = ig.attaches.get_mut(&pasid).expect("looked up above");
        let old_hwpt = core::mem::replace(&mut ga.hwpt, hwpt);
        let old_handle = core::mem::replace(&mut ga.handle, new_handle);
        // H21: the old attachment's groups live on the OLD HWPT's queue.
        if let Some(f) = &old_hwpt.fault {
            f.auto_response(&old_handle);
        }
        if old_fault {
            for &d in &devices {
                t.iopf_put(d);
            }
        }
        Ok(())
    }

    /// Detaches device `dev_id` from `pasid` (`iommufd_device_detach`). The last device of the
    /// group attachment detaches the group in the core (which fences in-flight reports), then
    /// every group of that attachment still queued or read-but-unanswered is answered Invalid
    /// (auto-response, H9), then fault reporting is dropped (H22). `ENOENT` for an unknown
    /// device; `EINVAL` if it is not attached at `pasid`.
    pub fn device_detach(&self, dev_id: u32, pasid: u32) -> Result<()> {
        self.table.lock().detach(dev_id, pasid)
    }

    /// The HWPT device `dev_id` is attached to at `pasid`, if any.
    pub fn attached_hwpt(&self, dev_id: u32, pasid: u32) -> Result<Option<u32>> {
        let t = self.table.lock();
        let gid = t.idev(dev_id)?.group.id();
        let Some(ga) = t.igroups[&gid]
            .attaches
            .get(&pasid)
            .filter(|a| a.devices.contains(&dev_id))
        else {
            return Ok(None);
        };
        Ok(t.objects.iter().find_map(|(&id, o)| match o {
            Object::Hwpt(h) if Arc::ptr_eq(h, &ga.hwpt) => Some(id),
            _ => None,
        }))
    }
}

impl Drop for Ictx {
    /// Closing the context: detach everything (PASIDs before the RID, each auto-responding),
    /// release DMA ownership, then close every fault queue (answering anything left, H23).
    fn drop(&mut self) {
        let mut t = self.table.lock();
        let gids: Vec<GroupId> = t.igroups.keys().copied().collect();
        for gid in gids {
            let attaches = core::mem::take(&mut t.igroups.get_mut(&gid).expect("key").attaches);
            for (pasid, ga) in attaches.into_iter().rev() {
                let first = *ga.devices.first().expect("attachments have devices");
                let (dev, group) = {
                    let i = t.idev(first).expect("attached devices are bound");
                    (i.dev.clone(), i.group.clone())
                };
                let _ = t.core_detach(&group, &dev, pasid, &ga);
                if ga.hwpt.fault.is_some() {
                    for &d in &ga.devices {
                        t.iopf_put(d);
                    }
                }
            }
        }
        for o in t.objects.values() {
            match o {
                Object::Device(d) => {
                    let _ = device_release_dma_owner(&d.dev);
                }
                Object::Fault(f) => {
                    f.shutdown();
                }
                _ => {}
            }
        }
        t.objects.clear();
    }
}

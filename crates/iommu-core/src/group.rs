//! IOMMU groups (Linux `struct iommu_group`): the unit of isolation.
//!
//! Every attach is really a group operation: devices in one group cannot be told apart by the
//! IOMMU, so they share the RID domain and every PASID attachment. Two locks, as in Linux:
//!
//! * `state` (Linux `group->mutex`) serialises every configuration change — attach, detach,
//!   replace, DMA ownership — for its whole duration, driver calls included;
//! * `pasid_array` (Linux's xarray and its `xa_lock`) is taken briefly, inside `state`, to
//!   publish or unpublish a handle, and alone by lookups, so the fault path never waits for a
//!   driver call in progress.
//!
//! Lock order: `state` → `pasid_array`.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::device::{check_max_pasids, Device, DeviceId};
use crate::domain::{Domain, DomainId};
use crate::driver::{DefaultDomainKind, DomainRequest, IommuDriver};
use crate::error::{ebusy, ebusy_v, einval, Condition, Result};
use crate::handle::ErasedHandle;
use crate::ownership::DmaOwner;
use crate::pasid_table::PasidTable;
use crate::sync::{Mutex, MutexGuard, RwLock};

/// A group's identity, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

static NEXT_GROUP_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) type Slot = Arc<dyn ErasedHandle>;

/// A slot's identity, as [`crate::Attachment::addr`] gives it.
pub(crate) fn slot_addr(slot: &Slot) -> usize {
    Arc::as_ptr(slot) as *const () as usize
}

/// Everything `group->mutex` protects.
pub(crate) struct GroupState {
    pub(crate) devices: Vec<Arc<Device>>,
    pub(crate) domain: Option<Arc<Domain>>,
    pub(crate) default_domain: Option<Arc<Domain>>,
    pub(crate) blocking_domain: Option<Arc<Domain>>,
    pub(crate) owner_cnt: u32,
    pub(crate) owner: Option<DmaOwner>,
}

/// An IOMMU group.
pub struct Group {
    id: GroupId,
    name: String,
    iommu: Arc<dyn IommuDriver>,
    pub(crate) state: Mutex<GroupState>,
    pub(crate) pasid_array: RwLock<PasidTable<Slot>>,
}

impl Group {
    /// An empty group behind `iommu`. Devices join with [`Group::add_device`].
    pub fn new(iommu: Arc<dyn IommuDriver>, name: impl Into<String>) -> Arc<Group> {
        Arc::new(Group {
            id: GroupId(NEXT_GROUP_ID.fetch_add(1, Ordering::Relaxed)),
            name: name.into(),
            iommu,
            state: Mutex::new(GroupState {
                devices: Vec::new(),
                domain: None,
                default_domain: None,
                blocking_domain: None,
                owner_cnt: 0,
                owner: None,
            }),
            pasid_array: RwLock::new(PasidTable::new()),
        })
    }

    /// Probes a new device into the group (Linux `probe_device` + `iommu_group_add_device`).
    ///
    /// `max_pasids` is the device's own PASID capability (0: none); its usable count becomes the
    /// minimum with the IOMMU's. The first device makes the group allocate its default domain;
    /// each device is attached to the group's current domain. Errors: `EINVAL` for
    /// `max_pasids` beyond 2^20; `EBUSY` while the group is owned, on a non-default domain, or
    /// has PASID attachments (a device joining then would miss them); driver errors pass through
    /// and leave the group as it was.
    pub fn add_device(
        self: &Arc<Self>,
        name: impl Into<String>,
        max_pasids: u32,
    ) -> Result<Arc<Device>> {
        check_max_pasids(max_pasids)?;
        let mut st = self.state.lock();
        if st.owner_cnt > 0 {
            return Err(ebusy(
                "group is in use (DMA ownership or default-domain users)",
            ));
        }
        if !self.pasid_array.read().is_empty() {
            return Err(ebusy("group has PASID attachments").because(Condition::GroupHasPasids));
        }
        let effective = max_pasids.min(self.iommu.capabilities().max_pasids);
        let dev = Arc::new(Device::new_in_group(
            name.into(),
            effective,
            self.iommu.clone(),
            Arc::downgrade(self),
        ));
        self.iommu.probe_device(&dev)?;
        let fresh_default = st.default_domain.is_none();
        if fresh_default {
            let req = match self.iommu.capabilities().default_domain {
                DefaultDomainKind::Identity => DomainRequest::Identity,
                DefaultDomainKind::Paging => DomainRequest::Paging { dma_api: true },
            };
            match Domain::alloc(&dev, req, None) {
                Ok(d) => {
                    st.default_domain = Some(d.clone());
                    st.domain = Some(d);
                }
                Err(e) => {
                    self.iommu.release_device(&dev);
                    dev.clear_group();
                    return Err(e);
                }
            }
        }
        let domain = st
            .domain
            .clone()
            .expect("a group with devices has a domain");
        if let Err(e) = self.iommu.attach_dev(&domain, &dev) {
            if fresh_default {
                st.default_domain = None;
                st.domain = None;
            }
            self.iommu.release_device(&dev);
            dev.clear_group();
            return Err(e);
        }
        st.devices.push(dev.clone());
        Ok(dev)
    }

    /// Removes a device from the group (hot-unplug). `EINVAL` if it is not a member; `EBUSY`
    /// while the group has PASID attachments or DMA-ownership users, which must go first.
    pub fn remove_device(&self, dev: &Device) -> Result<()> {
        let mut st = self.state.lock();
        let pos = st
            .devices
            .iter()
            .position(|d| d.id() == dev.id())
            .ok_or(einval("device is not a member of this group"))?;
        let attached = self.pasid_array.read().len();
        if attached > 0 {
            return Err(ebusy_v("group has PASID attachments", attached as u64)
                .because(Condition::GroupHasPasids));
        }
        if st.owner_cnt > 0 {
            return Err(ebusy_v(
                "group has DMA-ownership users",
                st.owner_cnt.into(),
            ));
        }
        let dev = st.devices.remove(pos);
        self.iommu.release_device(&dev);
        dev.clear_group();
        if st.devices.is_empty() {
            st.domain = None;
            st.default_domain = None;
            st.blocking_domain = None;
        }
        Ok(())
    }

    /// The group's identity.
    pub fn id(&self) -> GroupId {
        self.id
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IOMMU the group is behind.
    pub fn iommu(&self) -> &Arc<dyn IommuDriver> {
        &self.iommu
    }

    /// The member devices.
    pub fn devices(&self) -> Vec<Arc<Device>> {
        self.state.lock().devices.clone()
    }

    /// The domain every member's RID is attached to.
    pub fn domain(&self) -> Option<Arc<Domain>> {
        self.state.lock().domain.clone()
    }

    /// The kernel DMA-API domain.
    pub fn default_domain(&self) -> Option<Arc<Domain>> {
        self.state.lock().default_domain.clone()
    }

    /// The DMA-blocking domain (allocated when DMA ownership is first claimed).
    pub fn blocking_domain(&self) -> Option<Arc<Domain>> {
        self.state.lock().blocking_domain.clone()
    }

    /// DMA-ownership users (kernel drivers on the default domain, or the exclusive owner's
    /// claims).
    pub fn dma_owner_count(&self) -> u32 {
        self.state.lock().owner_cnt
    }

    /// Occupied PASID-array slots, the RID handle (key 0) included.
    pub fn pasid_attachments(&self) -> usize {
        self.pasid_array.read().len()
    }

    /// A consistent picture of the group's configuration, for tests and reports.
    pub fn snapshot(&self) -> GroupSnapshot {
        let st = self.state.lock();
        let pasids = self
            .pasid_array
            .read()
            .iter()
            .map(|(pasid, h)| SlotSnapshot {
                pasid,
                domain: h.domain().id(),
                handle: Arc::as_ptr(h) as *const () as usize,
                owner_type: h.owner_type_name(),
            })
            .collect();
        GroupSnapshot {
            devices: st.devices.iter().map(|d| d.id()).collect(),
            domain: st.domain.as_ref().map(|d| d.id()),
            default_domain: st.default_domain.as_ref().map(|d| d.id()),
            blocking_domain: st.blocking_domain.as_ref().map(|d| d.id()),
            owner_cnt: st.owner_cnt,
            owner: st.owner,
            pasids,
        }
    }

    /// A counted reference to the handle at `pasid`, if any (PASID array read lock only).
    pub(crate) fn slot(&self, pasid: u32) -> Option<Slot> {
        self.pasid_array.read().get(pasid).cloned()
    }

    /// Publishes `slot` for `pasid` (replacing any previous handle) and traces it. The trace
    /// points fire under the write lock: a report that finds the new handle is traced after
    /// its `attached` (a handle may reuse a freed one's address, so an observer must never see
    /// a delivery to it before it was attached).
    pub(crate) fn publish(&self, pasid: u32, slot: Slot) -> Option<Slot> {
        let handle = slot_addr(&slot);
        let mut array = self.pasid_array.write();
        let old = array.insert(pasid, slot);
        if let Some(old) = &old {
            crate::trace::detached(self.id.0, pasid, slot_addr(old));
        }
        crate::trace::attached(self.id.0, pasid, handle);
        drop(array);
        old
    }

    /// Unpublishes `pasid`'s handle; once the write lock is taken no report holds it any more.
    pub(crate) fn unpublish(&self, pasid: u32) -> Option<Slot> {
        let mut array = self.pasid_array.write();
        let old = array.remove(pasid);
        if let Some(old) = &old {
            crate::trace::detached(self.id.0, pasid, slot_addr(old));
        }
        drop(array);
        old
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock()
    }
}

impl GroupState {
    /// Points every member's RID at `new`; on a driver failure, puts the members already
    /// switched back on the old domain (Linux `__iommu_group_set_domain`).
    pub(crate) fn set_domain(
        &mut self,
        iommu: &Arc<dyn IommuDriver>,
        new: &Arc<Domain>,
    ) -> Result<()> {
        if self.domain.as_ref().is_some_and(|d| Arc::ptr_eq(d, new)) {
            return Ok(());
        }
        for (i, dev) in self.devices.iter().enumerate() {
            if let Err(e) = iommu.attach_dev(new, dev) {
                if let Some(old) = &self.domain {
                    for done in &self.devices[..i] {
                        // A driver that cannot return a device to a domain it accepted before is
                        // broken; nothing better than reporting the first error is possible.
                        let _ = iommu.attach_dev(old, done);
                    }
                }
                return Err(e);
            }
        }
        self.domain = Some(new.clone());
        Ok(())
    }

    /// Returns the RID to the core domain: blocking with an exclusive owner, else default.
    /// Returning to a core domain must not fail (Linux WARNs); if a broken driver refuses, the
    /// caller goes on regardless, so no fault is routed to a detached owner.
    pub(crate) fn set_core_domain(&mut self, iommu: &Arc<dyn IommuDriver>) {
        let core = if self.owner.is_some() {
            self.blocking_domain.clone()
        } else {
            self.default_domain.clone()
        };
        if let Some(core) = core {
            let _ = self.set_domain(iommu, &core);
        }
    }

    /// Whether the RID is on a domain the core itself manages (default or blocking).
    pub(crate) fn on_core_domain(&self) -> bool {
        let is = |d: &Option<Arc<Domain>>| match (&self.domain, d) {
            (Some(cur), Some(d)) => Arc::ptr_eq(cur, d),
            (None, _) => true,
            _ => false,
        };
        is(&self.default_domain) || is(&self.blocking_domain)
    }

    pub(crate) fn on_default_domain(&self) -> bool {
        match (&self.domain, &self.default_domain) {
            (Some(cur), Some(d)) => Arc::ptr_eq(cur, d),
            (None, None) => true,
            _ => false,
        }
    }
}

/// One occupied PASID slot in a [`GroupSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSnapshot {
    /// The PASID (0: the RID handle).
    pub pasid: u32,
    /// The attached domain.
    pub domain: DomainId,
    /// The handle's identity.
    pub handle: usize,
    /// The handle's owner type.
    pub owner_type: &'static str,
}

/// A group's configuration at one instant ([`Group::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// Member devices, in probe order.
    pub devices: Vec<DeviceId>,
    /// The RID domain.
    pub domain: Option<DomainId>,
    /// The default domain.
    pub default_domain: Option<DomainId>,
    /// The blocking domain.
    pub blocking_domain: Option<DomainId>,
    /// DMA-ownership users.
    pub owner_cnt: u32,
    /// The exclusive owner.
    pub owner: Option<DmaOwner>,
    /// Occupied PASID slots in PASID order.
    pub pasids: Vec<SlotSnapshot>,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("iommu", &self.iommu.name())
            .finish_non_exhaustive()
    }
}

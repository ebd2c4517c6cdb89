//! The iommufd context and its object table (Linux `iommufd_ctx` and `main.c`): object IDs,
//! typed lookups, `IOMMU_DESTROY` and closing the context.
//!
//! The objects live beside the Linux files they follow: [`ioas`] (`io_pagetable.c`, `ioas.c`),
//! [`device`] (`device.c`), [`hw_pagetable`] (`hw_pagetable.c`) and [`fault_queue`] (the
//! allocation half of `fault.c`).
//!
//! One lock (`table`) serialises configuration, as `igroup->lock` and the object xarray do in
//! Linux; it is never taken on the fault path (reporting thread → handler → the fault object's
//! short lock) nor by the endpoint's read/write, so configuration cannot stall fault delivery
//! (SPEC H17). Lock order: `table` → core group lock → PASID array; `table` → fault `mutex` →
//! fault short lock (auto-response, Appendix A).

mod device;
mod fault_queue;
mod hw_pagetable;
mod ioas;
mod ioctl;
mod selftest;
mod viommu;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering::Relaxed};

use iommu_core::error::{ebusy_v, einval_v, enoent_v, enospc, Condition};
use iommu_core::sync::Mutex;
use iommu_core::{device_release_dma_owner, DeviceId, DmaOwner, Error, GroupId, Result};

use crate::fault::Fault;
use crate::user_memory::{NoUserMemory, UserMemory};
use device::{IGroup, IdevObj};
use hw_pagetable::{Hwpt, HwptKind};
use ioas::IoasObj;

pub use ioas::{IovaRange, IOAS_APERTURE_END};
pub use ioctl::{IoctlOutput, NewFd};
pub use selftest::{
    HwInfo, MockDomainIds, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, IOMMU_HW_INFO_SELFTEST_REGVAL,
    IOMMU_TEST_DEV_CACHE_DEFAULT, IOMMU_TEST_INVALIDATE_FLAG_ALL, IOMMU_TEST_IOTLB_DEFAULT,
    MOCK_DEV_CACHE_NUM, MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_PASID,
    MOCK_NESTED_DOMAIN_IOTLB_NUM, MOCK_PAGE_SIZE, MOCK_PASID_WIDTH,
};
pub use viommu::IOMMU_VIOMMU_TYPE_SELFTEST;

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
    /// `IOMMUFD_OBJ_SELFTEST`: a selftest mock device (see [`Ictx::mock_domain`]).
    Selftest,
    /// `IOMMUFD_OBJ_VIOMMU`.
    Viommu,
    /// `IOMMUFD_OBJ_VDEVICE`.
    Vdevice,
}

enum Object {
    Ioas(IoasObj),
    Device(IdevObj),
    Hwpt(Arc<Hwpt>),
    Fault(Arc<Fault>),
    Selftest(selftest::MockDevObj),
    Viommu(Arc<viommu::Viommu>),
    Vdevice(viommu::Vdevice),
}

#[derive(Default)]
struct Table {
    objects: BTreeMap<u32, Object>,
    igroups: BTreeMap<GroupId, IGroup>,
    ids: IdSpace,
    /// Bound devices by core identity, so a second bind is refused without a table scan.
    bound: BTreeMap<DeviceId, u32>,
    /// The mock IOMMU behind this context's selftest devices, made with the first one.
    mock: Option<Arc<dyn iommu_core::IommuDriver>>,
}

/// The largest object ID: Linux allocates IDs from an XArray limited to 31 bits
/// (`xa_limit_31b`), starting at 1.
const MAX_OBJECT_ID: u32 = i32::MAX as u32;

/// Object IDs as Linux hands them out: the lowest free one, in O(log n) per call (a scan of the
/// table made allocating n objects quadratic).
///
/// `high` is the largest ID in use (0 when none); `free` holds every unused ID below it.
#[derive(Default)]
struct IdSpace {
    high: u32,
    free: BTreeSet<u32>,
}

impl IdSpace {
    /// The ID the next object gets, without taking it: a call may still fail after choosing
    /// it, and a rejected call changes nothing.
    fn peek(&self) -> Result<u32> {
        match self.free.first() {
            Some(&id) => Ok(id),
            None if self.high < MAX_OBJECT_ID => Ok(self.high + 1),
            None => Err(enospc("object IDs exhausted")),
        }
    }

    /// Marks `id` (from [`IdSpace::peek`]) used.
    fn take(&mut self, id: u32) {
        if !self.free.remove(&id) {
            debug_assert_eq!(id, self.high + 1, "IDs are taken as peek chose them");
            self.high = self.high.max(id);
        }
    }

    /// Returns `id` to the space; trailing free IDs fold back into `high`.
    fn put(&mut self, id: u32) {
        if id != self.high {
            self.free.insert(id);
            return;
        }
        self.high -= 1;
        while self.high > 0 && self.free.remove(&self.high) {
            self.high -= 1;
        }
    }
}

static NEXT_ICTX: StdAtomicU64 = StdAtomicU64::new(1);

/// An iommufd context (one open `/dev/iommu`): the object table and every object in it.
///
/// Object IDs are `u32` below 2^31, start at 1, and the lowest free one is reused (as Linux's
/// XArray allocation), in O(log n). Every call validates
/// fully before changing anything: a rejected call has no side effects. Dropping the context
/// detaches every device (answering their pending faults Invalid), releases DMA ownership and
/// answers every group any fault queue still holds (SPEC H23).
///
/// Errors carry an [`iommu_core::error::Condition`] where a caller may branch: an unknown ID is
/// [`Condition::NoSuchObject`], an ID of another type [`Condition::WrongObjectType`], a
/// referenced object [`Condition::ObjectInUse`], an unsupported flag or data type
/// [`Condition::UnsupportedFlags`].
pub struct Ictx {
    owner: DmaOwner,
    table: Mutex<Table>,
    /// The memory `IOMMU_IOAS_MAP` maps and command pointers point into.
    mem: Arc<dyn UserMemory>,
    /// Context-wide settings of the uAPI (`IOMMU_OPTION_RLIMIT_MODE`, the VFIO compat IOAS).
    settings: Mutex<ioctl::Settings>,
}

impl Default for Ictx {
    fn default() -> Self {
        Self::new()
    }
}

/// The error of a typed lookup of `id` that did not find the type it wanted: `NoSuchObject`
/// when nothing has the ID, `WrongObjectType` when something else has it. `errno` builds the
/// error (its errno and message stay the caller's).
fn lookup_error(
    found: bool,
    errno: fn(&'static str, u64) -> Error,
    what: &'static str,
    id: u32,
) -> Error {
    let condition = if found {
        Condition::WrongObjectType
    } else {
        Condition::NoSuchObject
    };
    errno(what, id.into()).because(condition)
}

impl Table {
    /// The ID the next object will get (see [`IdSpace::peek`]).
    fn alloc_id(&self) -> Result<u32> {
        self.ids.peek()
    }

    /// Installs `obj` under `id` (from [`Table::alloc_id`]).
    fn insert_object(&mut self, id: u32, obj: Object) {
        self.ids.take(id);
        if let Object::Device(d) = &obj {
            self.bound.insert(d.dev.id(), id);
        }
        self.objects.insert(id, obj);
    }

    /// Removes object `id`, freeing its ID.
    fn remove_object(&mut self, id: u32) -> Option<Object> {
        let obj = self.objects.remove(&id)?;
        self.ids.put(id);
        if let Object::Device(d) = &obj {
            self.bound.remove(&d.dev.id());
        }
        Some(obj)
    }

    /// Object `id` as the type `pick` selects; `ENOENT` with `what` otherwise.
    fn typed<'a, T>(
        &'a self,
        id: u32,
        what: &'static str,
        pick: impl FnOnce(&'a Object) -> Option<T>,
    ) -> Result<T> {
        let found = self.objects.get(&id);
        found
            .and_then(pick)
            .ok_or_else(|| lookup_error(found.is_some(), enoent_v, what, id))
    }

    /// [`Table::typed`] for a mutable borrow.
    fn typed_mut<'a, T>(
        &'a mut self,
        id: u32,
        what: &'static str,
        pick: impl FnOnce(&'a mut Object) -> Option<T>,
    ) -> Result<T> {
        match self.objects.get_mut(&id) {
            Some(o) => pick(o).ok_or_else(|| lookup_error(true, enoent_v, what, id)),
            None => Err(lookup_error(false, enoent_v, what, id)),
        }
    }

    fn idev(&self, dev_id: u32) -> Result<&IdevObj> {
        self.typed(dev_id, "no such device object", |o| match o {
            Object::Device(d) => Some(d),
            _ => None,
        })
    }

    fn idev_mut(&mut self, dev_id: u32) -> Result<&mut IdevObj> {
        self.typed_mut(dev_id, "no such device object", |o| match o {
            Object::Device(d) => Some(d),
            _ => None,
        })
    }

    fn ioas_mut(&mut self, ioas_id: u32) -> Result<&mut IoasObj> {
        self.typed_mut(ioas_id, "no such IOAS", |o| match o {
            Object::Ioas(i) => Some(i),
            _ => None,
        })
    }

    fn hwpt(&self, hwpt_id: u32) -> Result<&Arc<Hwpt>> {
        self.typed(hwpt_id, "no such HWPT", |o| match o {
            Object::Hwpt(h) => Some(h),
            _ => None,
        })
    }

    fn fault(&self, fault_id: u32) -> Result<Arc<Fault>> {
        self.typed(fault_id, "no such fault object", |o| match o {
            Object::Fault(f) => Some(f.clone()),
            _ => None,
        })
    }

    /// The HWPT a device is to be attached to: `ENOENT` for an unknown ID, `EINVAL` for objects
    /// other than HWPTs (an IOAS is resolved by [`Table::attach_target_for`]).
    fn attach_target(&self, pt_id: u32) -> Result<Arc<Hwpt>> {
        match self.objects.get(&pt_id) {
            Some(Object::Hwpt(h)) => Ok(h.clone()),
            Some(_) => Err(lookup_error(true, einval_v, "pt_id is not a HWPT", pt_id)),
            None => Err(lookup_error(false, enoent_v, "no such object", pt_id)),
        }
    }

    /// Why object `id` cannot be destroyed now, if anything still references it.
    fn destroy_blocker(&self, id: u32) -> Result<()> {
        let busy = |what, value| Err(ebusy_v(what, value).because(Condition::ObjectInUse));
        match self.objects.get(&id) {
            None => Err(lookup_error(false, enoent_v, "no such object", id)),
            Some(Object::Device(_)) => busy("bound device: use unbind_device", id.into()),
            Some(Object::Ioas(i)) if !i.hwpts.is_empty() => {
                busy("IOAS has paging HWPTs", i.hwpts.len() as u64)
            }
            // The table holds one reference; attachments and nested children hold the others.
            Some(Object::Hwpt(h)) if Arc::strong_count(h) > 1 => {
                busy("HWPT is attached or has nested children", id.into())
            }
            // Nested HWPTs and vDEVICEs on it hold the others.
            Some(Object::Viommu(v)) if Arc::strong_count(v) > 1 => {
                busy("vIOMMU has nested HWPTs or vDEVICEs", id.into())
            }
            Some(Object::Fault(f)) if Arc::strong_count(f) > 1 => {
                busy("fault object has its fd open or HWPTs", id.into())
            }
            Some(_) => Ok(()),
        }
    }
}

impl Ictx {
    /// A new, empty context with its own DMA-owner cookie.
    pub fn new() -> Self {
        Self::with_user_memory(Arc::new(NoUserMemory))
    }

    /// A new context whose commands read and write, and whose `IOMMU_IOAS_MAP` maps and pins,
    /// the memory `mem` (the process behind a `/dev/iommu` fd).
    pub fn with_user_memory(mem: Arc<dyn UserMemory>) -> Self {
        Self {
            owner: DmaOwner(NEXT_ICTX.fetch_add(1, Relaxed)),
            table: Mutex::new(Table::default()),
            mem,
            settings: Mutex::new(ioctl::Settings::default()),
        }
    }

    /// The memory this context's commands use.
    pub fn user_memory(&self) -> &Arc<dyn UserMemory> {
        &self.mem
    }

    /// Whether the object table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.lock().objects.is_empty()
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
            Some(Object::Selftest(_)) => Ok(ObjectType::Selftest),
            Some(Object::Viommu(_)) => Ok(ObjectType::Viommu),
            Some(Object::Vdevice(_)) => Ok(ObjectType::Vdevice),
            None => Err(lookup_error(false, enoent_v, "no such object", id)),
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
        t.destroy_blocker(id)?;
        if matches!(t.objects.get(&id), Some(Object::Hwpt(_))) {
            t.remove_hwpt_object(id);
            return Ok(());
        }
        if let Some(Object::Selftest(m)) = t.objects.get(&id) {
            let m = m.clone();
            let r = selftest::destroy_mock_dev(&mut t, id, &m);
            t.reap_auto_hwpts();
            return r;
        }
        if let Some(Object::Fault(f)) = t.remove_object(id) {
            f.shutdown();
        }
        Ok(())
    }
}

impl Drop for Ictx {
    /// Closing the context: detach everything (PASIDs before the RID, each auto-responding),
    /// release DMA ownership, then close every fault queue (answering anything left, H23).
    fn drop(&mut self) {
        let mut t = self.table.lock();
        let gids: Vec<GroupId> = t.igroups.keys().copied().collect();
        for gid in gids {
            t.detach_group(gid);
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
        t.ids = IdSpace::default();
        t.bound.clear();
    }
}

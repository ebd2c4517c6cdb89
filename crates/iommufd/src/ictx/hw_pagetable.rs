//! HW page tables (Linux `hw_pagetable.c`): paging HWPTs on an IOAS, nested HWPTs on a
//! nest-parent paging HWPT, either optionally delivering faults to a fault object.

use alloc::sync::Arc;

use iommu_core::error::{einval_v, enoent_v, eopnotsupp, eopnotsupp_v, Condition};
use iommu_core::{Device, Domain, DomainRequest, Result};

use super::{lookup_error, Ictx, Object, Table};
use crate::fault::Fault;
use crate::uapi::{
    copy_struct_from_user, copy_struct_to_user, IommuHwptAlloc, IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    IOMMU_HWPT_ALLOC_MIN_SIZE, IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_PASID,
    IOMMU_HWPT_DATA_NONE, IOMMU_HWPT_FAULT_ID_VALID,
};

pub(super) enum HwptKind {
    Paging {
        ioas_id: u32,
        nest_parent: bool,
    },
    Nested {
        _parent: Arc<Hwpt>,
        /// The vIOMMU it was allocated on, if any (kept busy while the HWPT exists).
        viommu: Option<Arc<super::viommu::Viommu>>,
    },
}

/// A HWPT (`iommufd_hw_pagetable`): one domain, its fault queue, and what it hangs on.
///
/// Shared by the table, every group attachment using it and nested children: destroy refuses
/// (`EBUSY`) while the table's is not the only reference.
pub(super) struct Hwpt {
    pub(super) domain: Arc<Domain>,
    pub(super) kind: HwptKind,
    pub(super) fault: Option<Arc<Fault>>,
    pub(super) pasid_compat: bool,
    /// Allocated by attaching a device to an IOAS (Linux `auto_domain`): shared by every
    /// device attached to that IOAS whose IOMMU can use it, destroyed with its last attachment.
    pub(super) auto_domain: bool,
}

/// The most records one `IOMMU_HWPT_INVALIDATE` takes (Linux's bound, so one call cannot pin
/// the CPU).
pub const INVALIDATE_ENTRY_NUM_MAX: u32 = 1 << 19;

/// Every flag `IOMMU_HWPT_ALLOC` knows.
const VALID_FLAGS: u32 = IOMMU_HWPT_ALLOC_NEST_PARENT
    | IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    | IOMMU_HWPT_FAULT_ID_VALID
    | IOMMU_HWPT_ALLOC_PASID;

/// The checks that need no object: unknown flags, and driver data without a type or a type
/// without data.
fn check_alloc_args(flags: u32, data_type: u32, data: &[u8]) -> Result<()> {
    if flags & !VALID_FLAGS != 0 {
        return Err(eopnotsupp_v("unknown HWPT alloc flags", flags.into())
            .because(Condition::UnsupportedFlags));
    }
    if (data_type == IOMMU_HWPT_DATA_NONE) != data.is_empty() {
        return Err(einval_v(
            "data_type NONE needs no data; other types need data",
            data_type.into(),
        )
        .because(Condition::UnsupportedFlags));
    }
    Ok(())
}

/// A paging HWPT on IOAS `ioas_id`: what its flags and data may be.
fn paging_kind(ioas_id: u32, flags: u32, data_type: u32) -> Result<HwptKind> {
    let unsupported = |e: iommu_core::Error| Err(e.because(Condition::UnsupportedFlags));
    if flags & IOMMU_HWPT_FAULT_ID_VALID != 0 && flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0 {
        // 6.15 "Disallow allocating nested parent domain with fault ID".
        return unsupported(eopnotsupp("a nest parent HWPT cannot have a fault queue"));
    }
    if flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING != 0 {
        return unsupported(eopnotsupp("dirty tracking is not supported"));
    }
    if data_type != IOMMU_HWPT_DATA_NONE {
        return unsupported(eopnotsupp_v(
            "driver data for paging HWPTs is not supported",
            data_type.into(),
        ));
    }
    Ok(HwptKind::Paging {
        ioas_id,
        nest_parent: flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0,
    })
}

/// `EINVAL` unless `parent` (HWPT `pt_id`) is a paging HWPT allocated with `NEST_PARENT`: what a
/// nested HWPT and a vIOMMU are built on.
pub(super) fn require_nest_parent(parent: &Hwpt, pt_id: u32) -> Result<()> {
    if matches!(
        parent.kind,
        HwptKind::Paging {
            nest_parent: true,
            ..
        }
    ) {
        Ok(())
    } else {
        Err(lookup_error(
            true,
            einval_v,
            "HWPT is not a NEST_PARENT paging HWPT",
            pt_id,
        ))
    }
}

/// A nested HWPT on `parent` (HWPT `pt_id`): only `FAULT_ID_VALID | ALLOC_PASID`, and only on
/// a nest parent.
fn nested_kind(parent: &Arc<Hwpt>, pt_id: u32, flags: u32) -> Result<HwptKind> {
    if flags & !(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID) != 0 {
        return Err(eopnotsupp_v(
            "nested HWPT flags: FAULT_ID_VALID, ALLOC_PASID only",
            flags.into(),
        )
        .because(Condition::UnsupportedFlags));
    }
    require_nest_parent(parent, pt_id)?;
    Ok(HwptKind::Nested {
        _parent: parent.clone(),
        viommu: None,
    })
}

impl Table {
    /// What a device attaches to for `pt_id`: the HWPT itself, or for an IOAS its automatic
    /// paging HWPT, an existing one that `dev`'s IOMMU can use or a new one (Linux
    /// `iommufd_device_auto_get_domain`; it has no PASID support, as Linux allocates it with
    /// no flags). A new one is installed now; if the attach then fails,
    /// [`Table::reap_auto_hwpts`] removes it.
    pub(super) fn attach_target_for(&mut self, dev: &Arc<Device>, pt_id: u32) -> Result<Arc<Hwpt>> {
        let ioas_hwpts: alloc::vec::Vec<u32> = match self.objects.get(&pt_id) {
            Some(Object::Ioas(ioas)) => ioas.hwpts.keys().copied().collect(),
            _ => return self.attach_target(pt_id),
        };
        let usable =
            |h: &Hwpt| h.auto_domain && dev.iommu().is_some_and(|i| h.domain.is_compatible_with(i));
        if let Some(h) = ioas_hwpts
            .iter()
            .filter_map(|&id| self.hwpt(id).ok())
            .find(|h| usable(h))
        {
            return Ok(h.clone());
        }
        let domain = Domain::alloc(dev, DomainRequest::Paging { dma_api: false }, None)?;
        let id = self.install_hwpt(Hwpt {
            domain,
            kind: HwptKind::Paging {
                ioas_id: pt_id,
                nest_parent: false,
            },
            fault: None,
            pasid_compat: false,
            auto_domain: true,
        })?;
        Ok(self.hwpt(id)?.clone())
    }

    /// Destroys every automatic HWPT nothing uses any more (the table holds the only
    /// reference).
    pub(super) fn reap_auto_hwpts(&mut self) {
        let unused: alloc::vec::Vec<u32> = self
            .objects
            .iter()
            .filter_map(|(&id, o)| match o {
                Object::Hwpt(h) if h.auto_domain && Arc::strong_count(h) == 1 => Some(id),
                _ => None,
            })
            .collect();
        for id in unused {
            self.remove_hwpt_object(id);
        }
    }

    /// Removes HWPT `id` from the table and from its IOAS.
    pub(super) fn remove_hwpt_object(&mut self, id: u32) {
        if let Some(Object::Hwpt(h)) = self.remove_object(id) {
            if let HwptKind::Paging { ioas_id, .. } = h.kind {
                if let Ok(ioas) = self.ioas_mut(ioas_id) {
                    ioas.remove_hwpt(id, &h.domain);
                }
            }
        }
    }

    /// What `pt_id` makes the new HWPT: paging on an IOAS or nested on a paging HWPT.
    fn hwpt_kind(&self, pt_id: u32, flags: u32, data_type: u32) -> Result<HwptKind> {
        match self.objects.get(&pt_id) {
            Some(Object::Ioas(_)) => paging_kind(pt_id, flags, data_type),
            Some(Object::Hwpt(p)) => nested_kind(p, pt_id, flags),
            // On a vIOMMU: nested on its parent, holding the vIOMMU.
            Some(Object::Viommu(v)) => {
                let kind = nested_kind(&v.parent, pt_id, flags)?;
                let HwptKind::Nested { _parent, .. } = kind else {
                    unreachable!("nested_kind makes nested kinds")
                };
                Ok(HwptKind::Nested {
                    _parent,
                    viommu: Some(v.clone()),
                })
            }
            o => Err(lookup_error(
                o.is_some(),
                einval_v,
                "pt_id is not an IOAS or paging HWPT",
                pt_id,
            )),
        }
    }

    /// Gives the new HWPT an ID; a paging one gets every IOAS mapping first.
    fn install_hwpt(&mut self, hwpt: Hwpt) -> Result<u32> {
        let id = self.alloc_id()?;
        if let HwptKind::Paging { ioas_id, .. } = hwpt.kind {
            self.ioas_mut(ioas_id)?.add_hwpt(id, &hwpt.domain)?;
        }
        self.insert_object(id, Object::Hwpt(Arc::new(hwpt)));
        Ok(id)
    }
}

impl Ictx {
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
        check_alloc_args(flags, data_type, data)?;
        let mut t = self.table.lock();
        let dev = t.idev(dev_id)?.dev.clone();
        let kind = t.hwpt_kind(pt_id, flags, data_type)?;
        // Linux looks the fault object up after allocating the domain; doing it first keeps
        // "rejected calls have no side effects" without changing which errno wins, except
        // against a failing driver.
        let fault = if flags & IOMMU_HWPT_FAULT_ID_VALID != 0 {
            Some(t.fault(fault_id)?)
        } else {
            None
        };
        let req = match &kind {
            HwptKind::Nested {
                _parent: parent, ..
            } => DomainRequest::Nested {
                parent: &parent.domain,
                data_type,
                data,
            },
            HwptKind::Paging { .. } => DomainRequest::Paging { dma_api: false },
        };
        let domain = Domain::alloc(&dev, req, fault.as_ref().map(Fault::handler))?;
        t.install_hwpt(Hwpt {
            domain,
            kind,
            fault,
            pasid_compat: flags & IOMMU_HWPT_ALLOC_PASID != 0,
            auto_domain: false,
        })
    }

    /// `IOMMU_HWPT_ALLOC` from its uAPI struct: `cmd` is the user's `iommu_hwpt_alloc` (its
    /// length is the declared size, at least 24 so pre-fault-queue user space works), `data`
    /// the bytes at `data_uptr`. Writes `out_hwpt_id` back. `EINVAL` below 24 bytes or when
    /// `data_len` differs from `data.len()`; `E2BIG` for non-zero bytes beyond the struct;
    /// `EOPNOTSUPP` for a non-zero `__reserved`; then as [`Ictx::hwpt_alloc`].
    pub fn ioctl_hwpt_alloc(&self, cmd: &mut [u8], data: &[u8]) -> Result<u32> {
        let mut c: IommuHwptAlloc = copy_struct_from_user(cmd, IOMMU_HWPT_ALLOC_MIN_SIZE)?;
        if c.__reserved != 0 {
            return Err(eopnotsupp("__reserved must be 0").because(Condition::UnsupportedFlags));
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

    /// `IOMMU_HWPT_INVALIDATE` of HWPT `hwpt_id`: hands `entry_num` driver records of
    /// `entry_len` bytes (`read(i, buf)` fills record `i`) of type `data_type` to the HWPT's
    /// driver, which applies them in order. Returns how many were applied, and the error
    /// that stopped it (applied records stay applied, as in Linux).
    ///
    /// `EINVAL` for records when `entry_len` is 0 or above 4096 or `entry_num` above 2^19;
    /// `ENOENT` for no such object; `EINVAL` for an object that is not a nested HWPT;
    /// `EOPNOTSUPP` for a driver without user cache invalidation (only the selftest mock has
    /// one); then the driver's errors.
    pub fn hwpt_invalidate(
        &self,
        hwpt_id: u32,
        data_type: u32,
        entry_len: u32,
        entry_num: u32,
        read: &mut dyn FnMut(u32, &mut [u8]) -> Result<()>,
    ) -> (u32, Result<()>) {
        if entry_num != 0
            && (entry_len == 0 || entry_len > 4096 || entry_num > INVALIDATE_ENTRY_NUM_MAX)
        {
            return (
                0,
                Err(einval_v(
                    "entry_len must be 1..=4096 and entry_num at most 2^19",
                    entry_num.into(),
                )),
            );
        }
        let domain = {
            let t = self.table.lock();
            match t.objects.get(&hwpt_id) {
                Some(Object::Hwpt(h)) if matches!(h.kind, HwptKind::Nested { .. }) => {
                    h.domain.clone()
                }
                o => {
                    let e = lookup_error(o.is_some(), enoent_v, "no such nested HWPT", hwpt_id);
                    let e = if o.is_some() {
                        einval_v("only nested HWPTs are invalidated", hwpt_id.into())
                            .because(Condition::WrongObjectType)
                    } else {
                        e
                    };
                    return (0, Err(e));
                }
            }
        };
        match domain.driver_data::<super::selftest::SelftestNested>() {
            Some(n) => n.invalidate(data_type, entry_len, entry_num, read),
            None => (
                0,
                Err(eopnotsupp(
                    "the HWPT's driver has no user cache invalidation",
                )),
            ),
        }
    }

    /// The domain of HWPT `hwpt_id` (`ENOENT` if there is no such HWPT).
    pub fn hwpt_domain(&self, hwpt_id: u32) -> Result<Arc<Domain>> {
        Ok(self.table.lock().hwpt(hwpt_id)?.domain.clone())
    }
}

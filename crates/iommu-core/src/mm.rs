//! The core's view of a process address space (Linux's `mm_struct`), as SVA needs it.
//!
//! The core does not manage memory. It binds devices to an address space by identity, keeps its
//! per-mm SVA state *inside* the mm ([`MmIommuData`], Linux's `mm->iommu_mm`), and asks the mm to
//! resolve page faults. Because the mm owns that state, the mm's PASID is freed exactly when the
//! mm is (SPEC §3.1: "unbind never frees it"; H13), with no hook to forget: SVA domains hold the
//! mm, so the PASID cannot be reused while any device can still translate through it.
//! `iommu-emu`'s `Mm` implements this for simulated processes.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use crate::domain::Domain;
use crate::error::Result;
use crate::pasid::GlobalPasid;
use crate::sync::{Mutex, MutexGuard};

/// A process address space that devices can share through SVA.
pub trait AddressSpace: Any + Send + Sync {
    /// A stable identity, unique among live address spaces (an existing bond found at the mm's
    /// PASID must belong to this mm, SPEC §3.2 step 5).
    fn mm_id(&self) -> u64;

    /// The core's per-mm SVA state. Implementations embed one `MmIommuData::default()` and
    /// return it; they never look inside. A forked child gets a fresh one (SPEC §1.5).
    fn iommu_mm(&self) -> &MmIommuData;

    /// Resolves a device's access to `addr` (SPEC §3.5 `handle_one`): find the VMA, check that
    /// `perm` (`IOMMU_FAULT_PERM_*` bits; `PRIV` clear means a user access) is allowed, and make
    /// the page present. Any error answers the page request Invalid; an mm that is exiting must
    /// fail.
    fn handle_mm_fault(&self, addr: u64, perm: u32) -> Result<()>;

    /// The process has exited (Linux: `mm_users` reached 0). A bind needs a live mm — Linux's
    /// callers hold a user reference, and the driver registers an MMU notifier that requires
    /// one — so binding an exited mm is refused (`EINVAL`).
    fn has_exited(&self) -> bool {
        false
    }
}

/// The core's SVA state of one mm: its PASID and the SVA domains sharing it.
///
/// Its lock is the SVA bind lock for this mm (Linux's global `iommu_sva_lock`, made per-mm:
/// every object a bind transaction touches — the PASID, the domain list, domain and bond user
/// counts — belongs to exactly one mm). Lock order: this → group → PASID array.
#[derive(Default)]
pub struct MmIommuData {
    state: Mutex<MmSvaState>,
}

#[derive(Default)]
pub(crate) struct MmSvaState {
    /// Allocated on the first bind; freed when the mm is dropped.
    pub(crate) pasid: Option<GlobalPasid>,
    /// SVA domains on this mm, most recently added first, with their attachment counts.
    pub(crate) domains: Vec<(Arc<Domain>, u32)>,
}

impl MmIommuData {
    /// The mm's PASID, once a device has been bound to it.
    pub fn pasid(&self) -> Option<u32> {
        self.state.lock().pasid.as_ref().map(GlobalPasid::get)
    }

    /// SVA domains currently sharing this mm.
    pub fn domain_count(&self) -> usize {
        self.state.lock().domains.len()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, MmSvaState> {
        self.state.lock()
    }
}

impl core::fmt::Debug for MmIommuData {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MmIommuData")
            .field("pasid", &self.pasid())
            .field("domains", &self.domain_count())
            .finish()
    }
}

//! PASID values and the global PASID allocator (Linux's `iommu_global_pasid_ida`).
//!
//! A PASID handed out here is a move-only [`GlobalPasid`]: dropping it returns the ID. There is
//! no `free` to call twice or forget, so "a PASID is not reused while anything for it is
//! outstanding" (DESIGN §4.4) reduces to "whoever needs the PASID holds the token" — SVA keeps it
//! in the mm's IOMMU data, which lives as long as the mm.

use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use core::fmt;

use crate::error::{enospc, enospc_v, Condition, Result};
use crate::sync::Mutex;

/// The RID slot: DMA without a PASID. Only the group-handle APIs use this key.
pub const IOMMU_NO_PASID: u32 = 0;
/// The first PASID the global allocator hands out.
pub const IOMMU_FIRST_GLOBAL_PASID: u32 = 1;
/// The "no PASID" sentinel of Linux's API (`u32::MAX`).
pub const IOMMU_PASID_INVALID: u32 = u32::MAX;
/// PCIe PASIDs are 20 bits wide.
pub const PASID_WIDTH_MAX: u32 = 20;
/// One past the largest PASID any device can have (`1 << 20`): the bound of `max_pasids`.
pub const PASID_LIMIT: u32 = 1 << PASID_WIDTH_MAX;

#[derive(Debug, Default)]
struct IdaState {
    /// Every ID below `next` that is free; IDs at or above `next` are all free.
    free: BTreeSet<u32>,
    next: u32,
    live: u32,
}

/// An allocator of PASIDs, lowest free first, like Linux's IDA.
///
/// Cloning shares the allocator. Most users want the system-wide one, [`PasidAllocator::global`];
/// separate instances exist so tests and simulations do not share ID space.
#[derive(Clone)]
pub struct PasidAllocator {
    state: Arc<Mutex<IdaState>>,
}

impl fmt::Debug for PasidAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasidAllocator")
            .field("live", &self.live())
            .finish()
    }
}

impl Default for PasidAllocator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(loom))]
static GLOBAL: spin::Once<PasidAllocator> = spin::Once::new();

impl PasidAllocator {
    /// A fresh, empty allocator.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(IdaState {
                free: BTreeSet::new(),
                next: IOMMU_FIRST_GLOBAL_PASID,
                live: 0,
            })),
        }
    }

    /// The system-wide allocator (Linux's `iommu_global_pasid_ida`).
    #[cfg(not(loom))]
    pub fn global() -> &'static PasidAllocator {
        GLOBAL.call_once(PasidAllocator::new)
    }

    /// The system-wide allocator; under loom, one per model execution.
    #[cfg(loom)]
    pub fn global() -> &'static PasidAllocator {
        loom::lazy_static! {
            static ref GLOBAL_LOOM: PasidAllocator = PasidAllocator::new();
        }
        &GLOBAL_LOOM
    }

    /// Allocates the lowest free PASID in `1 ..= max_pasids - 1`.
    ///
    /// `max_pasids` is the allocating device's PASID count; as in Linux the range depends on the
    /// device that asks. Fails with `ENOSPC` when the range is empty (`max_pasids` 0 or 1: the
    /// device has no usable PASID) or every ID in it is taken.
    pub fn alloc(&self, max_pasids: u32) -> Result<GlobalPasid> {
        if max_pasids <= IOMMU_FIRST_GLOBAL_PASID {
            return Err(enospc_v(
                "device has no allocatable PASID (max_pasids)",
                max_pasids.into(),
            )
            .because(Condition::PasidSpaceExhausted));
        }
        let mut st = self.state.lock();
        let id = match st.free.first().copied() {
            Some(id) if id < max_pasids => {
                st.free.remove(&id);
                id
            }
            _ if st.next < max_pasids => {
                st.next += 1;
                st.next - 1
            }
            _ => {
                return Err(enospc("every PASID in the device's range is allocated")
                    .because(Condition::PasidSpaceExhausted))
            }
        };
        st.live += 1;
        drop(st);
        crate::trace::pasid_alloc(id);
        Ok(GlobalPasid {
            pasid: id,
            owner: self.clone(),
        })
    }

    /// How many PASIDs are allocated now.
    pub fn live(&self) -> u32 {
        self.state.lock().live
    }

    fn release(&self, id: u32) {
        let mut st = self.state.lock();
        st.live -= 1;
        if id + 1 == st.next {
            // Shrink the high-water mark so `free` holds only holes below it.
            st.next = id;
            while st.next > IOMMU_FIRST_GLOBAL_PASID {
                let below = st.next - 1;
                if !st.free.remove(&below) {
                    break;
                }
                st.next = below;
            }
        } else {
            st.free.insert(id);
        }
    }
}

/// An allocated PASID. Move-only; dropping it frees the ID.
#[must_use = "dropping a GlobalPasid frees the PASID at once"]
pub struct GlobalPasid {
    pasid: u32,
    owner: PasidAllocator,
}

impl GlobalPasid {
    /// The PASID value.
    pub fn get(&self) -> u32 {
        self.pasid
    }
}

impl fmt::Debug for GlobalPasid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GlobalPasid({})", self.pasid)
    }
}

impl Drop for GlobalPasid {
    fn drop(&mut self) {
        crate::trace::pasid_free(self.pasid);
        self.owner.release(self.pasid);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn allocates_lowest_free_first() {
        let ida = PasidAllocator::new();
        let a: Vec<_> = (0..4).map(|_| ida.alloc(16).unwrap()).collect();
        assert_eq!(
            a.iter().map(GlobalPasid::get).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        let mut a = a;
        drop(a.remove(1)); // frees 2
        drop(a.remove(0)); // frees 1
        assert_eq!(ida.alloc(16).unwrap().get(), 1);
    }

    #[test]
    fn range_is_one_to_max_minus_one_then_enospc() {
        let ida = PasidAllocator::new();
        let held: Vec<_> = (0..3).map(|_| ida.alloc(4).unwrap()).collect();
        assert_eq!(
            held.iter().map(GlobalPasid::get).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(ida.alloc(4).unwrap_err().errno_name(), "ENOSPC");
        // A device with a wider range still gets an ID above the narrow device's range.
        assert_eq!(ida.alloc(8).unwrap().get(), 4);
        assert_eq!(ida.live(), 3);
    }

    #[test]
    fn device_without_pasids_gets_enospc_and_allocates_nothing() {
        let ida = PasidAllocator::new();
        assert_eq!(ida.alloc(0).unwrap_err().errno_name(), "ENOSPC");
        assert_eq!(ida.alloc(1).unwrap_err().errno_name(), "ENOSPC");
        assert_eq!(ida.live(), 0);
    }

    #[test]
    fn freed_hole_above_narrow_range_is_not_handed_to_narrow_device() {
        let ida = PasidAllocator::new();
        let held: Vec<_> = (0..6).map(|_| ida.alloc(64).unwrap()).collect(); // 1..=6
        let mut held = held;
        drop(held.remove(4)); // frees 5
        assert_eq!(ida.alloc(4).unwrap_err().errno_name(), "ENOSPC");
        assert_eq!(ida.alloc(64).unwrap().get(), 5);
    }

    #[test]
    fn high_water_mark_shrinks_past_trailing_holes() {
        let ida = PasidAllocator::new();
        let mut held: Vec<_> = (0..5).map(|_| ida.alloc(64).unwrap()).collect();
        drop(held.remove(3)); // 4 becomes a hole
        drop(held.pop()); // 5 is the top: mark shrinks to 4, then 3
        assert_eq!(ida.state.lock().next, 4);
        assert!(ida.state.lock().free.is_empty());
        assert_eq!(ida.alloc(64).unwrap().get(), 4);
    }

    proptest::proptest! {
        #[test]
        fn matches_a_lowest_free_reference(ops in proptest::collection::vec((proptest::bool::ANY, 0usize..64, 2u32..40), 1..200)) {
            let ida = PasidAllocator::new();
            let mut held: Vec<GlobalPasid> = Vec::new();
            let mut reference = alloc::collections::BTreeSet::new();
            for (is_alloc, pick, max) in ops {
                if is_alloc || held.is_empty() {
                    let expect = (1..max).find(|id| !reference.contains(id));
                    match (ida.alloc(max), expect) {
                        (Ok(p), Some(id)) => { proptest::prop_assert_eq!(p.get(), id); reference.insert(id); held.push(p); }
                        (Err(e), None) => proptest::prop_assert_eq!(e.errno_name(), "ENOSPC"),
                        (got, want) => proptest::prop_assert!(false, "got {:?}, want {:?}", got, want),
                    }
                } else {
                    let p = held.swap_remove(pick % held.len());
                    reference.remove(&p.get());
                }
            }
            proptest::prop_assert_eq!(ida.live() as usize, reference.len());
        }
    }
}

//! Hostile input (issue 11): caller values that would wrap or that Linux refuses are refused
//! with an errno before anything changes.

mod common;

use std::sync::Arc;

use common::{assert_rejected, Fixture};
use iommu_core::{sva_bind_device, AddressSpace, MmIommuData, IOMMU_READ};

#[test]
fn a_physical_range_that_wraps_is_refused_before_the_driver() {
    let fx = Fixture::new(&[1 << 16]);
    let d = fx.paging();
    let top: u64 = !0xfff;

    assert_rejected(&fx, "EINVAL", false, || {
        d.map(0x10_0000, top, 0x2000, IOMMU_READ)
    });
    assert_rejected(&fx, "EINVAL", false, || {
        d.map(top, 0x1000, 0x2000, IOMMU_READ)
    });
    assert_eq!(d.iova_to_phys(0x10_0000), None);
}

/// A process that has exited: its last user reference is gone.
struct ExitedMm(MmIommuData);

impl AddressSpace for ExitedMm {
    fn mm_id(&self) -> u64 {
        7
    }
    fn iommu_mm(&self) -> &MmIommuData {
        &self.0
    }
    fn handle_mm_fault(&self, addr: u64, _perm: u32) -> iommu_core::Result<()> {
        Err(iommu_core::error::efault_v("mm has exited", addr))
    }
    fn has_exited(&self) -> bool {
        true
    }
}

#[test]
fn binding_an_exited_mm_is_einval_and_takes_no_pasid() {
    let fx = Fixture::new(&[1 << 16]);
    let mm: Arc<dyn AddressSpace> = Arc::new(ExitedMm(MmIommuData::default()));

    assert_rejected(&fx, "EINVAL", false, || sva_bind_device(fx.dev(0), &mm));
    assert_eq!(mm.iommu_mm().pasid(), None);
    assert_eq!(mm.iommu_mm().domain_count(), 0);
}

#[test]
fn pasid_ranges_beyond_20_bits_are_einval() {
    let fx = Fixture::new(&[1 << 20, 0]);
    let e = fx.group.add_device("wide", (1 << 20) + 1).unwrap_err();
    assert_eq!(e.errno_name(), "EINVAL", "{e}");
    let d = fx.paging();
    for pasid in [1 << 20, u32::MAX] {
        assert_rejected(&fx, "EINVAL", false, || {
            iommu_core::attach_device_pasid(&d, fx.dev(1), pasid, ())
        });
    }
}

//! The mm's PASID lifetime and range, against the *global* PASID allocator. One sequential
//! test in its own binary, so no other test allocates PASIDs concurrently.

mod common;

use std::sync::Arc;

use common::{Fixture, Mm};
use iommu_core::{sva_bind_device, AddressSpace, PasidAllocator};

fn as_mm(mm: &Arc<Mm>) -> Arc<dyn AddressSpace> {
    mm.clone()
}

#[test]
fn mm_pasid_outlives_unbind_dies_with_the_mm_and_bounds_narrow_devices() {
    let ida = PasidAllocator::global();
    let wide = Fixture::new(&[1 << 16]);

    // Unbind never frees the mm's PASID; a rebind gets the same one.
    let mm = Mm::new(1);
    let bond = sva_bind_device(wide.dev(0), &as_mm(&mm)).unwrap();
    let pasid = bond.pasid();
    drop(bond);
    assert_eq!(mm.iommu.pasid(), Some(pasid));
    assert_eq!(ida.live(), 1);
    let again = sva_bind_device(wide.dev(0), &as_mm(&mm)).unwrap();
    assert_eq!(again.pasid(), pasid);
    drop(again);
    // Dropping the mm frees it, and it is the lowest free PASID again.
    drop(mm);
    assert_eq!(ida.live(), 0);
    assert_eq!(ida.alloc(1 << 16).unwrap().get(), pasid);

    // An mm whose PASID is beyond a narrow device's range: EOVERFLOW, nothing changes.
    let hold = ida.alloc(1 << 16).unwrap(); // takes PASID 1
    let mm = as_mm(&Mm::new(2));
    let bond = sva_bind_device(wide.dev(0), &mm).unwrap();
    assert_eq!(bond.pasid(), 2);
    let narrow = Fixture::new(&[2]); // PASIDs 1 only
    let before = narrow.state();
    assert_eq!(
        sva_bind_device(narrow.dev(0), &mm)
            .unwrap_err()
            .errno_name(),
        "EOVERFLOW"
    );
    assert_eq!(narrow.state(), before);
    drop((bond, hold));
}

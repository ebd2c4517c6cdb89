//! Errors name their condition where a caller would branch on it: one errno covers several
//! conditions (`EBUSY` is both "the PASID is taken" and "another owner type holds it"), so the
//! condition, not the errno, is what a caller matches.

use iommu_core::mock::MockDriver;
use iommu_core::{
    attach_device_pasid, attach_handle_get, detach_device_pasid, group_claim_dma_owner,
    group_dma_owned_by, Condition, DmaOwner, Domain, Group,
};

struct Owner;

#[test]
fn pasid_slot_conditions_tell_apart_what_the_errno_does_not() {
    let group = Group::new(MockDriver::new("iommu0"), "g0");
    let dev = group.add_device("d0", 64).unwrap();
    let dom = Domain::alloc_paging(&dev).unwrap();
    attach_device_pasid(&dom, &dev, 7, Owner).unwrap();

    let taken = attach_device_pasid(&dom, &dev, 7, Owner).unwrap_err();
    let other_owner = attach_handle_get::<u32>(&group, 7).unwrap_err();
    assert_eq!(taken.errno_name(), other_owner.errno_name(), "both EBUSY");
    assert_eq!(taken.condition(), Condition::PasidInUse);
    assert_eq!(other_owner.condition(), Condition::WrongOwner);

    let empty = attach_handle_get::<Owner>(&group, 8).unwrap_err();
    assert_eq!(
        (empty.errno_name(), empty.condition()),
        ("ENOENT", Condition::NoSuchPasid)
    );
    let wide = attach_device_pasid(&dom, &dev, 64, Owner).unwrap_err();
    assert_eq!(
        (wide.errno_name(), wide.condition()),
        ("EINVAL", Condition::PasidOutOfRange)
    );

    let other_dom = Domain::alloc_paging(&dev).unwrap();
    let wrong = detach_device_pasid(&other_dom, &dev, 7).unwrap_err();
    assert_eq!(
        (wrong.errno_name(), wrong.condition()),
        ("EINVAL", Condition::NotAttached)
    );
    let none = detach_device_pasid(&dom, &dev, 9).unwrap_err();
    assert_eq!(none.condition(), Condition::NoSuchPasid);

    let foreign_group = Group::new(MockDriver::new("iommu1"), "g1");
    let foreign_dev = foreign_group.add_device("d1", 64).unwrap();
    let foreign = attach_device_pasid(&dom, &foreign_dev, 3, Owner).unwrap_err();
    assert_eq!(foreign.condition(), Condition::ForeignDomain);

    let busy = group_claim_dma_owner(&group, DmaOwner(1)).unwrap_err();
    assert_eq!(
        (busy.errno_name(), busy.condition()),
        ("EBUSY", Condition::GroupHasPasids)
    );
    assert!(!group_dma_owned_by(&group, DmaOwner(1)));
}

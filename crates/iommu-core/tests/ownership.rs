//! DMA ownership (SPEC §1.2): claims, releases, default-domain users, and H8 — no ownership
//! change while the PASID array holds anything.

mod common;

use common::{assert_rejected, Fixture};
use iommu_core::{
    attach_device_pasid, attach_group, attach_group_handle, detach_device_pasid,
    detach_group_handle, device_claim_dma_owner, device_release_dma_owner,
    device_unuse_default_domain, device_use_default_domain, group_claim_dma_owner,
    group_dma_owned_by, group_release_dma_owner, Device, DmaOwner,
};

#[test]
fn claim_moves_group_to_blocking_and_release_returns_to_default() {
    let fx = Fixture::new(&[64, 64]);
    let default = fx.group.default_domain().unwrap();
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
    let blocking = fx.group.blocking_domain().unwrap();
    assert_eq!(blocking.kind(), iommu_core::DomainKind::Blocked);
    assert!(fx.iommu.hw().rid.values().all(|d| *d == blocking.id()));
    assert!(group_dma_owned_by(&fx.group, DmaOwner(1)));
    group_release_dma_owner(&fx.group).unwrap();
    assert!(fx.iommu.hw().rid.values().all(|d| *d == default.id()));
    assert_eq!(fx.group.dma_owner_count(), 0);
}

#[test]
fn claim_of_group_with_any_user_returns_eperm() {
    let fx = Fixture::new(&[64]);
    device_use_default_domain(fx.dev(0)).unwrap();
    assert_rejected(&fx, "EPERM", false, || {
        group_claim_dma_owner(&fx.group, DmaOwner(1))
    });
    device_unuse_default_domain(fx.dev(0)).unwrap();
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
    assert_rejected(&fx, "EPERM", false, || {
        group_claim_dma_owner(&fx.group, DmaOwner(1))
    });
}

#[test]
fn claim_with_pasid_attached_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    attach_device_pasid(&dom, fx.dev(0), 1, ()).unwrap();
    assert_rejected(&fx, "EBUSY", false, || {
        group_claim_dma_owner(&fx.group, DmaOwner(1))
    });
    assert_rejected(&fx, "EBUSY", false, || {
        device_claim_dma_owner(fx.dev(0), DmaOwner(1))
    });
    detach_device_pasid(&dom, fx.dev(0), 1).unwrap();
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
}

#[test]
fn claim_off_the_default_domain_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    attach_group(&dom, &fx.group).unwrap();
    assert_rejected(&fx, "EBUSY", false, || {
        group_claim_dma_owner(&fx.group, DmaOwner(1))
    });
}

#[test]
fn release_with_pasid_or_rid_handle_attached_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
    attach_device_pasid(&dom, fx.dev(0), 3, ()).unwrap();
    assert_rejected(&fx, "EBUSY", false, || group_release_dma_owner(&fx.group));
    assert_rejected(&fx, "EBUSY", false, || device_release_dma_owner(fx.dev(0)));
    detach_device_pasid(&dom, fx.dev(0), 3).unwrap();
    attach_group_handle(&dom, &fx.group, ()).unwrap();
    assert_rejected(&fx, "EBUSY", false, || group_release_dma_owner(&fx.group));
    detach_group_handle(&dom, &fx.group).unwrap();
    group_release_dma_owner(&fx.group).unwrap();
}

#[test]
fn release_without_owner_returns_einval() {
    let fx = Fixture::new(&[64]);
    assert_rejected(&fx, "EINVAL", false, || group_release_dma_owner(&fx.group));
    assert_rejected(&fx, "EINVAL", false, || device_release_dma_owner(fx.dev(0)));
    device_use_default_domain(fx.dev(0)).unwrap();
    assert_rejected(&fx, "EINVAL", false, || group_release_dma_owner(&fx.group));
}

#[test]
fn device_claims_by_the_same_owner_count_and_the_last_release_releases() {
    let fx = Fixture::new(&[64, 64]);
    device_claim_dma_owner(fx.dev(0), DmaOwner(9)).unwrap();
    device_claim_dma_owner(fx.dev(1), DmaOwner(9)).unwrap();
    assert_eq!(fx.group.dma_owner_count(), 2);
    device_release_dma_owner(fx.dev(1)).unwrap();
    assert!(group_dma_owned_by(&fx.group, DmaOwner(9)));
    device_release_dma_owner(fx.dev(0)).unwrap();
    assert_eq!(fx.group.snapshot().owner, None);
    assert_eq!(
        fx.group.domain().unwrap().id(),
        fx.group.default_domain().unwrap().id()
    );
}

#[test]
fn device_claim_by_another_owner_returns_eperm() {
    let fx = Fixture::new(&[64]);
    device_claim_dma_owner(fx.dev(0), DmaOwner(1)).unwrap();
    assert_rejected(&fx, "EPERM", false, || {
        device_claim_dma_owner(fx.dev(0), DmaOwner(2))
    });
}

#[test]
fn device_claim_without_group_returns_enodev() {
    let fx = Fixture::new(&[64]);
    let loose = Device::new_unmanaged("loose", 0).unwrap();
    assert_rejected(&fx, "ENODEV", false, || {
        device_claim_dma_owner(&loose, DmaOwner(1))
    });
    assert_rejected(&fx, "ENODEV", false, || device_release_dma_owner(&loose));
    // Kernel-driver use of a device with no IOMMU has nothing to account.
    device_use_default_domain(&loose).unwrap();
}

#[test]
fn use_default_domain_of_an_owned_group_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
    assert_rejected(&fx, "EBUSY", false, || device_use_default_domain(fx.dev(0)));
}

#[test]
fn use_default_domain_with_pasid_attached_and_users_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    device_use_default_domain(fx.dev(0)).unwrap();
    attach_device_pasid(&dom, fx.dev(0), 1, ()).unwrap();
    assert_rejected(&fx, "EBUSY", false, || device_use_default_domain(fx.dev(0)));
    assert_rejected(&fx, "EBUSY", false, || {
        device_unuse_default_domain(fx.dev(0))
    });
}

#[test]
fn unuse_without_users_returns_einval() {
    let fx = Fixture::new(&[64]);
    assert_rejected(&fx, "EINVAL", false, || {
        device_unuse_default_domain(fx.dev(0))
    });
}

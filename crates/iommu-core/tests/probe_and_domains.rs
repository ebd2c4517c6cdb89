//! Device probe into groups and domain allocation: success and every error.

mod common;

use std::sync::Arc;

use common::{assert_rejected, Fixture, Mm};
use iommu_core::error::enomem;
use iommu_core::mock::{MockDriver, Op};
use iommu_core::{
    attach_device_pasid, group_claim_dma_owner, Capabilities, DefaultDomainKind, Device, DmaOwner,
    Domain, DomainKind, DomainRequest, Group, IommuDriver, IopfHandler, PASID_LIMIT,
};

struct Handler;
impl IopfHandler for Handler {
    fn name(&self) -> &str {
        "test"
    }
    fn handle_iopf(&self, group: iommu_core::IopfGroup) -> Result<(), iommu_core::IopfGroup> {
        group.respond(iommu_core::PageResponseCode::Success);
        Ok(())
    }
}

fn no_features() -> Capabilities {
    Capabilities {
        max_pasids: 1 << 8,
        pri: false,
        ats: false,
        nesting: false,
        sva: false,
        user_pasid_table: false,
        default_domain: DefaultDomainKind::Identity,
    }
}

#[test]
fn device_max_pasids_is_the_minimum_of_device_and_iommu() {
    let fx = Fixture::with_iommu(
        MockDriver::with_capabilities("m", no_features()),
        &[1 << 16, 16, 0],
    );
    let got: Vec<u32> = fx.devs.iter().map(|d| d.max_pasids()).collect();
    assert_eq!(got, [1 << 8, 16, 0]);
    assert_eq!(
        fx.group.default_domain().unwrap().kind(),
        DomainKind::Identity
    );
}

#[test]
fn first_device_allocates_the_default_domain_and_all_share_it() {
    let fx = Fixture::new(&[64, 64]);
    let default = fx.group.default_domain().unwrap();
    assert!(default.is_dma_api());
    assert!(fx.iommu.hw().rid.values().all(|d| *d == default.id()));
    assert_eq!(fx.dev(1).group().unwrap().id(), fx.group.id());
}

#[test]
fn add_device_error_cases_change_nothing() {
    let fx = Fixture::new(&[64]);
    assert_rejected(&fx, "EINVAL", false, || {
        fx.group.add_device("huge", PASID_LIMIT + 1)
    });
    fx.iommu.fail_nth(Op::ProbeDevice, 1, enomem("probe fails"));
    assert_rejected(&fx, "ENOMEM", true, || fx.group.add_device("x", 64));
    fx.iommu.fail_nth(Op::AttachDev, 1, enomem("attach fails"));
    let snap = fx.group.snapshot();
    assert_eq!(
        fx.group.add_device("y", 64).unwrap_err().errno_name(),
        "ENOMEM"
    );
    assert_eq!(fx.group.snapshot(), snap);
    let dom = fx.paging();
    attach_device_pasid(&dom, fx.dev(0), 1, ()).unwrap();
    assert_rejected(&fx, "EBUSY", false, || fx.group.add_device("z", 64));
}

#[test]
fn add_device_to_owned_group_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
    assert_rejected(&fx, "EBUSY", false, || fx.group.add_device("late", 64));
}

#[test]
fn first_device_whose_default_domain_fails_leaves_an_empty_group() {
    let iommu = MockDriver::new("m");
    let group = Group::new(iommu.clone() as Arc<dyn IommuDriver>, "g");
    iommu.fail_nth(Op::DomainAlloc, 1, enomem("no memory for default domain"));
    let err = group.add_device("d", 64).unwrap_err();
    assert_eq!(err.errno_name(), "ENOMEM");
    assert!(group.devices().is_empty() && group.default_domain().is_none());
    group.add_device("d", 64).unwrap();
}

#[test]
fn remove_device_releases_it_and_its_group_link() {
    let fx = Fixture::new(&[64, 64]);
    let d1 = fx.dev(1).clone();
    fx.group.remove_device(&d1).unwrap();
    assert_eq!(d1.group().unwrap_err().errno_name(), "ENODEV");
    assert!(!fx.iommu.hw().rid.contains_key(&d1.id()));
    assert_eq!(fx.group.devices().len(), 1);
    assert_rejected(&fx, "EINVAL", false, || fx.group.remove_device(&d1));
}

#[test]
fn remove_device_with_pasids_or_owner_returns_ebusy() {
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    let h = attach_device_pasid(&dom, fx.dev(0), 1, ()).unwrap();
    assert_rejected(&fx, "EBUSY", false, || fx.group.remove_device(fx.dev(0)));
    iommu_core::detach_device_pasid(h.domain(), fx.dev(0), 1).unwrap();
    group_claim_dma_owner(&fx.group, DmaOwner(1)).unwrap();
    assert_rejected(&fx, "EBUSY", false, || fx.group.remove_device(fx.dev(0)));
}

#[test]
fn unmanaged_device_has_no_group_and_cannot_get_domains() {
    let loose = Device::new_unmanaged("loose", 32).unwrap();
    assert_eq!(loose.group().unwrap_err().errno_name(), "ENODEV");
    assert_eq!(
        Domain::alloc_paging(&loose).unwrap_err().errno_name(),
        "ENODEV"
    );
    assert_eq!(
        Device::new_unmanaged("x", PASID_LIMIT + 1)
            .unwrap_err()
            .errno_name(),
        "EINVAL"
    );
}

#[test]
fn domain_alloc_refuses_what_the_iommu_cannot_do() {
    let fx = Fixture::with_iommu(MockDriver::with_capabilities("m", no_features()), &[64]);
    let mm: Arc<dyn iommu_core::AddressSpace> = Mm::new(1);
    let parent = fx.paging();
    let calls = fx.iommu.call_count();
    let sva = Domain::alloc(fx.dev(0), DomainRequest::Sva(&mm), None);
    assert_eq!(sva.unwrap_err().errno_name(), "EOPNOTSUPP");
    let nested = DomainRequest::Nested {
        parent: &parent,
        data_type: 0,
        data: &[],
    };
    assert_eq!(
        Domain::alloc(fx.dev(0), nested, None)
            .unwrap_err()
            .errno_name(),
        "EOPNOTSUPP"
    );
    assert_eq!(
        fx.iommu.call_count(),
        calls,
        "refused before reaching the driver"
    );
}

#[test]
fn nested_domain_needs_a_paging_parent_of_the_same_iommu() {
    let fx = Fixture::new(&[64]);
    let ident = Domain::alloc(fx.dev(0), DomainRequest::Identity, None).unwrap();
    let foreign = Fixture::new(&[64]).paging();
    let bad_kind = DomainRequest::Nested {
        parent: &ident,
        data_type: 1,
        data: &[0; 8],
    };
    assert_eq!(
        Domain::alloc(fx.dev(0), bad_kind, None)
            .unwrap_err()
            .errno_name(),
        "EINVAL"
    );
    let bad_owner = DomainRequest::Nested {
        parent: &foreign,
        data_type: 1,
        data: &[0; 8],
    };
    assert_eq!(
        Domain::alloc(fx.dev(0), bad_owner, None)
            .unwrap_err()
            .errno_name(),
        "EINVAL"
    );
    let parent = fx.paging();
    let ok = DomainRequest::Nested {
        parent: &parent,
        data_type: 1,
        data: &[0; 8],
    };
    let nested = Domain::alloc(fx.dev(0), ok, Some(Arc::new(Handler))).unwrap();
    assert_eq!(nested.parent().unwrap().id(), parent.id());
    assert!(nested.is_fault_capable());
}

#[test]
fn fault_handler_on_blocked_or_identity_domain_returns_einval() {
    let fx = Fixture::new(&[64]);
    for req in [DomainRequest::Blocked, DomainRequest::Identity] {
        let err = Domain::alloc(fx.dev(0), req, Some(Arc::new(Handler))).unwrap_err();
        assert_eq!(err.errno_name(), "EINVAL");
    }
}

#[test]
fn sva_domain_records_its_address_space_and_driver_data() {
    let fx = Fixture::new(&[64]);
    let mm: Arc<dyn iommu_core::AddressSpace> = Mm::new(77);
    let d = Domain::alloc(fx.dev(0), DomainRequest::Sva(&mm), Some(Arc::new(Handler))).unwrap();
    assert_eq!(d.mm().unwrap().mm_id(), 77);
    assert_eq!(d.iopf_handler().unwrap().name(), "test");
    let data = d.driver_data::<iommu_core::mock::MockDomain>().unwrap();
    assert_eq!(data.kind, DomainKind::Sva);
    assert!(d.driver_data::<u8>().is_none());
}

#[test]
fn driver_refusing_a_domain_kind_passes_its_error_through() {
    let fx = Fixture::new(&[64]);
    fx.iommu.fail_nth(
        Op::DomainAlloc,
        1,
        iommu_core::error::eopnotsupp("no identity"),
    );
    let err = Domain::alloc(fx.dev(0), DomainRequest::Identity, None).unwrap_err();
    assert_eq!(err.errno_name(), "EOPNOTSUPP");
}

#[test]
fn paging_domain_maps_unmaps_and_translates_through_its_driver() {
    use iommu_core::{IOMMU_READ, IOMMU_WRITE};
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    dom.map(0x10_0000, 0x8000_0000, 0x2000, IOMMU_READ | IOMMU_WRITE)
        .unwrap();
    assert_eq!(dom.iova_to_phys(0x10_1234), Some(0x8000_1234));
    assert_eq!(
        dom.map(0x10_1000, 0x9000_0000, 0x1000, IOMMU_READ)
            .unwrap_err()
            .errno_name(),
        "EEXIST"
    );
    assert_eq!(
        dom.iova_to_phys(0x10_1000),
        Some(0x8000_1000),
        "failed map changed nothing"
    );
    assert_eq!(dom.unmap(0x10_0000, 0x2000).unwrap(), 0x2000);
    assert_eq!(dom.iova_to_phys(0x10_0000), None);
}

#[test]
fn map_argument_errors_return_einval_and_change_nothing() {
    use iommu_core::IOMMU_READ;
    let fx = Fixture::new(&[64]);
    let dom = fx.paging();
    let ident = Domain::alloc(fx.dev(0), DomainRequest::Identity, None).unwrap();
    let cases: [(&Arc<Domain>, u64, u64, u64, u32); 6] = [
        (&ident, 0, 0, 0x1000, IOMMU_READ),
        (&dom, 0x10, 0, 0x1000, IOMMU_READ),
        (&dom, 0, 0x10, 0x1000, IOMMU_READ),
        (&dom, 0, 0, 0, IOMMU_READ),
        (&dom, 0, 0, 0x1000, 0),
        (&dom, !0xfff, 0, 0x2000, IOMMU_READ),
    ];
    for (d, iova, pa, len, prot) in cases {
        assert_eq!(
            d.map(iova, pa, len, prot).unwrap_err().errno_name(),
            "EINVAL"
        );
    }
    assert!(fx.iommu.hw().maps.is_empty());
    assert_eq!(ident.unmap(0, 0x1000).unwrap_err().errno_name(), "EINVAL");
}

//! Hostile input (issue 11): what Linux refuses, iommufd refuses with Linux's errno, and a
//! refused call changes nothing.

use std::sync::Arc;

use iommu_core::{Group, IOMMU_READ};
use iommu_emu::iommu::{VtdS1, HWPT_DATA_VTD_S1};
use iommu_emu::{EmuIommu, EmuIommuConfig, Endpoint, EndpointConfig, PhysMem};
use iommufd::uapi::{IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_FAULT_ID_VALID};
use iommufd::{Ictx, IOMMU_NO_PASID};

struct Fx {
    phys: Arc<PhysMem>,
    _iommu: Arc<EmuIommu>,
    ep: Endpoint,
    ictx: Ictx,
    dev_id: u32,
    ioas: u32,
}

fn fx(cfg: EndpointConfig) -> Fx {
    let phys = Arc::new(PhysMem::new(1024).unwrap());
    let iommu = EmuIommu::new("dmar0", &phys, EmuIommuConfig::default()).unwrap();
    let group = Group::new(iommu.driver(), "grp0");
    let ep = iommu.add_endpoint(&group, "dev0", 1 << 20, cfg).unwrap();
    let ictx = Ictx::new();
    let dev_id = ictx.bind_device(ep.device().clone()).unwrap();
    let ioas = ictx.ioas_alloc().unwrap();
    Fx {
        phys,
        _iommu: iommu,
        ep,
        ictx,
        dev_id,
        ioas,
    }
}

#[test]
fn a_fault_capable_hwpt_on_a_device_without_pri_is_refused() {
    for cfg in [
        EndpointConfig {
            pri: false,
            ..EndpointConfig::default()
        },
        EndpointConfig {
            ats: false,
            ..EndpointConfig::default()
        },
    ] {
        let f = fx(cfg);
        let (fault_id, _fd) = f.ictx.fault_queue_alloc(0).unwrap();
        let hwpt = f
            .ictx
            .hwpt_alloc(
                f.dev_id,
                f.ioas,
                IOMMU_HWPT_FAULT_ID_VALID,
                fault_id,
                0,
                &[],
            )
            .unwrap();

        let e = f
            .ictx
            .device_attach(f.dev_id, IOMMU_NO_PASID, hwpt)
            .unwrap_err();

        assert_eq!(e.errno_name(), "ENODEV", "{e}");
        assert_eq!(
            f.ictx.attached_hwpt(f.dev_id, IOMMU_NO_PASID).unwrap(),
            None
        );
        assert!(iommu_core::iopf_stats(f.ep.device()).is_none());
        // A plain HWPT still attaches: the refusal left nothing behind.
        let plain = f.ictx.hwpt_alloc(f.dev_id, f.ioas, 0, 0, 0, &[]).unwrap();
        f.ictx
            .device_attach(f.dev_id, IOMMU_NO_PASID, plain)
            .unwrap();
    }
}

#[test]
fn an_ioas_map_whose_range_wraps_is_eoverflow_and_maps_nothing() {
    let f = fx(EndpointConfig::default());
    let hwpt = f.ictx.hwpt_alloc(f.dev_id, f.ioas, 0, 0, 0, &[]).unwrap();
    let domain = f.ictx.hwpt_domain(hwpt).unwrap();
    let top: u64 = !0xfff;

    let pa_wrap = f
        .ictx
        .ioas_map(f.ioas, Some(0x10_0000), top, 0x2000, IOMMU_READ)
        .unwrap_err();
    let pa_wrap_anywhere = f
        .ictx
        .ioas_map(f.ioas, None, top, 0x2000, IOMMU_READ)
        .unwrap_err();
    let iova_wrap = f
        .ictx
        .ioas_map(f.ioas, Some(top), 0, 0x2000, IOMMU_READ)
        .unwrap_err();

    assert_eq!(pa_wrap.errno_name(), "EOVERFLOW", "{pa_wrap}");
    assert_eq!(pa_wrap_anywhere.errno_name(), "EOVERFLOW");
    assert_eq!(iova_wrap.errno_name(), "EOVERFLOW", "{iova_wrap}");
    assert_eq!(domain.iova_to_phys(0x10_0000), None);
    assert_eq!(domain.iova_to_phys(0), None);
    // Nothing was recorded in the IOAS either: the same IOVA maps now.
    let frame = f.phys.alloc_frame().unwrap();
    f.ictx
        .ioas_map(f.ioas, Some(0x10_0000), frame.addr().0, 0x1000, IOMMU_READ)
        .unwrap();

    // Unmap: a zero length is EINVAL, a wrapping range EOVERFLOW; both leave the map.
    let unmap = |iova: u64, len: u64| f.ictx.ioas_unmap(f.ioas, iova, len);
    assert_eq!(unmap(0x10_0000, 0).unwrap_err().errno_name(), "EINVAL");
    assert_eq!(
        unmap(0x10_0000, u64::MAX).unwrap_err().errno_name(),
        "EOVERFLOW"
    );
    assert_eq!(domain.iova_to_phys(0x10_0000), Some(frame.addr().0));
    // [0, u64::MAX) is Linux's "everything" and does not wrap.
    assert_eq!(unmap(0, u64::MAX).unwrap(), 0x1000);
}

#[test]
fn nested_hwpt_data_is_validated_by_the_driver() {
    let f = fx(EndpointConfig::default());
    let parent = f
        .ictx
        .hwpt_alloc(f.dev_id, f.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT, 0, 0, &[])
        .unwrap();
    let good = VtdS1 {
        flags: 0,
        pgtbl_addr: 0x1000,
        addr_width: 57,
    }
    .to_bytes();
    let alloc = |data_type: u32, data: &[u8]| {
        f.ictx
            .hwpt_alloc(f.dev_id, parent, 0, 0, data_type, data)
            .map_err(|e| e.errno_name())
    };
    let mut bad_flags = good;
    bad_flags[0] = 0x80;

    assert_eq!(alloc(0xdead, &[1]), Err("EOPNOTSUPP"));
    assert_eq!(alloc(HWPT_DATA_VTD_S1, &good[..8]), Err("EINVAL"));
    assert_eq!(alloc(HWPT_DATA_VTD_S1, &bad_flags), Err("EINVAL"));
    let mut long = good.to_vec();
    long.extend_from_slice(&[0, 0, 7, 0]);
    assert_eq!(alloc(HWPT_DATA_VTD_S1, &long), Err("E2BIG"));
    assert!(alloc(HWPT_DATA_VTD_S1, &good).is_ok());
}

//! SPEC §6.3: the assertions of Linux's `iommufd_ioas.alloc_hwpt_nested` selftest (fault
//! part), step by step, on the mock IOMMU.

mod common;

use common::{read_records, responses, Fx, RID};
use iommu_core::mock::MockDriver;
use iommu_core::{report_device_fault, Capabilities, PageRequest, PageResponseCode};
use iommufd::uapi::*;

#[test]
fn alloc_hwpt_nested_fault_flow_of_the_linux_selftest() {
    // Like Linux's 6.12 mock: the guest owns the PASID table, so a PASID fault with no PASID
    // attachment falls back to the nested domain on the RID (SPEC §6.1).
    let caps = Capabilities {
        user_pasid_table: true,
        ..Capabilities::default()
    };
    let fx = Fx::with_mock(MockDriver::with_capabilities("mock", caps), &[1]);
    let dev_id = fx.dev_ids[0];
    let data = [0u8; 4]; // struct iommu_hwpt_selftest { iotlb }

    // 1. A nest parent with a fault ID: EOPNOTSUPP.
    let err = fx
        .ictx
        .hwpt_alloc(
            dev_id,
            fx.ioas,
            IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_FAULT_ID_VALID,
            0,
            IOMMU_HWPT_DATA_NONE,
            &[],
        )
        .unwrap_err();
    assert_eq!(err.errno_name(), "EOPNOTSUPP");
    let parent = fx
        .ictx
        .hwpt_alloc(dev_id, fx.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT, 0, 0, &[])
        .unwrap();

    // 2. A fault queue: non-zero id and fd.
    let mut cmd = IommuFaultAlloc {
        size: 16,
        ..Default::default()
    };
    let fd = fx
        .ictx
        .ioctl_fault_queue_alloc(zerocopy::IntoBytes::as_mut_bytes(&mut cmd))
        .unwrap();
    let fault_id = cmd.out_fault_id;
    assert!(fault_id != 0 && cmd.out_fault_fd != 0);

    // 3. Nested with fault_id UINT32_MAX: ENOENT; with the real one: success.
    let alloc = |fault_id| {
        fx.ictx.hwpt_alloc(
            dev_id,
            parent,
            IOMMU_HWPT_FAULT_ID_VALID,
            fault_id,
            IOMMU_HWPT_DATA_SELFTEST,
            &data,
        )
    };
    assert_eq!(alloc(u32::MAX).unwrap_err().errno_name(), "ENOENT");
    let iopf_hwpt = alloc(fault_id).unwrap();

    // 4. Attach (the mock device starts on the parent), replace onto the fault-capable nested
    //    HWPT; destroying it while attached: EBUSY.
    fx.ictx.device_attach(dev_id, RID, parent).unwrap();
    fx.ictx.device_replace(dev_id, RID, iopf_hwpt).unwrap();
    assert_eq!(
        fx.ictx.destroy(iopf_hwpt).unwrap_err().errno_name(),
        "EBUSY"
    );

    // 5. Trigger a fault (pasid 1, grpid 2, R|W, 0xdeadbeaf), read it, answer it.
    let req = PageRequest {
        flags: iommu_core::IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
            | iommu_core::IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
        pasid: 1,
        grpid: 2,
        perm: IOMMU_PGFAULT_PERM_READ | IOMMU_PGFAULT_PERM_WRITE,
        addr: 0xdeadbeaf,
    };
    report_device_fault(&fx.devs[0], req).unwrap();
    let recs = read_records(&fd, 1);
    assert_eq!(recs.len(), 1);
    let r = recs[0];
    assert_eq!(
        (r.pasid, r.grpid, r.perm, r.addr, r.dev_id),
        (1, 2, 3, 0xdeadbeaf, dev_id)
    );
    let n = fd
        .write(&responses(&[(r.cookie, IOMMUFD_PAGE_RESP_SUCCESS)]))
        .unwrap();
    assert_eq!(
        n,
        iommufd::RESPONSE_RECORD_SIZE,
        "the one response record was consumed"
    );
    fx.assert_answered(&[(2, PageResponseCode::Success)]);

    // 6. Replace back, destroy nested then parent, close the fd, destroy the fault object
    //    (refused while the fd is open).
    fx.ictx.device_replace(dev_id, RID, parent).unwrap();
    fx.ictx.destroy(iopf_hwpt).unwrap();
    assert_eq!(fx.ictx.destroy(fault_id).unwrap_err().errno_name(), "EBUSY");
    fx.ictx.device_detach(dev_id, RID).unwrap();
    fx.ictx.destroy(parent).unwrap();
    drop(fd);
    fx.ictx.destroy(fault_id).unwrap();
    assert_eq!(
        fx.ictx.destroy(fault_id).unwrap_err().errno_name(),
        "ENOENT"
    );
    fx.assert_answered(&[(2, PageResponseCode::Success)]);
}

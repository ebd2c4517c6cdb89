//! Errors name the condition a caller branches on (`iommu_core::error::Condition`), beside the
//! errno Linux returns: one errno covers several conditions (`ENOENT` is both "no object" and
//! "an object of another type"; `EBUSY` both "referenced" and "PASID taken").

mod common;

use common::{Fx, RID};
use iommu_core::error::Condition;
use iommu_core::Error;
use iommufd::uapi::*;
use zerocopy::IntoBytes;

/// What a caller branches on: the errno and the condition.
fn kind(e: Error) -> (&'static str, Condition) {
    (e.errno_name(), e.condition())
}

#[test]
fn unknown_id_is_no_such_object() {
    let fx = Fx::new(1);
    let e = fx.ictx.destroy(999).unwrap_err();
    assert_eq!(kind(e), ("ENOENT", Condition::NoSuchObject));
    let e = fx.ictx.hwpt_domain(999).unwrap_err();
    assert_eq!(kind(e), ("ENOENT", Condition::NoSuchObject));
}

#[test]
fn id_of_another_type_is_wrong_object_type() {
    let fx = Fx::new(1);
    let e = fx.ictx.hwpt_domain(fx.ioas).unwrap_err();
    assert_eq!(kind(e), ("ENOENT", Condition::WrongObjectType));
    let e = fx.ictx.device(fx.ioas).unwrap_err();
    assert_eq!(kind(e), ("ENOENT", Condition::WrongObjectType));
    let e = fx
        .ictx
        .device_attach(fx.dev_ids[0], RID, fx.dev_ids[0])
        .unwrap_err();
    assert_eq!(kind(e), ("EINVAL", Condition::WrongObjectType));
}

#[test]
fn destroying_a_referenced_object_is_object_in_use() {
    let fx = Fx::new(1);
    let (fault_id, _fd, hwpt) = fx.fault_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    for id in [hwpt, fault_id, fx.ioas, fx.dev_ids[0]] {
        let e = fx.ictx.destroy(id).unwrap_err();
        assert_eq!(kind(e), ("EBUSY", Condition::ObjectInUse), "object {id}");
    }
}

#[test]
fn attaching_twice_is_pasid_in_use_and_detaching_twice_is_not_attached() {
    let fx = Fx::new(1);
    let hwpt = fx.plain_hwpt(0, 0);
    fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap();
    let e = fx.ictx.device_attach(fx.dev_ids[0], RID, hwpt).unwrap_err();
    assert_eq!(kind(e), ("EBUSY", Condition::PasidInUse));
    fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap();
    let e = fx.ictx.device_detach(fx.dev_ids[0], RID).unwrap_err();
    assert_eq!(kind(e), ("EINVAL", Condition::NotAttached));
}

#[test]
fn short_command_is_record_too_short() {
    let e =
        copy_struct_from_user::<IommuHwptAlloc>(&[0u8; 23], IOMMU_HWPT_ALLOC_MIN_SIZE).unwrap_err();
    assert_eq!(kind(e), ("EINVAL", Condition::RecordTooShort));
}

#[test]
fn non_zero_bytes_past_the_struct_are_unknown_trailing_bytes() {
    let fx = Fx::new(1);
    let mut cmd = [0u8; 24];
    cmd[..16].copy_from_slice(
        IommuFaultAlloc {
            size: 24,
            ..Default::default()
        }
        .as_bytes(),
    );
    cmd[20] = 1;
    let e = fx.ictx.ioctl_fault_queue_alloc(&mut cmd).unwrap_err();
    assert_eq!(kind(e), ("E2BIG", Condition::UnknownTrailingBytes));
}

#[test]
fn unknown_flags_and_data_types_are_unsupported_flags() {
    let fx = Fx::new(1);
    let d = fx.dev_ids[0];
    let cases = [
        fx.ictx
            .hwpt_alloc(d, fx.ioas, 1 << 31, 0, 0, &[])
            .unwrap_err(),
        fx.ictx
            .hwpt_alloc(d, fx.ioas, 0, 0, IOMMU_HWPT_DATA_SELFTEST, &[1])
            .unwrap_err(),
        fx.ictx.fault_queue_alloc(1).unwrap_err(),
    ];
    for e in cases {
        assert_eq!(kind(e), ("EOPNOTSUPP", Condition::UnsupportedFlags));
    }
}

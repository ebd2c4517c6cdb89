//! `iommufd`: the user-space API object model of iommu-rs, after Linux's
//! `drivers/iommu/iommufd/` — with user-space delivery of I/O page faults through fault-capable
//! HWPTs, a fault fd, response cookies and auto-response (SPEC §5).
//!
//! * [`Ictx`] is one open `/dev/iommu`: an object table of `u32` IDs (from 1, lowest free
//!   reused; [`Ictx::destroy`] refuses with `EBUSY` while anything references an object) holding
//!   IOAS (IOVA spaces), bound devices, HWPTs (paging on an IOAS, nested on a nest-parent
//!   paging HWPT, either optionally fault capable) and fault queues.
//! * [`Ictx::fault_queue_alloc`] returns a fault object ID and its endpoint, a [`FaultFd`]:
//!   `read` yields whole page request groups as byte-exact [`uapi::IommuHwptPgfault`] records
//!   with a cookie per group, `write` takes [`uapi::IommuHwptPageResponse`] records, and a real
//!   eventfd ([`std::os::fd::AsFd`]) is readable while groups wait, for epoll (cleared only
//!   when a reader may sleep: a read that finds nothing, so a busy reader makes no syscall).
//! * [`Ictx::ioctl`] is the uAPI itself: a request number and the caller's struct in its
//!   [`user_memory::UserMemory`], Linux 7.3's size rules (`EINVAL` below the minimum, `E2BIG`
//!   for unknown non-zero bytes, `ENOTTY` for an unknown command) and each command's errnos;
//!   `crates/iommufd-preload` serves it to unmodified programs as `/dev/iommu`.
//! * Every page request group gets exactly one response (SPEC H9): from user space, or
//!   Invalid from auto-response when its attachment is detached or replaced (on the *old*
//!   HWPT's queue, H21), when the endpoint is closed, or when the context or queue is
//!   destroyed (H23).
//!
//! ```
//! use std::sync::Arc;
//! use iommu_core::mock::MockDriver;
//! use iommu_core::{report_device_fault, Group, IommuDriver, PageRequest, PageResponseCode};
//! use iommufd::uapi::*;
//! use iommufd::{Ictx, IOMMU_NO_PASID};
//! use zerocopy::{FromBytes, IntoBytes};
//!
//! # fn main() -> Result<(), iommu_core::Error> {
//! let mock = MockDriver::new("mock0");
//! let group = Group::new(mock.clone() as Arc<dyn IommuDriver>, "g0");
//! let dev = group.add_device("dev0", 1 << 20)?;
//!
//! let ictx = Ictx::new();
//! let dev_id = ictx.bind_device(dev.clone())?;
//! let ioas = ictx.ioas_alloc()?;
//! let (fault_id, fault_fd) = ictx.fault_queue_alloc(0)?;
//! let hwpt = ictx.hwpt_alloc(dev_id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault_id, 0, &[])?;
//! ictx.device_attach(dev_id, IOMMU_NO_PASID, hwpt)?;
//!
//! // The device faults; the driver reports it; user space reads, resolves, answers.
//! let req = PageRequest { flags: IOMMU_PGFAULT_FLAGS_LAST_PAGE, pasid: 0, grpid: 7,
//!                         perm: IOMMU_PGFAULT_PERM_READ, addr: 0x1000 };
//! report_device_fault(&dev, req)?;
//! let mut buf = [0u8; 40];
//! assert_eq!(fault_fd.read(&mut buf)?, 40);
//! let rec = IommuHwptPgfault::read_from_bytes(&buf[..]).unwrap();
//! assert_eq!((rec.dev_id, rec.grpid, rec.cookie), (dev_id, 7, 1));
//! let resp = IommuHwptPageResponse { cookie: rec.cookie, code: IOMMUFD_PAGE_RESP_SUCCESS };
//! assert_eq!(fault_fd.write(resp.as_bytes())?, 8);
//! assert_eq!(mock.responses()[0].1.code, PageResponseCode::Success);
//! # Ok(()) }
//! ```
//!
//! Deviations from Linux 6.12, all toward the latest upstream or toward "never stall a device":
//! paging HWPTs may be fault capable \[6.13\]; replace auto-responds on the old queue \[2026\];
//! a zero-length read is `EINVAL` [2026 "Reject invalid read count"]; closing the endpoint
//! answers Invalid what it still holds and what arrives later (Linux keeps them pending, and
//! the device stalls, until detach); attach by IOAS ID (auto domains) is `EOPNOTSUPP`.
//! As in Linux (SPEC §5.5, H29), a record's `dev_id` is the idev that made the group-level
//! attachment; a second device of the same IOMMU group that joined it reports under that ID.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod fault;
pub mod handler;
mod ictx;
pub mod uapi;
pub mod user_memory;

pub use fault::{FaultFd, FaultStats, FdHandle, PollMask, FAULT_RECORD_SIZE, RESPONSE_RECORD_SIZE};
pub use ictx::{
    Ictx, IoctlOutput, IovaRange, NewFd, ObjectType, IOAS_APERTURE_END, IOMMU_VIOMMU_TYPE_SELFTEST,
};
/// The selftest mock device (`IOMMU_TEST_OP_MOCK_DOMAIN` and friends).
pub mod selftest {
    pub use crate::ictx::{
        HwInfo, MockDomainIds, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, IOMMU_HW_INFO_SELFTEST_REGVAL,
        IOMMU_TEST_DEV_CACHE_DEFAULT, IOMMU_TEST_INVALIDATE_FLAG_ALL, IOMMU_TEST_IOTLB_DEFAULT,
        MOCK_DEV_CACHE_NUM, MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_PASID,
        MOCK_NESTED_DOMAIN_IOTLB_NUM, MOCK_PAGE_SIZE, MOCK_PASID_WIDTH,
    };
}
pub use iommu_core::IOMMU_NO_PASID;

//! Allocating fault queues (the `IOMMU_FAULT_QUEUE_ALLOC` half of Linux `fault.c`,
//! `iommufd_fault_alloc`): a fault object in the table and its endpoint for user space.

use std::os::fd::{AsFd, AsRawFd};

use iommu_core::error::{eopnotsupp_v, Condition};
use iommu_core::Result;

use super::{Ictx, Object};
use crate::fault::{Fault, FaultFd};
use crate::uapi::{
    copy_struct_from_user, copy_struct_to_user, IommuFaultAlloc, IOMMU_FAULT_ALLOC_MIN_SIZE,
};

impl Ictx {
    /// `IOMMU_FAULT_QUEUE_ALLOC`: a new fault object; returns its ID and its endpoint (the
    /// fault fd). `EOPNOTSUPP` for non-zero `flags`.
    pub fn fault_queue_alloc(&self, flags: u32) -> Result<(u32, FaultFd)> {
        if flags != 0 {
            return Err(eopnotsupp_v("fault queue flags must be 0", flags.into())
                .because(Condition::UnsupportedFlags));
        }
        let mut t = self.table.lock();
        let id = t.alloc_id()?;
        let fault = Fault::new()?;
        t.insert_object(id, Object::Fault(fault.clone()));
        Ok((id, FaultFd::new(fault)))
    }

    /// `IOMMU_FAULT_QUEUE_ALLOC` from its uAPI struct: `cmd` is the user's `iommu_fault_alloc`
    /// (its length is the declared size). Writes `out_fault_id`/`out_fault_fd` back.
    /// `EINVAL` below 16 bytes, `E2BIG` for non-zero bytes beyond the struct.
    pub fn ioctl_fault_queue_alloc(&self, cmd: &mut [u8]) -> Result<FaultFd> {
        let mut c: IommuFaultAlloc = copy_struct_from_user(cmd, IOMMU_FAULT_ALLOC_MIN_SIZE)?;
        let (id, fd) = self.fault_queue_alloc(c.flags)?;
        c.out_fault_id = id;
        c.out_fault_fd = fd.as_fd().as_raw_fd() as u32;
        copy_struct_to_user(cmd, &c);
        Ok(fd)
    }
}

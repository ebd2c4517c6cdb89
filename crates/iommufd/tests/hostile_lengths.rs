//! A driver-data length from user space sizes no allocation: `IOMMU_HWPT_ALLOC` and
//! `IOMMU_VIOMMU_ALLOC` with `data_len = u32::MAX` read a bounded record and check the rest is
//! zero in small pieces (here it runs into unmapped memory: `EFAULT`), where they used to
//! allocate 4 GiB first. A counting allocator watches.
//!
//! One test in this binary on purpose: the allocator counts every thread of the process.

use std::alloc::System;
use std::sync::Arc;

use iommufd::uapi::*;
use iommufd::user_memory::{SimMemory, UserMemory};
use iommufd::Ictx;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use zerocopy::IntoBytes;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CMD: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;

#[test]
fn a_huge_driver_data_length_allocates_nothing_like_it() {
    let mem = Arc::new(SimMemory::new());
    mem.map(CMD, 4096, true).unwrap();
    // Sixteen pages of zeros, then nothing mapped.
    mem.map(DATA, 16 * 4096, true).unwrap();
    let ictx = Ictx::with_user_memory(mem.clone());
    let hwpt = IommuHwptAlloc {
        size: std::mem::size_of::<IommuHwptAlloc>() as u32,
        data_type: IOMMU_HWPT_DATA_NONE,
        data_len: u32::MAX,
        data_uptr: DATA,
        ..Default::default()
    };
    let viommu = IommuViommuAlloc {
        size: std::mem::size_of::<IommuViommuAlloc>() as u32,
        data_len: u32::MAX,
        data_uptr: DATA,
        ..Default::default()
    };
    for (request, bytes) in [
        (IOMMU_HWPT_ALLOC, hwpt.as_bytes().to_vec()),
        (
            iommufd_io(IOMMUFD_CMD_VIOMMU_ALLOC),
            viommu.as_bytes().to_vec(),
        ),
    ] {
        mem.write(CMD, &bytes).unwrap();
        let region = Region::new(GLOBAL);
        let r = ictx.ioctl(request, CMD);
        let change = region.change();
        let Err(err) = r else {
            panic!("{request:#x}: a u32::MAX length of unmapped memory was accepted")
        };
        assert_eq!(err.errno_name(), "EFAULT", "{request:#x}: {err}");
        assert!(
            change.bytes_allocated < 1 << 20,
            "{request:#x}: {} bytes allocated for a u32::MAX length",
            change.bytes_allocated
        );
    }
}

//! The size rules of every command (Linux's `iommufd_ioctl_ops` table).

use super::*;

/// The size rules of one iommufd command (Linux's `iommufd_ioctl_ops` table): `size` is the
/// struct as this model knows it, `min_size` `offsetofend` of its last original field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSize {
    /// The command number (`_IOC_NR`).
    pub nr: u32,
    /// `sizeof` the struct.
    pub size: usize,
    /// The smallest `size` user space may declare.
    pub min_size: usize,
}

/// Every command of Linux 7.3's table (and the selftest's), with its sizes.
pub const OP_SIZES: &[OpSize] = &[
    OpSize {
        nr: IOMMUFD_CMD_DESTROY,
        size: 8,
        min_size: 8,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_ALLOC,
        size: 12,
        min_size: 12,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_ALLOW_IOVAS,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_COPY,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_IOVA_RANGES,
        size: 32,
        min_size: 32,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_MAP,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_UNMAP,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_OPTION,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_VFIO_IOAS,
        size: 12,
        min_size: 12,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_ALLOC,
        size: 48,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_GET_HW_INFO,
        size: 40,
        min_size: 32,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING,
        size: 16,
        min_size: 16,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP,
        size: 48,
        min_size: 48,
    },
    OpSize {
        nr: IOMMUFD_CMD_HWPT_INVALIDATE,
        size: 32,
        min_size: 32,
    },
    OpSize {
        nr: IOMMUFD_CMD_FAULT_QUEUE_ALLOC,
        size: 16,
        min_size: 16,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_MAP_FILE,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_VIOMMU_ALLOC,
        size: 40,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_VDEVICE_ALLOC,
        size: 24,
        min_size: 24,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_CHANGE_PROCESS,
        size: 8,
        min_size: 8,
    },
    OpSize {
        nr: IOMMUFD_CMD_VEVENTQ_ALLOC,
        size: 32,
        min_size: 28,
    },
    OpSize {
        nr: IOMMUFD_CMD_HW_QUEUE_ALLOC,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA,
        size: 40,
        min_size: 40,
    },
    OpSize {
        nr: IOMMUFD_CMD_TEST,
        size: 72,
        min_size: 68,
    },
];

/// The size rules of command `nr`, if it is one.
pub fn op_size(nr: u32) -> Option<OpSize> {
    OP_SIZES.iter().copied().find(|o| o.nr == nr)
}

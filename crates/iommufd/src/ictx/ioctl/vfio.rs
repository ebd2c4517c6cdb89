//! The VFIO type1 compatibility commands (Linux `vfio_compat.c`).

use super::*;

impl Ictx {
    /// The VFIO type1 compatibility commands (Linux `iommufd_vfio_ioctl`).
    pub(super) fn vfio_ioctl(&self, request: u32, arg: u64) -> Result<IoctlOutput> {
        let ret = |ret| Ok(IoctlOutput { ret, new_fd: None });
        match request {
            VFIO_GET_API_VERSION => ret(VFIO_API_VERSION),
            VFIO_CHECK_EXTENSION => match arg {
                VFIO_TYPE1_IOMMU | VFIO_TYPE1V2_IOMMU | VFIO_UNMAP_ALL => ret(1),
                // Every HWPT of this model enforces cache coherency.
                VFIO_DMA_CC_IOMMU => self.compat_ioas().and_then(|_| ret(1)),
                _ => ret(0),
            },
            VFIO_SET_IOMMU => {
                if arg != VFIO_TYPE1_IOMMU && arg != VFIO_TYPE1V2_IOMMU {
                    return Err(einval_v("unknown VFIO IOMMU type", arg));
                }
                self.compat_ioas()?;
                ret(0)
            }
            VFIO_IOMMU_GET_INFO => {
                let mut info = VfioIommuInfo::default();
                let minsz = core::mem::offset_of!(VfioIommuInfo, cap_offset);
                self.mem.read(arg, &mut info.as_mut_bytes()[..minsz])?;
                if (info.argsz as usize) < minsz {
                    return Err(einval_v("argsz below the minimum", info.argsz.into()));
                }
                self.compat_ioas()?;
                info.flags = VFIO_IOMMU_INFO_PGSIZES;
                info.iova_pgsizes = 4096;
                let n = (info.argsz as usize).min(size_of_val(&info));
                self.mem.write(arg, &info.as_bytes()[..n])?;
                ret(0)
            }
            VFIO_IOMMU_MAP_DMA => {
                let mut map = VfioDmaMap::default();
                self.mem.read(arg, map.as_mut_bytes())?;
                let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
                if (map.argsz as usize) < size_of_val(&map) || map.flags & !known != 0 {
                    return Err(einval("bad argsz or flags"));
                }
                let mut prot = 0;
                if map.flags & VFIO_DMA_MAP_FLAG_READ != 0 {
                    prot |= IOMMU_READ;
                }
                if map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0 {
                    prot |= IOMMU_WRITE;
                }
                let ioas = self.compat_ioas()?;
                self.ioas_map_user(ioas, Some(map.iova), map.vaddr, map.size, prot)?;
                ret(0)
            }
            VFIO_IOMMU_UNMAP_DMA => {
                let mut unmap = VfioDmaUnmap::default();
                self.mem.read(arg, unmap.as_mut_bytes())?;
                if (unmap.argsz as usize) < size_of_val(&unmap)
                    || unmap.flags & !VFIO_DMA_UNMAP_FLAG_ALL != 0
                {
                    return Err(einval("bad argsz or flags"));
                }
                let ioas = self.compat_ioas()?;
                let (iova, len) = if unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0 {
                    if unmap.iova != 0 || unmap.size != 0 {
                        return Err(einval("UNMAP_ALL takes iova 0 and size 0"));
                    }
                    (0, u64::MAX)
                } else {
                    (unmap.iova, unmap.size)
                };
                unmap.size = self.ioas_unmap(ioas, iova, len)?;
                self.mem.write(arg, unmap.as_bytes())?;
                ret(0)
            }
            _ => {
                Err(enotty_v("unknown command", request.into()).because(Condition::UnknownCommand))
            }
        }
    }
}

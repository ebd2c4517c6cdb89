//! The IOAS query and option commands: `IOMMU_IOAS_IOVA_RANGES` and `IOMMU_OPTION`.

use super::*;

impl Ictx {
    /// `IOMMU_IOAS_IOVA_RANGES`: writes up to `num_iovas` ranges to `allowed_iovas`, always
    /// reports how many there are, and is `EMSGSIZE` (with the struct updated) when they did
    /// not all fit.
    pub(super) fn uapi_iova_ranges(&self, cmd: &mut [u8], min: usize) -> Result<IoctlOutput> {
        let mut c: IommuIoasIovaRanges = copy_struct_from_user(cmd, min)?;
        reserved_zero(c.__reserved.into())?;
        let ranges = self.ioas_iova_ranges(c.ioas_id)?;
        let max = c.num_iovas as usize;
        for (i, r) in ranges.iter().enumerate().take(max) {
            let elm = IommuIovaRange {
                start: r.start,
                last: r.last,
            };
            self.mem
                .write(c.allowed_iovas.wrapping_add(i as u64 * 16), elm.as_bytes())?;
        }
        c.num_iovas = ranges.len() as u32;
        c.out_iova_alignment = self.ioas_iova_alignment(c.ioas_id)?;
        copy_struct_to_user(cmd, &c);
        if ranges.len() > max {
            return Err(emsgsize_v(
                "more IOVA ranges than num_iovas",
                ranges.len() as u64,
            ));
        }
        Ok(IoctlOutput::default())
    }

    /// `IOMMU_OPTION`: `RLIMIT_MODE` of the context (object 0; set only while the context has
    /// no objects, `EBUSY` otherwise) and `HUGE_PAGES` of an IOAS.
    pub(super) fn uapi_option(&self, cmd: &mut [u8], min: usize) -> Result<IoctlOutput> {
        let mut c: IommuOption = copy_struct_from_user(cmd, min)?;
        reserved_zero(c.__reserved.into())?;
        let bad_op = || Err(eopnotsupp_v("unknown option op", c.op.into()));
        match c.option_id {
            IOMMU_OPTION_RLIMIT_MODE => {
                if c.object_id != 0 {
                    return Err(eopnotsupp_v(
                        "RLIMIT_MODE takes object 0",
                        c.object_id.into(),
                    ));
                }
                match c.op {
                    IOMMU_OPTION_OP_GET => c.val64 = self.settings.lock().account_mm.into(),
                    IOMMU_OPTION_OP_SET => {
                        // Linux needs CAP_SYS_RESOURCE; the model grants it.
                        if !self.is_empty() {
                            return Err(iommu_core::error::ebusy("context has objects"));
                        }
                        self.settings.lock().account_mm = match c.val64 {
                            0 => false,
                            1 => true,
                            v => return Err(einval_v("RLIMIT_MODE is 0 or 1", v)),
                        };
                    }
                    _ => return bad_op(),
                }
            }
            IOMMU_OPTION_HUGE_PAGES => {
                self.check_ioas(c.object_id)?;
                let set = match c.op {
                    IOMMU_OPTION_OP_GET => None,
                    IOMMU_OPTION_OP_SET => match c.val64 {
                        0 => Some(false),
                        1 => Some(true),
                        v => return Err(einval_v("HUGE_PAGES is 0 or 1", v)),
                    },
                    _ => return bad_op(),
                };
                c.val64 = self.ioas_huge_pages(c.object_id, set)?.into();
            }
            id => return Err(eopnotsupp_v("unknown option", id.into())),
        }
        // Linux copies back only `val64`.
        let off = core::mem::offset_of!(IommuOption, val64);
        cmd[off..off + 8].copy_from_slice(&c.val64.to_ne_bytes());
        Ok(IoctlOutput::default())
    }
}

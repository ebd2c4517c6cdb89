//! The uAPI dispatch (Linux `iommufd_fops_ioctl` and `vfio_compat.c`): one entry point that
//! takes a request number and the caller's struct, applies the size rules every command
//! shares, decodes the struct and calls the Rust API.
//!
//! The rules, as Linux 7.3 applies them before any command runs:
//! * a number outside the iommufd table goes to the VFIO type1 compatibility commands, and
//!   anything unknown there is `ENOTTY`; inside the table, a request that is not exactly
//!   `_IO(';', nr)` of a known command is `ENOTTY`;
//! * the struct starts with its `u32 size`; unreadable ⇒ `EFAULT`; below the command's
//!   minimum ⇒ `EINVAL`; beyond what this model knows with a non-zero byte there ⇒ `E2BIG`;
//! * outputs are copied back over `min(size, known size)` bytes.
//!
//! Then each command checks its own flags and reserved fields as Linux does (unknown flags
//! and non-zero `__reserved` are `EOPNOTSUPP` unless Linux says otherwise).

use alloc::vec::Vec;

use iommu_core::error::{
    e2big_v, einval, einval_v, eio_v, emsgsize_v, enodev, enotty_v, eopnotsupp, eopnotsupp_v,
    eoverflow, Condition,
};
use iommu_core::{Result, IOMMU_READ, IOMMU_WRITE};
use zerocopy::IntoBytes;

use super::{Ictx, IovaRange};
use crate::fault::FaultFd;
use crate::uapi::*;

mod options;
mod test_cmd;
mod vfio;

/// The longest driver-specific record read from user memory (every record Linux 7.3 defines
/// is far shorter; bytes past it must be zero).
const MAX_DRIVER_DATA: usize = 4096;
/// A file the command created (the fault queue's fd): the caller installs it as a new fd and
/// writes the fd number, as a `u32`, at `out_offset` of the command struct.
pub struct NewFd {
    /// The endpoint behind the new fd.
    pub endpoint: FaultFd,
    /// Where the fd number goes in the command struct.
    pub out_offset: usize,
}

/// What a successful command returns besides its updated struct.
#[derive(Default)]
pub struct IoctlOutput {
    /// The `ioctl` return value (0 except `VFIO_CHECK_EXTENSION` and the like).
    pub ret: i32,
    /// A file to install (`IOMMU_FAULT_QUEUE_ALLOC`).
    pub new_fd: Option<NewFd>,
}

/// Context-wide uAPI settings.
#[derive(Default)]
pub(super) struct Settings {
    /// `IOMMU_OPTION_RLIMIT_MODE`: 1 accounts pinned pages to the mm.
    account_mm: bool,
    /// The VFIO compatibility IOAS (`IOMMU_VFIO_IOAS`).
    vfio_ioas: Option<u32>,
}

/// `ULONG_MAX` of a 64-bit kernel: IOVAs and lengths at (or, on 32 bits, above) it are
/// `EOVERFLOW`.
const ULONG_MAX: u64 = u64::MAX;

/// `IOMMU_IOAS_MAP_*` flags to `IOMMU_READ`/`IOMMU_WRITE`; `EOPNOTSUPP` for unknown flags
/// and `EINVAL` for neither readable nor writeable, in Linux's order (`overflow` between).
fn map_prot(flags: u32, overflow: bool) -> Result<u32> {
    let known = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
    if flags & !known != 0 {
        return Err(eopnotsupp_v("unknown IOAS map flags", flags.into())
            .because(Condition::UnsupportedFlags));
    }
    if overflow {
        return Err(eoverflow("IOVA or length at or above ULONG_MAX"));
    }
    let mut prot = 0;
    if flags & IOMMU_IOAS_MAP_WRITEABLE != 0 {
        prot |= IOMMU_WRITE;
    }
    if flags & IOMMU_IOAS_MAP_READABLE != 0 {
        prot |= IOMMU_READ;
    }
    if prot == 0 {
        return Err(einval_v("map needs READABLE or WRITEABLE", flags.into()));
    }
    Ok(prot)
}

/// Writes `v` at byte `off` of the command struct, when the caller's struct reaches it.
fn put_u32(cmd: &mut [u8], off: usize, v: u32) {
    if let Some(dst) = cmd.get_mut(off..off + 4) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
}

fn reserved_zero(v: u64) -> Result<()> {
    if v != 0 {
        return Err(eopnotsupp_v("__reserved must be 0", v).because(Condition::UnsupportedFlags));
    }
    Ok(())
}

impl Ictx {
    /// One `ioctl(2)` on this context's fd: `request` is the full request number, `arg` the
    /// raw argument (a pointer into [`Ictx::user_memory`], or an integer for the VFIO
    /// commands that take one). Returns what the call returns; the struct at `arg` is updated
    /// as Linux updates it (also on `EMSGSIZE`).
    pub fn ioctl(&self, request: u32, arg: u64) -> Result<IoctlOutput> {
        let nr = request & 0xff;
        if !(IOMMUFD_CMD_BASE..=IOMMUFD_CMD_TEST).contains(&nr) {
            return self.vfio_ioctl(request, arg);
        }
        let mut size = [0u8; 4];
        self.mem.read(arg, &mut size)?;
        let size = u32::from_ne_bytes(size) as usize;
        let op = op_size(nr).filter(|_| request == iommufd_io(nr)).ok_or(
            enotty_v("unknown iommufd command", request.into()).because(Condition::UnknownCommand),
        )?;
        if size < op.min_size {
            return Err(einval_v("command size below the minimum", size as u64)
                .because(Condition::RecordTooShort));
        }
        // `check_zeroed_user`: the bytes beyond what we know, read in pieces.
        let mut at = op.size;
        let mut chunk = [0u8; 256];
        while at < size {
            let n = chunk.len().min(size - at);
            self.mem.read(arg + at as u64, &mut chunk[..n])?;
            if let Some(pos) = chunk[..n].iter().position(|&b| b != 0) {
                return Err(
                    e2big_v("non-zero bytes beyond the known struct", (at + pos) as u64)
                        .because(Condition::UnknownTrailingBytes),
                );
            }
            at += n;
        }
        let known = size.min(op.size);
        let mut buf = alloc::vec![0u8; known];
        self.mem.read(arg, &mut buf)?;
        let before = buf.clone();
        // The size rules held above: straight to the command.
        let res = self.dispatch(nr, op.min_size, &mut buf);
        if buf != before {
            self.mem.write(arg, &buf)?;
        }
        res
    }

    /// An iommufd command on a struct already copied in: `cmd` is the user's struct, its
    /// length the `size` user space declared (so the size rules apply to it). Outputs are
    /// written into `cmd`; a new fd's number is the caller's to write (see [`NewFd`]).
    /// Pointers inside the struct go through [`Ictx::user_memory`].
    pub fn ioctl_cmd(&self, request: u32, cmd: &mut [u8]) -> Result<IoctlOutput> {
        let nr = request & 0xff;
        let op = op_size(nr).filter(|_| request == iommufd_io(nr)).ok_or(
            enotty_v("unknown iommufd command", request.into()).because(Condition::UnknownCommand),
        )?;
        // The generic size rules every command gets (the commands re-check with their type).
        if cmd.len() < op.min_size {
            return Err(einval_v("command size below the minimum", cmd.len() as u64)
                .because(Condition::RecordTooShort));
        }
        if cmd.len() > op.size {
            if let Some(pos) = cmd[op.size..].iter().position(|&b| b != 0) {
                return Err(e2big_v(
                    "non-zero bytes beyond the known struct",
                    (op.size + pos) as u64,
                )
                .because(Condition::UnknownTrailingBytes));
            }
        }
        self.dispatch(nr, op.min_size, cmd)
    }

    /// Command `nr` on `cmd`, whose size rules (at least `min` bytes, nothing non-zero past the
    /// known struct) were checked by the caller.
    fn dispatch(&self, nr: u32, min: usize, cmd: &mut [u8]) -> Result<IoctlOutput> {
        let none = || Ok(IoctlOutput::default());
        match nr {
            IOMMUFD_CMD_DESTROY => {
                let c: IommuDestroy = copy_struct_from_user(cmd, min)?;
                self.destroy(c.id)?;
                let mut s = self.settings.lock();
                if s.vfio_ioas == Some(c.id) {
                    s.vfio_ioas = None;
                }
                none()
            }
            IOMMUFD_CMD_IOAS_ALLOC => {
                let mut c: IommuIoasAlloc = copy_struct_from_user(cmd, min)?;
                if c.flags != 0 {
                    return Err(eopnotsupp_v("IOAS alloc flags must be 0", c.flags.into())
                        .because(Condition::UnsupportedFlags));
                }
                c.out_ioas_id = self.ioas_alloc()?;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_IOAS_IOVA_RANGES => self.uapi_iova_ranges(cmd, min),
            IOMMUFD_CMD_IOAS_ALLOW_IOVAS => {
                let c: IommuIoasAllowIovas = copy_struct_from_user(cmd, min)?;
                reserved_zero(c.__reserved.into())?;
                self.check_ioas(c.ioas_id)?;
                let mut ranges = Vec::new();
                for i in 0..c.num_iovas as u64 {
                    let mut r = IommuIovaRange::default();
                    let at = c.allowed_iovas.wrapping_add(i * 16);
                    self.mem.read(at, r.as_mut_bytes())?;
                    ranges.push(IovaRange {
                        start: r.start,
                        last: r.last,
                    });
                }
                self.ioas_allow_iovas(c.ioas_id, &ranges)?;
                none()
            }
            IOMMUFD_CMD_IOAS_MAP => {
                let mut c: IommuIoasMap = copy_struct_from_user(cmd, min)?;
                if c.__reserved != 0 {
                    return Err(
                        eopnotsupp("__reserved must be 0").because(Condition::UnsupportedFlags)
                    );
                }
                let prot = map_prot(c.flags, c.iova == ULONG_MAX || c.length == ULONG_MAX)?;
                self.check_ioas(c.ioas_id)?;
                let fixed = (c.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0).then_some(c.iova);
                c.iova = self.ioas_map_user(c.ioas_id, fixed, c.user_va, c.length, prot)?;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_IOAS_MAP_FILE => {
                let mut c: IommuIoasMapFile = copy_struct_from_user(cmd, min)?;
                let prot = map_prot(c.flags, c.iova == ULONG_MAX || c.length == ULONG_MAX)?;
                self.check_ioas(c.ioas_id)?;
                let fixed = (c.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0).then_some(c.iova);
                c.iova = self.ioas_map_file(c.ioas_id, fixed, c.fd, c.start, c.length, prot)?;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_IOAS_COPY => {
                let mut c: IommuIoasCopy = copy_struct_from_user(cmd, min)?;
                let overflow =
                    c.length == ULONG_MAX || c.src_iova == ULONG_MAX || c.dst_iova == ULONG_MAX;
                let prot = map_prot(c.flags, overflow)?;
                self.check_ioas(c.src_ioas_id)?;
                let fixed = (c.flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0).then_some(c.dst_iova);
                c.dst_iova = self.ioas_copy(
                    c.dst_ioas_id,
                    fixed,
                    c.src_ioas_id,
                    c.src_iova,
                    c.length,
                    prot,
                )?;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_IOAS_UNMAP => {
                let mut c: IommuIoasUnmap = copy_struct_from_user(cmd, min)?;
                self.check_ioas(c.ioas_id)?;
                let all = c.iova == 0 && c.length == u64::MAX;
                if !all && (c.iova == ULONG_MAX || c.length == ULONG_MAX) {
                    return Err(eoverflow("IOVA or length at or above ULONG_MAX"));
                }
                c.length = self.ioas_unmap(c.ioas_id, c.iova, c.length)?;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_OPTION => self.uapi_option(cmd, min),
            IOMMUFD_CMD_VFIO_IOAS => {
                let mut c: IommuVfioIoas = copy_struct_from_user(cmd, min)?;
                reserved_zero(c.__reserved.into())?;
                match c.op {
                    IOMMU_VFIO_IOAS_GET => {
                        c.ioas_id = self.compat_ioas()?;
                        copy_struct_to_user(cmd, &c);
                    }
                    IOMMU_VFIO_IOAS_SET => {
                        self.check_ioas(c.ioas_id)?;
                        self.settings.lock().vfio_ioas = Some(c.ioas_id);
                    }
                    IOMMU_VFIO_IOAS_CLEAR => self.settings.lock().vfio_ioas = None,
                    op => return Err(eopnotsupp_v("unknown VFIO IOAS op", op.into())),
                }
                none()
            }
            IOMMUFD_CMD_HWPT_ALLOC => {
                let c: IommuHwptAlloc = copy_struct_from_user(cmd, min)?;
                let data = self.read_driver_data(c.data_uptr, c.data_len)?;
                self.ioctl_hwpt_alloc(cmd, &data)?;
                none()
            }
            IOMMUFD_CMD_HWPT_INVALIDATE => {
                let mut c: IommuHwptInvalidate = copy_struct_from_user(cmd, min)?;
                let (done, res) = if c.__reserved != 0 {
                    (
                        0,
                        Err(eopnotsupp("__reserved must be 0").because(Condition::UnsupportedFlags)),
                    )
                } else if c.entry_num != 0 && c.data_uptr == 0 {
                    (0, Err(einval("data_uptr is NULL with entries")))
                } else {
                    let (uptr, len) = (c.data_uptr, u64::from(c.entry_len));
                    self.hwpt_invalidate(
                        c.hwpt_id,
                        c.data_type,
                        c.entry_len,
                        c.entry_num,
                        &mut |i, buf| self.read_driver_record(uptr + u64::from(i) * len, len, buf),
                    )
                };
                // Linux reports how many records were applied, on success and on error.
                c.entry_num = done;
                copy_struct_to_user(cmd, &c);
                res.map(|()| IoctlOutput::default())
            }
            IOMMUFD_CMD_FAULT_QUEUE_ALLOC => {
                let c: IommuFaultAlloc = copy_struct_from_user(cmd, min)?;
                let (id, endpoint) = self.fault_queue_alloc(c.flags)?;
                let out = IommuFaultAlloc {
                    out_fault_id: id,
                    ..c
                };
                copy_struct_to_user(cmd, &out);
                Ok(IoctlOutput {
                    ret: 0,
                    new_fd: Some(NewFd {
                        endpoint,
                        out_offset: core::mem::offset_of!(IommuFaultAlloc, out_fault_fd),
                    }),
                })
            }
            IOMMUFD_CMD_GET_HW_INFO => {
                let mut c: IommuHwInfo = copy_struct_from_user(cmd, min)?;
                if c.flags & !IOMMU_HW_INFO_FLAG_INPUT_TYPE != 0 {
                    return Err(eopnotsupp_v("unknown hw info flags", c.flags.into())
                        .because(Condition::UnsupportedFlags));
                }
                reserved_zero(
                    u64::from(c.__reserved[0])
                        | u64::from(c.__reserved[1]) << 8
                        | u64::from(c.__reserved[2]) << 16,
                )?;
                let in_type = if c.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE != 0 {
                    c.data_type
                } else {
                    IOMMU_HW_INFO_TYPE_DEFAULT
                };
                let info = self.hw_info(c.dev_id, in_type)?;
                // The driver's data up to the user's length, then zeros to the end of it.
                // Zeros from a fixed buffer: the user's length sizes nothing here.
                let copy = (c.data_len as usize).min(info.data.len());
                if copy != 0 {
                    self.mem.write(c.data_uptr, &info.data[..copy])?;
                }
                let zeros = [0u8; 256];
                let mut at = copy as u64;
                while at < u64::from(c.data_len) {
                    let k = zeros.len().min((u64::from(c.data_len) - at) as usize);
                    self.mem.write(c.data_uptr + at, &zeros[..k])?;
                    at += k as u64;
                }
                c.data_len = info.data.len() as u32;
                c.data_type = info.data_type;
                c.out_capabilities = info.capabilities;
                c.out_max_pasid_log2 = info.max_pasid_log2;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_VIOMMU_ALLOC => {
                let mut c: IommuViommuAlloc = copy_struct_from_user(cmd, min)?;
                if c.flags != 0 {
                    return Err(eopnotsupp_v("vIOMMU flags must be 0", c.flags.into())
                        .because(Condition::UnsupportedFlags));
                }
                let data = self.read_driver_data(c.data_uptr, c.data_len)?;
                c.out_viommu_id = self.viommu_alloc(c.dev_id, c.hwpt_id, c.r#type, &data)?;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_VDEVICE_ALLOC => {
                let mut c: IommuVdeviceAlloc = copy_struct_from_user(cmd, min)?;
                // Linux's `virt_id > ULONG_MAX` check cannot fire on a 64-bit kernel.
                c.out_vdevice_id = self.vdevice_alloc(c.viommu_id, c.dev_id, c.virt_id)?;
                copy_struct_to_user(cmd, &c);
                none()
            }
            IOMMUFD_CMD_TEST => self.uapi_test_cmd(cmd, min),
            _ => Err(eopnotsupp_v("iommufd command not modelled yet", nr.into())),
        }
    }

    /// A driver-specific record of `len` bytes at `uptr` (HWPT and vIOMMU allocation data):
    /// at most [`MAX_DRIVER_DATA`] bytes are read, anything past them must be zero (`E2BIG`
    /// otherwise, as `copy_struct_from_user`), so the caller's length sizes no allocation.
    fn read_driver_data(&self, uptr: u64, len: u32) -> Result<alloc::vec::Vec<u8>> {
        let mut data = alloc::vec![0u8; (len as usize).min(MAX_DRIVER_DATA)];
        if len != 0 {
            self.read_driver_record(uptr, len.into(), &mut data)?;
        }
        Ok(data)
    }

    /// Reads a driver record of `len` user bytes at `uptr` into `buf` as Linux's
    /// `copy_struct_from_user`: a longer record must be zero beyond `buf` (`E2BIG`), a shorter
    /// one is zero-extended; `EFAULT` for memory that is not there.
    fn read_driver_record(&self, uptr: u64, len: u64, buf: &mut [u8]) -> Result<()> {
        let n = (len as usize).min(buf.len());
        buf.fill(0);
        self.mem.read(uptr, &mut buf[..n])?;
        let mut at = n as u64;
        let mut chunk = [0u8; 64];
        while at < len {
            let k = chunk.len().min((len - at) as usize);
            self.mem.read(uptr + at, &mut chunk[..k])?;
            if chunk[..k].iter().any(|&b| b != 0) {
                return Err(e2big_v("non-zero bytes beyond the driver record", at));
            }
            at += k as u64;
        }
        Ok(())
    }

    /// `ENOENT` unless `id` is an IOAS.
    fn check_ioas(&self, id: u32) -> Result<()> {
        self.table.lock().ioas_mut(id).map(|_| ())
    }

    /// The VFIO compatibility IOAS, `ENODEV` without one.
    fn compat_ioas(&self) -> Result<u32> {
        let id = self.settings.lock().vfio_ioas;
        match id {
            Some(id) if self.check_ioas(id).is_ok() => Ok(id),
            _ => Err(enodev("no VFIO compatibility IOAS")),
        }
    }
}

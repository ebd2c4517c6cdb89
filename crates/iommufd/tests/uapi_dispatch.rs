//! The uAPI dispatch (`Ictx::ioctl`): Linux 7.3's size rules for every command, and each
//! command's flags, reserved fields, errnos and outputs, driven through a simulated process
//! memory exactly as the preload drives it.

use std::sync::Arc;

use iommu_core::mock::MockDriver;
use iommu_core::{Group, IommuDriver};
use iommufd::uapi::*;
use iommufd::user_memory::{SimMemory, UserMemory};
use iommufd::Ictx;
use zerocopy::{FromBytes, IntoBytes};

/// Where command structs live in the simulated process.
const CMD: u64 = 0x10_0000;
/// A page of scratch memory after it (arrays the commands point at).
const ARRAY: u64 = 0x20_0000;
/// User memory to map.
const BUF: u64 = 0x40_0000;
const PAGE: u64 = 4096;

struct Fx {
    mem: Arc<SimMemory>,
    ictx: Ictx,
}

impl Fx {
    fn new() -> Self {
        let mem = Arc::new(SimMemory::new());
        mem.map(CMD, 4 * PAGE, true).unwrap();
        mem.map(ARRAY, PAGE, true).unwrap();
        mem.map(BUF, 16 * PAGE, true).unwrap();
        let ictx = Ictx::with_user_memory(mem.clone());
        Self { mem, ictx }
    }

    /// Issues `request` with `bytes` at `CMD`; returns the errno name or "ok", and the bytes
    /// after the call.
    fn raw(&self, request: u32, bytes: &[u8]) -> (&'static str, Vec<u8>) {
        self.mem.write(CMD, bytes).unwrap();
        let r = self.ictx.ioctl(request, CMD);
        let mut after = vec![0u8; bytes.len()];
        self.mem.read(CMD, &mut after).unwrap();
        (r.map(|_| "ok").unwrap_or_else(|e| e.errno_name()), after)
    }

    /// Issues a typed command with `size` set to its full size.
    fn cmd<T: IntoBytes + FromBytes + zerocopy::Immutable>(
        &self,
        request: u32,
        c: &T,
    ) -> (&'static str, T) {
        let (r, after) = self.raw(request, c.as_bytes());
        (r, T::read_from_bytes(&after).unwrap())
    }

    fn ioas(&self) -> u32 {
        let c = IommuIoasAlloc {
            size: 12,
            ..Default::default()
        };
        let (r, out) = self.cmd(IOMMU_IOAS_ALLOC, &c);
        assert_eq!(r, "ok");
        out.out_ioas_id
    }

    fn map(&self, ioas: u32, uva: u64, len: u64, flags: u32, iova: u64) -> (&'static str, u64) {
        let c = IommuIoasMap {
            size: 40,
            flags,
            ioas_id: ioas,
            user_va: uva,
            length: len,
            iova,
            ..Default::default()
        };
        let (r, out) = self.cmd(IOMMU_IOAS_MAP, &c);
        (r, out.iova)
    }
}

const RW: u32 = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

#[test]
fn every_command_applies_the_size_rules() {
    let fx = Fx::new();
    for op in OP_SIZES {
        let request = iommufd_io(op.nr);
        // Below the minimum: EINVAL, with a non-zero byte after it that must not matter.
        let mut short = vec![0u8; op.size + 8];
        short[..4].copy_from_slice(&(op.min_size as u32 - 1).to_ne_bytes());
        short[op.min_size - 1] = 0xff;
        assert_eq!(fx.raw(request, &short).0, "EINVAL", "nr {:#x} short", op.nr);
        // Longer than known with a non-zero byte beyond: E2BIG.
        let mut long = vec![0u8; op.size + 1];
        long[..4].copy_from_slice(&(op.size as u32 + 1).to_ne_bytes());
        long[op.size] = 0xff;
        assert_eq!(fx.raw(request, &long).0, "E2BIG", "nr {:#x} long", op.nr);
        // Exact, then longer with zeros: the same answer.
        let mut exact = vec![0u8; op.size];
        exact[..4].copy_from_slice(&(op.size as u32).to_ne_bytes());
        let first = fx.raw(request, &exact).0;
        long[op.size] = 0;
        assert_eq!(fx.raw(request, &long).0, first, "nr {:#x} zero tail", op.nr);
    }
}

#[test]
fn a_huge_size_with_zeros_is_read_in_pieces_and_accepted() {
    let fx = Fx::new();
    let mut c = vec![0u8; 3 * PAGE as usize];
    let n = c.len() as u32;
    c[..4].copy_from_slice(&n.to_ne_bytes());
    assert_eq!(fx.raw(IOMMU_IOAS_ALLOC, &c).0, "ok");
    let last = c.len() - 1;
    c[last] = 1;
    assert_eq!(fx.raw(IOMMU_IOAS_ALLOC, &c).0, "E2BIG");
}

#[test]
fn unknown_commands_are_enotty_and_bad_pointers_efault() {
    let fx = Fx::new();
    let destroy = IommuDestroy { size: 8, id: 0 };
    for request in [
        iommufd_io(IOMMUFD_CMD_BASE - 1),
        iommufd_io(0x96),
        iommufd_io(0x9f),
        // The right number with direction/size bits is another request.
        IOMMU_DESTROY | (8 << 16) | (1 << 30),
        (u32::from(b'x') << 8) | IOMMUFD_CMD_DESTROY,
    ] {
        assert_eq!(fx.cmd(request, &destroy).0, "ENOTTY", "{request:#x}");
    }
    let e = fx.ictx.ioctl(IOMMU_DESTROY, 0).err().unwrap();
    assert_eq!(e.errno_name(), "EFAULT");
    let e = fx.ictx.ioctl(IOMMU_DESTROY, 0xdead_0000).err().unwrap();
    assert_eq!(e.errno_name(), "EFAULT");
}

#[test]
fn destroy_and_ioas_alloc() {
    let fx = Fx::new();
    assert_eq!(
        fx.cmd(IOMMU_DESTROY, &IommuDestroy { size: 8, id: 0 }).0,
        "ENOENT"
    );
    let bad = IommuIoasAlloc {
        size: 12,
        flags: 1,
        ..Default::default()
    };
    assert_eq!(fx.cmd(IOMMU_IOAS_ALLOC, &bad).0, "EOPNOTSUPP");
    let id = fx.ioas();
    assert_eq!(id, 1);
    assert_eq!(fx.cmd(IOMMU_DESTROY, &IommuDestroy { size: 8, id }).0, "ok");
    assert_eq!(
        fx.cmd(IOMMU_DESTROY, &IommuDestroy { size: 8, id }).0,
        "ENOENT"
    );
}

#[test]
fn iova_ranges_reports_the_count_and_emsgsize_when_it_does_not_fit() {
    let fx = Fx::new();
    let ioas = fx.ioas();
    let mut c = IommuIoasIovaRanges {
        size: 32,
        ioas_id: ioas,
        allowed_iovas: ARRAY,
        ..Default::default()
    };
    let (r, out) = fx.cmd(IOMMU_IOAS_IOVA_RANGES, &c);
    // Without a domain: all 64 bits, byte alignment (Linux).
    assert_eq!(
        (r, out.num_iovas, out.out_iova_alignment),
        ("EMSGSIZE", 1, 1)
    );
    c.num_iovas = 1;
    let (r, out) = fx.cmd(IOMMU_IOAS_IOVA_RANGES, &c);
    assert_eq!((r, out.num_iovas), ("ok", 1));
    let mut range = IommuIovaRange::default();
    fx.mem.read(ARRAY, range.as_mut_bytes()).unwrap();
    assert_eq!((range.start, range.last), (0, u64::MAX));
    // A reserved range splits it in two.
    let mut add = IommuTestCmd {
        size: 72,
        op: 1,
        id: ioas,
        ..Default::default()
    };
    add.payload[0] = PAGE;
    add.payload[1] = PAGE;
    assert_eq!(fx.cmd(IOMMU_TEST_CMD, &add).0, "ok");
    c.num_iovas = 1;
    let (r, out) = fx.cmd(IOMMU_IOAS_IOVA_RANGES, &c);
    assert_eq!((r, out.num_iovas), ("EMSGSIZE", 2));
    c.num_iovas = 2;
    assert_eq!(fx.cmd(IOMMU_IOAS_IOVA_RANGES, &c).0, "ok");
    let mut two = [IommuIovaRange::default(); 2];
    fx.mem.read(ARRAY, two.as_mut_bytes()).unwrap();
    assert_eq!(
        (two[0].start, two[0].last, two[1].start, two[1].last),
        (0, PAGE - 1, 2 * PAGE, u64::MAX)
    );
    // A mapping cannot go there.
    let fixed = RW | IOMMU_IOAS_MAP_FIXED_IOVA;
    assert_eq!(fx.map(ioas, BUF, PAGE, fixed, PAGE).0, "EINVAL");
    add.payload[1] = 0;
    assert_eq!(fx.cmd(IOMMU_TEST_CMD, &add).0, "EINVAL");
    add.payload = [2, u64::MAX, 0, 0, 0, 0, 0];
    assert_eq!(fx.cmd(IOMMU_TEST_CMD, &add).0, "EOVERFLOW");
    c.num_iovas = 1;
    c.__reserved = 1;
    assert_eq!(fx.cmd(IOMMU_IOAS_IOVA_RANGES, &c).0, "EOPNOTSUPP");
    c.__reserved = 0;
    c.ioas_id = 99;
    assert_eq!(fx.cmd(IOMMU_IOAS_IOVA_RANGES, &c).0, "ENOENT");
    c.ioas_id = ioas;
    c.allowed_iovas = 0xdead_0000;
    assert_eq!(fx.cmd(IOMMU_IOAS_IOVA_RANGES, &c).0, "EFAULT");
}

#[test]
fn allow_iovas_validates_and_steers_automatic_iovas() {
    let fx = Fx::new();
    let ioas = fx.ioas();
    let put = |ranges: &[(u64, u64)]| {
        for (i, &(start, last)) in ranges.iter().enumerate() {
            let r = IommuIovaRange { start, last };
            fx.mem.write(ARRAY + i as u64 * 16, r.as_bytes()).unwrap();
        }
        IommuIoasAllowIovas {
            size: 24,
            ioas_id: ioas,
            num_iovas: ranges.len() as u32,
            allowed_iovas: ARRAY,
            ..Default::default()
        }
    };
    assert_eq!(
        fx.cmd(IOMMU_IOAS_ALLOW_IOVAS, &put(&[(0x5000, 0x5000)])).0,
        "EINVAL"
    );
    assert_eq!(
        fx.cmd(
            IOMMU_IOAS_ALLOW_IOVAS,
            &put(&[(0x1000, 0x8fff), (0x8000, 0x9fff)])
        )
        .0,
        "EINVAL"
    );
    let mut c = put(&[(0x10_0000, 0x1f_ffff)]);
    c.__reserved = 1;
    assert_eq!(fx.cmd(IOMMU_IOAS_ALLOW_IOVAS, &c).0, "EOPNOTSUPP");
    assert_eq!(
        fx.cmd(IOMMU_IOAS_ALLOW_IOVAS, &put(&[(0x10_0000, 0x1f_ffff)]))
            .0,
        "ok"
    );
    assert_eq!(fx.map(ioas, BUF, PAGE, RW, 0), ("ok", 0x10_0000));
}

#[test]
fn ioas_map_flags_overflow_and_outputs() {
    let fx = Fx::new();
    let ioas = fx.ioas();
    assert_eq!(fx.map(ioas, BUF, PAGE, 1 << 3, 0).0, "EOPNOTSUPP");
    assert_eq!(
        fx.map(ioas, BUF, PAGE, IOMMU_IOAS_MAP_FIXED_IOVA, 0).0,
        "EINVAL"
    );
    assert_eq!(fx.map(ioas, BUF, u64::MAX, RW, 0).0, "EOVERFLOW");
    assert_eq!(fx.map(99, BUF, PAGE, RW, 0).0, "ENOENT");
    let fixed = RW | IOMMU_IOAS_MAP_FIXED_IOVA;
    assert_eq!(fx.map(ioas, BUF, 2 * PAGE, fixed, 0x8000), ("ok", 0x8000));
    assert_eq!(fx.map(ioas, BUF, PAGE, fixed, 0x9000).0, "EEXIST");
    assert_eq!(
        fx.map(ioas, BUF, PAGE, RW, 0),
        ("ok", 0x1000),
        "never IOVA 0"
    );
    // Without a domain, any byte alignment; the automatic IOVA keeps the page offset.
    let (r, iova) = fx.map(ioas, BUF + 0x10, 0x123, RW, 0);
    assert_eq!((r, iova % PAGE), ("ok", 0x10));
    let reserved = IommuIoasMap {
        size: 40,
        flags: RW,
        ioas_id: ioas,
        __reserved: 1,
        user_va: BUF,
        length: PAGE,
        iova: 0,
    };
    assert_eq!(fx.cmd(IOMMU_IOAS_MAP, &reserved).0, "EOPNOTSUPP");
    // Without a domain the pages are not touched: a hole maps (Linux pins lazily).
    assert_eq!(fx.map(ioas, 0x7000_0000, PAGE, RW, 0).0, "ok");
}

#[test]
fn unmap_exact_partial_and_all() {
    let fx = Fx::new();
    let ioas = fx.ioas();
    let unmap = |iova, length| {
        fx.cmd(
            IOMMU_IOAS_UNMAP,
            &IommuIoasUnmap {
                size: 24,
                ioas_id: ioas,
                iova,
                length,
            },
        )
    };
    assert_eq!(unmap(0, u64::MAX).0, "ok", "unmap-all of nothing succeeds");
    assert_eq!(unmap(0x1000, 0x1000).0, "ENOENT");
    assert_eq!(unmap(0x1000, u64::MAX).0, "EOVERFLOW");
    let fixed = RW | IOMMU_IOAS_MAP_FIXED_IOVA;
    fx.map(ioas, BUF, 2 * PAGE, fixed, 0x10000);
    fx.map(ioas, BUF, PAGE, fixed, 0x20000);
    assert_eq!(unmap(0x10000, PAGE).0, "ENOENT", "cuts a mapping");
    let (r, out) = unmap(0x10000, 2 * PAGE);
    assert_eq!((r, out.length), ("ok", 2 * PAGE));
    fx.map(ioas, BUF, 2 * PAGE, fixed, 0x10000);
    let (r, out) = unmap(0, u64::MAX);
    assert_eq!((r, out.length), ("ok", 3 * PAGE));
}

#[test]
fn copy_shares_what_the_source_maps() {
    let fx = Fx::new();
    let (src, dst) = (fx.ioas(), fx.ioas());
    let fixed = RW | IOMMU_IOAS_MAP_FIXED_IOVA;
    fx.map(src, BUF, 4 * PAGE, fixed, 0x10000);
    let copy = |src_iova, length, flags, dst_iova| {
        fx.cmd(
            IOMMU_IOAS_COPY,
            &IommuIoasCopy {
                size: 40,
                flags,
                dst_ioas_id: dst,
                src_ioas_id: src,
                length,
                dst_iova,
                src_iova,
            },
        )
    };
    let (r, out) = copy(0x11000, 2 * PAGE, RW, 0);
    assert_eq!((r, out.dst_iova), ("ok", 0x1000));
    assert_eq!(
        copy(0x13000, 2 * PAGE, RW, 0).0,
        "ENOENT",
        "runs past the source"
    );
    assert_eq!(copy(0x11000, PAGE, 1 << 5, 0).0, "EOPNOTSUPP");
    assert_eq!(copy(0x11000, PAGE, 0, 0).0, "EINVAL");
    assert_eq!(copy(0x11000, PAGE, fixed, 0x1000).0, "EEXIST");
}

#[test]
fn options_rlimit_mode_and_huge_pages() {
    let fx = Fx::new();
    let opt = |option_id, op, object_id, val64| {
        fx.cmd(
            IOMMU_OPTION,
            &IommuOption {
                size: 24,
                option_id,
                op,
                object_id,
                val64,
                ..Default::default()
            },
        )
    };
    let rl = IOMMU_OPTION_RLIMIT_MODE;
    assert_eq!(opt(rl, IOMMU_OPTION_OP_GET, 0, 7).1.val64, 0);
    assert_eq!(opt(rl, IOMMU_OPTION_OP_SET, 0, 1).0, "ok");
    assert_eq!(opt(rl, IOMMU_OPTION_OP_SET, 0, 2).0, "EINVAL");
    assert_eq!(opt(rl, IOMMU_OPTION_OP_GET, 0, 0).1.val64, 1);
    assert_eq!(opt(rl, IOMMU_OPTION_OP_GET, 1, 0).0, "EOPNOTSUPP");
    assert_eq!(opt(rl, 7, 0, 0).0, "EOPNOTSUPP");
    assert_eq!(opt(9, IOMMU_OPTION_OP_GET, 0, 0).0, "EOPNOTSUPP");
    let hp = IOMMU_OPTION_HUGE_PAGES;
    assert_eq!(opt(hp, IOMMU_OPTION_OP_GET, 0, 0).0, "ENOENT");
    let ioas = fx.ioas();
    assert_eq!(
        opt(rl, IOMMU_OPTION_OP_SET, 0, 0).0,
        "EBUSY",
        "objects exist"
    );
    assert_eq!(opt(hp, IOMMU_OPTION_OP_GET, ioas, 0).1.val64, 1);
    assert_eq!(opt(hp, IOMMU_OPTION_OP_SET, ioas, 0).0, "ok");
    assert_eq!(opt(hp, IOMMU_OPTION_OP_GET, ioas, 9).1.val64, 0);
    assert_eq!(opt(hp, IOMMU_OPTION_OP_SET, ioas, 3).0, "EINVAL");
    let mut reserved = IommuOption {
        size: 24,
        option_id: hp,
        op: IOMMU_OPTION_OP_GET,
        object_id: ioas,
        ..Default::default()
    };
    reserved.__reserved = 1;
    assert_eq!(fx.cmd(IOMMU_OPTION, &reserved).0, "EOPNOTSUPP");
}

#[test]
fn user_mappings_are_pinned_while_the_ioas_has_a_paging_hwpt() {
    let fx = Fx::new();
    let mock = MockDriver::new("mock0");
    let group = Group::new(mock as Arc<dyn IommuDriver>, "g0");
    let dev = group.add_device("d0", 1 << 20).unwrap();
    let dev_id = fx.ictx.bind_device(dev).unwrap();
    let ioas = fx.ioas();
    let refs = |uptr: u64, length: u64, refs: u32| {
        let mut c = IommuTestCmd {
            size: 72,
            op: 4,
            ..Default::default()
        };
        c.payload[0] = length;
        c.payload[1] = uptr;
        c.payload[2] = refs.into();
        fx.cmd(IOMMU_TEST_CMD, &c).0
    };
    let fixed = RW | IOMMU_IOAS_MAP_FIXED_IOVA;
    assert_eq!(fx.map(ioas, BUF, 2 * PAGE, fixed, 0x10000).0, "ok");
    assert_eq!(refs(BUF, 2 * PAGE, 0), "ok", "no domain: not pinned");
    // The first paging HWPT pins what is mapped.
    let mut h = IommuHwptAlloc {
        size: 48,
        dev_id,
        pt_id: ioas,
        ..Default::default()
    };
    let (r, out) = fx.cmd(IOMMU_HWPT_ALLOC, &h);
    assert_eq!(r, "ok");
    h.out_hwpt_id = out.out_hwpt_id;
    assert_eq!(refs(BUF, 2 * PAGE, 1), "ok");
    assert_eq!(refs(BUF, 2 * PAGE, 0), "EIO");
    // The HWPT reserves what lies beyond its domain's aperture and imposes its page size.
    let ranges = fx.ictx.ioas_iova_ranges(ioas).unwrap();
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].last, iommufd::IOAS_APERTURE_END - 1);
    assert_eq!(fx.ictx.ioas_iova_alignment(ioas).unwrap(), PAGE);
    assert_eq!(fx.map(ioas, BUF, 0x123, RW, 0).0, "EINVAL");
    assert_eq!(refs(BUF + 1, PAGE, 1), "EINVAL");
    // With a domain, a hole is EFAULT and nothing is left pinned.
    fx.mem.unmap(BUF + 15 * PAGE, PAGE).unwrap();
    assert_eq!(fx.map(ioas, BUF + 14 * PAGE, 2 * PAGE, RW, 0).0, "EFAULT");
    assert_eq!(refs(BUF + 14 * PAGE, PAGE, 0), "ok");
    assert_eq!(refs(BUF + 15 * PAGE, PAGE, 0), "EFAULT");
    // Unmap drops the pins; so does the last HWPT going.
    assert_eq!(fx.map(ioas, BUF + 4 * PAGE, PAGE, fixed, 0x40000).0, "ok");
    assert_eq!(refs(BUF + 4 * PAGE, PAGE, 1), "ok");
    fx.ictx.ioas_unmap(ioas, 0x40000, PAGE).unwrap();
    assert_eq!(refs(BUF + 4 * PAGE, PAGE, 0), "ok");
    fx.ictx.destroy(h.out_hwpt_id).unwrap();
    assert_eq!(refs(BUF, 2 * PAGE, 0), "ok");
}

#[test]
fn closing_the_context_drops_its_pins() {
    let mem = Arc::new(SimMemory::new());
    mem.map(BUF, PAGE, true).unwrap();
    let mock = MockDriver::new("mock0");
    let group = Group::new(mock as Arc<dyn IommuDriver>, "g0");
    let dev = group.add_device("d0", 1 << 20).unwrap();
    let ictx = Ictx::with_user_memory(mem.clone());
    let dev_id = ictx.bind_device(dev).unwrap();
    let ioas = ictx.ioas_alloc().unwrap();
    ictx.hwpt_alloc(dev_id, ioas, 0, 0, 0, &[]).unwrap();
    ictx.ioas_map_user(ioas, None, BUF, PAGE, 3).unwrap();
    assert_eq!(mem.pin_count(BUF).unwrap(), 1);
    drop(ictx);
    assert_eq!(mem.pin_count(BUF).unwrap(), 0);
}

#[test]
fn fault_queue_alloc_hands_back_a_new_fd() {
    let fx = Fx::new();
    fx.mem
        .write(
            CMD,
            IommuFaultAlloc {
                size: 16,
                flags: 1,
                ..Default::default()
            }
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(
        fx.ictx
            .ioctl(IOMMU_FAULT_QUEUE_ALLOC, CMD)
            .err()
            .unwrap()
            .errno_name(),
        "EOPNOTSUPP"
    );
    fx.mem
        .write(
            CMD,
            IommuFaultAlloc {
                size: 16,
                ..Default::default()
            }
            .as_bytes(),
        )
        .unwrap();
    let out = fx.ictx.ioctl(IOMMU_FAULT_QUEUE_ALLOC, CMD).unwrap();
    let new = out.new_fd.expect("a new fd");
    assert_eq!(new.out_offset, 12);
    let mut back = IommuFaultAlloc::default();
    fx.mem.read(CMD, back.as_mut_bytes()).unwrap();
    assert_eq!(back.out_fault_id, 1);
    // The fd is open: the fault object cannot go.
    assert_eq!(fx.ictx.destroy(1).unwrap_err().errno_name(), "EBUSY");
    drop(new);
    fx.ictx.destroy(1).unwrap();
}

#[test]
fn hw_info_viommu_vdevice_and_unmodelled_commands() {
    let fx = Fx::new();
    let info = IommuHwInfo {
        size: 40,
        dev_id: 5,
        ..Default::default()
    };
    assert_eq!(fx.cmd(IOMMU_GET_HW_INFO, &info).0, "ENOENT");
    let bad = IommuHwInfo { flags: 2, ..info };
    assert_eq!(fx.cmd(IOMMU_GET_HW_INFO, &bad).0, "EOPNOTSUPP");
    let v = IommuViommuAlloc {
        size: 40,
        r#type: 0xdead,
        dev_id: 3,
        ..Default::default()
    };
    assert_eq!(fx.cmd(iommufd_io(IOMMUFD_CMD_VIOMMU_ALLOC), &v).0, "ENOENT");
    let v0 = IommuViommuAlloc { r#type: 0, ..v };
    assert_eq!(
        fx.cmd(iommufd_io(IOMMUFD_CMD_VIOMMU_ALLOC), &v0).0,
        "EOPNOTSUPP"
    );
    let d = IommuVdeviceAlloc {
        size: 24,
        viommu_id: 1,
        ..Default::default()
    };
    assert_eq!(
        fx.cmd(iommufd_io(IOMMUFD_CMD_VDEVICE_ALLOC), &d).0,
        "ENOENT"
    );
    let t = IommuTestCmd {
        size: 72,
        op: 0x77,
        ..Default::default()
    };
    assert_eq!(fx.cmd(IOMMU_TEST_CMD, &t).0, "EOPNOTSUPP");
}

#[test]
fn vfio_compat_basics() {
    let fx = Fx::new();
    let ret = |request, arg| fx.ictx.ioctl(request, arg).map(|o| o.ret);
    assert_eq!(ret(VFIO_GET_API_VERSION, 0).unwrap(), 0);
    assert_eq!(ret(VFIO_CHECK_EXTENSION, VFIO_TYPE1V2_IOMMU).unwrap(), 1);
    assert_eq!(ret(VFIO_CHECK_EXTENSION, 1234).unwrap(), 0);
    assert_eq!(
        ret(VFIO_SET_IOMMU, VFIO_TYPE1V2_IOMMU)
            .unwrap_err()
            .errno_name(),
        "ENODEV"
    );
    assert_eq!(ret(VFIO_SET_IOMMU, 77).unwrap_err().errno_name(), "EINVAL");
    let mut map = VfioDmaMap {
        argsz: 1,
        flags: VFIO_DMA_MAP_FLAG_READ,
        vaddr: BUF,
        iova: 0x10000,
        size: PAGE,
    };
    fx.mem.write(CMD, map.as_bytes()).unwrap();
    assert_eq!(
        ret(VFIO_IOMMU_MAP_DMA, CMD).unwrap_err().errno_name(),
        "EINVAL"
    );
    map.argsz = 32;
    fx.mem.write(CMD, map.as_bytes()).unwrap();
    assert_eq!(
        ret(VFIO_IOMMU_MAP_DMA, CMD).unwrap_err().errno_name(),
        "ENODEV"
    );
    // IOMMU_VFIO_IOAS: GET without one is ENODEV; SET, GET, CLEAR.
    let ioas = fx.ioas();
    let v = |op, ioas_id| {
        fx.cmd(
            IOMMU_VFIO_IOAS,
            &IommuVfioIoas {
                size: 12,
                ioas_id,
                op,
                __reserved: 0,
            },
        )
    };
    assert_eq!(v(IOMMU_VFIO_IOAS_GET, 0).0, "ENODEV");
    assert_eq!(v(IOMMU_VFIO_IOAS_SET, 99).0, "ENOENT");
    assert_eq!(v(IOMMU_VFIO_IOAS_SET, ioas).0, "ok");
    assert_eq!(v(IOMMU_VFIO_IOAS_GET, 0).1.ioas_id, ioas);
    assert_eq!(v(9, 0).0, "EOPNOTSUPP");
    fx.mem.write(CMD, map.as_bytes()).unwrap();
    assert_eq!(ret(VFIO_IOMMU_MAP_DMA, CMD).unwrap(), 0);
    let unmap = VfioDmaUnmap {
        argsz: 24,
        flags: VFIO_DMA_UNMAP_FLAG_ALL,
        iova: 0,
        size: 0,
    };
    fx.mem.write(CMD, unmap.as_bytes()).unwrap();
    assert_eq!(ret(VFIO_IOMMU_UNMAP_DMA, CMD).unwrap(), 0);
    let mut back = VfioDmaUnmap::default();
    fx.mem.read(CMD, back.as_mut_bytes()).unwrap();
    assert_eq!(back.size, PAGE);
    assert_eq!(v(IOMMU_VFIO_IOAS_CLEAR, 0).0, "ok");
    assert_eq!(v(IOMMU_VFIO_IOAS_GET, 0).0, "ENODEV");
}

/// `IOMMU_TEST_OP_MOCK_DOMAIN` on `pt_id` through the ioctl: (stdev, hwpt, idev).
fn mock_domain(fx: &Fx, pt_id: u32) -> (u32, u32, u32) {
    let c = IommuTestCmd {
        size: 72,
        op: 2,
        id: pt_id,
        ..Default::default()
    };
    let (r, out) = fx.cmd(IOMMU_TEST_CMD, &c);
    assert_eq!(r, "ok");
    let p = out.payload;
    (p[0] as u32, (p[0] >> 32) as u32, p[1] as u32)
}

#[test]
fn hwpt_invalidate_reports_how_many_records_it_applied_even_on_error() {
    let fx = Fx::new();
    let ioas = fx.ioas();
    let (_, _, idev) = mock_domain(&fx, ioas);
    let alloc = |pt_id, data: &[u8]| {
        fx.mem.write(ARRAY, data).unwrap();
        let c = IommuHwptAlloc {
            size: 44,
            flags: if data.is_empty() {
                IOMMU_HWPT_ALLOC_NEST_PARENT
            } else {
                0
            },
            dev_id: idev,
            pt_id,
            data_type: if data.is_empty() {
                0
            } else {
                IOMMU_HWPT_DATA_SELFTEST
            },
            data_len: data.len() as u32,
            data_uptr: ARRAY,
            ..Default::default()
        };
        let (r, out) = fx.cmd(IOMMU_HWPT_ALLOC, &c);
        assert_eq!(r, "ok");
        out.out_hwpt_id
    };
    let parent = alloc(ioas, &[]);
    let nested = alloc(parent, &0xbadbeefu32.to_ne_bytes());
    // Two records: the first valid, the second with an unknown flag.
    let recs: Vec<u8> = [0u32, 0, 2, 1]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    fx.mem.write(ARRAY, &recs).unwrap();
    let inv = |hwpt_id, entry_len, entry_num, data_uptr| {
        let c = IommuHwptInvalidate {
            size: 32,
            hwpt_id,
            data_uptr,
            data_type: iommufd::selftest::IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
            entry_len,
            entry_num,
            __reserved: 0,
        };
        let (r, out) = fx.cmd(IOMMU_HWPT_INVALIDATE, &c);
        (r, out.entry_num)
    };
    assert_eq!(inv(nested, 8, 2, ARRAY), ("EOPNOTSUPP", 1));
    assert_eq!(
        inv(nested, 8, 1, 0),
        ("EINVAL", 0),
        "NULL data_uptr with records"
    );
    assert_eq!(
        inv(nested, 0, 1, ARRAY),
        ("EINVAL", 0),
        "entry_len 0 with records"
    );
    assert_eq!(inv(parent, 8, 1, ARRAY), ("EINVAL", 0), "a paging HWPT");
    assert_eq!(
        inv(nested, 8, 0, 0),
        ("ok", 0),
        "no records: only the type is checked"
    );
}

#[test]
fn get_hw_info_copies_up_to_the_users_length_and_zeroes_the_rest() {
    let fx = Fx::new();
    let ioas = fx.ioas();
    let (_, _, idev) = mock_domain(&fx, ioas);
    fx.mem.write(ARRAY, &[0xaa; 16]).unwrap();
    let c = IommuHwInfo {
        size: 40,
        dev_id: idev,
        data_len: 16,
        data_uptr: ARRAY,
        ..Default::default()
    };
    let (r, out) = fx.cmd(IOMMU_GET_HW_INFO, &c);
    assert_eq!(r, "ok");
    assert_eq!(
        (out.data_len, out.data_type),
        (8, IOMMU_HW_INFO_TYPE_SELFTEST)
    );
    let mut got = [0u8; 16];
    fx.mem.read(ARRAY, &mut got).unwrap();
    assert_eq!(&got[4..8], &0xdeadbeefu32.to_ne_bytes(), "test_reg");
    assert_eq!(&got[8..], &[0u8; 8], "trailing bytes zeroed");
    let (r, _) = fx.cmd(
        IOMMU_GET_HW_INFO,
        &IommuHwInfo {
            flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE,
            data_type: IOMMU_HW_INFO_TYPE_SELFTEST + 1,
            ..c
        },
    );
    assert_eq!(r, "EOPNOTSUPP");
}

//! An iommufd client written outside this project, the crates.io `iommufd-ioctls` crate, run
//! unmodified against iommu-rs: the test re-executes itself with the preload library in
//! `LD_PRELOAD`, and the child opens `/dev/iommu`, allocates an IOAS, maps and unmaps its own
//! memory, reads the IOVA ranges and destroys the IOAS through the crate's calls, checking
//! what each returns.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use iommufd_bindings::iommufd::*;
use iommufd_ioctls::{IommuFd, IommufdError, IommufdIoas};

const CHILD: &str = "IOMMU_RS_PRELOAD_CHILD";
const PAGE: u64 = 4096;

/// The preload library cargo built beside this test binary.
fn preload_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        let p = dir.join("libiommufd_preload.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libiommufd_preload.so not found beside {}", exe.display());
}

fn errno_of(e: &IommufdError) -> i32 {
    match e {
        IommufdError::IommuDestroy(s)
        | IommufdError::IommuIoasAlloc(s)
        | IommufdError::IommuIoasMap(s)
        | IommufdError::IommuIoasUnmap(s)
        | IommufdError::IommuGetHwInfo(s) => s.errno(),
        other => panic!("unexpected error {other}"),
    }
}

/// The client's calls; runs only in the child, where `/dev/iommu` is iommu-rs.
fn client() {
    let fd = Arc::new(IommuFd::new().expect("open /dev/iommu through the preload"));
    let ioas = IommufdIoas::new(fd.clone()).expect("IOAS alloc");
    assert_eq!(ioas.id(), 1, "the first object ID");

    // Map 4 pages of our own memory at a fixed IOVA.
    let buf = vec![0xa5u8; 5 * PAGE as usize];
    let uva = (buf.as_ptr() as u64).next_multiple_of(PAGE);
    let rw = iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE
        | iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
    let mut map = iommu_ioas_map {
        size: size_of::<iommu_ioas_map>() as u32,
        flags: rw | iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA,
        ioas_id: ioas.id(),
        __reserved: 0,
        user_va: uva,
        length: 4 * PAGE,
        iova: 0x10_0000,
    };
    fd.map_iommu_ioas(&map).expect("fixed map");
    let e = fd.map_iommu_ioas(&map).expect_err("the IOVA is taken");
    assert_eq!(errno_of(&e), libc::EEXIST);
    map.flags = 0;
    let e = fd
        .map_iommu_ioas(&map)
        .expect_err("neither readable nor writeable");
    assert_eq!(errno_of(&e), libc::EINVAL);

    // The IOVA ranges, with the EMSGSIZE protocol, by the bindings' struct.
    let mut ranges = [iommu_iova_range { start: 1, last: 1 }; 2];
    let mut q = iommu_ioas_iova_ranges {
        size: size_of::<iommu_ioas_iova_ranges>() as u32,
        ioas_id: ioas.id(),
        num_iovas: 0,
        __reserved: 0,
        allowed_iovas: ranges.as_mut_ptr() as u64,
        out_iova_alignment: 0,
    };
    let request = ((IOMMUFD_TYPE as u32) << 8) | IOMMUFD_CMD_IOAS_IOVA_RANGES;
    // SAFETY: `q` and the array it points at outlive the call and are writable.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut q) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EMSGSIZE)
    );
    assert_eq!(q.num_iovas, 1);
    q.num_iovas = 2;
    // SAFETY: as above.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut q) };
    // No device attached: the whole 64-bit space at byte alignment, as Linux.
    assert_eq!((rc, q.num_iovas, q.out_iova_alignment), (0, 1, 1));
    assert_eq!((ranges[0].start, ranges[0].last), (0, u64::MAX));

    // Unmap: a range cutting the mapping is ENOENT, the whole mapping works once.
    let e = ioas.unmap(0x10_0000, PAGE).expect_err("cuts the mapping");
    assert_eq!(errno_of(&e), libc::ENOENT);
    ioas.unmap(0x10_0000, 4 * PAGE).expect("unmap");
    let e = ioas
        .unmap(0x10_0000, 4 * PAGE)
        .expect_err("already unmapped");
    assert_eq!(errno_of(&e), libc::ENOENT);

    // No device is bound: hardware info names an unknown object.
    let mut info = iommu_hw_info {
        size: size_of::<iommu_hw_info>() as u32,
        flags: 0,
        dev_id: 42,
        data_len: 0,
        data_uptr: 0,
        __bindgen_anon_1: iommu_hw_info__bindgen_ty_1 { in_data_type: 0 },
        out_max_pasid_log2: 0,
        __reserved: [0; 3],
        out_capabilities: 0,
    };
    let e = fd.get_hw_info(&mut info).expect_err("no such device");
    assert_eq!(errno_of(&e), libc::ENOENT);

    // Dropping the IOAS destroys it; a second destroy finds nothing.
    let id = ioas.id();
    drop(ioas);
    let e = fd.destroy_iommu_object(id).expect_err("already destroyed");
    assert_eq!(errno_of(&e), libc::ENOENT);
    drop(buf);
}

#[test]
fn iommufd_ioctls_client_runs_against_iommu_rs() {
    if std::env::var_os(CHILD).is_some() {
        client();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "iommufd_ioctls_client_runs_against_iommu_rs",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_PRELOAD", preload_path())
        .env(CHILD, "1")
        .output()
        .expect("re-run under the preload");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the child ran the client:\n{text}"
    );
}

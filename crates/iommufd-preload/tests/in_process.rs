//! The preload's entry points called in-process, as an unmodified program's calls reach them:
//! `/dev/iommu` fds, their dup/close lifetime, ioctls on real memory, fault fds, and that every
//! other path and fd passes through to libc.

use std::ffi::{c_int, c_ulong, c_void};

use iommufd::uapi::*;
use iommufd_preload as p;
use zerocopy::{FromBytes, IntoBytes};

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn open_iommu() -> c_int {
    // SAFETY: a NUL-terminated path; no mode is read without O_CREAT.
    let fd = unsafe { p::open(c"/dev/iommu".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    assert!(fd >= 0);
    fd
}

fn ioctl<T: IntoBytes + FromBytes>(fd: c_int, request: u32, cmd: &mut T) -> Result<c_int, c_int> {
    // SAFETY: `cmd` is a live, writable struct the call may update.
    let rc = unsafe {
        p::ioctl(
            fd,
            c_ulong::from(request),
            cmd.as_mut_bytes().as_mut_ptr() as c_ulong,
        )
    };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

fn ioas_alloc(fd: c_int) -> u32 {
    let mut c = IommuIoasAlloc {
        size: 12,
        ..Default::default()
    };
    ioctl(fd, IOMMU_IOAS_ALLOC, &mut c).unwrap();
    c.out_ioas_id
}

fn destroy(fd: c_int, id: u32) -> Result<c_int, c_int> {
    ioctl(fd, IOMMU_DESTROY, &mut IommuDestroy { size: 8, id })
}

#[test]
fn dev_iommu_is_a_real_fd_shared_by_dups_and_dies_with_the_last_close() {
    let fd = open_iommu();
    assert!(p::is_ours(fd));
    // A real fd: fstat works and the close-on-exec flag was honoured.
    // SAFETY: F_GETFD takes no argument.
    let flags = unsafe { p::fcntl(fd, libc::F_GETFD, 0) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    let ioas = ioas_alloc(fd);
    let fd2 = p::dup(fd);
    // SAFETY: F_DUPFD_CLOEXEC takes the lowest fd number to use.
    let fd3 = unsafe { p::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
    assert!(fd3 >= 100 && p::is_ours(fd2) && p::is_ours(fd3));
    assert_eq!(p::close(fd), 0);
    assert!(!p::is_ours(fd));
    // The context lives on through the dups.
    assert_eq!(destroy(fd2, ioas), Ok(0));
    assert_eq!(destroy(fd3, ioas), Err(libc::ENOENT));
    // dup2 onto one of ours replaces it.
    let other = open_iommu();
    assert_eq!(p::dup2(other, fd3), fd3);
    assert_eq!(destroy(fd3, 1), Err(libc::ENOENT));
    let id = ioas_alloc(other);
    assert_eq!(destroy(fd3, id), Ok(0));
    for f in [fd2, fd3, other] {
        assert_eq!(p::close(f), 0);
    }
    // A fresh context starts empty.
    let fd = open_iommu();
    assert_eq!(ioas_alloc(fd), 1);
    assert_eq!(p::close(fd), 0);
}

#[test]
fn errors_come_back_as_minus_one_and_errno() {
    let fd = open_iommu();
    // SAFETY: a NULL command pointer: the dispatch reads it through process_vm_readv.
    let rc = unsafe { p::ioctl(fd, c_ulong::from(IOMMU_DESTROY), 0) };
    assert_eq!((rc, errno()), (-1, libc::EFAULT));
    assert_eq!(destroy(fd, 0), Err(libc::ENOENT));
    let mut short = IommuDestroy { size: 7, id: 0 };
    assert_eq!(ioctl(fd, IOMMU_DESTROY, &mut short), Err(libc::EINVAL));
    assert_eq!(ioctl(fd, iommufd_io(0x7f), &mut short), Err(libc::ENOTTY));
    assert_eq!(ioctl(fd, VFIO_GET_API_VERSION, &mut short), Ok(0));
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is 8 writable bytes.
    let n = unsafe { p::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!((n, errno()), (-1, libc::EINVAL));
    assert_eq!(p::close(fd), 0);
}

#[test]
fn map_and_unmap_all_of_real_memory_through_the_fd() {
    let fd = open_iommu();
    let ioas = ioas_alloc(fd);
    let buf = vec![0u8; 8 << 12];
    let base = (buf.as_ptr() as u64).next_multiple_of(4096);
    let mut map = IommuIoasMap {
        size: 40,
        flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va: base,
        length: 4096 * 4,
        ..Default::default()
    };
    assert_eq!(ioctl(fd, IOMMU_IOAS_MAP, &mut map), Ok(0));
    let mut unmap = IommuIoasUnmap {
        size: 24,
        ioas_id: ioas,
        iova: 0,
        length: u64::MAX,
    };
    assert_eq!(ioctl(fd, IOMMU_IOAS_UNMAP, &mut unmap), Ok(0));
    assert_eq!(unmap.length, 4096 * 4);
    let mut refs = IommuTestCmd {
        size: 72,
        op: 4,
        ..Default::default()
    };
    refs.payload = [4096 * 4, base, 0, 0, 0, 0, 0];
    assert_eq!(ioctl(fd, IOMMU_TEST_CMD, &mut refs), Ok(0));
    refs.payload[1] = 0x10;
    assert_eq!(ioctl(fd, IOMMU_TEST_CMD, &mut refs), Err(libc::EINVAL));
    assert_eq!(p::close(fd), 0);
}

#[test]
fn process_memory_copies_safely_and_finds_holes() {
    use iommufd::user_memory::UserMemory;
    let mem = p::ProcessMemory::default();
    let src = [1u8, 2, 3, 4];
    let mut dst = [0u8; 4];
    mem.read(src.as_ptr() as u64, &mut dst).unwrap();
    assert_eq!(dst, src);
    let mut target = [0u8; 4];
    mem.write(target.as_mut_ptr() as u64, &[9, 9, 9, 9])
        .unwrap();
    assert_eq!(target, [9; 4]);
    assert_eq!(mem.read(8, &mut dst).unwrap_err().errno_name(), "EFAULT");
    // A mapping with a hole punched in it.
    // SAFETY: a fresh anonymous private mapping of 4 pages, unmapped again below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4 << 12,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let a = addr as u64;
    mem.pin(a, 4 << 12, true).unwrap();
    assert_eq!(mem.pin_count(a + 4096).unwrap(), 1);
    mem.unpin(a, 4 << 12);
    // SAFETY: the third page of our own mapping.
    let rc = unsafe { libc::munmap((a + (2 << 12)) as *mut c_void, 4096) };
    assert_eq!(rc, 0);
    assert_eq!(
        mem.pin(a, 4 << 12, false).unwrap_err().errno_name(),
        "EFAULT"
    );
    assert_eq!(
        mem.pin_count(a + (2 << 12)).unwrap_err().errno_name(),
        "EFAULT"
    );
    // SAFETY: making the first page read-only: a writable pin must refuse it.
    assert_eq!(unsafe { libc::mprotect(addr, 4096, libc::PROT_READ) }, 0);
    assert_eq!(mem.pin(a, 4096, true).unwrap_err().errno_name(), "EFAULT");
    mem.pin(a, 4096, false).unwrap();
    mem.unpin(a, 4096);
    // SAFETY: the rest of our mapping.
    unsafe {
        libc::munmap(addr, 2 << 12);
        libc::munmap((a + (3 << 12)) as *mut c_void, 4096);
    }
}

#[test]
fn maps_parsing_needs_contiguous_readable_and_writable_coverage() {
    let maps = "1000-3000 rw-p 00000000 00:00 0\n3000-4000 r--p 00000000 00:00 0\n5000-6000 rw-p 0 00:00 0 [heap]\n";
    assert!(p::range_mapped(maps, 0x1000, 0x3000, false));
    assert!(
        !p::range_mapped(maps, 0x1000, 0x3000, true),
        "read-only page"
    );
    assert!(p::range_mapped(maps, 0x1000, 0x2000, true));
    assert!(
        !p::range_mapped(maps, 0x3000, 0x3000, false),
        "hole at 0x4000"
    );
    assert!(!p::range_mapped(maps, 0x0, 0x1000, false));
    assert!(!p::range_mapped(maps, u64::MAX - 10, 0x1000, false));
}

#[test]
fn fault_queue_fd_is_a_pollable_real_fd_with_the_record_interface() {
    let fd = open_iommu();
    let mut c = IommuFaultAlloc {
        size: 16,
        ..Default::default()
    };
    assert_eq!(ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, &mut c), Ok(0));
    let ffd = c.out_fault_fd as c_int;
    assert!(p::is_ours(ffd));
    let mut pfd = libc::pollfd {
        fd: ffd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 0, "nothing pending");
    let resp = [0u8; 7];
    // SAFETY: 7 readable bytes.
    let n = unsafe { p::write(ffd, resp.as_ptr().cast(), resp.len()) };
    assert_eq!(
        (n, errno()),
        (-1, libc::ESPIPE),
        "not a whole response record"
    );
    // The fd holds the fault object: destroy is EBUSY until it is closed.
    assert_eq!(destroy(fd, c.out_fault_id), Err(libc::EBUSY));
    assert_eq!(p::close(ffd), 0);
    assert_eq!(destroy(fd, c.out_fault_id), Ok(0));
    assert_eq!(p::close(fd), 0);
}

#[test]
fn other_paths_and_fds_pass_through() {
    // SAFETY: NUL-terminated path, no O_CREAT.
    let fd = unsafe { p::open(c"/dev/null".as_ptr(), libc::O_RDWR, 0) };
    assert!(fd >= 0 && !p::is_ours(fd));
    let data = [1u8; 3];
    // SAFETY: 3 readable bytes.
    assert_eq!(unsafe { p::write(fd, data.as_ptr().cast(), 3) }, 3);
    let mut b = [0u8; 3];
    // SAFETY: 3 writable bytes.
    assert_eq!(unsafe { p::read(fd, b.as_mut_ptr().cast(), 3) }, 0);
    // SAFETY: FIONREAD-style request on /dev/null is refused by the kernel, not by us.
    let rc = unsafe { p::ioctl(fd, c_ulong::from(IOMMU_DESTROY), 0) };
    assert_eq!((rc, errno()), (-1, libc::ENOTTY));
    let d = p::dup3(fd, 200, libc::O_CLOEXEC);
    assert_eq!(d, 200);
    assert!(!p::is_ours(d));
    assert_eq!(p::close(d), 0);
    assert_eq!(p::close(fd), 0);
    // SAFETY: a relative path resolved against the cwd via openat; not ours.
    let fd = unsafe { p::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), libc::O_RDONLY, 0) };
    assert!(fd >= 0 && !p::is_ours(fd));
    assert_eq!(p::close(fd), 0);
}

#[test]
fn ioas_map_file_maps_a_memfd_and_md_check_map_sees_the_callers_view_of_it() {
    const PAGE: usize = 4096;
    let fd = open_iommu();
    let ioas = ioas_alloc(fd);
    // A mock device on the IOAS, so mappings reach a domain.
    let mut md = IommuTestCmd {
        size: 72,
        op: 2,
        id: ioas,
        ..Default::default()
    };
    ioctl(fd, IOMMU_TEST_CMD, &mut md).unwrap();
    let hwpt_id = (md.payload[0] >> 32) as u32;

    // SAFETY: a NUL-terminated name; no other preconditions.
    let mfd = unsafe { libc::memfd_create(c"map-file".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(mfd >= 0);
    // SAFETY: an fd this test owns.
    assert_eq!(unsafe { libc::ftruncate(mfd, 2 * PAGE as libc::off_t) }, 0);
    // SAFETY: a fresh shared mapping of the memfd at a kernel-chosen address.
    let view = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            mfd,
            0,
        )
    };
    assert_ne!(view, libc::MAP_FAILED);
    let map_file = |start: u64, length: u64| {
        let mut c = IommuIoasMapFile {
            size: 40,
            flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id: ioas,
            fd: mfd,
            start,
            length,
            iova: 0,
        };
        ioctl(fd, IOMMU_IOAS_MAP_FILE, &mut c).map(|_| c.iova)
    };
    assert_eq!(
        map_file(0, 2 * PAGE as u64 + 1),
        Err(libc::EINVAL),
        "past the end"
    );
    let iova = map_file(PAGE as u64, PAGE as u64).unwrap();
    let check = |uptr: u64| {
        let mut c = IommuTestCmd {
            size: 72,
            op: 3,
            id: hwpt_id,
            payload: [iova, PAGE as u64, uptr, 0, 0, 0, 0],
            ..Default::default()
        };
        ioctl(fd, IOMMU_TEST_CMD, &mut c)
    };
    // The test's own view of file page 1 is the page the domain maps; page 0 is not.
    check(view as u64 + PAGE as u64).unwrap();
    assert_eq!(check(view as u64), Err(libc::EINVAL));
    // SAFETY: the mapping created above, unused from here on.
    unsafe { libc::munmap(view, 2 * PAGE) };
    // SAFETY: fds this test owns.
    unsafe { libc::close(mfd) };
    assert_eq!(p::close(fd), 0);
}

#[test]
fn file_pages_are_told_apart_by_device_inode_and_offset() {
    let maps = "1000-3000 rw-s 00002000 00:01 77 /memfd:a (deleted)\n\
                5000-6000 rw-s 00003000 00:01 77 /memfd:a (deleted)\n\
                7000-8000 rw-p 00000000 00:00 0 \n";
    assert_eq!(p::file_page(maps, 0x2010), Some(("00:01".into(), 77, 3)));
    assert_eq!(p::file_page(maps, 0x5010), p::file_page(maps, 0x2010));
    assert_eq!(p::file_page(maps, 0x7000), None, "private anonymous");
    assert_eq!(p::file_page(maps, 0x9000), None, "unmapped");
}

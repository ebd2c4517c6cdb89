//! Unit tests of the address space: paging, VMAs, protection.

use super::*;
use iommu_core::{IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE};

fn mm() -> Arc<Mm> {
    Mm::new(&Arc::new(PhysMem::new(256).unwrap())).unwrap()
}

#[test]
fn demand_zero_then_cpu_readback() {
    let mm = mm();
    let a = mm.mmap(3 * PAGE_SIZE, Prot::READ_WRITE).unwrap();
    assert_eq!(mm.stats().resident_pages, 0, "mmap allocates nothing");
    mm.write(a + 4090, b"hello across a page").unwrap();
    let mut b = [0u8; 19];
    mm.read(a + 4090, &mut b).unwrap();
    assert_eq!(&b, b"hello across a page");
    assert_eq!(mm.stats().resident_pages, 2);
    let mut z = [1u8; 16];
    mm.read(a + 2 * PAGE_SIZE, &mut z).unwrap();
    assert_eq!(z, [0; 16]);
}

#[test]
fn faults_check_vma_and_permissions() {
    let mm = mm();
    let ro = mm.mmap(PAGE_SIZE, Prot::READ).unwrap();
    let none = mm.mmap(PAGE_SIZE, Prot::NONE).unwrap();
    assert_eq!(
        mm.handle_mm_fault(ro, IOMMU_FAULT_PERM_WRITE)
            .unwrap_err()
            .errno_name(),
        "EPERM"
    );
    assert!(mm.handle_mm_fault(ro, IOMMU_FAULT_PERM_READ).is_ok());
    assert_eq!(
        mm.handle_mm_fault(none, IOMMU_FAULT_PERM_READ)
            .unwrap_err()
            .errno_name(),
        "EPERM"
    );
    assert_eq!(
        mm.handle_mm_fault(ro, IOMMU_FAULT_PERM_EXEC)
            .unwrap_err()
            .errno_name(),
        "EPERM"
    );
    assert_eq!(
        mm.handle_mm_fault(0x1000, IOMMU_FAULT_PERM_READ)
            .unwrap_err()
            .errno_name(),
        "EFAULT"
    );
}

#[test]
fn munmap_frees_frames_and_splits_vmas() {
    let phys = Arc::new(PhysMem::new(256).unwrap());
    let mm = Mm::new(&phys).unwrap();
    let base = phys.frames_in_use();
    let a = mm.mmap(4 * PAGE_SIZE, Prot::READ_WRITE).unwrap();
    mm.write(a, &[1; 4 * PAGE_SIZE as usize]).unwrap();
    mm.munmap(a + PAGE_SIZE, 2 * PAGE_SIZE).unwrap();
    assert_eq!(
        mm.vmas(),
        vec![
            (a, a + PAGE_SIZE, Prot::READ_WRITE),
            (a + 3 * PAGE_SIZE, a + 4 * PAGE_SIZE, Prot::READ_WRITE)
        ]
    );
    assert_eq!(mm.stats().resident_pages, 2);
    assert!(mm.translate(a + PAGE_SIZE).is_none());
    assert_eq!(
        mm.read(a + PAGE_SIZE, &mut [0; 1])
            .unwrap_err()
            .errno_name(),
        "EFAULT"
    );
    mm.exit();
    assert_eq!(
        phys.frames_in_use(),
        base,
        "exit frees every data frame and table"
    );
    assert_eq!(
        mm.handle_mm_fault(a, IOMMU_FAULT_PERM_READ)
            .unwrap_err()
            .errno_name(),
        "EFAULT"
    );
}

#[test]
fn mprotect_none_keeps_data_and_restores_it() {
    let mm = mm();
    let a = mm.mmap(PAGE_SIZE, Prot::READ_WRITE).unwrap();
    mm.write(a, b"kept").unwrap();
    mm.mprotect(a, PAGE_SIZE, Prot::NONE).unwrap();
    assert!(mm.translate(a).is_none());
    assert_eq!(mm.read(a, &mut [0; 4]).unwrap_err().errno_name(), "EPERM");
    mm.mprotect(a, PAGE_SIZE, Prot::READ).unwrap();
    let mut b = [0; 4];
    mm.read(a, &mut b).unwrap();
    assert_eq!(&b, b"kept");
    assert_eq!(mm.write(a, b"x").unwrap_err().errno_name(), "EPERM");
    assert_eq!(
        mm.mprotect(a, 2 * PAGE_SIZE, Prot::READ)
            .unwrap_err()
            .errno_name(),
        "ENOMEM"
    );
}

#[test]
fn fixed_mmap_refuses_overlap() {
    let mm = mm();
    mm.mmap_fixed(0x40_0000, 2 * PAGE_SIZE, Prot::READ).unwrap();
    assert_eq!(
        mm.mmap_fixed(0x40_1000, PAGE_SIZE, Prot::READ)
            .unwrap_err()
            .errno_name(),
        "EEXIST"
    );
    assert_eq!(
        mm.mmap_fixed(0x40_0800, PAGE_SIZE, Prot::READ)
            .unwrap_err()
            .errno_name(),
        "EINVAL"
    );
    mm.mmap_fixed(0x40_2000, PAGE_SIZE, Prot::READ).unwrap();
}

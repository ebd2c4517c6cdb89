//! Page reclaim: `Mm::swap_out` keeps contents across a CPU access and a device access (through
//! PRI), invalidates the device TLB before the frame is reused, drops swapped pages on munmap
//! and exit, and validates its range as munmap does.

mod common;

use std::sync::{Arc, Mutex, Weak};

use common::Fx;
use iommu_emu::{Mm, PhysMem, Prot, SecondaryTlb};

#[test]
fn swapped_out_page_comes_back_with_its_contents_on_a_cpu_access() {
    let fx = Fx::new();
    let (_ep, mm, buf, _bond) = fx.sva_endpoint(3 * 4096, Prot::READ_WRITE);
    mm.write(buf + 10, b"before swap").unwrap();
    mm.write(buf + 8192, b"third").unwrap();
    let in_use = fx.phys.frames_in_use();

    let n = mm.swap_out(buf, 3 * 4096).unwrap();

    assert_eq!(n, 2, "only resident pages are swapped");
    assert_eq!(fx.phys.frames_in_use(), in_use - 2);
    assert_eq!((mm.swapped_pages(), mm.stats().resident_pages), (2, 0));
    assert!(mm.translate(buf).is_none());
    let mut back = [0u8; 11];
    mm.read(buf + 10, &mut back).unwrap();
    assert_eq!(&back, b"before swap");
    assert_eq!(mm.swapped_pages(), 1, "only the touched page came back");
}

#[test]
fn swapped_out_page_comes_back_on_a_device_access_through_pri() {
    let fx = Fx::new();
    let (ep, mm, buf, bond) = fx.sva_endpoint(4096, Prot::READ_WRITE);
    ep.dma_write(Some(bond.pasid()), buf, b"from the device")
        .unwrap();
    let groups = ep.stats().groups_sent;

    assert_eq!(mm.swap_out(buf, 4096).unwrap(), 1);
    let mut back = [0u8; 15];
    ep.dma_read(Some(bond.pasid()), buf, &mut back).unwrap();

    assert_eq!(&back, b"from the device");
    assert_eq!(
        ep.stats().groups_sent,
        groups + 1,
        "the read faulted through PRI"
    );
    assert_eq!(mm.swapped_pages(), 0);
}

#[test]
fn swap_out_invalidates_the_device_tlb_before_the_frame_is_reused() {
    let fx = Fx::new();
    let (ep, mm, buf, bond) = fx.sva_endpoint(4096, Prot::READ_WRITE);
    ep.dma_write(Some(bond.pasid()), buf, b"secret").unwrap();
    assert_eq!(ep.atc_len(), 1);
    let old = mm.translate(buf).unwrap();
    let g0 = ep.atc_generation();

    mm.swap_out(buf, 4096).unwrap();
    // The freed frame is the next one handed out (last in, first out): give it to someone else.
    let reused = fx.phys.alloc_frame().unwrap();
    fx.phys.write(reused.addr(), b"other!").unwrap();

    assert_eq!(reused.addr(), old);
    assert!(ep.atc_generation() > g0);
    assert_eq!(ep.atc_len(), 0);
    let mut back = [0u8; 6];
    ep.dma_read(Some(bond.pasid()), buf, &mut back).unwrap();
    assert_eq!(
        &back, b"secret",
        "the device sees the page, not the reused frame"
    );
    assert_ne!(mm.translate(buf).unwrap(), old);
}

#[test]
fn munmap_and_exit_drop_swapped_pages() {
    let fx = Fx::new();
    let (_ep, mm, buf, _bond) = fx.sva_endpoint(2 * 4096, Prot::READ_WRITE);
    mm.write(buf, &[1; 8192]).unwrap();
    mm.swap_out(buf, 8192).unwrap();

    mm.munmap(buf, 4096).unwrap();
    assert_eq!(mm.swapped_pages(), 1);
    mm.exit();

    assert_eq!(mm.swapped_pages(), 0);
    assert_eq!(mm.swap_out(buf + 4096, 4096).unwrap(), 0);
}

#[test]
fn a_page_mapped_again_after_munmap_is_zero_not_its_swapped_contents() {
    let fx = Fx::new();
    let (_ep, mm, buf, _bond) = fx.sva_endpoint(4096, Prot::READ_WRITE);
    mm.write(buf, b"old").unwrap();
    mm.swap_out(buf, 4096).unwrap();
    mm.munmap(buf, 4096).unwrap();

    mm.mmap_fixed(buf, 4096, Prot::READ_WRITE).unwrap();
    let mut back = [9u8; 3];
    mm.read(buf, &mut back).unwrap();

    assert_eq!(back, [0; 3]);
}

#[test]
fn swap_out_of_a_bad_range_is_einval() {
    let fx = Fx::new();
    let (_ep, mm, buf, _bond) = fx.sva_endpoint(4096, Prot::READ_WRITE);

    let errs = [
        mm.swap_out(buf + 1, 4096).unwrap_err(),
        mm.swap_out(buf, 0).unwrap_err(),
        mm.swap_out(0x7fff_ffff_f000, 0x2000).unwrap_err(),
        mm.swap_out(buf, u64::MAX).unwrap_err(),
    ];

    assert!(errs.iter().all(|e| e.errno_name() == "EINVAL"));
}

/// Records how many frames were allocated each time it is invalidated.
struct FramesAtInvalidation(Arc<PhysMem>, Mutex<Vec<usize>>);

impl SecondaryTlb for FramesAtInvalidation {
    fn invalidate_range(&self, _mm_id: u64, _start: u64, _end: u64) {
        self.1.lock().unwrap().push(self.0.frames_in_use());
    }
}

#[test]
fn secondary_tlbs_are_invalidated_while_the_frames_are_still_allocated() {
    let fx = Fx::new();
    let mm = Mm::new(&fx.phys).unwrap();
    let buf = mm.mmap(2 * 4096, Prot::READ_WRITE).unwrap();
    mm.write(buf, &[7; 8192]).unwrap();
    let rec = Arc::new(FramesAtInvalidation(
        fx.phys.clone(),
        Mutex::new(Vec::new()),
    ));
    let weak: Weak<dyn SecondaryTlb> = Arc::downgrade(&rec) as Weak<dyn SecondaryTlb>;
    mm.register_secondary_tlb(weak);
    let before = fx.phys.frames_in_use();

    mm.swap_out(buf, 8192).unwrap();

    assert_eq!(*rec.1.lock().unwrap(), [before]);
    assert!(fx.phys.frames_in_use() <= before - 2);
}
